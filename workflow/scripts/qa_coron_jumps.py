"""Snakemake adapter: the jump-flag fractions of a mode's coronagraphic exposures under the preset's
stage 1 and jwst's (webbflow.report.jobs.qa_coron_jumps)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow.report import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

uncals = [sm.input.uncals] if isinstance(sm.input.uncals, str) else list(sm.input.uncals)
rateints = [sm.input.rateints] if isinstance(sm.input.rateints, str) else list(sm.input.rateints)
run_job(sm, "qa_coron_jumps", jobs.qa_coron_jumps, uncals, rateints, sm.params.references, sm.params.lines,
        sm.output.png, sm.output.table, title=sm.wildcards.mode)
