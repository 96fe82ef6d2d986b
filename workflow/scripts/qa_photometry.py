"""Snakemake adapter: the QA figure of one imaging time series (webbflow.report.jobs.qa_photometry)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
run_job(sm, "qa_photometry", "webbflow.report.jobs:qa_photometry", sm.input.phot, sm.output.png, sm.wildcards.product,
        truth=sm.input.get("truth"), centroid_truth=sm.input.get("centroid"))
