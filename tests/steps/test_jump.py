"""Two-point-difference jump detection on hand-built ramps and a simulated cube."""

import numpy as np
import pytest

from webbflow import dqflags as F
from webbflow.ramp import Ramp, Readout
from webbflow.steps import _jump_numba as K
from webbflow.steps import jump

# gain 1 and CDS read noise 10 DN: on a flat ramp sigma of a difference is 10,
# so a difference of J DN has ratio J / 10.
RN = 10.0


def _run(data, gdq=None, gain=1.0, **kw):
    data = np.asarray(data, np.float32)
    nints, ngroups, ny, nx = data.shape
    ramp = Ramp.from_uncal(data)
    if gdq is not None:
        ramp.groupdq[...] = gdq
    ro = Readout(nints=nints, ngroups=ngroups, tframe=10.0, tgroup=10.0)
    g = np.broadcast_to(np.asarray(gain, np.float32), (ny, nx))
    status = jump.run(ramp, ro, g, np.full((ny, nx), RN, np.float32), **kw)
    return status, ramp


def _step_ramp(ngroups, jump_group, size):
    d = np.zeros(ngroups, np.float32)
    d[jump_group:] += size
    return d


@pytest.mark.parametrize("n_sat, size, flagged", [
    (0, 45.0, True),    # 5 usable diffs -> 4 sigma
    (2, 45.0, False),   # 3 usable diffs -> 5 sigma (four_group_rejection_threshold)
    (2, 55.0, True),
    (3, 55.0, False),   # 2 usable diffs -> 6 sigma (three_group_rejection_threshold)
    (3, 65.0, True),
])
def test_thresholds_follow_number_of_usable_differences(n_sat, size, flagged):
    ngroups = 6
    data = _step_ramp(ngroups, 2, size)[None, :, None, None]
    gdq = np.zeros(data.shape, np.uint8)
    if n_sat:
        gdq[0, ngroups - n_sat:] = F.SATURATED
    status, ramp = _run(data, gdq, flag_4_neighbors=False)
    assert status == "COMPLETE"
    expected = np.zeros(ngroups, np.uint8)
    expected[ngroups - n_sat:] = F.SATURATED if n_sat else 0
    if flagged:
        expected[2] |= F.JUMP_DET                     # flag on the later group of the difference
    np.testing.assert_array_equal(ramp.groupdq[0, :, 0, 0], expected)


def test_two_jumps_found_iteratively_and_data_untouched():
    d = np.zeros(8, np.float32)
    d[3:] += 300.0
    d[6:] += 80.0
    data = d[None, :, None, None]
    _, ramp = _run(data.copy(), flag_4_neighbors=False)
    assert list(np.flatnonzero(ramp.groupdq[0, :, 0, 0] & F.JUMP_DET)) == [3, 6]
    np.testing.assert_array_equal(ramp.data, data)


def test_neighbours_flagged_not_onto_saturated():
    data = np.zeros((1, 6, 5, 5), np.float32)
    data[0, 3:, 2, 2] = 500.0                         # ratio 50: neighbours flagged
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, 3:, 1, 2] = F.SATURATED                    # the pixel above is saturated
    _, ramp = _run(data, gdq)
    j = (ramp.groupdq[0, 3] & F.JUMP_DET) != 0
    expected = np.zeros((5, 5), bool)
    expected[2, 2] = expected[3, 2] = expected[2, 1] = expected[2, 3] = True
    np.testing.assert_array_equal(j, expected)
    assert ramp.groupdq[0, 3, 1, 2] == F.SATURATED
    assert not (ramp.groupdq[0, [0, 1, 2, 4, 5]] & F.JUMP_DET).any()


@pytest.mark.parametrize("size", [80.0, 20000.0])   # ratio 8 (<10) and 2000 (>1000)
def test_no_neighbours_outside_ratio_window(size):
    data = np.zeros((1, 6, 3, 3), np.float32)
    data[0, 3:, 1, 1] = size
    _, ramp = _run(data)
    j = (ramp.groupdq & F.JUMP_DET) != 0
    assert j.sum() == 1 and j[0, 3, 1, 1]


