"""Snakemake adapter: run webbflow's detector1 stage on one exposure (webbflow.jobs.detector1)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
earlier = sm.input.get("persistence", [])  # a one-file named input comes back as the path itself
earlier = [earlier] if isinstance(earlier, str) else list(earlier)
# The memory budget is read from the config, not passed as a param: the products do not depend on it,
# so changing it must not re-run finished jobs.
run_job(sm, "detector1", "webbflow.jobs:detector1", sm.input.uncal, sm.output.rate, sm.output.rateints, sm.params.steps,
        sm.params.reference_paths, exp_types=sm.params.exp_types, crds_lock=sm.input.get("crds_lock"),
        max_memory_mb=(sm.config.get("max_memory_mb") or {}).get("detector1"), one_over_f=sm.output.onef,
        highpix=sm.output.get("highpix"), earlier_highpix=earlier)
