"""Snakemake adapter: run webbflow's detector1 stage on one exposure (webbflow.jobs.detector1)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "detector1", jobs.detector1, sm.input.uncal, sm.output.rate, sm.output.rateints, sm.params.steps,
        sm.params.reference_paths, exp_types=sm.params.exp_types, crds_lock=sm.input.get("crds_lock"))
