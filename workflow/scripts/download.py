"""Snakemake adapter: download the MAST program's uncal files, then write the manifest (webbflow.jobs.download)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
run_job(sm, "download", "webbflow.jobs:download", sm.params.download, sm.params.uncal_dir, sm.output.manifest)
