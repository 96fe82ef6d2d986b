"""The grism time-series demo, run as the README says: `snakemake --cores all --configfile
config/demo-tso-grism.yaml`.  Every stage's products exist and open as jwst's models, the level-3
white-light curve holds the simulated transit (its depth within 5 % of the truth's, measured the
same way on both), the trace's row per integration follows the injected drift, the segments are joined in time order, and the report's time-series figure is made.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

REPO = Path(__file__).resolve().parents[1]
PRODUCT = "jw01366-o002_t001_nircam_f322w2-grismr-subgrism64"


def _depth(flux):
    """Out-of-transit level (first and last fifth) minus the in-transit floor (middle fifth), relative."""
    flux = np.asarray(flux, float)
    k = len(flux) // 5
    base = np.median(np.r_[flux[:k], flux[-k:]])
    mid = len(flux) // 2
    return 1 - np.median(flux[mid - k // 2: mid + k // 2 + 1]) / base


@pytest.mark.slow
@pytest.mark.workflow
def test_tso_demo_end_to_end(tmp_path):
    from stdatamodels.jwst import datamodels

    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "2",
           "--configfile", str(REPO / "config" / "demo-tso-grism.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = tmp_path / "results-tso"
    rateints = sorted((results / "detector1" / "f322w2").glob("*-seg00?_nrcalong_rateints.fits"))
    x1dints = sorted((results / "spec2" / "f322w2").glob("*-seg00?_nrcalong_x1dints.fits"))
    assert len(rateints) == len(x1dints) == 3
    with datamodels.open(results / "tso3" / f"{PRODUCT}_x1dints.fits") as model:
        assert isinstance(model, datamodels.TSOMultiSpecModel) and len(model.spec) == 3
        assert [int(s.spec_table["SEGMENT"][0]) for s in model.spec] == [1, 2, 3]
        assert len(model.int_times) == 60
    curve = Table.read(results / "tso3" / f"{PRODUCT}_whtlt.ecsv")
    assert len(curve) == 60 and np.all(np.diff(curve["MJD_UTC"]) > 0)
    truth = Table.read(tmp_path / "demo-tso" / "truth" / "transit.ecsv")
    measured, true = _depth(curve["whitelight_flux"].value), _depth(truth["white_flux"])
    assert true > 0.005 and abs(measured / true - 1) < 0.05, (measured, true)
    # the trace's row per integration follows the injected drift + jitter (0.017 rows rms)
    trace = Table.read(results / "tso3" / f"{PRODUCT}_trace.ecsv")
    dy = np.asarray(Table.read(tmp_path / "demo-tso" / "truth" / "drift.ecsv")["dy"], float)
    y = np.asarray(trace["trace_y"].value, float)
    assert np.array_equal(trace["MJD_UTC"], curve["MJD_UTC"])
    resid = (y - y.mean()) - (dy - dy.mean())
    assert np.corrcoef(y, dy)[0, 1] > 0.99 and np.std(resid) < 0.1 * np.std(dy), (np.std(resid), np.std(dy))
    # the light-curve rule: white light + 10 bins, and their fits from the truth's parameters as the guess
    lc = Table.read(results / "tso3" / f"{PRODUCT}_lc.ecsv")
    assert len(lc) == 60 and lc["flux"].shape == (60, 10)
    fits_ = Table.read(results / "tso3" / f"{PRODUCT}_lcfit.ecsv")
    white = fits_[fits_["band"] == "white"][0]
    # 3 sigma of the fit, or 5 %: one quadratic-law transit over the band is not exactly the
    # rate-weighted depth (tests/test_tso_truth.py compares like with like)
    tol = max(3 * white["depth_error"], 0.05 * truth.meta["white_depth"])
    assert abs(white["depth"] - truth.meta["white_depth"]) < tol, (white["depth"], white["depth_error"])
    figure = results / "qa" / "tso_grism" / "tso3" / f"{PRODUCT}_lightcurves.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = results / "qa" / "tso_grism" / "tso3" / f"{PRODUCT}_timeseries.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
