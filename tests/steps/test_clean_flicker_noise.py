"""clean_flicker_noise (jwst 3.0) on hand-built ramps: stripes removed, sources and group 0 kept, jwst's refusals."""

import logging

import numpy as np
import pytest

from webbflow import dqflags as F
from webbflow.steps import clean_flicker_noise as cfn

NY, NX, NG = 64, 512, 5
RATE_STEP = 40.0  # DN per group of the flat background


def _striped_ramp(make_ramp, seed=3, nints=2):
    """Flat background + a bright square source + white noise + a different row stripe in every group."""
    rng = np.random.default_rng(seed)
    signal = np.full((NY, NX), RATE_STEP)
    signal[20:26, 40:46] += 2000.0
    groups = np.cumsum(np.broadcast_to(signal, (nints, NG, NY, NX)), axis=1)
    # 1/f: whole rows, per group, below the white noise as in real data (jwst's clip at n_sigma of the
    # whole difference's scatter would drop rows whose stripe alone is beyond it)
    stripes = np.cumsum(rng.normal(0, 3.0, (nints, NG, NY, 1)), axis=1)
    noise = np.cumsum(rng.normal(0, 4.0, (nints, NG, NY, NX)), axis=1)
    return make_ramp(groups + stripes + noise), groups, stripes


def _mask():
    mask = np.ones((NY, NX), bool)
    mask[18:28, 38:48] = False
    return mask


