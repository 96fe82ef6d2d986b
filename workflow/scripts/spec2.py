"""Snakemake adapter: run webbflow's spec2 stage (rateints -> calints + x1dints) on one segment (webbflow.jobs.spec2)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
run_job(sm, "spec2", "webbflow.jobs:spec2", sm.input.rateints, sm.output.calints, sm.output.x1dints, sm.params.steps,
        sm.params.reference_paths, crds_lock=sm.input.get("crds_lock"))
