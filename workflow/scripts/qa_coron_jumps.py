"""Snakemake adapter: the jump-flag fractions of a mode's coronagraphic exposures under the preset's
stage 1 and jwst's (webbflow.report.jobs.qa_coron_jumps)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
uncals = [sm.input.uncals] if isinstance(sm.input.uncals, str) else list(sm.input.uncals)
rateints = [sm.input.rateints] if isinstance(sm.input.rateints, str) else list(sm.input.rateints)
run_job(sm, "qa_coron_jumps", "webbflow.report.jobs:qa_coron_jumps",
        uncals, rateints, sm.params.references, sm.params.lines,
        sm.output.png, sm.output.table, title=sm.wildcards.mode)
