"""The workflow report's content: QA numbers per exposure, figures, and residuals against a truth.

:mod:`~webbflow.report.qa` computes the numbers (pure functions of arrays and headers),
:mod:`~webbflow.report.figures` draws the PNGs (matplotlib, headless), :mod:`~webbflow.report.truth`
matches a catalog to a sky truth, and :mod:`~webbflow.report.jobs` is what the rules of
``workflow/rules/report.smk`` call.  ``snakemake --report report.html`` gathers the results.
"""
