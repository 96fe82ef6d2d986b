"""Snakemake adapter: run webbflow's spec2 stage (rateints -> calints + x1dints) on one segment (webbflow.jobs.spec2)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "spec2", jobs.spec2, sm.input.rateints, sm.output.calints, sm.output.x1dints, sm.params.steps,
        sm.params.reference_paths, crds_lock=sm.input.get("crds_lock"))
