"""Row-by-row, odd/even, by-amplifier 1/f correction from background pixels (ROEBA).

The NIRCam time-series notes recommend it (Schlawin et al. 2020, AJ 160, 231; tshirt's
``rowamp_sub.do_backsub``; JDox "NIRCam Time Series Observation Pipeline Caveats"): the grism
disperses along the fast-read direction, so the 1/f noise of the readout lands as stripes along the
spectrum, which the 8 side reference pixels of a row measure too poorly.  ROEBA measures each row's
stripe from the *background* pixels of that row, per amplifier, in every group.

It runs inside the reference-pixel step, after jwst's amplifier offsets (so the frame level of each
amplifier is already set from the reference pixels), on every group and the ZEROFRAME, in the
detector frame.  Per amplifier (512 detector columns with 4 outputs, the whole width with 1):

1. odd/even: the median of the background pixels of even columns and of odd columns; each parity
   is shifted to their mean (a residual column-parity offset is removed, the level kept);
2. rows: the median of each row's background pixels; the row is shifted by that median minus the
   median over the rows every amplifier measured (the stripe is removed, the amplifier's level --
   sky included -- kept).

Unlike tshirt, which subtracts the full row median and so the background with it, the level is
kept: the rates stay rates of the sky plus the source, and extract_1d's background regions still
see the sky.  A row with fewer than ``min_pixels`` background pixels in an amplifier (the trace
fills it) takes the mean stripe of the amplifiers that could measure that row, as tshirt does: most
of the 1/f noise is common to the four outputs.  A row no amplifier can measure is left as it is.

Two options (the grism preset's recommended layer turns both on): the row level may be a 3-sigma
clipped mean instead of the median (``estimator``), and each group's rows may be measured on the
group less its integration's per-pixel mean frame (:func:`correct_ramp`), so that what is static
within an integration -- kTC, bias residuals, accumulated sky and source wings, tens of DN against
a read noise of a few -- no longer moves a row's median from group to group; the mean frame's own
rows are corrected once.  Neither combines with ``level="integration"`` (:func:`correct_frames`),
which measures its rows relative to the integration's per-pixel mean by a one-pass clipped mean
already (:func:`check_options`).

Background pixels are found from a draft rate (the median over the first ``DRAFT_INTS``
integrations of the last minus the first group): pixels above the clipped background by ``nsigma`` robust sigma are sources, grown by
``grow`` pixels; reference pixels and DO_NOT_USE pixels are never used.

The same row model destripes finished rate images (:func:`destripe_image`, image2's ``destripe``
option): the masked median per row and amplifier that imaging survey teams subtract from their
rates, with the background mask found on the image itself.
"""

import logging

import numpy as np

from webbflow import dqflags
from webbflow.steps._jit import njit, prange  # numba loads only when a kernel has no compiled twin
from webbflow.steps.refpix import AMP_WIDTH, DETECTOR_SIZE

__all__ = ["DRAFT_INTS", "ESTIMATORS", "amplifier_edges", "background_mask", "check_options", "correct_frames",
           "correct_ramp", "destripe_image", "draft_mask", "grow_square", "one_over_f_of_slopes",
           "one_over_f_per_integration", "row_scatter", "slope_weights"]

log = logging.getLogger(__name__)

ESTIMATORS = {"median": 0, "mean": 1}
"""Row estimators of :func:`correct_frames` (the numba kernel's codes)."""

DRAFT_INTS = 16
"""Integrations the draft rate is the median of: 16 already find the sources, and a draft of bounded
size keeps the mask the same when a long exposure is calibrated in chunks of integrations."""


def background_mask(data, pixeldq, nsigma=3.0, grow=2):
    """Pixels of the background (True) for the row model, from a draft rate of the ramp.

    Parameters
    ----------
    data : ndarray, (nints, ngroups, ny, nx)
        The ramp after superbias (and jwst's reference-pixel offsets).
    pixeldq : ndarray, (ny, nx)
        Reference and DO_NOT_USE pixels are excluded.
    nsigma : float
        Sources are pixels whose draft rate exceeds the background median by ``nsigma`` robust
        standard deviations (1.4826 x the median absolute deviation).
    grow : int
        Source pixels are grown by this many pixels (a square), to mask PSF wings.

    Returns
    -------
    ndarray of bool, (ny, nx)
    """
    if data.shape[1] < 2:  # one group: no rate to find sources by
        return (pixeldq & (dqflags.DO_NOT_USE | dqflags.REFERENCE_PIXEL)) == 0
    return draft_mask(data[:DRAFT_INTS, -1] - data[:DRAFT_INTS, 0], pixeldq, nsigma, grow)


