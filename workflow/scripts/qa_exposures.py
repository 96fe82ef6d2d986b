"""Snakemake adapter: the QA rows, thumbnails and table of a mode's exposures (webbflow.report.jobs.qa_exposures)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow.report import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

out = sm.output
run_job(sm, "qa_exposures", jobs.qa_exposures, list(sm.input.rates), list(sm.input.cals), out.rate, out.cal,
        out.rows, out.html, out.csv, mode=sm.wildcards.mode)
