"""Snakemake adapter: a mode's mosaics against the demo's truth (webbflow.report.jobs.qa_truths)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
run_job(sm, "qa_truth", "webbflow.report.jobs:qa_truths", list(sm.input.i2ds), list(sm.input.cats), sm.input.truth,
        sm.output.residuals, list(sm.input.crfs))
