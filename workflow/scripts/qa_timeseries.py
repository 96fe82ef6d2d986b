"""Snakemake adapter: the QA figure of one time-series association (webbflow.report.jobs.qa_timeseries)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow.report import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "qa_timeseries", jobs.qa_timeseries, sm.input.whtlt, list(sm.input.calints), list(sm.input.rateints),
        sm.output.png, sm.wildcards.product, truth=sm.input.get("truth"), trace=sm.input.get("trace"),
        drift=sm.input.get("drift"), onef=list(sm.input.get("onef") or []))
