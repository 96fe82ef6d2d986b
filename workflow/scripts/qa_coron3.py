"""Snakemake adapter: the QA figure of one coron3 association (webbflow.report.jobs.qa_coron3)."""

import os
import sys
from pathlib import Path

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
psfsubs = sorted(Path(sm.input.exposures).glob("*_psfsub.fits"))
run_job(sm, "qa_coron3", "webbflow.report.jobs:qa_coron3", psfsubs, sm.input.i2d, sm.input.shifts, sm.output.png,
        sm.wildcards.product, klipsub=sm.input.get("klipsub"), contrast=sm.input.get("contrast"),
        companions=sm.input.get("companions"), truth=sm.input.get("truth"), psfmask=sm.params.psfmask)
