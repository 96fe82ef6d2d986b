"""Snakemake adapter: light curves and transit fits of one time series (webbflow.jobs.lightcurves)."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow import jobs  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

run_job(sm, "lightcurves", jobs.lightcurves, sm.input.x1dints, sm.output.curves, sm.output.fits, sm.output.png,
        nbins=sm.params.nbins, wave_range=sm.params.wave_range, transit=sm.params.transit,
        truth=sm.input.get("truth"))