def draft_mask(cds, pixeldq, nsigma=3.0, grow=2):
    """:func:`background_mask` from the last-minus-first-group images of the first integrations.

    Parameters
    ----------
    cds : ndarray, (n, ny, nx)
        Last minus first group of each of the first ``n <= DRAFT_INTS`` integrations.
    pixeldq, nsigma, grow
        As for :func:`background_mask`.

    Returns
    -------
    ndarray of bool, (ny, nx)
    """
    usable = (pixeldq & (dqflags.DO_NOT_USE | dqflags.REFERENCE_PIXEL)) == 0
    draft = np.median(cds, axis=0)
    values = draft[usable & np.isfinite(draft)]
    if values.size == 0:
        return np.zeros_like(usable)
    med = np.median(values)
    sigma = 1.4826 * np.median(np.abs(values - med))
    source = ~np.isfinite(draft) | (draft > med + nsigma * max(sigma, np.finfo(np.float32).tiny))
    if grow > 0:
        source = grow_square(source, int(grow))
    return usable & ~source


def grow_square(mask, n):
    """``mask`` grown by ``n`` pixels in a square: ``scipy.ndimage.binary_dilation`` with a 3 x 3 square
    ``n`` times (the same pixels: n 3 x 3 squares make one (2n + 1) square), as ORs of shifted rows and
    columns, ~10 times faster on a full frame.

    Parameters
    ----------
    mask : ndarray of bool, (ny, nx)
    n : int

    Returns
    -------
    ndarray of bool, (ny, nx)
    """
    out = np.array(mask, bool)
    for axis in (0, 1):
        src = out.copy()
        view, orig = np.moveaxis(out, axis, 0), np.moveaxis(src, axis, 0)
        for k in range(1, min(n, orig.shape[0] - 1) + 1):
            view[k:] |= orig[:-k]
            view[:-k] |= orig[k:]
    return out


@njit(cache=True, nogil=True)
def _clipped_mean(values, nsigma, iterate):
    """Mean of ``values`` within ``nsigma`` robust sigma (1.4826 MAD) of their median (the median
    when the MAD is 0).  ``iterate``: the sigma and centre are re-estimated from the kept values
    (their mean and standard deviation) until nothing changes, at most 5 passes (the grism preset's
    ``estimator="mean"``); otherwise one clip (``level="integration"``'s rows).  The two are kept
    apart so that each preset's numbers stay as they were measured; ``values`` may be reordered."""
    if not iterate:
        med = np.median(values)
        mad = np.median(np.abs(values - med))
        if mad == 0:
            return med
        keep = np.abs(values - med) <= nsigma * 1.4826 * mad
        return np.mean(values[keep])
    centre = np.median(values)
    sigma = 1.4826 * np.median(np.abs(values - centre))
    kept = values.size
    for _ in range(5):
        if not sigma > 0.0:
            return centre
        acc = 0.0
        acc2 = 0.0
        n = 0
        for v in values:
            if abs(v - centre) <= nsigma * sigma:
                acc += v
                acc2 += v * v
                n += 1
        if n == 0:
            return centre
        centre = acc / n
        sigma = np.sqrt(max(acc2 / n - centre * centre, 0.0))
        if n == kept:
            break
        kept = n
    return centre


@njit(cache=True, nogil=True)
def _estimate(values, estimator):
    """A row's level: the median (``estimator`` 0) or the iterated 3-sigma clipped mean (1)."""
    if estimator == 1:
        return _clipped_mean(values, 3.0, True)
    return np.median(values)


