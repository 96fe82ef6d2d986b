"""ROEBA (row-by-row, odd/even, by-amplifier 1/f correction from background pixels)."""

import numpy as np
import pytest

from webbflow import dqflags
from webbflow.steps import roeba


def _frames(seed=3, nframes=6, ny=64, nx=2048, sky=100.0, stripes=3.0, own=0.3, noise=1.0):
    """Groups with a sky level, per-amp even/odd offsets, row stripes (common to the amplifiers, plus
    ``own`` rms per amplifier), white noise and a trace that fills amplifiers 1 and 2 in rows 28-40."""
    rng = np.random.default_rng(seed)
    cols = np.arange(nx)
    trace = np.zeros((ny, nx))
    trace[28:41, 100:1900] = 400.0 * np.exp(-0.5 * ((np.arange(28, 41) - 34.0) / 2.0) ** 2)[:, None]
    truth = np.empty((nframes, ny, nx))
    data = np.empty((nframes, ny, nx), np.float32)
    stripe = rng.normal(0, stripes, (nframes, ny, 1)) + rng.normal(0, own, (nframes, ny, 4))
    parity = rng.normal(0, 2.0, (nframes, 4, 2))
    for k in range(nframes):
        truth[k] = (sky + trace) * (k + 1)  # a ramp: the level grows with the group
        amp = cols // 512
        offset = stripe[k][:, amp] + parity[k][amp, cols % 2][None, :]
        data[k] = truth[k] + offset + rng.normal(0, noise, (ny, nx))
    return data, truth, trace


def test_stripes_and_parity_are_removed_and_the_level_kept():
    data, truth, trace = _frames()
    ramp = data[None]  # (1, ngroups, ny, nx)
    mask = roeba.background_mask(ramp, np.zeros(data.shape[1:], np.uint32))
    assert not mask[28:41, 100:1900].any()  # the trace (and its grown edge) is never background
    assert mask.mean() > 0.7
    edges = roeba.amplifier_edges(2048, 0, True)
    assert edges.tolist() == [0, 512, 1024, 1536, 2048]
    before = data - truth
    borrowed, skipped = roeba.correct_frames(data, mask, edges)
    # the rows of the trace (13, grown by up to 2 each side) of amplifiers 1 and 2 have no
    # background: they borrow
    trace_rows = mask.reshape(64, 4, 512).sum(axis=2) < 16
    assert 13 <= trace_rows[:, 1].sum() <= 17 and 13 <= trace_rows[:, 2].sum() <= 17
    assert not trace_rows[:, [0, 3]].any()
    assert (borrowed, skipped) == (6 * trace_rows.sum(), 0)
    after = data - truth
    for name, resid in (("before", before), ("after", after)):
        rows = np.median(resid.reshape(6, 64, 4, 512), axis=3)  # per frame, row, amp
        stripes = rows - np.median(rows, axis=1, keepdims=True)
        if name == "before":
            assert np.std(stripes) > 2.5
        else:
            # measured rows: the median of ~500 unit-noise pixels scatters by ~0.06
            assert np.std(stripes[:, ~trace_rows]) < 0.12
            # borrowed rows keep only the amplifier's own part of the stripe (0.3 rms here)
            assert np.std(stripes[:, trace_rows]) < 0.5
    # the amplifier level is kept: the sky (100-600 DN over the groups) is not subtracted; the
    # correction's median per amplifier is only the mean stripe of the rows that set the level
    # (3 DN rms stripes, ~47 rows: ~0.5 DN)
    assert np.all(np.abs(np.median((after - before).reshape(6, 64, 4, 512), axis=(1, 3))) < 1.5)
    # even/odd: the column-parity difference is gone
    par = after.reshape(6, 64, 4, 256, 2)
    assert np.max(np.abs(np.median(par[..., 0], axis=(1, 3)) - np.median(par[..., 1], axis=(1, 3)))) < 0.1
    # the trace is corrected by its row's stripe, not by itself: its flux is kept
    flux_err = (data - truth)[:, 28:41, 100:1900].mean()
    assert abs(flux_err) < 0.3