def test_existing_jump_on_saturated_group_removed_and_bad_gain_flagged():
    data = np.zeros((1, 5, 1, 2), np.float32)
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, 4, 0, 0] = F.SATURATED | F.JUMP_DET
    ramp_gain = np.array([[1.0, 0.0]], np.float32)
    _, ramp = _run(data, gdq, gain=ramp_gain)
    assert ramp.groupdq[0, 4, 0, 0] == F.SATURATED
    assert ramp.pixeldq[0, 1] == F.NO_GAIN_VALUE | F.DO_NOT_USE
    assert ramp.pixeldq[0, 0] == 0


def test_skipped_with_two_groups():
    status, ramp = _run(np.zeros((1, 2, 2, 2), np.float32) + [[[[0]], [[500]]]])
    assert status == "SKIPPED"
    assert not ramp.groupdq.any()


def test_after_jump_flagging():
    d = np.zeros(8, np.float32)
    d[2:] += 1000.0
    _, ramp = _run(d[None, :, None, None], flag_4_neighbors=False,
                   after_jump_flag_dn1=500.0, after_jump_flag_time1=25.0)  # 2 groups of 10 s
    assert list(np.flatnonzero(ramp.groupdq[0, :, 0, 0] & F.JUMP_DET)) == [2, 3, 4]


def test_detection_rate_and_false_positives_on_simulated_ramps():
    rng = np.random.default_rng(7)
    nints, ngroups, n = 1, 10, 64
    tg, gain, rn_cds, rate = 10.73677, 2.0, 10.0, 1.0
    elec = rng.poisson(rate * tg * gain, (nints, ngroups, n, n)).cumsum(axis=1) / gain
    data = (elec + rng.normal(0, rn_cds / np.sqrt(2), elec.shape)).astype(np.float32)
    sigma_dn = np.sqrt(rn_cds**2 + rate * tg / gain)   # noise of one difference in DN
    hit = rng.random((n, n)) < 0.05
    grp = rng.integers(1, ngroups, (n, n))
    amp = rng.uniform(10.5, 100.0, (n, n)) * sigma_dn  # every jump > 10 sigma
    for g in range(1, ngroups):
        data[0, g:][:, hit & (grp == g)] += amp[hit & (grp == g)]
    ramp = Ramp.from_uncal(data)
    ro = Readout(nints=nints, ngroups=ngroups, tframe=tg, tgroup=tg)
    jump.run(ramp, ro, np.full((n, n), gain, np.float32), np.full((n, n), rn_cds, np.float32))
    j = (ramp.groupdq[0] & F.JUMP_DET) != 0
    ys, xs = np.nonzero(hit)
    found = j[grp[ys, xs], ys, xs].mean()
    # clean: no jump in the pixel nor in its 4 neighbours (which may be flagged on purpose)
    near = hit.copy()
    near[1:] |= hit[:-1]; near[:-1] |= hit[1:]; near[:, 1:] |= hit[:, :-1]; near[:, :-1] |= hit[:, 1:]
    false_rate = j[:, ~near].any(axis=0).mean()
    assert found >= 0.99
    assert false_rate < 0.005


# --- the vectorised kernels against their scalar definitions -----------------


@pytest.mark.parametrize("n", range(1, 13))
def test_sorting_network_sorts_every_zero_one_input(n):
    # 0-1 principle: a comparator network sorts all inputs iff it sorts all 0/1 ones
    net = K.sorting_network(n)
    codes = np.arange(2 ** n)
    keys = ((codes[:, None] >> np.arange(n)) & 1).astype(np.float64).T.copy()   # (n, 2**n)
    K._sort_columns(keys, keys.shape[1], net)
    assert np.all(np.diff(keys, axis=0) >= 0)
    np.testing.assert_array_equal(keys.sum(axis=0), np.bitwise_count(codes))


@pytest.mark.parametrize("n", [2, 3, 5, 9, 16, 27, 40])
def test_block_median_equals_numpy_nanmedian(n):
    rng = np.random.default_rng(n)
    w = 333
    vals = np.round(rng.normal(0, 3, (n, w)))          # many ties
    vals[rng.random((n, w)) < 0.3] = np.nan
    vals[:, :5] = np.nan                                 # empty columns -> NaN
    srt = np.where(np.isnan(vals), np.inf, vals)
    cnt = (~np.isnan(vals)).sum(axis=0).astype(np.int64)
    K._sort_columns(srt, w, K.sorting_network(n))
    lo, med = np.empty(w), np.empty(w)
    K._median_columns(srt, cnt, w, lo, med)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(vals, axis=0)
    np.testing.assert_array_equal(med, expected)


