"""Snakemake adapter: the QA figure of one time-series association (webbflow.report.jobs.qa_timeseries)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
run_job(sm, "qa_timeseries", "webbflow.report.jobs:qa_timeseries",
        sm.input.whtlt, list(sm.input.calints), list(sm.input.rateints),
        sm.output.png, sm.wildcards.product, truth=sm.input.get("truth"), trace=sm.input.get("trace"),
        drift=sm.input.get("drift"), onef=list(sm.input.get("onef") or []))
