"""flat_field: hand-computed division, variance propagation and bad-flat flags (jwst 3.0 rules)."""

from types import SimpleNamespace

import numpy as np
import pytest

from webbflow import dqflags
from webbflow.steps import flat_field

NO_FLAT = dqflags.PIXEL["NO_FLAT_FIELD"]


def _arrays():
    f32 = np.float32
    return SimpleNamespace(data=np.full((2, 3), 10.0, f32), dq=np.zeros((2, 3), np.uint32),
                           err=np.ones((2, 3), f32), var_poisson=np.full((2, 3), 4.0, f32),
                           var_rnoise=np.full((2, 3), 1.0, f32), var_flat=None)


def test_divides_and_propagates_variances():
    a = _arrays()
    flat = np.array([[2.0, 0.5, 1.0], [1.25, 4.0, 1.0]], np.float32)
    status = flat_field.run(a, flat, np.zeros((2, 3), np.uint32), np.full((2, 3), 0.1, np.float32))
    assert status == "COMPLETE"
    np.testing.assert_allclose(a.data, 10.0 / flat, rtol=1e-7)
    np.testing.assert_allclose(a.var_poisson, 4.0 / flat**2, rtol=1e-6)
    np.testing.assert_allclose(a.var_rnoise, 1.0 / flat**2, rtol=1e-6)
    # jwst: VAR_FLAT = (data / flat)^2 / flat^2 * flat_err^2 (data already divided)
    np.testing.assert_allclose(a.var_flat, (10.0 / flat) ** 2 / flat**2 * 0.01, rtol=1e-5)
    np.testing.assert_allclose(a.err, np.sqrt(a.var_poisson + a.var_rnoise + a.var_flat), rtol=1e-6)
    assert a.data[0, 0] == np.float32(5.0) and a.var_flat[0, 0] == pytest.approx(25.0 / 4 * 0.01, rel=1e-6)


def test_nan_zero_and_noflat_pixels_are_flagged_and_not_corrected():
    a = _arrays()
    flat = np.array([[np.nan, 0.0, 2.0], [2.0, 2.0, 2.0]], np.float32)
    fdq = np.zeros((2, 3), np.uint32)
    fdq[0, 2] = NO_FLAT
    fdq[1, 0] = dqflags.PIXEL["UNRELIABLE_FLAT"]
    flat_field.run(a, flat, fdq, np.zeros((2, 3), np.float32))
    bad = np.uint32(dqflags.DO_NOT_USE | NO_FLAT)
    assert (a.dq[0, :3] == bad).all()
    assert a.dq[1, 0] == dqflags.PIXEL["UNRELIABLE_FLAT"]
    # DO_NOT_USE pixels become NaN in every array (match_nans_and_flags)
    assert np.isnan(a.data[0]).all() and np.isnan(a.err[0]).all() and np.isnan(a.var_flat[0]).all()
    assert a.data[1, 0] == np.float32(5.0) and a.data[1, 2] == np.float32(5.0)


def test_existing_do_not_use_becomes_nan():
    a = _arrays()
    a.dq[1, 1] = dqflags.DO_NOT_USE | dqflags.PIXEL["DEAD"]
    flat_field.run(a, np.ones((2, 3), np.float32), np.zeros((2, 3), np.uint32), np.zeros((2, 3), np.float32))
    assert np.isnan(a.data[1, 1]) and np.isnan(a.var_poisson[1, 1])
    assert np.isfinite(np.delete(a.data.ravel(), 4)).all()


def test_in_place_path_is_bit_identical_to_jwsts_expressions_and_copy_keeps_inputs():
    """``copy=False`` (image2: the flat used as work space) and ``copy=True`` give the same bits as
    jwst's expressions written out with full-size temporaries, on a cube with a 2-D flat; with
    ``copy=True`` the caller's flat arrays are left as they were."""
    rng = np.random.default_rng(3)
    f32 = np.float32
    shape = (2, 40, 50)

    def arrays():
        r = np.random.default_rng(4)
        return SimpleNamespace(data=r.normal(100, 30, shape).astype(f32), dq=(r.random(shape) < 0.02).astype(np.uint32),
                               err=r.uniform(1, 2, shape).astype(f32), var_poisson=r.uniform(1, 4, shape).astype(f32),
                               var_rnoise=r.uniform(0.5, 1, shape).astype(f32), var_flat=None)

    flat = rng.uniform(0.7, 1.3, shape[1:]).astype(f32)
    flat[3, 4], flat[5, 6] = np.nan, 0.0
    fdq = np.zeros(shape[1:], np.uint32)
    fdq[7, 8] = NO_FLAT
    ferr = rng.uniform(0.001, 0.02, shape[1:]).astype(f32)
    keep = (flat.copy(), fdq.copy(), ferr.copy())

    ref = arrays()  # jwst 3.0 apply_flat_field, as written there
    f, d = flat.copy(), fdq.copy()
    d[np.isnan(f) | (f == 0)] |= np.uint32(dqflags.DO_NOT_USE | NO_FLAT)
    d[(d & NO_FLAT) != 0] |= np.uint32(dqflags.DO_NOT_USE)
    f[(d & dqflags.DO_NOT_USE) != 0] = 1.0
    ref.data /= f
    ref.var_flat = ref.data**2 / f**2 * ferr**2
    ref.var_poisson /= f**2
    ref.var_rnoise /= f**2
    ref.err = np.sqrt(ref.var_poisson + ref.var_rnoise + ref.var_flat)
    ref.dq = ref.dq | d
    bad = np.zeros(shape, bool)
    for n in ("data", "err", "var_rnoise", "var_poisson", "var_flat"):
        bad |= np.isnan(getattr(ref, n))
    bad |= (ref.dq & dqflags.DO_NOT_USE) != 0
    ref.dq[bad] |= np.uint32(dqflags.DO_NOT_USE)
    for n in ("data", "err", "var_rnoise", "var_poisson", "var_flat"):
        getattr(ref, n)[bad] = np.nan

    copied, in_place = arrays(), arrays()
    flat_field.run(copied, flat, fdq, ferr)
    for got, given in zip((flat, fdq, ferr), keep):
        np.testing.assert_array_equal(got, given)  # copy=True: the caller's arrays untouched
    flat_field.run(in_place, flat.copy(), fdq.copy(), ferr.copy(), copy=False)
    assert bad.sum() > 0.01 * bad.size  # the NaN/DO_NOT_USE matching has work to do
    for a in (copied, in_place):
        for n in ("data", "err", "var_rnoise", "var_poisson", "var_flat", "dq"):
            assert getattr(a, n).tobytes() == getattr(ref, n).tobytes(), n
