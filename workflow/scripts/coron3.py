"""Snakemake adapter: run webbflow's coron3 stage on one coronagraphic association (webbflow.jobs.coron3)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
outputs = {k: v for k, v in sm.output.items() if k not in ("exposures", "psfshifts")}
run_job(sm, "coron3", "webbflow.jobs:coron3", sm.input.asn, sm.output.exposures, outputs,
        steps=sm.params.steps, references=sm.params.reference_paths, crds_lock=sm.input.get("crds_lock"),
        shifts=sm.output.psfshifts)
