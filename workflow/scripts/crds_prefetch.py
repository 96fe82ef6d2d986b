"""Snakemake adapter: fetch the run's references into the CRDS cache, write the lockfile (webbflow.jobs)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
crds = sm.config["crds"]
run_job(sm, "crds_prefetch", "webbflow.jobs:crds_prefetch", sm.params.uncals, sm.params.reftypes, sm.params.cache,
        crds["context"], crds["server_url"], sm.output.lock, overrides=sm.params.overrides)
