"""Snakemake adapter: the QA rows, thumbnails and table of a mode's exposures (webbflow.report.jobs.qa_exposures)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
out = sm.output
run_job(sm, "qa_exposures", "webbflow.report.jobs:qa_exposures",
        list(sm.input.rates), list(sm.input.cals), out.rate, out.cal,
        out.rows, out.html, out.csv, mode=sm.wildcards.mode)
