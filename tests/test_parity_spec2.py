"""spec2 on a grism time-series segment against STScI's jwst 3.0 (the oracle).

One simulated NRC_TSGRISM segment (tests/tso_segments.py "grism-4out": F322W2/GRISMR, SUBGRISM64,
4 outputs, 8 integrations) is reduced by our detector1; its rateints goes through our spec2 and
through jwst's calwebb_spec2 with the same references (SPECWCS, WAVELENGTHRANGE, FLAT with NaN
pixels, grism PHOTOM, EXTRACT1D JSON, DISTORTION).  Cases: jwst's defaults; photom skipped (the
NIRCam team's choice for relative work); a 40-row cutout (``tsgrism_extract_height``, which cuts
through the background region).

Must hold (issue #13): calints SCI/ERR/VAR_* within 1e-6 relative with identical DQ and NaN
positions, WAVELENGTH within 1e-6 µm; x1dints WAVELENGTH within 1e-6 µm and every other column
within 1e-5 relative per integration and column, DQ and the integer columns identical; the
models, step keywords (S_*), slit and spectrum keywords equal.
"""

import numpy as np
import pytest
from astropy.io import fits
from tso_segments import TSO_SPECS

from webbflow.oracle import run_spec2
from webbflow.refs import select_references
from webbflow.simulate import optics, simulate_exposure
from webbflow.simulate.grism import write_grism_references
from webbflow.simulate.stage2_refs import write_stage2_references
from webbflow.stages import detector1, spec2

pytestmark = pytest.mark.parity

CASES = {
    "jwst-defaults": ({}, {}, ()),
    "photom-skipped": ({"photom": {"skip": True}}, {}, ("photom",)),
    "height-40": ({"extract_2d": {"tsgrism_extract_height": 40}}, {"extract_2d.tsgrism_extract_height": 40}, ()),
}
"""name -> (our params, jwst --set settings, jwst --skip steps)."""

CAL_ARRAYS = ("SCI", "ERR", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")
STEP_KEYS = ("S_WCS", "S_FLAT", "S_EXTR2D", "S_SRCTYP", "S_PHOTOM", "S_BKDSUB", "S_STRAY", "S_CONTAM")
SLIT_KEYS = ("SLTNAME", "SLTSTRT1", "SLTSIZE1", "SLTSTRT2", "SLTSIZE2", "SRCXPOS", "SRCYPOS", "SRCTYPE",
             "SPORDER", "DISPAXIS", "XREF_SCI", "YREF_SCI", "BUNIT", "SPECSYS", "PHOTMJSR", "PIXAR_SR")
SPEC_KEYS = ("SLTNAME", "SPORDER", "DISPAXIS", "DETECTOR", "SRCXPOS", "SRCYPOS", "SLIT_RA", "SLIT_DEC",
             "EXTRXSTR", "EXTRXSTP", "EXTRYSTR", "EXTRYSTP", "TIMESYS")


@pytest.fixture(scope="module")
def segment(tmp_path_factory, oracle):
    spec = TSO_SPECS["grism-4out"]
    out = tmp_path_factory.mktemp("spec2")
    uncal = simulate_exposure(spec, out)
    refs = select_references(fits.getheader(uncal), out / "refs")
    rateints = out / f"{spec.rootname}_rateints.fits"
    detector1.run(uncal, out / f"{spec.rootname}_rate.fits", rateints, refs, {})
    grism = write_grism_references(out, spec.detector, spec.filter, optics.pixar_sr(spec.detector),
                                   optics.pixar_a2(spec.detector))
    imaging = write_stage2_references(out, spec.detector, spec.geometry, spec.filter, spec.pupil, 0)
    references = {**grism, "flat": imaging["flat"], "distortion": imaging["distortion"]}
    return spec, out, rateints, references


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, segment):
    spec, out, rateints, references = segment
    params, settings, skip = CASES[request.param]
    ours = {s: out / request.param / f"{spec.rootname}_{s}.fits" for s in ("calints", "x1dints")}
    spec2.run(rateints, ours["calints"], ours["x1dints"], references, params)
    theirs, _ = run_spec2(rateints, references, out / request.param / "jwst", skip=skip, settings=settings)
    return request.param, ours, theirs


def _agree(name, x, y, rtol, what):
    """Values within rtol (relative), NaN where the other is NaN."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    assert x.shape == y.shape, f"{what} {name}: shape {x.shape} vs {y.shape}"
    nan = np.isnan(x) != np.isnan(y)
    assert not nan.any(), f"{what} {name}: NaN at {np.count_nonzero(nan)} different places"
    ok = np.isclose(x, y, rtol=rtol, atol=0.0, equal_nan=True)
    assert ok.all(), (f"{what} {name}: {np.count_nonzero(~ok)} values beyond {rtol:g} relative, worst "
                      f"{np.nanmax(np.abs(x - y) / np.maximum(np.abs(y), 1e-300)):.3g}")


def test_calints_agrees(case):
    name, ours, theirs = case
    with fits.open(ours["calints"]) as a, fits.open(theirs["calints"]) as b:
        assert a[0].header["DATAMODL"] == b[0].header["DATAMODL"] == "SlitModel"
        for ext in CAL_ARRAYS:
            _agree(ext, a[ext].data, b[ext].data, 1e-6, f"{name} calints")
        np.testing.assert_array_equal(a["DQ"].data, b["DQ"].data, err_msg=f"{name} calints DQ")
        np.testing.assert_allclose(a["WAVELENGTH"].data, b["WAVELENGTH"].data, rtol=0, atol=1e-6)
        for key in STEP_KEYS:
            assert a[0].header.get(key) == b[0].header.get(key), f"{name} {key}"
        for key in SLIT_KEYS:
            assert a["SCI"].header.get(key) == b["SCI"].header.get(key), f"{name} SCI {key}"
        np.testing.assert_array_equal(a["INT_TIMES"].data, b["INT_TIMES"].data)


def test_x1dints_agrees(case):
    name, ours, theirs = case
    with fits.open(ours["x1dints"]) as a, fits.open(theirs["x1dints"]) as b:
        assert a[0].header["DATAMODL"] == b[0].header["DATAMODL"] == "TSOMultiSpecModel"
        assert [h.name for h in a] == [h.name for h in b]
        ta, tb = a["EXTRACT1D"].data, b["EXTRACT1D"].data
        assert ta.columns.names == tb.columns.names and len(ta) == len(tb) == 8
        for col in tb.columns.names:
            assert ta.columns[col].unit == tb.columns[col].unit, f"{name} {col} unit"
            if col == "WAVELENGTH":
                np.testing.assert_allclose(ta[col], tb[col], rtol=0, atol=1e-6)
            elif tb[col].dtype.kind in "iu":
                np.testing.assert_array_equal(ta[col], tb[col], err_msg=f"{name} x1dints {col}")
            else:
                _agree(col, ta[col], tb[col], 1e-5, f"{name} x1dints")
        for key in SPEC_KEYS:
            assert a["EXTRACT1D"].header.get(key) == b["EXTRACT1D"].header.get(key), f"{name} EXTRACT1D {key}"
        for key in STEP_KEYS + ("S_EXTR1D", "S_PXREPL", "S_TRCMOD"):
            assert a[0].header.get(key) == b[0].header.get(key), f"{name} {key}"