@njit(cache=True, nogil=True)
def _measure_rows(frame, mask, edges, odd_even, min_pixels, buf, shifts, estimator=0, clipped=False):
    """Odd/even columns evened out in place; each amplifier row's background level into ``shifts``
    (namp, ny), NaN for a row with fewer than ``min_pixels`` background pixels.  Parities and rows
    take ``estimator`` (:data:`ESTIMATORS`: the median, or the iterated clipped mean); ``clipped``:
    the rows take the mean of their pixels within 3 robust sigma of their median, one clip, instead
    (``level="integration"``: a median of n pixels is 1.25 times noisier than their mean; the clip
    keeps a cosmic ray out)."""
    ny, nx = frame.shape
    namp = edges.size - 1
    for a in range(namp):
        c0, c1 = edges[a], edges[a + 1]
        if odd_even:
            par = np.zeros(2)
            have = 0
            for p in range(2):
                n = 0
                for y in range(ny):
                    for x in range(c0 + p, c1, 2):
                        if mask[y, x]:
                            v = frame[y, x]
                            if v == v:
                                buf[n] = v
                                n += 1
                if n >= min_pixels:
                    par[p] = _estimate(buf[:n], estimator)
                    have += 1
            if have == 2:
                mean = 0.5 * (par[0] + par[1])
                for y in range(ny):
                    for x in range(c0, c1):
                        frame[y, x] -= np.float32(par[(x - c0) % 2] - mean)
        for y in range(ny):
            n = 0
            for x in range(c0, c1):
                if mask[y, x]:
                    v = frame[y, x]
                    if v == v:
                        buf[n] = v
                        n += 1
            if n < min_pixels:
                shifts[a, y] = np.nan
            elif clipped:
                shifts[a, y] = _clipped_mean(buf[:n], 3.0, False)
            else:
                shifts[a, y] = _estimate(buf[:n], estimator)