def _scalar_detect(data, gdq, gain, rn2, regime):
    """Every pixel through the per-pixel scalar code (the definition of detect)."""
    nints, ngroups, ny, nx = data.shape
    nd = ngroups - 1
    n = nints * nd
    med, sig = np.empty((ny, nx)), np.empty((ny, nx))
    buf = [np.empty(max(n, nints)) for _ in range(5)]
    for y in range(ny):
        for x in range(nx):
            K._detect_pixel(data, gdq, gain, rn2, 1.0, regime, 4.0, 5.0, 6.0, 5, y, x, n, nd,
                            *buf, med, sig)
    return med, sig


@pytest.mark.parametrize("seed, nints, ngroups, regime", [
    (1, 1, 10, K.REGIME_ITERATIVE), (2, 3, 4, K.REGIME_ITERATIVE), (3, 2, 7, K.REGIME_ITERATIVE),
    (4, 1, 12, K.REGIME_SINGLE_PASS), (5, 2, 11, K.REGIME_SINGLE_PASS),
])
def test_vectorised_detect_equals_scalar_code(seed, nints, ngroups, regime):
    rng = np.random.default_rng(seed)
    ny, nx = 9, 70
    data = np.cumsum(rng.normal(20, 8, (nints, ngroups, ny, nx)), axis=1)
    data += np.cumsum((rng.random(data.shape) < 0.05) * rng.uniform(-50, 2000, data.shape), axis=1)
    data = np.round(data / 4) * 4                                   # ties, zero medians
    data[:, :, rng.random((ny, nx)) < 0.05] = rng.choice([0.0, -0.0, 3.0])   # flat pixels
    # +0.0/-0.0 ramps: zero differences of both signs, whose order the network may change
    signed = rng.random((ny, nx)) < 0.1
    data[:, :, signed] = np.where(rng.random((nints, ngroups, signed.sum())) < 0.5, 0.0, -0.0)
    data = data.astype(np.float32)
    data[rng.random(data.shape) < 0.02] = np.nan
    gdq = np.where(rng.random(data.shape) < 0.05, F.DO_NOT_USE, 0).astype(np.uint8)
    gdq[rng.random(data.shape) < 0.02] |= F.JUMP_DET
    sat = rng.integers(2, ngroups + 3, (nints, ny, nx))
    gdq[np.arange(ngroups)[None, :, None, None] >= sat[:, None]] |= F.SATURATED
    gain = rng.uniform(1, 3, (ny, nx)).astype(np.float32)
    rn2 = ((rng.uniform(5, 15, (ny, nx)) * gain) ** 2).astype(np.float32)

    gdq_in = gdq.copy()
    ref_gdq = gdq.copy()
    ref_med, ref_sig = _scalar_detect(data, ref_gdq, gain, rn2, regime)
    n = nints * (ngroups - 1)
    med, sig = np.empty((ny, nx)), np.empty((ny, nx))
    K.detect(data, gdq, gain, rn2, 1.0, regime, 4.0, 5.0, 6.0, 5, K.sorting_network(n),
             K.block_width(n), med, sig)
    new_jumps = ((gdq & F.JUMP_DET) != 0).sum() - ((gdq_in & F.JUMP_DET) != 0).sum()
    assert new_jumps > 20                           # the comparison below is not vacuous
    np.testing.assert_array_equal(gdq, ref_gdq)
    # bit for bit, the sign of zero medians included
    np.testing.assert_array_equal(med.view(np.int64)[np.isfinite(med)],
                                  ref_med.view(np.int64)[np.isfinite(med)])
    np.testing.assert_array_equal(np.isnan(med), np.isnan(ref_med))
    np.testing.assert_array_equal(sig, ref_sig)


