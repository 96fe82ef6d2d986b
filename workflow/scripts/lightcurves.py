"""Snakemake adapter: light curves and transit fits of one time series (webbflow.jobs.lightcurves)."""

import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
run_job(sm, "lightcurves", "webbflow.jobs:lightcurves",
        sm.input.x1dints, sm.output.curves, sm.output.fits, sm.output.png,
        nbins=sm.params.nbins, wave_range=sm.params.wave_range, transit=sm.params.transit,
        truth=sm.input.get("truth"))
