"""Snakemake adapter: run webbflow's image2 stage (rate -> cal) on one exposure (webbflow.jobs.image2)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
run_job(sm, "image2", "webbflow.jobs:image2", sm.input.rate, sm.output.cal, sm.params.steps, sm.params.reference_paths)
