"""Snakemake adapter: a file the planning refused fails with its one line (webbflow.jobs.bad_input)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
run_job(sm, "bad_input", "webbflow.jobs:bad_input", sm.params.path, sm.params.problem, sm.params.fix)
