"""Snakemake adapter: write the demo program with webbflow's simulator (webbflow.jobs.demo)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
run_job(sm, "demo", "webbflow.jobs:demo", sm.params.outdir, sm.params.preset, sm.params.seed, sm.output.manifest)
