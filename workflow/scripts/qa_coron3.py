"""Snakemake adapter: the QA figure of one coron3 association (webbflow.report.jobs.qa_coron3)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow.report import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

psfsubs = sorted(Path(sm.input.exposures).glob("*_psfsub.fits"))
run_job(sm, "qa_coron3", jobs.qa_coron3, psfsubs, sm.input.i2d, sm.input.shifts, sm.output.png,
        sm.wildcards.product, klipsub=sm.input.get("klipsub"), contrast=sm.input.get("contrast"),
        companions=sm.input.get("companions"), truth=sm.input.get("truth"), psfmask=sm.params.psfmask)