def test_rows_without_enough_background_borrow_or_stay():
    data, truth, _ = _frames(nframes=2, own=0.0)
    mask = np.ones(data.shape[1:], bool)
    mask[10, :512] = False  # row 10 of amplifier 0 has no background pixel
    mask[11, :500] = False  # row 11 has 12 < min_pixels
    mask[20, :] = False  # row 20: no amplifier can measure it
    original = data.copy()
    borrowed, skipped = roeba.correct_frames(data, mask, roeba.amplifier_edges(2048, 0, True), odd_even=False,
                                             min_pixels=16)
    assert (borrowed, skipped) == (2 * 2, 2 * 4)
    np.testing.assert_array_equal(data[:, 20], original[:, 20])
    # a common stripe: the borrowed rows are corrected as well as the measured ones
    rows = np.median((data - truth).reshape(2, 64, 4, 512), axis=3)
    stripes = (rows - np.median(rows, axis=1, keepdims=True))[:, [10, 11, 12], 0]
    assert np.max(np.abs(stripes)) < 0.3
    assert np.std((original - truth)[:, 10, :512].mean(axis=1) - (original - truth)[:, 30, :512].mean(axis=1)) > 0


def test_reference_and_dead_pixels_are_never_background():
    data, _, _ = _frames(nframes=2)
    pdq = np.zeros(data.shape[1:], np.uint32)
    pdq[:4, :] = dqflags.REFERENCE_PIXEL
    pdq[30, 3] = dqflags.DO_NOT_USE
    mask = roeba.background_mask(data[None], pdq)
    assert not mask[:4].any() and not mask[30, 3]


def test_one_output_is_one_amplifier_and_zeroframe_zeros_stay():
    assert roeba.amplifier_edges(640, 1408, False).tolist() == [0, 640]
    # a 4-output subarray that starts inside an amplifier (not NIRCam, but the edges must be right)
    assert roeba.amplifier_edges(1000, 300, True).tolist() == [0, 212, 724, 1000]
    data, _, _ = _frames(nframes=1)
    data[0, 5, 7] = 0.0
    roeba.correct_frames(data, np.ones(data.shape[1:], bool), roeba.amplifier_edges(2048, 0, True),
                         keep_zero=True)
    assert data[0, 5, 7] == 0.0


@pytest.mark.parametrize("flip", [False, True])
def test_works_on_flipped_views(flip):
    data, truth, _ = _frames(nframes=2)
    view = data[..., ::-1] if flip else data
    mask = roeba.background_mask(view[None], np.zeros(data.shape[1:], np.uint32))
    roeba.correct_frames(view, mask, roeba.amplifier_edges(2048, 0, True))
    rows = np.median((data - truth).reshape(2, 64, 4, 512), axis=3)
    assert np.std(rows - np.median(rows, axis=1, keepdims=True)) < 0.12


