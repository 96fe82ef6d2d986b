"""Snakemake adapter: write one image3 association as JWST association JSON (webbflow.jobs.image3_asn)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
run_job(sm, "image3_asn", "webbflow.jobs:image3_asn", sm.params.content, sm.output.asn)
