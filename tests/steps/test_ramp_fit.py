"""Ramp fitting (OLS_C semantics) on hand-built ramps with hand-computed answers."""

import numpy as np
import pytest

from webbflow import dqflags as F
from webbflow.ramp import Ramp, Readout
from webbflow.steps import ramp_fit

TG = 10.0          # group = frame time (s), nframes = 1
GAIN = 2.0         # e-/DN
RN_CDS = 10.0      # DN -> single-read noise 10*2/sqrt(2) e-, i.e. 50 DN^2 per read


def _fit(data, gdq=None, pixeldq=None, zeroframe=None, dark=None, gain=GAIN, **kw):
    data = np.asarray(data, np.float32)
    if data.ndim == 1:
        data = data[None, :, None, None]
    elif data.ndim == 2:
        data = data[:, :, None, None]
    nints, ngroups, ny, nx = data.shape
    ramp = Ramp.from_uncal(data)
    if gdq is not None:
        ramp.groupdq[...] = np.asarray(gdq, np.uint8).reshape(data.shape)
    if pixeldq is not None:
        ramp.pixeldq[...] = pixeldq
    if zeroframe is not None:
        ramp.zeroframe = np.asarray(zeroframe, np.float32).reshape(nints, ny, nx)
    if dark is not None:
        ramp.average_dark_current = np.full((ny, nx), dark, np.float32)
    ro = Readout(nints=nints, ngroups=ngroups, nframes=1, tframe=TG, tgroup=TG)
    status, res = ramp_fit.run(ramp, ro, np.full((ny, nx), gain, np.float32),
                               np.full((ny, nx), RN_CDS, np.float32), **kw)
    assert status == "COMPLETE"
    return res


def _var_r(n):
    """Read-noise variance (DN/s)^2 of an n-group segment: 12 rn^2 / ((n^3 - n) tg^2)."""
    return 12.0 * 50.0 / ((n**3 - n) * TG**2)


def test_clean_linear_ramp_slope_and_variances():
    res = _fit(100.0 * np.arange(5), dark=0.5)
    r = res.rate
    assert r.data[0, 0] == pytest.approx(10.0, rel=1e-6)
    assert r.var_rnoise[0, 0] == pytest.approx(0.05, rel=1e-5)          # 12*50/(120*100)
    assert r.var_poisson[0, 0] == pytest.approx(10.5 / (TG * GAIN * 4), rel=1e-5)
    assert r.err[0, 0] == pytest.approx(np.sqrt(0.05 + 10.5 / 80), rel=1e-5)
    assert r.dq[0, 0] == 0
    assert res.rateints.data.shape == (1, 1, 1)
    assert res.rateints.data[0, 0, 0] == pytest.approx(10.0, rel=1e-6)


def test_jump_splits_ramp_and_combines_with_inverse_rnoise_weights():
    data = [0, 100, 200, 700, 900, 1100]          # 10 DN/s, jump, 20 DN/s
    gdq = [0, 0, 0, F.JUMP_DET, 0, 0]
    r = _fit(data, gdq).rate
    # two 3-group segments with equal var_r -> plain mean of 10 and 20
    assert r.data[0, 0] == pytest.approx(15.0, rel=1e-6)
    assert r.var_rnoise[0, 0] == pytest.approx(_var_r(3) / 2, rel=1e-5)
    # median rate of the unflagged differences [10, 10, 20, 20] = 15
    vp_seg = 15.0 / (TG * GAIN * 2)
    assert r.var_poisson[0, 0] == pytest.approx(vp_seg / 2, rel=1e-5)
    assert r.dq[0, 0] == F.JUMP_DET


def test_unequal_segments_weighted_by_rnoise_not_total_variance():
    data = [0, 100, 200, 300, 1000, 1200]
    gdq = [0, 0, 0, 0, F.JUMP_DET, 0]
    r = _fit(data, gdq).rate
    # segments [0, 4) at 10 DN/s and [4, 6) (led by the JUMP group) at 20 DN/s;
    # stcal >= 1.19 weights them by 1/var_rnoise only: (10*10 + 20*1) / 11
    w1, w2 = 1 / _var_r(4), 1 / _var_r(2)
    assert (w1, w2) == pytest.approx((10.0, 1.0))
    assert r.data[0, 0] == pytest.approx((10.0 * w1 + 20.0 * w2) / (w1 + w2), rel=1e-6)
    assert r.var_rnoise[0, 0] == pytest.approx(1 / 11, rel=1e-5)