@pytest.mark.parametrize("detector, fastaxis, slowaxis", [("NRCA1", -1, 2), ("NRCA2", 1, -2)])
def test_destripe_image_removes_each_amplifiers_stripes_keeps_sky_and_sources(detector, fastaxis, slowaxis):
    """image2's destripe on a 4-output 256 x 2048 rate: stripes per row and amplifier out, sky and stars kept."""
    from webbflow.ramp import Readout

    rng = np.random.default_rng(7)
    ny, nx, sky = 256, 2048, 0.4
    truth = np.full((ny, nx), sky)
    yy, xx = np.mgrid[:ny, :nx]
    for x0, y0 in rng.uniform((50, 30), (2000, 226), (12, 2)):
        truth += 300.0 * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / 1.5 ** 2)
    # stripes in the detector frame: a row is read by each amplifier in turn, here flipped as the detector reads
    det_stripes = rng.normal(0, 0.05, (ny, 1)) + rng.normal(0, 0.02, (ny, 4))
    stripes = np.repeat(det_stripes, 512, axis=1)
    if fastaxis < 0:
        stripes = stripes[:, ::-1]
    if slowaxis < 0:
        stripes = stripes[::-1]
    noise = rng.normal(0, 0.03, (ny, nx))
    rate = (truth + stripes + noise).astype(np.float32)
    dq = np.zeros((ny, nx), np.uint32)
    dq[:, :4] = dqflags.REFERENCE_PIXEL
    readout = Readout(nints=1, ngroups=1, detector=detector, fastaxis=fastaxis, slowaxis=slowaxis, noutputs=4,
                      substrt1=1, substrt2=1793, subarray="SUBGRISM256")
    roeba.destripe_image(rate, dq, readout)
    left = rate - truth - noise  # the stripe each pixel still has (plus float32 rounding)
    background = truth < sky + 0.01
    for a in range(4):  # per amplifier (512 columns, the same in both flips)
        cols = slice(512 * a, 512 * (a + 1))
        # what is left is the row medians' white-noise error, 1.25 x 0.03 / sqrt(~450) ~ 0.002
        assert np.std(left[:, cols].mean(axis=1)) < 0.1 * np.std(stripes[:, cols].mean(axis=1)), a
    after = rate - truth
    assert abs(np.median(after[background])) < 0.01  # the sky level is kept (the stripes' mean aside)
    stars = truth > sky + 10
    assert abs(np.sum(after[stars]) / np.sum(truth[stars] - sky)) < 2e-3  # sources keep their flux


