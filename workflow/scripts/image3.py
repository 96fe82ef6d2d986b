"""Snakemake adapter: run webbflow's image3 stage on one association (webbflow.jobs.image3)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
run_job(sm, "image3", "webbflow.jobs:image3", sm.input.asn, i2d=sm.output.i2d, cat=sm.output.cat, segm=sm.output.segm,
        crf=sm.output.crf, steps=sm.params.steps, references=sm.params.reference_paths,
        crds_lock=sm.input.get("crds_lock"))
