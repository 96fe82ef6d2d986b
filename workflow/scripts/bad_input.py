"""Snakemake adapter: a file the planning refused fails with its one line (webbflow.jobs.bad_input)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "bad_input", jobs.bad_input, sm.params.path, sm.params.problem, sm.params.fix)