def _donut_rows(level, seed=21, nints=40, ngroups=8, n=64, read=5.0, ktc=30.0, sky=1.0):
    """One-output subarray ramps with only 12 background columns per row (a bright source masks the
    rest), kTC offsets per pixel and integration, read noise, per-group row stripes (a slow wave
    over the rows plus a white part), a per-group frame offset and a sky ramp; rows 30-33 have no background
    at all.  ROEBA with ``level``; returns what is left in each integration's last-minus-first
    difference beyond the pixels' own read noise: (sum over the source's pixels, per integration),
    (mean over the background pixels), (rows 30-33's mean residual stripe), and the skipped count."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((n, n), bool)
    mask[:, :6] = mask[:, -6:] = True
    mask[30:34] = False
    edges = roeba.amplifier_edges(n, 0, False)
    t = np.arange(ngroups, dtype=float)
    rows = np.arange(n)[:, None]
    # 1/f is red across the rows too: a slow wave (random phase) besides a white part
    phase = rng.uniform(0, 2 * np.pi, (nints, ngroups, 1, 1))
    stripes = (3.0 * np.sin(2 * np.pi * rows / 40.0 + phase) + rng.normal(0, 0.5, (nints, ngroups, n, 1))
               + rng.normal(0, 1.0, (nints, ngroups, 1, 1)))
    own = rng.normal(0, read, (nints, ngroups, n, n))
    clean = rng.normal(0, ktc, (nints, 1, n, n)) + sky * t[None, :, None, None] + own
    data = (clean + stripes).astype(np.float32)
    _, skipped = roeba.correct_frames(data, mask, edges, min_pixels=4, level=level)
    left = (data - clean)[:, -1] - (data - clean)[:, 0]  # the correction's error in last - first
    source = ~mask
    source[30:34] = False
    return (left[:, source].sum(axis=1), ((data[:, -1] - data[:, 0])[:, mask]).mean(axis=1),
            left[:, 30:34, 6:-6].mean(axis=(1, 2)), skipped)


def test_integration_level_averages_the_rows_and_sets_every_groups_level():
    """``level="integration"``: a source's last-minus-first difference (what a bright pixel's slope is
    made of) keeps neither the per-group frame offset nor one background pixel's read noise per row.
    ROEBA's per-group median of a row's 12 background pixels picks the same pixel in every group (the
    kTC offsets, 30 DN, order them; 5 DN read noise) and keeps each group's level, so a 52 x 60 pixel
    source sums both."""
    group, bg_group, _, skipped_group = _donut_rows("group")
    integ, bg_integ, gap, skipped_integ = _donut_rows("integration")
    # the floor: each row's correction of last - first is a difference of two clipped means of 12
    # pixels (5 DN each), summed over the row's 52 source pixels and 60 rows
    floor = 52 * np.sqrt(60) * np.sqrt(2) * 5.0 / np.sqrt(12)
    print(f"\nsource sum of last - first, left by ROEBA: group {np.std(group):.0f}, integration "
          f"{np.std(integ):.0f} (floor {floor:.0f})")
    assert np.std(integ) < 1.3 * floor
    assert np.std(integ) < 0.4 * np.std(group)
    # the background's rate (sky 1 DN per group) is removed with the integration's level, kept per group
    assert abs(np.mean(bg_integ)) < 0.3 and abs(np.mean(bg_group) - 7.0) < 1.0
    # rows without background: left as they are per group, interpolated per integration (the slow
    # wave is what neighbouring rows share)
    gap_group = _donut_rows("group")[2]
    print(f"rows without background, residual stripe: group {np.std(gap_group):.2f}, integration {np.std(gap):.2f} DN")
    assert skipped_group == skipped_integ == 40 * 8 * 4
    assert np.std(gap) < 0.6 * np.std(gap_group)


def _ktc_ramp(seed=5, nints=4, ngroups=6, ny=64, nx=2048, ktc=20.0, noise=1.0, stripes=3.0, own=0.0):
    """A ramp whose pixels carry a per-integration reset level (kTC, ``ktc`` rms) far above the read
    noise, as superbias-subtracted NIRCam ramps do, with row stripes per group (common to the
    amplifiers, plus ``own`` rms each) and the trace of :func:`_frames`: (data, truth without
    stripes or read noise)."""
    rng = np.random.default_rng(seed)
    _, _, trace = _frames(nframes=1)
    amp = np.arange(nx) // 512
    truth = np.empty((nints, ngroups, ny, nx))
    data = np.empty((nints, ngroups, ny, nx), np.float32)
    for i in range(nints):
        reset = rng.normal(0, ktc, (ny, nx))
        for g in range(ngroups):
            truth[i, g] = reset + (100.0 + trace) * (g + 1)
            stripe = rng.normal(0, stripes, (ny, 1)) + rng.normal(0, own, (ny, 4))[:, amp]
            data[i, g] = truth[i, g] + stripe + rng.normal(0, noise, (ny, nx))
    return data, truth


def _slope_stripes(ramp, truth):
    """Per integration, row and amplifier: the mean over the amplifier's columns of the least-squares
    slope's error (what a row stripe leaves in a rate), less its median over the rows."""
    t = np.arange(ramp.shape[1]) - (ramp.shape[1] - 1) / 2
    err = np.einsum("g,igyx->iyx", t / np.sum(t * t), ramp - truth)
    rows = err.reshape(err.shape[0], err.shape[1], 4, 512).mean(axis=3)
    return rows - np.median(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("ktc", [20.0, 0.0])
def test_relative_clipped_mean_rows_leave_less_in_the_slopes(ktc):
    """ROEBA's row levels measured on each group less the integration's mean frame, with a clipped mean.

    A median of pixels spread by a static pattern (kTC) moves from group to group by ~sqrt(ktc *
    noise / n), not noise / sqrt(n): on 20 DN of kTC and 1 DN of read noise the slopes' row stripes
    left by the absolute median are several times those of the relative clipped mean.  On the
    trace's rows of amplifiers 1 and 2, which borrow the mean stripe of amplifiers 0 and 3 (the
    ~100 and ~150 background pixels beside the trace), the relative clipped mean leaves what white
    noise gives: the slope of 6 unit-noise groups scatters by 0.24 DN per pixel, so by
    0.24 / sqrt(512) in the row's own mean and 0.24 sqrt(1/n0 + 1/n3) / 2 in the borrowed estimate;
    without kTC too (where the absolute median is already close to it).
    """
    data, truth = _ktc_ramp(ktc=ktc)
    mask = roeba.background_mask(data, np.zeros(data.shape[2:], np.uint32))
    edges = roeba.amplifier_edges(2048, 0, True)
    per_amp = mask.reshape(64, 4, 512).sum(axis=2)
    measured = per_amp.min(axis=1) >= 16
    borrowing = (per_amp[:, [1, 2]] < 16).all(axis=1) & (per_amp[:, [0, 3]] >= 16).all(axis=1)
    assert borrowing.sum() >= 13
    scatter = {}
    for name in ("median", "mean", "relative"):
        ramp = data.copy()
        if name == "relative":
            borrowed, skipped = roeba.correct_ramp(ramp, mask, edges, estimator="mean")
            assert skipped == 0 and borrowed == 4 * 6 * int((per_amp < 16).sum())
        else:
            roeba.correct_frames(ramp, mask, edges, estimator=name)
        stripes = _slope_stripes(ramp, truth)
        scatter[name] = (np.std(stripes[:, measured]), np.std(stripes[:, borrowing][:, :, [1, 2]]))
        # the level is kept (sky and trace): the mean correction per amplifier is the mean stripe only
        assert np.all(np.abs(np.median((ramp - data).reshape(4, 6, 64, 4, 512), axis=(2, 4))) < 1.5)
        if name == "relative":
            # and every group is corrected in absolute terms too (one-group rates): the stripes of
            # 3 DN are gone up to the mean frame's row estimate, whose background pixels carry their
            # kTC (ktc / sqrt(n) ~ 0.9 DN, as for any estimate of absolute row levels)
            rows = (ramp - truth).reshape(4, 6, 64, 4, 512).mean(axis=4)[:, :, measured]
            assert np.std(rows - np.median(rows, axis=2, keepdims=True)) < 0.3 + 1.3 * ktc / np.sqrt(490)
    n0, n3 = per_amp[borrowing][:, [0, 3]].mean(axis=0)
    white = 0.24 * np.sqrt(1 / 512 + (1 / n0 + 1 / n3) / 4)
    print(f"\nktc {ktc}: slope row-stripe scatter, measured rows / borrowed rows (white noise there {white:.4f}): "
          + ", ".join(f"{k} {m:.4f} / {b:.4f}" for k, (m, b) in scatter.items()))
    assert scatter["relative"][1] < 1.3 * white
    if ktc > 0:
        assert scatter["relative"][0] < 0.35 * scatter["median"][0]
        assert scatter["relative"][1] < 0.5 * scatter["median"][1]


@pytest.mark.parametrize("options", [{"relative": True}, {"estimator": "mean"}])
def test_integration_level_refuses_the_grism_options(options):
    """``level="integration"`` measures its rows its own way: the grism preset's options there are an
    error naming the config keys, raised before the ramp is touched."""
    frames = _frames(nframes=2)[0][None]
    mask = roeba.background_mask(frames, np.zeros(frames.shape[2:], np.uint32))
    edges = roeba.amplifier_edges(frames.shape[-1], 0, True)
    with pytest.raises(ValueError, match="roeba_level: integration.*roeba_(relative|estimator)"):
        roeba.check_options("integration", **options)
    if "estimator" in options:
        before = frames.copy()
        with pytest.raises(ValueError, match="roeba_estimator: mean"):
            roeba.correct_frames(frames, mask, edges, level="integration", estimator="mean")
        assert np.array_equal(frames, before)


def test_grow_square_is_ndimage_dilation_by_3x3_squares():
    """The background mask's growth: the same pixels as scipy's 3 x 3 binary dilation ``n`` times, at the
    array's edges and corners too (nothing comes in from outside)."""
    from scipy import ndimage

    from webbflow.steps.roeba import grow_square

    rng = np.random.default_rng(7)
    for shape, fraction in (((257, 301), 0.01), ((4, 2048), 0.05), ((1, 9), 0.3), ((5, 1), 0.5)):
        mask = rng.random(shape) < fraction
        mask[0, 0] = mask[-1, -1] = True
        for n in (1, 2, 3):
            expected = ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=n)
            got = grow_square(mask, n)
            assert got.dtype == bool and np.array_equal(got, expected), (shape, n)
            assert got.sum() > mask.sum()