def test_saturation_after_group_3_fits_unsaturated_groups():
    data = 100.0 * np.arange(10)
    data[4:] = 60000.0
    gdq = [0, 0, 0, 0] + [F.SATURATED] * 6
    res = _fit(data, gdq)
    r = res.rate
    assert r.data[0, 0] == pytest.approx(10.0, rel=1e-6)
    assert r.var_rnoise[0, 0] == pytest.approx(_var_r(4), rel=1e-5)
    assert r.var_poisson[0, 0] == pytest.approx(10.0 / (TG * GAIN * 3), rel=1e-5)
    assert r.dq[0, 0] == F.SATURATED                  # partial saturation keeps a slope
    assert res.rateints.dq[0, 0, 0] == F.SATURATED


def test_one_group_ramp():
    r = _fit([250.0]).rate
    t1 = (1 + 1) * TG / 2                              # one-group time
    assert r.data[0, 0] == pytest.approx(250.0 / t1, rel=1e-6)
    assert r.var_rnoise[0, 0] == pytest.approx(2 * 50.0 / t1**2, rel=1e-5)
    assert r.var_poisson[0, 0] == pytest.approx((250.0 / t1) / (t1 * GAIN), rel=1e-5)


def test_two_group_ramp():
    r = _fit([40.0, 140.0]).rate
    assert r.data[0, 0] == pytest.approx(10.0, rel=1e-6)
    assert r.var_rnoise[0, 0] == pytest.approx(2 * 50.0 / TG**2, rel=1e-5)
    assert r.var_poisson[0, 0] == pytest.approx(10.0 / (TG * GAIN), rel=1e-5)


def test_zeroframe_used_only_without_one_group_suppression():
    data = np.full(4, 60000.0)
    gdq = [F.SATURATED] * 4
    r = _fit(data, gdq, zeroframe=[300.0], suppress_one_group=False).rate
    assert r.data[0, 0] == pytest.approx(300.0 / TG, rel=1e-6)   # ZEROFRAME / frame time
    assert r.var_rnoise[0, 0] == pytest.approx(2 * 50.0 / TG**2, rel=1e-5)
    assert r.var_poisson[0, 0] == pytest.approx((300.0 / TG) / (TG * GAIN), rel=1e-5)
    assert r.dq[0, 0] == F.SATURATED
    r = _fit(data, gdq, zeroframe=[300.0], suppress_one_group=True).rate
    assert np.isnan(r.data[0, 0])
    assert r.dq[0, 0] == F.SATURATED | F.DO_NOT_USE
    # a zero ZEROFRAME value means "not available"
    r = _fit(data, gdq, zeroframe=[0.0], suppress_one_group=False).rate
    assert np.isnan(r.data[0, 0])


def test_one_good_group_suppressed():
    gdq = [0, F.SATURATED, F.SATURATED, F.SATURATED]
    data = [100.0, 6e4, 6e4, 6e4]
    r = _fit(data, gdq, suppress_one_group=True).rate
    assert np.isnan(r.data[0, 0])
    r = _fit(data, gdq, suppress_one_group=False).rate
    assert r.data[0, 0] == pytest.approx(100.0 / TG, rel=1e-6)    # 0th-group time = tframe (nf=1)


def test_do_not_use_and_bad_gain_pixels():
    data = np.tile(100.0 * np.arange(5, dtype=np.float32)[None, :, None, None], (1, 1, 1, 3))
    pdq = np.array([[F.DO_NOT_USE | F.DEAD, 0, 0]], np.uint32)
    gain = np.array([[GAIN, 0.0, GAIN]], np.float32)
    ramp = Ramp.from_uncal(data)
    ramp.pixeldq[...] = pdq
    ro = Readout(nints=1, ngroups=5, tframe=TG, tgroup=TG)
    _, res = ramp_fit.run(ramp, ro, gain, np.full((1, 3), RN_CDS, np.float32))
    r = res.rate
    assert np.isnan(r.data[0, 0]) and np.isnan(r.data[0, 1])
    assert r.data[0, 2] == pytest.approx(10.0, rel=1e-6)
    assert r.dq[0, 0] == F.DO_NOT_USE | F.DEAD
    assert r.dq[0, 1] == F.DO_NOT_USE | F.NO_GAIN_VALUE
    assert r.var_poisson[0, 0] == 0 and r.var_rnoise[0, 1] == 0 and r.err[0, 0] == 0


def test_all_saturated():
    res = _fit(np.full(5, 6e4), [F.SATURATED] * 5)
    assert np.isnan(res.rate.data[0, 0])
    assert res.rate.dq[0, 0] == F.SATURATED | F.DO_NOT_USE
    assert res.rate.err[0, 0] == 0
    assert np.isnan(res.rateints.data[0, 0, 0])


