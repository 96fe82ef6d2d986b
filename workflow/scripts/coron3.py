"""Snakemake adapter: run webbflow's coron3 stage on one coronagraphic association (webbflow.jobs.coron3)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

outputs = {k: v for k, v in sm.output.items() if k not in ("exposures", "psfshifts")}
run_job(sm, "coron3", jobs.coron3, sm.input.asn, sm.output.exposures, outputs,
        steps=sm.params.steps, references=sm.params.reference_paths, crds_lock=sm.input.get("crds_lock"),
        shifts=sm.output.psfshifts)
