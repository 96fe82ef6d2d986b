"""Imaging time series (NRC_TSIMAGE) image2 and tso3 against STScI's jwst 3.0 (the oracle; issue #14).

Two segments (4 integrations each) of each simulator preset, ``demo-tso-imaging`` (F210M + WLP8 on
NRCA3 SUB64P: jwst's whole-subarray sum) and ``tso-imaging-lw`` (F444W on NRCALONG SUB64P: circular
aperture, annulus, centroids and Gaussian PSF fit), go through our detector1; jwst's calwebb_image2
and ours take the same rateints, jwst's calwebb_tso3 and ours the same (jwst's) calints, with the
defaults and with radii that fit the subarray.

Must hold: calints SCI/ERR/VAR_* within 1e-6 relative with identical DQ and NaNs and the same
INT_TIMES; ``_phot.ecsv`` columns (sums, backgrounds, centroids, PSF fit) within 1e-6 relative, the
same times, column names, units and meta; crfints DQ identical.
"""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable

from webbflow.oracle import run_image2, run_tso3
from webbflow.refs import select_references
from webbflow.refs.select import IMAGE2_REFTYPES
from webbflow.simulate import run_specs, tso_image_specs
from webbflow.stages import detector1, image2, tso3

pytestmark = pytest.mark.parity

ARRAYS = ("SCI", "ERR", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")


@pytest.fixture(scope="module", params=["SW", "LW"])
def segments(request, tmp_path_factory, oracle):
    out = tmp_path_factory.mktemp(f"tsoimg_parity_{request.param}")
    specs = tso_image_specs(n_segments=2, ints_per_segment=4, channel=request.param)
    uncals = run_specs(specs, out)
    ours, theirs, refs = [], [], None
    for uncal in uncals:
        root = uncal.name.removesuffix("_uncal.fits")
        header = fits.getheader(uncal)
        rateints = out / f"{root}_rateints.fits"
        detector1.run(uncal, out / f"{root}_rate.fits", rateints, select_references(header, out / "refs"), {})
        refs = select_references(header, out / "refs", None, IMAGE2_REFTYPES)
        refs["gain"] = select_references(header, out / "refs")["gain"]
        calints = out / "ours2" / f"{root}_calints.fits"
        image2.run(rateints, calints, {t: refs[t] for t in IMAGE2_REFTYPES}, {})
        ours.append(calints)
        theirs.append(run_image2(rateints, {t: refs[t] for t in IMAGE2_REFTYPES}, out / "jwst2"))
    return request.param, out, specs, ours, theirs, refs


def test_calints_match_jwst_image2(segments):
    from stdatamodels.jwst import datamodels

    _, _, _, ours, theirs, _ = segments
    for a, b in zip(ours, theirs):
        with fits.open(a) as ha, fits.open(b) as hb:
            for name in ARRAYS:
                x, y = ha[name].data, hb[name].data
                assert x.shape == y.shape and x.ndim == 3, name
                np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
                ok = np.isfinite(y)
                np.testing.assert_allclose(x[ok], y[ok], rtol=1e-6, atol=0, err_msg=name)
            np.testing.assert_array_equal(ha["DQ"].data, hb["DQ"].data)
            np.testing.assert_array_equal(ha["INT_TIMES"].data, hb["INT_TIMES"].data)
            for key in ("BUNIT",):
                assert ha["SCI"].header[key] == hb["SCI"].header[key]
            for key in ("PHOTMJSR", "PIXAR_SR"):
                assert ha["SCI"].header[key] == pytest.approx(hb["SCI"].header[key], rel=1e-7)
        with datamodels.open(a) as m:
            assert type(m).__name__ == "CubeModel" and m.meta.cal_step.photom == "COMPLETE"


PHOT_CASES = {"defaults": {}, "wide": {"radius": 12.0, "radius_inner": 16.0, "radius_outer": 22.0}}


@pytest.mark.parametrize("case", list(PHOT_CASES))
def test_phot_matches_jwst_tso3(segments, case):
    channel, out, specs, ours, theirs, refs = segments
    settings = {f"tso_photometry.{k}": v for k, v in PHOT_CASES[case].items()}
    product = ("jw01366-o003_t001_nircam_f210m-wlp8-sub64p" if channel == "SW"
               else "jw01366-o003_t001_nircam_clear-f444w-sub64p")
    asn = out / f"asn_{case}.json"
    asn.write_text(json.dumps({"asn_type": "tso3", "asn_rule": "candidate_Asn_Lv3TSO", "asn_id": "o003",
                               "asn_pool": "none", "program": "01366", "target": "t001", "products": [
                                   {"name": product, "members": [{"expname": str(c), "exptype": "science"}
                                                                 for c in theirs]}]}))
    jwst, _ = run_tso3(asn, {"gain": refs["gain"]}, out / f"jwst3_{case}", settings=settings)
    folder = out / f"ours3_{case}"
    crf = [folder / c.name.replace("_calints", "_o003_crfints") for c in theirs]
    params = {"tso_photometry": PHOT_CASES[case]}
    tso3.run_photometry(theirs, crf, folder / f"{product}_phot.ecsv", {"gain": refs["gain"]}, params)
    assert sorted(p.name for p in jwst["crfints"]) == sorted(p.name for p in crf)
    for a, b in zip(sorted(crf), sorted(jwst["crfints"])):
        np.testing.assert_array_equal(fits.getdata(a, "DQ"), fits.getdata(b, "DQ"))
    mine, ref = QTable.read(folder / f"{product}_phot.ecsv"), QTable.read(jwst["phot"])
    assert jwst["phot"].name == f"{product}_phot.ecsv"
    assert mine.colnames == ref.colnames
    assert dict(mine.meta) == dict(ref.meta)
    for name in ref.colnames:
        x, y = np.asarray(mine[name].value if hasattr(mine[name], "unit") else mine[name]), \
            np.asarray(ref[name].value if hasattr(ref[name], "unit") else ref[name])
        assert getattr(mine[name], "unit", None) == getattr(ref[name], "unit", None), name
        if name in ("MJD", "BJD_TDB"):
            np.testing.assert_array_equal(x, y, err_msg=name)
            continue
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
        ok = np.isfinite(y)
        np.testing.assert_allclose(x[ok], y[ok], rtol=1e-6, atol=0, err_msg=name)
    if channel == "SW":  # SUB64P + WLP8: the whole subarray, no background
        assert np.isnan(ref["annulus_sum"]).all() and "sum of all values" in ref.meta["apertures"]
    else:
        assert np.isfinite(mine["annulus_mean"]).all() and np.isfinite(mine["psf_width_x"]).all()
    assert len(ref) == 8 and ref.meta["number_of_integrations"] == 8
