"""detector1's optional jwst features against STScI's jwst 3.0 (the oracle): charge_migration and the fit product.

Both pipelines reduce the same simulated exposure (saturating stars, so ramps cross the
charge-migration threshold and partly or wholly saturate; cosmic rays, so several segments
and jump sizes per ramp) with ``charge_migration.skip: false`` (jwst's threshold, 25000 DN)
and ``ramp_fit.save_opt: true``:

- group DQ after charge_migration and after jump identical;
- rate and rateints within the detector1 tolerances (:func:`webbflow.oracle.detector1_tolerance_failures`),
  VAR_RNOISE including stcal's recomputation for CHARGELOSS ramps;
- ``<root>_fitopt.fits`` opens in stdatamodels as a RampFitOutputModel with jwst's shapes, every
  array within 1e-5 relative of jwst's.
"""

import numpy as np
import pytest
from astropy.io import fits
from stdatamodels.jwst import datamodels

from webbflow import dqflags
from webbflow.io import read_uncal
from webbflow.oracle import (detector1_tolerance_failures, product_agreement,
                             run_detector1)
from webbflow.refs import load_references, select_references
from webbflow.simulate import ExposureSpec, simulate_exposure
from webbflow.stages import detector1
from webbflow.steps.ramp_fit import OPT_ARRAYS

pytestmark = [pytest.mark.parity, pytest.mark.slow]

REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")
SPEC = ExposureSpec(detector="NRCA1", subarray="SUB256", size=256, corner="refpix", readpatt="BRIGHT2",
                    nints=2, ngroups=8, cr_rate=1e-3, snowballs=1, n_stars=40, n_saturating_stars=6, seed=33)
OURS = {"charge_migration": {"skip": False}, "ramp_fit": {"save_opt": True}}
THEIRS = {"charge_migration.skip": False, "charge_migration.save_results": True, "ramp_fit.save_opt": True}


@pytest.fixture(scope="module")
def case(tmp_path_factory, oracle):
    out = tmp_path_factory.mktemp("options")
    uncal = simulate_exposure(SPEC, out)
    refs = select_references(fits.getheader(uncal), out / "refs")
    theirs, _ = run_detector1(uncal, refs, out / "jwst", save_steps=True, settings=THEIRS)

    root = uncal.name.removesuffix("_uncal.fits")
    ours = {s: out / "ours" / f"{root}_{s}.fits" for s in ("rate", "rateints")}
    detector1.run(uncal, ours["rate"], ours["rateints"], refs, OURS)
    ours["fitopt"] = detector1.fitopt_path(ours["rate"])

    ramp, readout, headers = read_uncal(uncal)
    loaded = load_references({t: refs[t] for t in REFTYPES}, readout, ramp.shape[-2:])
    states = {}
    for step, status, _ in detector1.iter_steps(ramp, readout, headers, loaded, OURS):
        if step in ("charge_migration", "jump"):
            states[step] = (ramp.groupdq.copy(), status)
    return states, ours, theirs


@pytest.mark.parametrize("step", ["charge_migration", "jump"])
def test_group_dq_identical(case, step):
    states, _, theirs = case
    groupdq, status = states[step]
    with fits.open(theirs[step]) as hdul:
        jw = hdul["GROUPDQ"].data
        if step == "charge_migration":
            assert hdul[0].header["S_CHGMIG"] == status == "COMPLETE"
    n_chlo = np.count_nonzero(jw & dqflags.CHARGELOSS)
    diff = np.count_nonzero(groupdq != jw)
    print(f"{step}: {n_chlo} CHARGELOSS groups in jwst, {diff} group DQ values differ")
    assert n_chlo > 100  # the case exercises the step
    assert diff == 0


@pytest.mark.parametrize("suffix", ["rate", "rateints"])
def test_products_within_detector1_tolerances(case, suffix):
    _, ours, theirs = case
    names = ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE")
    with fits.open(ours[suffix]) as a, fits.open(theirs[suffix]) as b:
        mine, jw = {e: a[e].data for e in names}, {e: b[e].data for e in names}
        assert a[0].header["S_CHGMIG"] == b[0].header["S_CHGMIG"] == "COMPLETE"
    agreement = product_agreement(mine, jw)
    print(f"{suffix}: max relative difference {agreement['max_rel']}, bit-identical fraction "
          f"{agreement['identical']}")
    assert not detector1_tolerance_failures(agreement)
    # the case exercises stcal's read-noise recomputation: ERR^2 != VAR_POISSON + VAR_RNOISE there
    good = np.isfinite(jw["SCI"])
    recomputed = good & ~np.isclose(jw["ERR"] ** 2, jw["VAR_POISSON"] + jw["VAR_RNOISE"], rtol=1e-3)
    assert np.count_nonzero(recomputed) > 10
    # VAR_RNOISE everywhere, including the DO_NOT_USE pixels whose value stcal recomputes
    np.testing.assert_allclose(mine["VAR_RNOISE"], jw["VAR_RNOISE"], rtol=1e-4, atol=0)


def test_fitopt_opens_as_jwst_model(case):
    _, ours, theirs = case
    with datamodels.open(ours["fitopt"]) as mine, datamodels.open(theirs["fitopt"]) as jw:
        assert isinstance(mine, datamodels.RampFitOutputModel)
        for name in OPT_ARRAYS:
            assert getattr(mine, name).shape == getattr(jw, name).shape, name
        assert mine.slope.shape[1] >= 2 and mine.crmag.shape[1] >= 1  # several segments, some jumps


@pytest.mark.parametrize("name", OPT_ARRAYS)
def test_fitopt_arrays_match_jwst(case, name):
    _, ours, theirs = case
    a = fits.getdata(ours["fitopt"], name.upper()).astype(np.float64)
    b = fits.getdata(theirs["fitopt"], name.upper()).astype(np.float64)
    assert a.shape == b.shape
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-30)
    rel[same] = 0.0
    print(f"{name}: {np.mean(same):.6%} bit-identical, max relative difference {np.max(rel):.3g}, "
          f"{np.count_nonzero(b)} non-zero values")
    assert np.count_nonzero(b) > 0
    assert np.max(rel) <= 1e-5
