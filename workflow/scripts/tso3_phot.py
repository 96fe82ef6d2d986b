"""Snakemake adapter: tso3 of an imaging time series (outlier_detection, tso_photometry; webbflow.jobs.tso3)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "tso3", jobs.tso3, sm.input.asn, phot=sm.output.phot, crfints=sm.output.crfints, steps=sm.params.steps,
        references=sm.params.reference_paths, crds_lock=sm.input.get("crds_lock"))