@njit(cache=True, nogil=True)
def _frame_levels(shifts, ny, levels):
    """Each amplifier's level (``levels``, namp): the median of its row medians over the rows that
    every amplifier measured (all its measured rows when fewer than a quarter are common); NaN for
    an amplifier that measured no row."""
    namp = shifts.shape[0]
    # rows of the trace would otherwise shift one amplifier's median by the 1/f of the rows it lacks
    common = np.ones(ny, np.bool_)
    for a in range(namp):
        if np.any(shifts[a, :ny] == shifts[a, :ny]):
            for y in range(ny):
                if shifts[a, y] != shifts[a, y]:
                    common[y] = False
    use_common = common.sum() >= max(ny // 4, 1)
    for a in range(namp):
        row = shifts[a, :ny]
        good = row == row
        if not np.any(good):
            levels[a] = np.nan
            continue
        levels[a] = np.median(row[common]) if use_common else np.median(row[good])


@njit(cache=True, nogil=True)
def _apply_rows(frame, edges, shifts, levels, interpolate):
    """Shift every amplifier row of ``frame`` in place by its median (``shifts``) less its amplifier's
    level; returns (rows borrowed, rows interpolated or left uncorrected)."""
    ny = frame.shape[0]
    namp = edges.size - 1
    for a in range(namp):
        if levels[a] != levels[a]:
            continue
        for y in range(ny):
            shifts[a, y] -= levels[a]
    borrowed = 0
    skipped = 0
    for y in range(ny):
        # a row an amplifier cannot measure (the trace fills it) takes the mean stripe of the others:
        # most of the 1/f is common to the amplifiers (tshirt's fallback, Schlawin et al. 2020)
        acc = 0.0
        m = 0
        for a in range(namp):
            if shifts[a, y] == shifts[a, y]:
                acc += shifts[a, y]
                m += 1
        for a in range(namp):
            shift = shifts[a, y]
            if shift != shift:
                if m == 0:
                    skipped += 1
                    if not interpolate:
                        continue
                    shift = _interpolated(shifts[a, :ny], y)
                    if shift != shift:
                        continue
                else:
                    shift = acc / m
                    borrowed += 1
            s32 = np.float32(shift)
            for x in range(edges[a], edges[a + 1]):
                frame[y, x] -= s32
    return borrowed, skipped


@njit(cache=True, nogil=True)
def _interpolated(row, y):
    """``row[y]`` linearly interpolated from the nearest measured rows on either side (the nearest
    one's value beyond the last); NaN when no row is measured."""
    lo = y - 1
    while lo >= 0 and row[lo] != row[lo]:
        lo -= 1
    hi = y + 1
    while hi < row.size and row[hi] != row[hi]:
        hi += 1
    if lo < 0 and hi >= row.size:
        return np.nan
    if lo < 0:
        return row[hi]
    if hi >= row.size:
        return row[lo]
    return row[lo] + (row[hi] - row[lo]) * (y - lo) / (hi - lo)


@njit(cache=True, nogil=True)
def _correct_frame(frame, mask, edges, odd_even, min_pixels, buf, shifts, interpolate=False, estimator=0):
    """ROEBA on one detector-frame image in place, each amplifier keeping its level in this frame;
    returns (rows borrowed, rows left uncorrected or interpolated)."""
    _measure_rows(frame, mask, edges, odd_even, min_pixels, buf, shifts, estimator)
    levels = np.empty(edges.size - 1)
    _frame_levels(shifts, frame.shape[0], levels)
    return _apply_rows(frame, edges, shifts, levels, interpolate)


def _correct_integration(groups, mask, edges, odd_even, min_pixels, buf):
    """ROEBA with ``level="integration"`` on one integration's groups (ngroups, ny, nx), in place.

    Each row's statistic is the clipped mean of its background pixels in the group less each
    pixel's mean over the integration's groups: that per-pixel constant (bias residual, kTC) is
    no slope's, and left in it decides which of a row's few background pixels is its median -- the
    same pixel in every group, so the median keeps that one pixel's read noise instead of
    averaging the row's.  Every group's rows are shifted by their statistic less one level per
    amplifier for the whole integration (the mean over the groups of each group's median of its
    rows), so the background pixels also set each group's level and their rate (sky, dark,
    the 1/f's drift over the ramp) is removed: a background subtraction in the ramp, as tshirt's.
    """
    ngroups, ny, nx = groups.shape
    namp = edges.size - 1
    ref = groups.mean(axis=0, dtype=np.float64)
    mask = np.ascontiguousarray(mask)
    shifts = np.empty((ngroups, namp, ny))
    levels = np.empty((ngroups, namp))
    resid = np.empty((ngroups, ny, nx))
    for g in range(ngroups):
        resid[g] = groups[g] - ref
        _measure_rows(resid[g], mask, edges, odd_even, min_pixels, buf, shifts[g], 0, True)
        _frame_levels(shifts[g], ny, levels[g])
    with np.errstate(all="ignore"):
        level = np.array([np.mean(col[np.isfinite(col)]) if np.isfinite(col).any() else np.nan for col in levels.T])
    borrowed = skipped = 0
    for g in range(ngroups):
        b, k = _apply_rows(resid[g], edges, shifts[g], level, True)
        borrowed += b
        skipped += k
        groups[g] = resid[g] + ref
    return borrowed, skipped


def check_options(level="group", estimator="median", relative=False):
    """Refuse ROEBA options that do not combine: ``level="integration"`` measures every row by its
    own one-pass clipped mean of each pixel's deviation from its mean over the integration, so the
    grism options ``estimator="mean"`` and ``relative`` (the same idea, per group) have no place
    there.

    Raises
    ------
    ValueError
        Naming the config keys (``steps.refpix.roeba_level`` with ``roeba_estimator`` or
        ``roeba_relative``) and the fix.
    """
    if level not in ("group", "integration"):
        raise ValueError(f"ROEBA level {level!r}: choose group or integration")
    if level == "integration" and (relative or estimator != "median"):
        given = ", ".join(k for k, on in (("roeba_relative: true", relative),
                                          (f"roeba_estimator: {estimator}", estimator != "median")) if on)
        raise ValueError(f"steps.refpix.roeba_level: integration does not combine with {given}: it measures "
                         "its rows relative to each pixel's mean over the integration with its own clipped mean "
                         "already; drop those keys or use roeba_level: group")


def amplifier_edges(nx, col_offset, four_amp):
    """Detector-frame column edges of the amplifiers within an array ``nx`` wide.

    ``col_offset`` is the array's first detector column; with one output the whole width is one
    amplifier.
    """
    if not four_amp:
        return np.array([0, nx], np.int64)
    cuts = [c - col_offset for c in range(0, DETECTOR_SIZE + 1, AMP_WIDTH) if 0 < c - col_offset < nx]
    return np.array([0, *cuts, nx], np.int64)


def correct_frames(frames, mask, edges, odd_even=True, min_pixels=16, keep_zero=False, level="group",
                   estimator="median"):
    """Apply ROEBA to every frame of ``frames`` (..., ny, nx) in place (detector frame).

    Parameters
    ----------
    frames : ndarray, float32, (..., ny, nx)
        Groups (or ZEROFRAMEs) in the detector frame; may be a view.
    mask : ndarray of bool, (ny, nx)
        Background pixels (:func:`background_mask`, in the same frame).
    edges : ndarray of int
        Amplifier column edges (:func:`amplifier_edges`).
    odd_even : bool
        Also remove a residual even/odd column offset per amplifier.
    min_pixels : int
        Fewest background pixels for a row (or a parity) to be corrected.
    keep_zero : bool
        Pixels that are exactly 0 (an unusable ZEROFRAME value) stay 0 and are not used.
    level : {"group", "integration"}
        What each amplifier keeps: ``"group"`` (ROEBA's) its level in every frame, the median of
        that frame's row medians (the sky stays in the rates); ``"integration"`` one level for
        the whole integration (:func:`_correct_integration`: rows measured as clipped means of
        each pixel's deviation from its own mean over the groups), so the background pixels set
        every group's level too and their rate -- sky, dark and 1/f -- is removed.  On a 4-D ramp
        (nints, ngroups, ny, nx) the integration is the first axis; any other shape (ZEROFRAMEs)
        takes each frame as its own integration.  With ``"integration"`` a row no amplifier can
        measure takes its amplifier's offsets interpolated from the nearest measured rows (left as
        it is with ``"group"``).  Why: a frame's own level is the median of a few hundred
        background pixels whose read noise changes from group to group, and a bright pixel's slope
        (near its first and last groups) and a faint one's (all groups alike) weigh that noise
        differently, so it does not cancel in a background-subtracted aperture sum, and a whole
        subarray sum adds it up over every pixel (issue #14, the weak-lens donut: out-of-transit
        scatter / photon + read noise 1.36 -> 1.13 in apertures, 2.54 -> 1.24 summed whole; 1.08
        and 1.10 with the source mask grown by 1 pixel instead of 2).
    estimator : {"median", "mean"}
        A row's (and a parity's) level: the median of its background pixels, or their mean within
        3 robust sigma of it, iterated (a mean of Gaussian noise scatters 1.25x less than a median); with ``level="group"``
        only (``"integration"`` measures its rows by its own clipped mean: ValueError).

    Returns
    -------
    borrowed, skipped : int
        Amplifier rows, summed over frames, corrected with the mean stripe of the other
        amplifiers (too few background pixels of their own), and left uncorrected (no
        amplifier could measure the row; interpolated with ``level="integration"``).
    """
    if level not in ("group", "integration"):
        raise ValueError(f"ROEBA level {level!r}: choose group or integration")
    if estimator not in ESTIMATORS:
        raise ValueError(f"ROEBA estimator must be one of {sorted(ESTIMATORS)}, not {estimator!r}")
    check_options(level, estimator)
    code = ESTIMATORS[estimator]
    ny, nx = frames.shape[-2:]
    namp = edges.size - 1
    buf = np.empty(ny * nx, np.float64)
    shifts = np.empty((namp, ny), np.float64)
    borrowed = skipped = 0
    if level == "integration" and frames.ndim == 4:
        for i in range(frames.shape[0]):
            b, k = _correct_integration(frames[i], mask, edges, odd_even, int(min_pixels), buf)
            borrowed += b
            skipped += k
        return borrowed, skipped
    interpolate = level == "integration"  # single frames (ZEROFRAMEs): each its own integration
    for index in np.ndindex(frames.shape[:-2]):
        frame = frames[index]
        work = np.ascontiguousarray(frame)  # detector-frame views of flipped arrays are not contiguous
        m = np.ascontiguousarray(mask & (work != 0.0)) if keep_zero else np.ascontiguousarray(mask)
        zero = work == 0.0 if keep_zero else None
        b, k = _correct_frame(work, m, edges, odd_even, int(min_pixels), buf, shifts, interpolate, code)
        borrowed += b
        skipped += k
        if zero is not None:
            work[zero] = 0.0
        if not np.shares_memory(work, frame):
            frame[...] = work
    return borrowed, skipped


def correct_ramp(data, mask, edges, odd_even=True, min_pixels=16, estimator="median"):
    """ROEBA on every group of a ramp (nints, ngroups, ny, nx), in place, relative to each integration's mean.

    The row level of a group is estimated from its background pixels less the per-pixel mean of the
    integration's groups: what is static within an integration (the reset's kTC, bias and dark
    residuals, the sky and the wings of sources accumulated) leaves the pixels, so the median (or
    clipped mean) moves from group to group only by the read noise and the stripe, not by where the
    static pattern puts the middle of a broad distribution.  The mean frame itself is corrected
    once (its stripes are a constant of every group of the integration, invisible to the slope,
    but one-group rates and the absolute row levels keep them corrected).

    Parameters
    ----------
    data : ndarray, float32, (nints, ngroups, ny, nx)
        The ramp in the detector frame (may be a view); rewritten in place.
    mask, edges, odd_even, min_pixels, estimator
        As for :func:`correct_frames`.

    Returns
    -------
    borrowed, skipped : int
        As for :func:`correct_frames`, over the groups (not the mean frames).
    """
    borrowed = skipped = 0
    kw = {"odd_even": odd_even, "min_pixels": min_pixels, "estimator": estimator}
    for i in range(data.shape[0]):
        base = np.mean(data[i], axis=0, dtype=np.float64).astype(np.float32)
        rel = data[i] - base
        b, k = correct_frames(rel, mask, edges, **kw)
        borrowed += b
        skipped += k
        correct_frames(base[None], mask, edges, **kw)
        data[i] = rel + base
    return borrowed, skipped


@njit(cache=True, nogil=True, parallel=True)
def _row_medians(image, mask, edges, min_pixels, out):
    """Per amplifier and row: (median, median |pixel - median|, pixels) of the masked finite pixels
    into ``out`` (namp, ny, 3); NaN for rows with fewer than ``min_pixels``."""
    namp = edges.size - 1
    ny = image.shape[0]
    for k in prange(namp * ny):
        a, y = k // ny, k % ny
        buf = np.empty(edges[a + 1] - edges[a])
        n = 0
        for x in range(edges[a], edges[a + 1]):
            v = image[y, x]
            if mask[y, x] and v == v:
                buf[n] = v
                n += 1
        out[a, y, 2] = n
        if n < min_pixels:
            out[a, y, 0] = out[a, y, 1] = np.nan
            continue
        med = np.median(buf[:n])
        for j in range(n):
            buf[j] = abs(buf[j] - med)
        out[a, y, 0] = med
        out[a, y, 1] = np.median(buf[:n])


def row_scatter(image, mask, edges, min_pixels=16):
    """The 1/f statistic of one detector-frame image, per amplifier: row-median scatter and its white-noise level.

    NIRCam reads each amplifier along detector rows, so 1/f noise shows as offsets from row to row.
    The row medians of the background pixels scatter by 1.4826 x their MAD; white noise alone would
    make them scatter by 1.2533 sigma / sqrt(n) (a median of n pixels), with sigma the pixels' own
    scatter about their row's median (1.4826 x the median over rows of each row's MAD; 1/f, constant
    along a row, does not reach it).  The ratio
    is 1 without 1/f and grows with it.

    Parameters
    ----------
    image : ndarray, (ny, nx)
        A detector-frame image (e.g. the slope of an integration).
    mask : ndarray of bool, (ny, nx)
        Background pixels (:func:`background_mask`, detector frame).
    edges : ndarray of int
        Amplifier column edges (:func:`amplifier_edges`).
    min_pixels : int
        Rows with fewer background pixels in an amplifier are left out of it.

    Returns
    -------
    residual, white : ndarray, (namp,)
        The row medians' robust scatter and its white-noise expectation (NaN for an amplifier with
        fewer than three usable rows), in the image's unit.
    rows : ndarray of int, (namp,)
        Rows used per amplifier.
    """
    image = np.ascontiguousarray(image, np.float64)
    mask = np.ascontiguousarray(mask, np.bool_)
    edges = np.asarray(edges, np.int64)
    per_row = np.empty((edges.size - 1, image.shape[0], 3))
    _row_medians(image, mask, edges, int(min_pixels), per_row)
    residual, white = np.full(edges.size - 1, np.nan), np.full(edges.size - 1, np.nan)
    rows = np.isfinite(per_row[:, :, 0]).sum(axis=1)
    for a in np.flatnonzero(rows >= 3):
        med, mad, n = per_row[a][np.isfinite(per_row[a, :, 0])].T
        residual[a] = 1.4826 * np.median(np.abs(med - np.median(med)))
        # sigma from each row's own MAD (about its median, which 1/f, constant along a row, does not reach)
        white[a] = 1.2533 * 1.4826 * np.median(mad) / np.sqrt(np.median(n))
    return residual, white, rows


def one_over_f_per_integration(frames, mask, edges, tgroup, min_pixels=16):
    """:func:`row_scatter` of every integration's slope: the 1/f left in a ramp, as the rates will see it.

    The slope is the unweighted least-squares one over the groups (for two groups, their
    difference), divided by ``tgroup``: DN/s, as the rateints.  It needs one integration at a time,
    so a long exposure calibrated in chunks of integrations gives the same numbers.

    Parameters
    ----------
    frames : ndarray, (nints, ngroups, ny, nx)
        The ramp in the detector frame (may be a view).
    mask, edges, min_pixels
        As for :func:`row_scatter`.
    tgroup : float
        Seconds between groups.

    Returns
    -------
    residual, white : ndarray, (nints, namp)
        DN/s; NaN with fewer than two groups (no slope).
    rows : ndarray of int, (nints, namp)
    """
    nints, ngroups = frames.shape[:2]
    weights = slope_weights(ngroups, tgroup)

    def slopes():  # one integration at a time: a float64 copy of the whole ramp is not needed
        for i in range(nints if ngroups >= 2 else 0):
            slope = np.zeros(frames.shape[2:])
            for g in range(ngroups):
                slope += weights[g] * frames[i, g]
            yield slope

    return one_over_f_of_slopes(slopes(), nints, mask, edges, min_pixels)


def slope_weights(ngroups, tgroup):
    """The unweighted least-squares slope's weight of each group (1/s): a slope is ``sum(w[g] * group g)``.

    Parameters
    ----------
    ngroups : int
    tgroup : float
        Seconds between groups.

    Returns
    -------
    ndarray float64, (ngroups,)
    """
    t = np.arange(ngroups) - (ngroups - 1) / 2.0
    return t / (np.sum(t * t) * tgroup)


def one_over_f_of_slopes(slopes, nints, mask, edges, min_pixels=16):
    """:func:`one_over_f_per_integration` from the integrations' slopes, summed already (the fused
    pass of :mod:`webbflow.steps.fused` adds them up as it corrects the groups).

    Parameters
    ----------
    slopes : iterable of ndarray, (ny, nx)
        Each integration's slope (:func:`slope_weights`) in the detector frame; empty for a ramp of
        fewer than two groups (no slope).
    nints : int
        Integrations.
    mask, edges, min_pixels
        As for :func:`row_scatter`.

    Returns
    -------
    residual, white, rows
        As :func:`one_over_f_per_integration`.
    """
    namp = edges.size - 1
    residual, white = np.full((nints, namp), np.nan), np.full((nints, namp), np.nan)
    rows = np.zeros((nints, namp), np.int64)
    for i, slope in enumerate(slopes):
        residual[i], white[i], rows[i] = row_scatter(slope, mask, edges, min_pixels)
    return residual, white, rows


def destripe_image(data, dq, readout, nsigma=3.0, grow=2, min_pixels=16, odd_even=False):
    """Remove the 1/f row stripes of a rate image (or a cube of them) in place, per row and amplifier.

    The masked-median destriping imaging surveys apply to their rates: background pixels are those of
    :func:`draft_mask` on the image itself (the median over integrations for a cube), and every row
    of every amplifier is shifted by its background median less the median of the rows
    (:func:`correct_frames`: the sky level is kept, rows an amplifier cannot measure borrow the
    other amplifiers' mean stripe).

    Parameters
    ----------
    data : ndarray, float32, (ny, nx) or (nints, ny, nx)
        Science-frame rate (DN/s), rewritten in place.
    dq : ndarray, (ny, nx)
        Its DQ: REFERENCE_PIXEL and DO_NOT_USE pixels are not background.
    readout : webbflow.ramp.Readout
        FASTAXIS/SLOWAXIS, the subarray's start and NOUTPUTS (where the amplifiers are).
    nsigma, grow, min_pixels, odd_even
        As for ROEBA (:func:`draft_mask`, :func:`correct_frames`).

    Returns
    -------
    borrowed, skipped : int
        As :func:`correct_frames`.
    """
    from webbflow.steps.refpix import _detector_offsets, to_detector_frame

    cube = data if data.ndim == 3 else data[None]
    mask = draft_mask(cube, dq, nsigma, grow)
    fa, sa = readout.fastaxis, readout.slowaxis
    _, col_offset = _detector_offsets(readout, *cube.shape[-2:])
    four_amp = readout.subarray == "FULL" or readout.noutputs == 4
    mask_det = np.ascontiguousarray(to_detector_frame(mask, fa, sa))
    edges = amplifier_edges(mask_det.shape[1], col_offset, four_amp)
    return correct_frames(to_detector_frame(cube, fa, sa), mask_det, edges, odd_even, min_pixels)
