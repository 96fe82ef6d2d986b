"""Snakemake adapter: fetch the run's references into the CRDS cache, write the lockfile (webbflow.jobs)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

crds = sm.config["crds"]
run_job(sm, "crds_prefetch", jobs.crds_prefetch, sm.params.uncals, sm.params.reftypes, sm.params.cache,
        crds["context"], crds["server_url"], sm.output.lock, overrides=sm.params.overrides)
