"""Snakemake adapter: write one image3 association as JWST association JSON (webbflow.jobs.image3_asn)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "image3_asn", jobs.image3_asn, sm.params.content, sm.output.asn)
