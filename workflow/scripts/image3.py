"""Snakemake adapter: run webbflow's image3 stage on one association (webbflow.jobs.image3)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "image3", jobs.image3, sm.input.asn, i2d=sm.output.i2d, cat=sm.output.cat, segm=sm.output.segm,
        crf=sm.output.crf, steps=sm.params.steps, references=sm.params.reference_paths,
        crds_lock=sm.input.get("crds_lock"))
