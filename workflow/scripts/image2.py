"""Snakemake adapter: run webbflow's image2 stage (rate -> cal) on one exposure (webbflow.jobs.image2)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "image2", jobs.image2, sm.input.rate, sm.output.cal, sm.params.steps, sm.params.reference_paths)
