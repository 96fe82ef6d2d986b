"""Snakemake adapter: download the MAST program's uncal files, then write the manifest (webbflow.jobs.download)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "download", jobs.download, sm.params.download, sm.params.uncal_dir, sm.output.manifest)
