"""white_light (jwst 3.0): band-integrated flux per integration from the segments' spectra.

Truth: the sum of a known spectrum times a known light curve; all-NaN spectra give 0.0; NaN and
repeated mid-times are dropped.  Parity: jwst 3.0's ``white_light`` on the same tables (oracle).
"""

import subprocess

import numpy as np
import pytest

from webbflow.steps.white_light import SpectralSeries, white_light


def _segments(seed=5):
    rng = np.random.default_rng(seed)
    wave = np.linspace(2.4, 4.0, 50)
    star = 1e-3 * (1 + 0.3 * np.sin(wave * 3))
    segs, t0 = [], 60000.0
    for n in (7, 6):
        t = t0 + np.arange(n) / 1440.0
        t0 = t[-1] + 1 / 1440.0
        curve = 1 - 0.01 * ((t > 60000.003) & (t < 60000.006))
        flux = star[None] * curve[:, None] + rng.normal(0, 1e-6, (n, wave.size))
        segs.append(SpectralSeries(t, t + 0.0008, np.broadcast_to(wave, flux.shape).copy(), flux))
    return segs, star


def test_white_light_is_the_band_sum_and_drops_bad_times():
    segs, star = _segments()
    segs[0].flux[2, 10] = np.nan  # one NaN pixel: nansum skips it
    segs[1].flux[3] = np.nan  # a whole NaN spectrum: 0.0, as jwst
    segs[1].mjd_utc[1] = np.nan  # no time: dropped
    segs[1].mjd_utc[4] = segs[1].mjd_utc[0]  # a repeated time: the first kept
    table = white_light(segs, min_wave=3.0, max_wave=3.5)
    assert len(table) == 13 - 2
    assert np.all(np.diff(table["MJD_UTC"]) > 0)
    band = (segs[0].wavelength[0] >= 3.0) & (segs[0].wavelength[0] <= 3.5)
    i = int(np.flatnonzero(table["MJD_UTC"] == segs[0].mjd_utc[4])[0])
    assert table["whitelight_flux"].value[i] == pytest.approx(np.nansum(segs[0].flux[4][band]), rel=1e-12)
    j = int(np.flatnonzero(table["MJD_UTC"] == segs[1].mjd_utc[3])[0])
    assert table["whitelight_flux"].value[j] == 0.0
    assert str(table["whitelight_flux"].unit) == "Jy"
    # the transit is there: in-transit points 1 % low
    t, f = np.asarray(table["MJD_UTC"]), table["whitelight_flux"].value
    inside = (t > 60000.003) & (t < 60000.006) & (f > 0)
    depth = 1 - np.median(f[inside]) / np.median(f[~inside & (f > 0)])
    assert depth == pytest.approx(0.01, abs=0.002)


_ORACLE = """
import json, sys, numpy as np
from types import SimpleNamespace as NS
from astropy.table import Table
from jwst.white_light.white_light import white_light
d = np.load(sys.argv[1])
specs = []
for k in range(int(d["n"])):
    t = Table({"MJD-AVG": d[f"t{k}"], "TDB-MID": d[f"b{k}"], "WAVELENGTH": d[f"w{k}"], "FLUX": d[f"f{k}"]})
    t["FLUX"].unit = "Jy"
    specs.append(NS(spec_table=t, spectral_order=1, detector="NRCALONG"))
meta = NS(instrument=NS(name="NIRCAM", filter="F322W2", pupil="GRISMR"), exposure=NS(type="NRC_TSGRISM"),
          subarray=NS(name="SUBGRISM64"), target=NS(catalog_name="STAR"))
tbl = white_light(NS(spec=specs, meta=meta), min_wave=float(sys.argv[3]), max_wave=float(sys.argv[4]))
np.savez(sys.argv[2], mjd=np.asarray(tbl["MJD_UTC"]), bjd=np.asarray(tbl["BJD_TDB"]),
         flux=np.asarray(tbl["whitelight_flux"].value))
"""


@pytest.mark.parity
def test_parity_with_jwst_white_light(tmp_path, oracle):
    python, _ = oracle
    segs, _ = _segments(seed=9)
    segs[1].flux[2] = np.nan
    segs[0].mjd_utc[5] = segs[0].mjd_utc[4]
    arrays = {"n": len(segs)}
    for k, s in enumerate(segs):
        arrays.update({f"t{k}": s.mjd_utc, f"b{k}": s.bjd_tdb, f"w{k}": s.wavelength, f"f{k}": s.flux})
    np.savez(tmp_path / "in.npz", **arrays)
    (tmp_path / "o.py").write_text(_ORACLE)
    subprocess.run([str(python), str(tmp_path / "o.py"), str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                    "2.6", "3.8"], check=True, capture_output=True, timeout=300)
    theirs = np.load(tmp_path / "out.npz")
    ours = white_light(segs, 2.6, 3.8)
    np.testing.assert_array_equal(np.asarray(ours["MJD_UTC"]), theirs["mjd"])
    np.testing.assert_array_equal(np.asarray(ours["BJD_TDB"]), theirs["bjd"])
    np.testing.assert_array_equal(ours["whitelight_flux"].value, theirs["flux"])
