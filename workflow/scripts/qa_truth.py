"""Snakemake adapter: a mode's mosaics against the demo's truth (webbflow.report.jobs.qa_truths)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow.report import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "qa_truth", jobs.qa_truths, list(sm.input.i2ds), list(sm.input.cats), sm.input.truth,
        sm.output.residuals, list(sm.input.crfs))
