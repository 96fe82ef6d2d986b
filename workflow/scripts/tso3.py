"""Snakemake adapter: run webbflow's tso3 stage on one time-series association (webbflow.jobs.tso3)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
run_job(sm, "tso3", "webbflow.jobs:tso3", sm.input.asn, x1dints=sm.output.x1dints, whtlt=sm.output.whtlt,
        trace=sm.output.trace, crfints=sm.output.crfints, steps=sm.params.steps, references=sm.params.reference_paths,
        crds_lock=sm.input.get("crds_lock"))
