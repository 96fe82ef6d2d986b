"""Snakemake adapter: the QA figure of one imaging time series (webbflow.report.jobs.qa_photometry)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow.report import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "qa_photometry", jobs.qa_photometry, sm.input.phot, sm.output.png, sm.wildcards.product,
        truth=sm.input.get("truth"), centroid_truth=sm.input.get("centroid"))