def test_row_medians_are_numpys_masked_medians():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 5, (16, 2048)).astype(np.float32)
    mask = rng.random(image.shape) > 0.3
    mask[4] = False  # a row without background: 0, as jwst fills it
    for channels in (1, 4):
        blocks = np.split(np.ma.array(image, mask=~mask), channels, axis=1)
        expect = np.concatenate([np.broadcast_to(np.ma.filled(np.ma.median(b, axis=1, keepdims=True), 0.0), b.shape)
                                 for b in blocks], axis=1)
        got = np.repeat(cfn._row_medians(image, mask, channels), 2048 // channels, axis=1)
        np.testing.assert_array_equal(image - got, image - expect)
        assert np.all(got[4] == 0)


def test_stripes_removed_source_and_first_group_kept(make_ramp):
    ramp, groups, stripes = _striped_ramp(make_ramp)
    first = ramp.data[:, 0].copy()
    skipped = cfn.clean_integrations(ramp.data, ramp.groupdq, _mask())
    assert skipped == 0
    np.testing.assert_array_equal(ramp.data[:, 0], first)
    # each group difference: its row-to-row stripes (3 DN) are gone to within the row-median noise
    # (1.25 x 4 DN / sqrt(~500 px) ~ 0.22 DN); the level common to all rows is jwst's background, kept
    diff_resid = np.diff(ramp.data, axis=1) - np.diff(groups, axis=1)
    after = np.mean(np.std(np.median(diff_resid, axis=-1), axis=-1))
    before = np.mean(np.std(np.diff(stripes, axis=1), axis=-2))
    print(f"row-to-row offsets of the differences: {before:.2f} DN before, {after:.3f} DN after")
    assert after < 0.2 * before
    # the source's signal is untouched beyond that noise
    src = (np.diff(ramp.data, axis=1) - np.diff(groups, axis=1))[..., 20:26, 40:46]
    assert abs(np.mean(src)) < 1.0


def test_jump_and_do_not_use_groups_leave_the_fit(make_ramp):
    # small jumps (inside the clipping range) in most of row 10 at group 2, flagged JUMP_DET or
    # DO_NOT_USE: they must not pull that row's median, or the rest of the row would be cleaned 8 DN low
    for flag in (F.JUMP_DET, F.DO_NOT_USE):
        ramp, groups, _ = _striped_ramp(make_ramp, nints=1)
        ramp.data[0, 2:, 10, :400] += 8.0
        ramp.groupdq[0, 2, 10, :400] = flag
        cfn.clean_integrations(ramp.data, ramp.groupdq, _mask())
        d = np.diff(ramp.data[0], axis=0) - np.diff(groups[0], axis=0)
        rest = np.median(d[1, 10, 400:]) - np.median(d[1, 11:], axis=-1).mean()  # vs the other rows
        assert abs(rest) < 1.5, flag


def test_per_integration_mask_and_empty_difference(make_ramp, caplog):
    ramp, _, _ = _striped_ramp(make_ramp)
    mask = np.stack([_mask(), np.zeros((NY, NX), bool)])  # no background at all in integration 2
    second = ramp.data[1].copy()
    with caplog.at_level(logging.WARNING, logger="webbflow.steps.clean_flicker_noise"):
        skipped = cfn.clean_integrations(ramp.data, ramp.groupdq, mask)
    assert skipped == NG - 1
    np.testing.assert_array_equal(ramp.data[1], second)
    assert "No usable data in integration 2" in caplog.text


def test_background_mask_drops_sources_nan_and_zero():
    rng = np.random.default_rng(1)
    rate = rng.normal(1.0, 0.1, (NY, NX)).astype(np.float32)
    rate[20:26, 40:46] = 50.0
    rate[0, 0], rate[0, 1] = np.nan, 0.0
    mask = cfn.background_mask(rate)
    assert not mask[20:26, 40:46].any() and not mask[0, 0] and not mask[0, 1]
    # 2-sigma upper and 3-sigma lower clip of a normal background: ~2.4 % of it masked
    assert 0.95 < mask.mean() < 0.99
    cube = np.stack([rate, rate])
    cube[1, 5, 5] = 50.0
    assert cfn.background_mask(cube, single_mask=False).shape == (2, NY, NX)
    assert not cfn.background_mask(cube)[5, 5]


def test_fft_left_to_nirspec_as_jwst(make_ramp, readout_for):
    ramp, _, _ = _striped_ramp(make_ramp)
    before = ramp.data.copy()
    status = cfn.run(ramp, readout_for(ramp), np.full((NY, NX), 2.0), np.full((NY, NX), 10.0),
                     exp_type="NRC_IMAGE", fit_method="fft")
    assert status == "FAILED"
    np.testing.assert_array_equal(ramp.data, before)


@pytest.mark.parametrize("subarray, nx, expect", [("FULL", 2048, 4), ("SUB256", 256, 1), ("FULL", 256, 1)])
def test_fit_by_channel_only_on_full_frames(subarray, nx, expect):
    assert cfn.channels_for(True, subarray, nx) == expect
    assert cfn.channels_for(False, subarray, nx) == 1


@pytest.mark.parametrize("n", [1, 2, 7, 129, 1000, 250_001])
def test_clipped_stats_from_one_sort_are_astropys(n):
    # the fast statistics must be astropy's floats exactly (jwst's mask thresholds come from them);
    # float32-valued data with outliers, as the group differences are
    rng = np.random.default_rng(n)
    x = rng.normal(3.0, 12.0, n)
    x[rng.random(n) < 0.05] += rng.uniform(50, 5e3)
    x = x.astype(np.float32).astype(np.float64)
    assert cfn._sorted_clipped_stats(x, np.sort(x)) == tuple(cfn._clipped_stats(x))


@pytest.mark.parametrize("n", [2, 7, 129, 1000, 250_001])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_fast_clipped_stats_within_their_bound_of_astropys(n, offset):
    # the sums over the sorted values (any order) give astropy's median and a σ within the bound they
    # report, also with a mean far from zero (the cancellation the bound must cover) and big outliers
    rng = np.random.default_rng(n)
    x = rng.normal(3.0 + offset, 12.0, n)
    x[rng.random(n) < 0.05] += rng.uniform(50, 5e6)
    x = x.astype(np.float32).astype(np.float64)
    found = cfn._fast_clipped_stats(np.sort(x))
    _, median, sigma = cfn._clipped_stats(x)
    assert found is not None
    assert found[0] == median
    assert 0 < found[2] < 1e-9 * sigma
    assert abs(found[1] - sigma) <= found[2]


def test_constant_values_take_the_exact_path():
    # zero variance: no bound can be promised, astropy's numbers are used
    image = np.full((16, 16), 5.0, np.float32)
    mask = np.ones(image.shape, bool)
    assert cfn._fast_clipped_stats(np.sort(image.ravel()).astype(np.float64)) is None
    expect = mask.copy()
    cfn._clip_with_astropy(image.astype(np.float64), expect, 3.0, 2.0, False, True)
    cfn.clip_to_background(image, mask, 3.0, 2.0, lower_half_only=True)
    np.testing.assert_array_equal(mask, expect)


@pytest.mark.parametrize("wide_bound", [False, True])
@pytest.mark.parametrize("lower_half_only", [False, True])
@pytest.mark.parametrize("fit_histogram", [False, True])
def test_clip_to_background_is_jwsts(lower_half_only, fit_histogram, wide_bound, monkeypatch):
    # one sort + merges (clip_to_background) against jwst's formulation on astropy (_clip_with_astropy);
    # wide_bound: the fast σ claims an error of 1 % of σ, so values lie within its reach of the bounds and
    # the exact path (numpy's summation order) must take over
    if wide_bound:
        window_sigma = cfn._window_sigma
        monkeypatch.setattr(cfn, "_window_sigma", lambda acc, m: (window_sigma(acc, m)[0], 0.01 * window_sigma(acc, m)[0]))
        calls = []
        center_sigma = cfn._center_sigma
        monkeypatch.setattr(cfn, "_center_sigma", lambda *a: calls.append(1) or center_sigma(*a))
    rng = np.random.default_rng(7)
    image = rng.normal(10.0, 4.0, (128, 256)).astype(np.float32)
    image[40:50, 60:90] += 300.0  # a source
    mask = rng.random(image.shape) > 0.1
    fast, slow = mask.copy(), mask.copy()
    kept = cfn.clip_to_background(image, fast, 3.0, 2.0, fit_histogram, lower_half_only)
    cfn._clip_with_astropy(image.astype(np.float64), slow, 3.0, 2.0, fit_histogram, lower_half_only)
    assert 0.5 < fast.mean() < mask.mean()  # it clips something
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(kept, np.sort(image[fast]).astype(np.float64))
    if wide_bound:
        assert calls
    # the work arrays of a thread, left holding a larger image's values: the same pixels and values
    work = cfn._Workspace()
    cfn.clip_to_background(rng.normal(0.0, 1.0, (200, 300)).astype(np.float32), np.ones((200, 300), bool),
                           3.0, 2.0, lower_half_only=True, work=work)
    reused = mask.copy()
    again = cfn.clip_to_background(image, reused, 3.0, 2.0, fit_histogram, lower_half_only, work=work)
    np.testing.assert_array_equal(reused, fast)
    np.testing.assert_array_equal(again, kept)


@pytest.mark.parametrize("band", [(-np.inf, np.inf), (-1.0, 1.0), (0.5, 3.0), (-3.0, -0.5), (0.0, 0.0)])
def test_row_medians_are_numpys_whatever_the_band(band):
    # the band only chooses which values are selected from: the medians are numpy's, including ties
    # and even counts, whether the middle ranks fall inside the band, below it or above it
    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 2.0, (300, 64)).astype(np.float32)
    image[::3] = np.round(image[::3])
    mask = rng.random(image.shape) > 0.2
    mask[7] = False  # a row without background: 0
    mask[8, 1:] = False  # one value
    image[9, 3] = np.nan  # NaN: NaN, as numpy
    out = np.empty((300, 2), np.float32)
    cfn._row_median_kernel(image, mask, 32, out, *band)
    expect = [[np.median(row[h * 32:(h + 1) * 32][m[h * 32:(h + 1) * 32]]) if m[h * 32:(h + 1) * 32].any() else 0.0
               for h in range(2)] for row, m in zip(image, mask)]
    np.testing.assert_array_equal(out, np.array(expect, np.float32))