def test_multi_integration_combination():
    d0 = 100.0 * np.arange(5)                       # 10 DN/s, 5 good groups
    d1 = 200.0 * np.arange(5)                       # 20 DN/s, saturated after group 2
    d1[3:] = 6e4
    gdq = np.zeros((2, 5), np.uint8)
    gdq[1, 3:] = F.SATURATED
    res = _fit(np.stack([d0, d1]), gdq)
    w0, w1 = 1 / _var_r(5), 1 / _var_r(3)
    assert res.rate.data[0, 0] == pytest.approx((10 * w0 + 20 * w1) / (w0 + w1), rel=1e-6)
    assert res.rate.var_rnoise[0, 0] == pytest.approx(1 / (w0 + w1), rel=1e-5)
    # Poisson variance uses the median rate averaged over integrations: (10 + 20) / 2
    p = 15.0 / (TG * GAIN)
    assert res.rate.var_poisson[0, 0] == pytest.approx(1 / (4 / p + 2 / p), rel=1e-5)
    np.testing.assert_allclose(res.rateints.data[:, 0, 0], [10.0, 20.0], rtol=1e-6)
    assert list(res.rateints.dq[:, 0, 0]) == [0, F.SATURATED]
    assert res.rate.dq[0, 0] == F.SATURATED


def test_statistics_of_simulated_ramps():
    rng = np.random.default_rng(42)
    nints, ngroups, n = 1, 10, 64
    tg, gain, rn_cds = 10.73677, 2.0, 10.0
    truth = 0.2                                           # DN/s: read-noise dominated
    elec = rng.poisson(truth * tg * gain, (nints, ngroups, n, n)).cumsum(axis=1) / gain
    data = (elec + rng.normal(0, rn_cds / np.sqrt(2), elec.shape)).astype(np.float32)
    ramp = Ramp.from_uncal(data)
    ro = Readout(nints=nints, ngroups=ngroups, tframe=tg, tgroup=tg)
    _, res = ramp_fit.run(ramp, ro, np.full((n, n), gain, np.float32),
                          np.full((n, n), rn_cds, np.float32))
    z = (res.rate.data - truth) / res.rate.err
    assert abs(z.mean()) < 0.06
    assert abs(z.std() - 1.0) < 0.05


def test_optional_product_of_a_ramp_with_a_jump():
    # 5 + 10 DN per group, a 400 DN jump at group 4; nframes = 1 -> pedestal factor (1+1)/2 / 1 = 1
    data = 5.0 + 10.0 * np.arange(8)
    data[4:] += 400.0
    gdq = [0, 0, 0, 0, F.JUMP_DET, 0, 0, 0]
    opt = _fit(data, gdq, save_opt=True).opt
    assert opt["slope"].shape == (1, 2, 1, 1) and opt["crmag"].shape == (1, 1, 1, 1)
    # segments [0, 4) and [4, 8) (led by the JUMP group): 10 DN per 10 s group = 1 DN/s each
    np.testing.assert_allclose(opt["slope"][0, :, 0, 0], [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(opt["yint"][0, :, 0, 0], [5.0, 405.0], rtol=1e-5)  # intercepts at group index 0
    np.testing.assert_allclose(opt["var_rnoise"][0, :, 0, 0], [_var_r(4), _var_r(4)], rtol=1e-5)
    np.testing.assert_allclose(opt["weights"][0, :, 0, 0], [1 / _var_r(4), 1 / _var_r(4)], rtol=1e-5)
    assert opt["crmag"][0, 0, 0, 0] == pytest.approx(410.0)      # group 4 - group 3
    assert opt["pedestal"][0, 0, 0] == pytest.approx(5.0 - 1.0 * 1.0, rel=1e-6)
    assert np.all(opt["sigslope"] > 0) and np.all(opt["sigyint"] > 0)


def test_optional_product_leaves_rate_and_rateints_bit_identical():
    """save_opt sends every pixel through the per-pixel path: it must give the clean-path numbers."""
    rng = np.random.default_rng(7)
    data = (rng.normal(0, 5, (2, 6, 8, 300)) + 20.0 * np.arange(6)[None, :, None, None]).astype(np.float32)
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, 3, 2, 5] = F.JUMP_DET
    plain, opt = _fit(data, gdq), _fit(data, gdq, save_opt=True)
    assert plain.opt is None and opt.opt["slope"].shape == (2, 2, 8, 300)
    for prod in ("rate", "rateints"):
        for name in ("data", "dq", "var_poisson", "var_rnoise", "err"):
            np.testing.assert_array_equal(getattr(getattr(plain, prod), name), getattr(getattr(opt, prod), name))