def test_per_integration_spares_a_pixel_whose_rate_steps_between_integrations():
    """A time series' bright pixel whose rate rises 15 % halfway (a star stepping onto it): jwst's
    pooled median flags the honest differences after the step (and the remaining ones are biased
    low); ``per_integration`` compares each integration with itself: no false flags, the cosmic ray
    still found."""
    rng = np.random.default_rng(21)
    nints, ngroups, npix = 30, 8, 200
    rate = np.where(np.arange(nints) >= 15, 1150.0, 1000.0)  # DN per group, gain 1
    diffs = rng.poisson(np.broadcast_to(rate[:, None, None], (nints, ngroups - 1, npix))).astype(np.float64)
    diffs += rng.normal(0, RN / np.sqrt(2), (nints, ngroups, npix))[:, 1:] \
        - rng.normal(0, RN / np.sqrt(2), (nints, ngroups, npix))[:, :-1]
    data = np.concatenate([np.zeros((nints, 1, npix)), np.cumsum(diffs, axis=1)], axis=1)[:, :, None, :]
    data[4, 5:, 0, 7] += 2000.0  # a cosmic ray in integration 5, group 6 of pixel 7
    flagged = {}
    for per in (False, True):
        _, ramp = _run(data, flag_4_neighbors=False, per_integration=per)
        flagged[per] = (ramp.groupdq[:, :, 0, :] & F.JUMP_DET) != 0
        assert flagged[per][4, 5, 7]
    after = np.s_[15:, 1:]
    pooled, own = flagged[False][after].mean(), flagged[True][after].mean()
    kept = np.where(flagged[False][15:, 1:], np.nan, diffs[15:])
    print(f"\nflagged after the step: pooled median {pooled:.1%}, per integration {own:.2%}; "
          f"pooled fit's rate {np.nanmean(kept):.1f} DN vs 1150")
    assert pooled > 0.05 and np.nanmean(kept) < 1150.0 - 5 * 34 / np.sqrt(np.isfinite(kept).sum())
    assert own < 0.005  # the 4-sigma false-alarm rate of a two-sided test on 7 differences


def _regions_whole_frame(mask, min_area, keep=None):
    """The snowball search's regions measured as before the block-wise labelling: the whole frame labelled,
    the regions ``keep`` rules out zeroed, regionprops over the frame."""
    import scipy.ndimage
    from skimage import measure

    labels = measure.label(mask)
    if keep is not None:
        boxes = np.array([(s[0].start, s[1].start, s[0].stop, s[1].stop)
                          for s in scipy.ndimage.find_objects(labels)], dtype=np.int64).reshape(-1, 4)
        labels = np.where(np.concatenate([[False], keep(boxes)])[labels], labels, 0)
    return [((float(r.centroid[1]), float(r.centroid[0])), (r.axis_minor_length - 1, r.axis_major_length - 1),
             np.degrees(r.orientation), r.bbox) for r in measure.regionprops(labels) if r.area_filled >= min_area]


@pytest.mark.parametrize("density", [2e-4, 3e-3, 0.05, 0.3])
def test_blockwise_regions_equal_whole_frame_labelling(density):
    # scattered cosmic-ray crosses, blobs with holes (the filled area counts) and regions cut by the
    # edges, sparse to dense: the same regions, in the same order, with the same floats as regionprops
    # (the numba labeller's and the moments' numbers against scikit-image's own)
    from skimage import measure

    rng = np.random.default_rng(7)
    mask = rng.random((300, 280)) < density
    mask |= np.roll(mask, 1, 0) | np.roll(mask, 1, 1)
    for y, x, r in rng.integers((0, 0, 2), (300, 280, 9), size=(6, 3)):
        yy, xx = np.ogrid[:300, :280]
        d2 = (yy - y) ** 2 + (xx - x) ** 2
        mask |= (d2 <= r * r) & (d2 >= (r // 3) ** 2)
    labels, stats = jump.K.label8(mask)
    assert np.array_equal(labels, measure.label(mask))
    props = measure.regionprops(labels)
    assert np.array_equal(stats[:, :5], [(*r.bbox, r.area) for r in props])
    centres = [(40.5, 60.0), (200.0, 250.2)]
    for keep in (None, jump._snowball_candidate(centres, 25, 275)):
        for min_area in (1.0, 5.0, 15.0):  # 15: regions of fewer pixels whose filled area may pass
            ours = jump._regions(mask, min_area, keep)
            assert len(ours) > 0
            assert ours == _regions_whole_frame(mask, min_area, keep)
