"""The row-vectorised parts of the ramp-fit kernel against independent references.

The kernel computes the median first-difference rate with a sorting network
across a block of pixels and fits clean pixels (no DQ flag) in a vectorised
path; both must give exactly what the per-pixel definition gives.
"""

import itertools
import warnings

import numpy as np
import pytest

from webbflow import dqflags as F
from webbflow.ramp import Ramp, Readout
from webbflow.steps import ramp_fit
from webbflow.steps._networks import sorting_network
from webbflow.steps._ramp_numba import BLOCK, _block_medians, row_network


@pytest.mark.parametrize("n", range(0, 11))
def test_sort_network_sorts_every_zero_one_input(n):
    # zero-one principle: a comparator network sorting all 0/1 inputs sorts everything
    pairs = sorting_network(n)
    for bits in itertools.product((0, 1), repeat=n):
        a = list(bits)
        for lo, hi in pairs:
            if a[lo] > a[hi]:
                a[lo], a[hi] = a[hi], a[lo]
        assert a == sorted(bits)


@pytest.mark.parametrize("n", [1, 2, 9, 16, 23, 40])
def test_row_network_sorts_random_rows(n):
    rng = np.random.default_rng(n)
    ops, final = row_network(n)
    assert ops.shape[1] == 4 and sorted(final) == sorted(set(final))
    vals = rng.integers(-5, 5, (n, 50)).astype(float)     # many ties
    buf = np.full((n + 2, 50), np.nan)
    buf[:n] = vals
    for a, b, lo, hi in ops:
        assert len({a, b, lo, hi}) == 4                       # out of place
        buf[lo], buf[hi] = np.minimum(buf[a], buf[b]), np.maximum(buf[a], buf[b])
    np.testing.assert_array_equal(buf[final], np.sort(vals, axis=0))


def _numpy_median_rates(data, gdq, tgroup):
    """The median-rate definition, plainly in numpy: (nints, ngroups, nx) -> (nints, nx)."""
    loc = data.astype(np.float64) / tgroup
    loc[(gdq & (F.DO_NOT_USE | F.SATURATED)) != 0] = np.nan
    diff = np.diff(loc, axis=1)
    diff[(gdq[:, 1:] & F.JUMP_DET) != 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)             # all-NaN slices
        med = np.nanmedian(diff, axis=1)
    none = np.isnan(diff).all(axis=1)
    med[none] = loc[:, 0][none]                              # stcal's fallback: the first rate
    return med


@pytest.mark.parametrize("ngroups", [2, 3, 4, 5, 8, 10, 13])
def test_block_medians_equal_numpy_nanmedian(ngroups):
    rng = np.random.default_rng(100 + ngroups)
    nints, nx = 3, 300
    data = rng.normal(1000.0, 300.0, (nints, ngroups, 1, nx)).astype(np.float32)
    data[..., :40] = np.round(data[..., :40] / 200.0) * 200.0        # ties
    data[rng.random(data.shape) < 0.03] = np.nan
    gdq = np.zeros(data.shape, np.uint8)
    r = rng.random(data.shape)
    gdq[r < 0.15] |= F.JUMP_DET
    gdq[(r > 0.5) & (r < 0.6)] |= F.DO_NOT_USE
    gdq[(r > 0.7) & (r < 0.8)] |= F.SATURATED
    gdq[..., 290:] = F.DO_NOT_USE                                   # nothing usable
    gdq[:, 1:, :, 280:290] = F.JUMP_DET                             # only the first rate
    gdq[:, 0, :, 280:290] = 0
    data[:, 0, :, 280:290] = 500.0
    tgroup = 10.737
    ops, final = row_network(ngroups - 1)
    loc = np.empty((ngroups, BLOCK))
    buf = np.empty((ngroups + 1, BLOCK))
    cnt = np.empty(BLOCK, np.int64)
    got = np.empty((nints, nx))
    for i in range(nints):
        for x0 in range(0, nx, BLOCK):
            w = min(BLOCK, nx - x0)
            out = np.empty(BLOCK)
            _block_medians(data, gdq, i, 0, x0, w, tgroup, ops, final, loc, buf, cnt, out)
            got[i, x0:x0 + w] = out[:w]
    want = _numpy_median_rates(data[:, :, 0], gdq[:, :, 0], tgroup)
    assert np.isnan(want[:, 290:]).all()
    np.testing.assert_array_equal(want[:, 280:290], 500.0 / tgroup)
    np.testing.assert_array_equal(got, want)                        # bit for bit, NaN where NaN


def test_clean_fast_path_equals_per_pixel_path():
    # A PERSISTENCE flag changes neither the segments nor the median rate, but
    # sends the pixel through the per-pixel code instead of the vectorised path.
    rng = np.random.default_rng(7)
    nints, ngroups, ny, nx = 2, 7, 3, 300
    rate = rng.uniform(-2.0, 400.0, (ny, nx))
    t = np.arange(ngroups)[None, :, None, None] * 10.0
    data = (rng.uniform(0, 500, (nints, 1, ny, nx)) + rate * t
            + rng.normal(0, 10, (nints, ngroups, ny, nx))).astype(np.float32)
    data[0, 3, 1, 5] = np.nan                                       # NaN in a clean ramp
    ramp = Ramp.from_uncal(data)
    ramp.average_dark_current = rng.uniform(0, 0.3, (ny, nx)).astype(np.float32)
    ro = Readout(nints=nints, ngroups=ngroups, nframes=1, tframe=10.0, tgroup=10.0)
    gain = rng.uniform(1.5, 2.5, (ny, nx)).astype(np.float32)
    rn = rng.uniform(5, 15, (ny, nx)).astype(np.float32)
    _, clean = ramp_fit.run(ramp, ro, gain, rn)
    ramp.groupdq[1, 2] = F.PERSISTENCE
    _, flagged = ramp_fit.run(ramp, ro, gain, rn)
    for name in ("data", "var_poisson", "var_rnoise", "err"):
        for a, b in ((clean.rate, flagged.rate), (clean.rateints, flagged.rateints)):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert np.isfinite(clean.rate.data).sum() == ny * nx
    assert (clean.rate.dq == 0).all() and (flagged.rate.dq == F.PERSISTENCE).all()
    np.testing.assert_allclose(clean.rate.data, rate, atol=5.0)
