"""Snakemake adapter: write the demo program with webbflow's simulator (webbflow.jobs.demo)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "demo", jobs.demo, sm.params.outdir, sm.params.preset, sm.params.seed, sm.output.manifest)
