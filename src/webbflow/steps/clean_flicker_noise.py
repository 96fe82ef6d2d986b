"""clean_flicker_noise: jwst 3.0's 1/f correction of the ramp, between jump and ramp_fit.

What jwst 3.0 does (``jwst/clean_flicker_noise/clean_flicker_noise.py::do_correction``,
``background_level.py``; off by default there and here), restated:

1. **Scene mask** from a draft rate (the ramp fit with its software defaults on the
   jump-flagged ramp): the combined rate, or the per-integration rates when
   ``single_mask`` is false.  True = background.  Rate values that are NaN or exactly
   0 are masked, then ``clip_to_background``: 3σ-clipped statistics (astropy's
   ``sigma_clipped_stats``, 5 iterations) of the unmasked values give a centre (the
   median; the mean when ``fit_histogram``) and σ; with ``fit_histogram`` a Gaussian
   fitted to a 2000-bin histogram over ±4σ refines both.  Values above centre +
   ``n_sigma`` σ (signal) or below centre − 3σ (bad) are masked.  jwst 3.0 does not
   dilate the mask.  A 3-D mask is reduced with ``all`` over integrations when
   ``single_mask``.
2. For every integration and group difference ``d = data[i, j+1] − data[i, j]`` (float32):
   the mask less that group's DO_NOT_USE and JUMP_DET pixels and less NaN pixels (set to 0).
3. **Background**: the mask is clipped again at ±3σ with statistics from the lower half of
   the distribution mirrored about its centre; the background is the median of the remaining
   pixels (``median``), a photutils ``Background2D`` (``model``: box = the largest divisor ≤ 32
   of each axis unless given, 5×5 filter, 3σ clip, median estimator) or 0 (``None``, no
   clipping).  The residual is clipped once more at ±``n_sigma`` σ (lower half).
4. **Noise fit** (``median``): the masked median of each row (NIRCam's slow axis is 2, so
   one value per row of the whole subarray; per 512-column amplifier only for FULL frames
   with ``fit_by_channel``), 0 where a row has no background pixel, subtracted; the
   background is added back and NaNs restored, and the group is rebuilt from the
   already-cleaned previous group: ``data[i, j+1] = data[i, j] + cleaned``.  Group 0 is
   unchanged.  A difference with no background pixel is left as it was.
5. ``fit_method: fft`` is NSClean, which jwst 3.0 allows only for NIRSpec
   (NRS_MSASPEC/IFU/FIXEDSLIT/BRIGHTOBJ): for NIRCam jwst logs a warning and leaves the
   ramp alone with ``S_CLNFLK = FAILED``, and so does this step.

``apply_flat_field`` (divide each difference by the flat before fitting) and the
``median_image`` background of TSO data are not implemented: the schema refuses them.
"""

import logging
import threading
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from webbflow import dqflags
from webbflow.ramp import StepStatus
from webbflow.steps import _jit
from webbflow.steps._jit import njit  # numba loads only when a kernel has no compiled twin

__all__ = ["FFT_EXP_TYPES", "background_mask", "channels_for", "clean_integrations", "clip_to_background",
           "draft_rate", "run", "standard_options"]

log = logging.getLogger(__name__)

FFT_EXP_TYPES = ("NRS_MSASPEC", "NRS_IFU", "NRS_FIXEDSLIT", "NRS_BRIGHTOBJ")
"""The exposure types jwst 3.0 lets ``fit_method: fft`` (NSClean) run on."""

_CLIP = 3.0  # jwst's sigma limit for the basic statistics and the background's own clip


def _clipped_stats(values, mask=None):
    """astropy's ``sigma_clipped_stats(values, mask=mask, sigma=3)``: (mean, median, std)."""
    from astropy.stats import sigma_clipped_stats
    from astropy.utils.exceptions import AstropyUserWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=AstropyUserWarning)
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return sigma_clipped_stats(values, mask=mask, sigma=_CLIP)


def _window_median(s, lo, hi):
    """numpy's median of the sorted values ``s[lo:hi]``: the middle one, or the mean of the middle two.

    ``np.mean`` of the same one or two values, as ``np.median`` ends, so the rounding is numpy's.
    """
    n = hi - lo
    mid = lo + n // 2
    return np.mean(s[mid - 1:mid + 1]) if n % 2 == 0 else s[mid]


@njit(cache=True, nogil=True)
def _block_sum(a, lo, n, mean, squares):
    """One block (n <= 128) of :func:`_pairwise_sum`: numpy's 8 interleaved partial sums."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            v = a[i] - mean if squares else a[i]
            res += v * v if squares else v
        return res
    r = np.empty(8)
    for k in range(8):
        v = a[lo + k] - mean if squares else a[lo + k]
        r[k] = v * v if squares else v
    i = 8
    while i < n - n % 8:
        for k in range(8):
            v = a[lo + i + k] - mean if squares else a[lo + i + k]
            r[k] += v * v if squares else v
        i += 8
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        v = a[lo + i] - mean if squares else a[lo + i]
        res += v * v if squares else v
        i += 1
    return res


@njit(cache=True, nogil=True)
def _pairwise_sum(a, n, mean, squares):
    """numpy's float64 ``add.reduce`` of ``a[:n]`` (or of ``(a - mean)**2`` with ``squares``), bit for bit.

    numpy sums a contiguous array pairwise (``pairwise_sum`` in its loops_utils.h): blocks of
    at most 128 values with 8 interleaved partial sums, a longer run split in two at half its
    length rounded down to a multiple of 8, left + right; the reduction starts from the
    identity 0.0 (:func:`_mean_std` adds it).  The recursion is walked with an explicit stack
    (numba cannot cache recursive functions).
    """
    if n <= 128:
        return _block_sum(a, 0, n, mean, squares)
    starts = np.zeros(64, np.int64)
    sizes = np.zeros(64, np.int64)
    right = np.zeros(64, np.bool_)  # the entry's left half is done; its sum is in ``left``
    left = np.zeros(64)
    top = 0
    sizes[0] = n
    while True:
        if sizes[top] > 128:  # descend into the left half
            half = sizes[top] // 2
            half -= half % 8
            starts[top + 1], sizes[top + 1], right[top + 1] = starts[top], half, False
            top += 1
            continue
        v = _block_sum(a, starts[top], sizes[top], mean, squares)
        while True:  # hand the sum up until an entry still needs its right half
            top -= 1
            if top < 0:
                return v
            if right[top]:
                v = left[top] + v
                continue
            left[top], right[top] = v, True
            half = sizes[top] // 2
            half -= half % 8
            starts[top + 1], sizes[top + 1], right[top + 1] = starts[top] + half, sizes[top] - half, False
            top += 1
            break


@njit(cache=True, nogil=True)
def _mean_std(x, n):
    """numpy's ``nanmean`` and ``nanstd`` of finite ``x[:n]``: sum / n, sqrt(sum((x - mean)**2) / n)."""
    mean = (0.0 + _pairwise_sum(x, n, 0.0, False)) / n
    return mean, np.sqrt((0.0 + _pairwise_sum(x, n, mean, True)) / n)


@njit(cache=True, nogil=True)
def _keep_within(x, n, low, high, out):
    """Copy the values of ``x[:n]`` within [low, high] to the front of ``out`` (may be ``x``), in order; their number."""
    k = 0
    for i in range(n):
        if x[i] >= low and x[i] <= high:
            out[k] = x[i]
            k += 1
    return k


def _sorted_clipped_stats(x, s):
    """:func:`_clipped_stats` of the finite float64 values ``x``, given ``s``, the same values sorted.

    The same floats as astropy's sigma_clipped_stats (3σ, 5 iterations, median centre): each
    iteration keeps the values within bounds that only tighten, so the kept values are always a
    contiguous run of ``s`` and every median is read off it instead of partitioning a copy; the
    mean and σ are numpy's pairwise sums over the kept values in their original order, as
    astropy's ``nanmean``/``nanstd`` compute them (:func:`_mean_std`).  None when a clipping
    would leave nothing (the caller then takes astropy's path).
    """
    kept = x  # the first clipping copies into a new array (x itself is left as it is), later ones compact it
    n, lo, hi = x.size, 0, s.size
    for _ in range(5):  # astropy's maxiters
        center, sigma = _window_median(s, lo, hi), _mean_std(kept, n)[1]
        low, high = center - sigma * _CLIP, center + sigma * _CLIP
        new_lo = lo + int(np.searchsorted(s[lo:hi], low, "left"))
        new_hi = lo + int(np.searchsorted(s[lo:hi], high, "right"))
        if new_hi - new_lo == n:
            break
        if new_hi <= new_lo:
            return None
        out = np.empty(new_hi - new_lo) if kept is x else kept
        n = _keep_within(kept, n, low, high, out)
        kept = out
        lo, hi = new_lo, new_hi
    mean, sigma = _mean_std(kept, n)
    return mean, _window_median(s, lo, hi), sigma


_BLOCK = 1024
"""Values per block of :func:`_shifted_sums`, summed in any order (so vectorised)."""
_U = 2.0 ** -53  # float64 unit roundoff


class _Workspace:
    """float64 work arrays kept from one group difference to the next (one workspace per thread).

    A fresh float64 array of a full frame's values (~32 MB) costs more in page faults than the pass
    that fills it (~65 vs ~5 ms of CPU on the benchmark's VM), and each difference needs several:
    :func:`clip_to_background` and :func:`_mirror_sorted` write into these instead.
    """

    def __init__(self):
        self._arrays = {}

    def get(self, name, n):
        """The first ``n`` elements of the work array ``name`` (contents undefined), grown if needed."""
        a = self._arrays.get(name)
        if a is None or a.size < n:
            a = self._arrays[name] = np.empty(n + n // 16 + 1024)  # room for the next difference's count
        return a[:n]


def _array(work, name, n):
    """``work.get(name, n)``, or a new array without a workspace."""
    return np.empty(n) if work is None else work.get(name, n)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _any_order_sums(s, a, b, c):
    """Sums of ``s[a:b] - c``, of its absolute values and of its squares, in whatever order LLVM vectorises."""
    s1 = sa = s2 = 0.0
    for i in range(a, b):
        t = s[i] - c
        s1 += t
        sa += abs(t)
        s2 += t * t
    return s1, sa, s2


@njit(cache=True, nogil=True, inline="always")
def _two_sum(h, lo, t):
    """Knuth's TwoSum: ``h + t`` and the rounding error carried in ``lo``."""
    u = h + t
    v = u - h
    return u, lo + ((h - (u - v)) + (t - v))


@njit(cache=True, nogil=True)
def _shifted_sums(s, a, b, c, sign, acc):
    """Add ``sign`` times the sums of ``s[a:b] - c`` and of its squares to ``acc``, with error bounds.

    ``acc`` is (sum hi, sum lo, squares hi, squares lo, bound on the sum's error, bound on the
    squares' error).  Blocks of :data:`_BLOCK` values are summed in any order (vectorised): each
    block's error is at most (block size + 2) unit roundoffs times the sum of its absolute terms
    (the rounding of ``s - c`` and of the square included), added to the bounds; the block sums are
    accumulated with TwoSum, so taking values off again (``sign`` −1) cancels without losing digits.
    """
    h1, l1, h2, l2, e1, e2 = acc[0], acc[1], acc[2], acc[3], acc[4], acc[5]
    for start in range(a, b, _BLOCK):
        s1, sa, s2 = _any_order_sums(s, start, min(start + _BLOCK, b), c)
        h1, l1 = _two_sum(h1, l1, sign * s1)
        h2, l2 = _two_sum(h2, l2, sign * s2)
        e1 += (_BLOCK + 2) * _U * sa
        e2 += (_BLOCK + 4) * _U * s2
    acc[0], acc[1], acc[2], acc[3], acc[4], acc[5] = h1, l1, h2, l2, e1, e2


def _window_sigma(acc, m):
    """σ of ``m`` values from their :func:`_shifted_sums`, and a bound on its distance to numpy's σ.

    None when the variance is not clearly positive (every value equal: no bound can be given).
    """
    d = (acc[0] + acc[1]) / m
    square = (acc[2] + acc[3]) / m
    var = square - d * d
    # ours: the sums' bounds, their propagation through d**2 and the last roundings; numpy's: its
    # pairwise sums of the squares about its own mean, ~40 roundings (its mean's error enters squared)
    e1, e2 = acc[4] / m, acc[5] / m
    err_var = e2 + 2 * abs(d) * e1 + e1 * e1 + 8 * _U * square + 64 * _U * var
    if not var > 4 * err_var:
        return None
    sigma = np.sqrt(var)
    return sigma, 4 * err_var / sigma  # |sqrt(a) - sqrt(b)| <= |a - b| / sqrt(a), a factor 4 to spare


def _clear_of(s, lo, hi, bound, slack):
    """Whether no value of ``s[lo:hi]`` (sorted) lies within ``slack`` of ``bound``."""
    return np.searchsorted(s[lo:hi], bound - slack, "left") == np.searchsorted(s[lo:hi], bound + slack, "right")


def _fast_clipped_stats(s):
    """The median and σ of :func:`_sorted_clipped_stats` from ``s`` alone, without numpy's summation order.

    Returns (median, σ, bound on |σ - numpy's σ|), or None when that cannot be promised (a clipping
    bound within reach of a value, a zero variance, nothing kept): the caller then takes the exact path.

    Notes
    -----
    astropy's σ is a pairwise sum over the kept values in their original order; but the clipping
    uses σ only through the comparisons ``center ± 3σ`` with the values.  Here σ comes from
    vectorised block sums over the sorted window with a rigorous error bound (:func:`_shifted_sums`:
    one pass, then only the values clipped away are subtracted, or the window summed afresh when
    the outliers taken off dominate the bound), within ``err`` of numpy's; where no value lies
    within 3·err (plus rounding) of a bound, numpy's σ would keep exactly the same values, so every
    window, median and the final comparisons of the caller are astropy's.  The mean and the exact
    bits of σ are not produced (only ``fit_histogram`` needs them; it takes the exact path).
    """
    lo, hi = 0, s.size
    acc = np.zeros(6)
    shift = _window_median(s, lo, hi)
    _shifted_sums(s, lo, hi, shift, 1.0, acc)
    for iteration in range(6):  # astropy's maxiters (5) clippings, then the final window's σ
        center = _window_median(s, lo, hi)
        found = _window_sigma(acc, hi - lo)
        if found is None:
            return None
        sigma, err = found
        if iteration == 5:
            break
        low, high = center - sigma * _CLIP, center + sigma * _CLIP
        slack = _CLIP * err + 1e-13 * (abs(center) + _CLIP * sigma)
        if not (_clear_of(s, lo, hi, low, slack) and _clear_of(s, lo, hi, high, slack)):
            return None
        new_lo = lo + int(np.searchsorted(s[lo:hi], low, "left"))
        new_hi = lo + int(np.searchsorted(s[lo:hi], high, "right"))
        if new_hi - new_lo == hi - lo:
            break
        if new_hi <= new_lo:
            return None
        _shifted_sums(s, lo, new_lo, shift, -1.0, acc)
        _shifted_sums(s, new_hi, hi, shift, -1.0, acc)
        lo, hi = new_lo, new_hi
        if acc[5] > 4 * (_BLOCK + 4) * _U * (acc[2] + acc[3]):
            # the error bound is still that of the outliers taken off: sum the kept values afresh
            acc[:] = 0.0
            _shifted_sums(s, lo, hi, shift, 1.0, acc)
    return center, sigma, err


def _mirror_sorted(s, center, work=None):
    """jwst's mirrored lower half of the values ``s`` (sorted), sorted: :func:`_mirror`'s second array.

    Of the values ``v <= center``, ``(v - center) + center`` is at most ``center`` and
    ``(center - v) + center`` at least ``center`` (rounding is monotonic), and both maps are
    monotonic: the sorted values are the first run ascending, then the second in reverse order (no
    sort, no merge).  With a :class:`_Workspace`, the result is its ``mirror`` array.
    """
    k = int(np.searchsorted(s, center, "right"))
    ordered = _array(work, "mirror", 2 * k)
    _mirror_sorted_into(s, center, k, ordered)
    return ordered


@njit(cache=True, nogil=True)
def _mirror_sorted_into(s, center, k, ordered):
    """:func:`_mirror_sorted`'s values of the ``k`` lowest of ``s`` into ``ordered`` (2k)."""
    for i in range(k):
        ordered[i] = (s[i] - center) + center
    for i in range(k):
        ordered[k + i] = (center - s[k - 1 - i]) + center


@njit(cache=True, nogil=True)
def _mirror_values(x, center):
    """jwst's mirrored lower half of ``x`` in jwst's order: ``concatenate((low - center, center - low)) + center``."""
    k = 0
    for i in range(x.size):
        if x[i] <= center:
            k += 1
    values = np.empty(2 * k)
    j = 0
    for i in range(x.size):
        if x[i] <= center:
            values[j] = (x[i] - center) + center
            values[k + j] = (center - x[i]) + center
            j += 1
    return values


def _mirror(x, s, center):
    """jwst's mirrored lower half of ``x`` and the same values sorted, given ``s`` (``x`` sorted)."""
    return _mirror_values(x, center), _mirror_sorted(s, center)


@njit(cache=True, nogil=True)
def _unmask_outside(image, mask, low, high):
    """``mask[image < low] = False; mask[image > high] = False`` with the comparisons in float64."""
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            v = np.float64(image[y, x])
            if v < low or v > high:
                mask[y, x] = False


def _histogram_fit(values, center, sigma):
    """jwst's Gaussian fit to a 2000-bin histogram over centre ± 4σ: (centre, σ), or None if it fails."""
    from scipy.optimize import curve_fit

    try:
        hist, edges = np.histogram(values, bins=2000, range=(center - 4.0 * sigma, center + 4.0 * sigma))
    except ValueError:
        log.error("Histogram failed; using clip center and sigma.")
        return None
    x = (edges[1:] + edges[:-1]) / 2.0
    peak = np.argmax(hist)

    def gaussian(x, amp, mean, width):
        return amp * np.exp(-0.5 * ((x - mean) / width) ** 2)

    try:
        popt, _ = curve_fit(gaussian, x, hist, p0=(hist[peak], x[peak], sigma),
                            bounds=[(0, x[0], 0), (np.inf, x[-1], x[-1] - x[0])])
    except RuntimeError:
        log.error("Gaussian fit failed; using clip center and sigma.")
        return None
    return popt[1], popt[2]


def clip_to_background(image, mask, sigma_lower=3.0, sigma_upper=2.0, fit_histogram=False, lower_half_only=False,
                       presorted=None, work=None):
    """Unmask (set False in ``mask``, in place) the pixels of ``image`` outside the background's range.

    Parameters
    ----------
    image : ndarray, 2-D
    mask : ndarray of bool, 2-D
        True = background pixel; updated in place.
    sigma_lower, sigma_upper : float
        The range is centre − sigma_lower σ to centre + sigma_upper σ.
    fit_histogram : bool
        Centre and σ from a Gaussian fit to the histogram (else the 3σ-clipped median and std).
    lower_half_only : bool
        Statistics from the values at or below the centre, mirrored about it (diffuse
        emission makes the upper tail long).
    presorted : ndarray, optional
        ``np.sort(image[mask])`` when the caller has it (any float dtype holding the values
        exactly); saves the sort.
    work : _Workspace, optional
        The calling thread's work arrays: the float64 values are then written to its ``sorted``
        array, and the values returned are a view of it, valid until the next call with ``work``.

    Returns
    -------
    ndarray of float64 or None
        The values of ``image[mask]`` after the clipping, sorted (None when ``mask`` had
        none, or the statistics took astropy's path for non-finite values).

    Notes
    -----
    The statistics come from one sort of the values (the mirrored lower half is a merge of two
    sorted runs), which is what makes the step ~10x faster than calling ``sigma_clipped_stats``
    four times per group difference.  σ is taken from sums over the sorted values
    (:func:`_fast_clipped_stats`), not in numpy's order; where it could draw a line between the
    values differently from numpy's σ (a value within ~1e-11 σ of a clipping bound), and for
    ``fit_histogram``, astropy's own numbers are reproduced (:func:`_sorted_clipped_stats`).  The
    mask and the returned values are therefore astropy's in every case.
    """
    if not np.any(mask):
        return None
    s = np.sort(image[mask]) if presorted is None else presorted  # float32 sorts 3x faster, same order
    if s.dtype != np.float64:
        s64 = _array(work, "sorted", s.size)
        np.copyto(s64, s)  # exact: float32 (or narrower) to float64, as astype
        s = s64
    if not (np.isfinite(s[0]) and np.isfinite(s[-1])):  # NaN sorts last
        found = None
    else:
        found = None if fit_histogram else _fast_center_sigma(s, lower_half_only, work)
        if found is not None:
            center, sigma, err = found
            # numpy's σ draws the same lines between the values when none lies within its reach of them
            clear = all(_clear_of(s, 0, s.size, center + k * sigma, abs(k) * err + 1e-13 * (abs(center) + abs(k) * sigma))
                        for k in (-sigma_lower, sigma_upper))
            found = (center, sigma) if clear else None
        if found is None:
            found = _center_sigma(image[mask].astype(np.float64), s, fit_histogram, lower_half_only)
    if found is None:
        _clip_with_astropy(image.astype(np.float64), mask, sigma_lower, sigma_upper, fit_histogram, lower_half_only)
        return None
    center, sigma = found
    low, high = center - sigma_lower * sigma, center + sigma_upper * sigma
    _unmask_outside(image, mask, np.float64(low), np.float64(high))
    return s[np.searchsorted(s, low, "left"):np.searchsorted(s, high, "right")]


def _fast_center_sigma(s, lower_half_only, work=None):
    """:func:`_center_sigma` by :func:`_fast_clipped_stats` from the sorted values alone: (centre, σ, err) or None."""
    stats = _fast_clipped_stats(s)
    if stats is not None and lower_half_only:
        stats = _fast_clipped_stats(_mirror_sorted(s, np.float64(stats[0]), work))
    return stats


def _center_sigma(x, s, fit_histogram, lower_half_only):
    """:func:`clip_to_background`'s centre and σ from ``x`` (float64, finite) and ``s`` (sorted), in numpy's
    summation order; None when a clipping leaves nothing."""
    stats = _sorted_clipped_stats(x, s)
    if stats is None:
        return None
    center = stats[0] if fit_histogram else stats[1]
    values = x
    if lower_half_only:
        values, ordered = _mirror(x, s, np.float64(center))
        stats = _sorted_clipped_stats(values, ordered)
        if stats is None:
            return None
        center = stats[0] if fit_histogram else stats[1]
    sigma = stats[2]
    if fit_histogram:
        fitted = _histogram_fit(values, center, sigma)
        if fitted is not None:
            center, sigma = fitted
    return center, sigma


def _clip_with_astropy(image, mask, sigma_lower, sigma_upper, fit_histogram, lower_half_only):
    """:func:`clip_to_background` as jwst writes it, for values with NaN or infinity."""
    mean, median, sigma = _clipped_stats(image, mask=~mask)
    center = mean if fit_histogram else median
    if lower_half_only:
        low = image[mask & (image <= center)]
        values = np.concatenate((low - center, center - low)) + center
        mean, median, sigma = _clipped_stats(values)
        center = mean if fit_histogram else median
    else:
        values = image[mask]
    if fit_histogram:
        fitted = _histogram_fit(values, center, sigma)
        if fitted is not None:
            center, sigma = fitted
    mask[image < center - sigma_lower * sigma] = False
    mask[image > center + sigma_upper * sigma] = False


def _background(image, mask, method, box_size, work=None):
    """The background level of a group difference (scalar or image) and the sorted background values.

    Clips ``mask`` in place as jwst does.  The sorted values (``image[mask]`` after the clip, or None)
    spare the caller a sort for its own clip.
    """
    if method is None:
        return 0.0, None
    kept = clip_to_background(image, mask, sigma_lower=_CLIP, sigma_upper=_CLIP, lower_half_only=True, work=work)
    if method == "model":
        from astropy.stats import SigmaClip
        from astropy.utils.exceptions import AstropyUserWarning

        from webbflow.steps._photutils import import_photutils

        import_photutils()  # first: without its distribution scan
        from photutils.background import Background2D, MedianBackground

        if box_size is None:
            sizes = np.arange(1, 33)
            box_size = [int(sizes[n % sizes == 0][-1]) for n in image.shape]
        if image.shape[0] % box_size[0] or image.shape[1] % box_size[1]:
            log.warning("Background box size %s does not divide evenly into the image shape %s.",
                        box_size, image.shape)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=AstropyUserWarning)
                return Background2D(image, box_size=box_size, filter_size=(5, 5), mask=~mask,
                                    sigma_clip=SigmaClip(sigma=_CLIP, maxiters=5),
                                    bkg_estimator=MedianBackground()).background, None
        except ValueError:
            log.error("Background fit failed, using median value.")
    if kept is None or kept.size == 0:  # (finite values only: see clip_to_background)
        return np.nanmedian(image[mask]), None
    # np.nanmedian(image[mask]) in the image's dtype: numpy's mean of the same middle value(s)
    kept = kept.astype(image.dtype)
    n = kept.size
    return np.mean(kept[n // 2 - 1:n // 2 + 1]) if n % 2 == 0 else kept[n // 2], kept


@njit(cache=True, nogil=True)
def _select(a, n, k):
    """The ``k``-th smallest of ``a[:n]`` (finite values), partially ordering ``a`` in place.

    Quickselect with a median-of-three pivot and Hoare's partition; afterwards ``a[:k]`` holds the
    ``k`` smallest values, so the one just below is their maximum.
    """
    lo, hi = 0, n - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@njit(cache=True, nogil=True)
def _row_median_kernel(image, mask, width, out, low, high):
    """Median of the masked pixels of each row segment of ``width`` columns into ``out`` (ny, nseg); 0 if none.

    The values within [low, high] are gathered apart (branch-free) with the count of those below:
    when both middle ranks fall among them, the median is selected from those alone (a band around
    the typical median holds ~40 % of a row), else from the whole segment.  Same order statistics
    either way.
    """
    ny, nx = image.shape
    buf = np.empty(width, np.float64)
    band = np.empty(width, np.float64)
    for y in range(ny):
        for s in range(nx // width):
            n = 0
            below = 0
            m = 0
            finite = True
            for x in range(s * width, (s + 1) * width):
                if mask[y, x]:
                    v = np.float64(image[y, x])
                    buf[n] = v
                    n += 1
                    band[m] = v
                    m += (v >= low) & (v <= high)
                    below += v < low
                    if np.isnan(v):
                        finite = False
            if n == 0:
                out[y, s] = 0.0
                continue
            if not finite:  # numpy's answer, which neither quickselect nor numba's np.median gives
                out[y, s] = np.nan
                continue
            k = n // 2  # the upper middle rank; the lower one is k - 1 when n is even
            if below <= k - 1 + n % 2 and below + m > k:
                values, count, rank = band, m, k - below
            else:
                values, count, rank = buf, n, k
            upper = _select(values, count, rank)
            # numpy's median of an even count is the mean of the two middle values in the array's dtype;
            # (a + b) / 2 is exact in float64 for float32 a, b, so its rounding to float32 on the store
            # below is numpy's float32 result
            out[y, s] = upper if n % 2 else (np.max(values[:rank]) + upper) / 2


def _row_medians(image, mask, channels, ordered=None):
    """Masked median of each row (per channel of ``image.shape[1] // channels`` columns), 0 where none: (ny, channels).

    The values numpy's masked median gives (jwst's ``np.ma.median``), in the image's dtype.
    ``ordered``: ``np.sort(image[mask])`` when the caller has it, for the band of
    :func:`_row_median_kernel` (its 30th to 70th percentile); else the whole segments are selected from.
    """
    ny, nx = image.shape
    low, high = -np.inf, np.inf
    if ordered is not None and ordered.size >= 100:
        low, high = float(ordered[int(0.3 * ordered.size)]), float(ordered[int(0.7 * ordered.size)])
    stripes = np.empty((ny, channels), image.dtype)
    _row_median_kernel(image, np.ascontiguousarray(mask), nx // channels, stripes, low, high)
    return stripes


@njit(cache=True, nogil=True)
def _destripe(residual, stripes, background, nan_pix):
    """``residual - stripes`` (per row segment) ``+ background``, NaN where ``nan_pix``, in place (float32 throughout)."""
    ny, nx = residual.shape
    width = nx // stripes.shape[1]
    for y in range(ny):
        for x in range(nx):
            residual[y, x] = np.float32(np.nan) if nan_pix[y, x] else (residual[y, x] - stripes[y, x // width]) + background


def _clean_difference(diff, mask, background_method, box_size, n_sigma, channels, work=None):
    """The cleaned group difference, or None when no background pixel is left.

    ``diff`` (the caller's own difference, not a view of the ramp) is used as the work image when it is
    float32: its NaN become 0.  ``work``: the thread's :class:`_Workspace`, if any.
    """
    image = diff.astype(np.float32, copy=False)
    nan_pix = np.isnan(image)
    image[nan_pix] = 0.0
    mask[nan_pix] = False
    if not np.any(mask):
        return None
    background, kept = _background(image, mask, background_method, box_size, work)
    residual = image - background
    if background_method is not None and n_sigma > 0:
        # residual[mask] sorted: the background's sorted values less the same scalar (a monotonic map)
        presorted = kept - background if kept is not None and np.ndim(background) == 0 else None
        kept = clip_to_background(residual, mask, sigma_lower=n_sigma, sigma_upper=n_sigma, lower_half_only=True,
                                  presorted=presorted, work=work)
    else:
        kept = None
    stripes = _row_medians(residual, mask, channels, kept)
    if residual.dtype == np.float32 and isinstance(background, np.float32):
        _destripe(residual, stripes, background, nan_pix)  # numpy's float32 operations below, in one pass
        return residual
    cleaned = residual - np.repeat(stripes, residual.shape[1] // channels, axis=1)
    cleaned += background
    cleaned[nan_pix] = np.nan
    return cleaned


def background_mask(rate, n_sigma=2.0, fit_histogram=False, single_mask=True):
    """jwst's scene mask (True = background) from a draft rate or rateints.

    Parameters
    ----------
    rate : ndarray, (ny, nx) or (nints, ny, nx)
        The draft rate (DN/s), see :func:`draft_rate`.
    n_sigma : float
        Upper clipping level; 0 keeps every finite, non-zero pixel.
    fit_histogram : bool
        σ from a Gaussian fit to the value histogram.
    single_mask : bool
        Reduce a 3-D mask to one plane (background in every integration).

    Returns
    -------
    ndarray of bool
    """
    rate = np.asarray(rate)
    mask = ~(np.isnan(rate) | (rate == 0))
    if n_sigma > 0:
        planes = zip(rate, mask) if rate.ndim == 3 else [(rate, mask)]
        for plane, m in planes:
            clip_to_background(plane, m, sigma_upper=n_sigma, fit_histogram=fit_histogram)
    if single_mask and mask.ndim == 3:
        mask = np.all(mask, axis=0)
    return mask


def draft_rate(ramp, readout, gain, readnoise, single_mask=True):
    """The draft rate jwst masks the scene from: the ramp fit with its defaults (rate, or rateints)."""
    from webbflow.steps.ramp_fit import fit_ramps

    result = fit_ramps(ramp.data, ramp.groupdq, ramp.pixeldq, gain, readnoise, readout,
                       zeroframe=ramp.zeroframe, average_dark_current=ramp.average_dark_current)
    return result.rate.data if single_mask else result.rateints.data


def channels_for(fit_by_channel, subarray, nx):
    """Amplifier channels of the row median: 4 only for full frames with fit_by_channel (as jwst)."""
    if fit_by_channel and (str(subarray).upper() != "FULL" or nx != 2048):
        log.warning("Fit by channel can only be used for full-frame NIR data; setting fit_by_channel to False.")
        return 1
    return 4 if fit_by_channel else 1


def clean_integrations(data, groupdq, mask, background_method="median", background_box_size=None, n_sigma=2.0,
                       channels=1, first_integration=0):
    """Clean the group differences of some integrations in place (step 2-4 of the module docstring).

    Parameters
    ----------
    data : ndarray, float32, (nints, ngroups, ny, nx)
        Ramps after jump; rewritten in place.
    groupdq : ndarray, uint8, same shape
    mask : ndarray of bool, (ny, nx) or (nints_exposure, ny, nx)
        :func:`background_mask`; a 3-D mask is indexed from ``first_integration``.
    background_method : {"median", "model", None}
    background_box_size : sequence of 2 int or None
    n_sigma : float
    channels : int
        1, or 4 for a full frame fitted by channel.
    first_integration : int
        Number (from 0) of ``data``'s first integration in the exposure.

    Returns
    -------
    int
        Number of differences left uncleaned because no background pixel remained.
    """
    unusable = np.uint8(dqflags.DO_NOT_USE | dqflags.JUMP_DET)
    nints, ngroups = data.shape[:2]
    skipped = 0
    # each difference is cleaned on its own (its kernels release the GIL): several at once when the job
    # has threads; the ramp is rebuilt from them in order.  Not the ``model`` background: photutils runs
    # under warnings.catch_warnings, which threads must not nest.
    workers = 1 if background_method == "model" else min(_jit.num_threads(), ngroups - 1)
    ndiff = ngroups - 1
    # each worker thread's work arrays, freed with the pool's threads when this returns
    local = threading.local()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i in range(nints):
            plane_mask = mask[first_integration + i] if mask.ndim == 3 else mask

            def clean(j, diff, plane_mask=plane_mask, i=i):
                m = plane_mask & ((groupdq[i, j + 1] & unusable) == 0)
                if not hasattr(local, "work"):
                    local.work = _Workspace()
                return _clean_difference(diff, m, background_method, background_box_size, n_sigma, channels,
                                         local.work)

            # Differences come from the input ramp, not the cleaned one: each is taken before group j + 1 is
            # rewritten (instead of copying the whole integration), and at most 2 workers + 1 are in flight
            # (enough that a thread finishing early finds the next one queued), so that neither the
            # differences nor the cleaned results pile up.
            pending, taken = deque(), 0
            for j in range(ndiff):
                while taken < ndiff and (taken <= j + 1 or len(pending) <= 2 * workers):
                    pending.append(pool.submit(clean, taken, data[i, taken + 1] - data[i, taken]))
                    taken += 1
                cleaned = pending.popleft().result()
                if cleaned is None:
                    log.warning("No usable data in integration %d, group %d. Skipping correction for this image.",
                                first_integration + i + 1, j + 1)
                    skipped += 1
                    continue
                data[i, j + 1] = data[i, j] + cleaned
    return skipped


def standard_options(fit_method, exp_type, background_method, single_mask):
    """jwst's checks of the options against the exposure: (run, background_method, single_mask).

    ``run`` is False when jwst would leave the data alone (``fft`` outside NIRSpec).
    """
    if fit_method == "fft" and exp_type not in FFT_EXP_TYPES:
        log.warning("Fit method 'fft' cannot be applied to exp_type %s; step will be skipped", exp_type)
        return False, background_method, single_mask
    if str(background_method).lower() == "none":
        background_method = None
    return True, background_method, single_mask


def run(ramp, readout, gain, readnoise, exp_type="NRC_IMAGE", fit_method="median", fit_by_channel=False,
        background_method="median", background_box_size=None, n_sigma=2.0, fit_histogram=False,
        single_mask=True):
    """jwst 3.0's clean_flicker_noise on ``ramp`` (in place), after jump.

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
        ``data`` is rewritten group by group; the DQ arrays are not changed.
    readout : webbflow.ramp.Readout
    gain, readnoise : ndarray, (ny, nx)
        For the draft rate's ramp fit.
    exp_type : str
        EXP_TYPE (``fit_method: fft`` runs only on NIRSpec types in jwst 3.0).
    fit_method : {"median", "fft"}
    fit_by_channel : bool
        Row medians per 512-column amplifier (full frames only, as jwst).
    background_method : {"median", "model", None}
    background_box_size : sequence of 2 int or None
        Box of the ``model`` background (default: the largest divisor ≤ 32 of each axis).
    n_sigma : float
        Clipping level of the scene mask and of the residual.
    fit_histogram : bool
        Scene mask's σ from a histogram fit.
    single_mask : bool
        One mask from the combined draft rate (else one per integration).

    Returns
    -------
    str
        ``COMPLETE``, or ``FAILED`` when jwst would leave the ramp alone (``fft`` on NIRCam).
    """
    ok, background_method, single_mask = standard_options(fit_method, exp_type, background_method, single_mask)
    if not ok:
        return StepStatus.FAILED
    mask = background_mask(draft_rate(ramp, readout, gain, readnoise, single_mask), n_sigma=n_sigma,
                           fit_histogram=fit_histogram, single_mask=single_mask)
    log.info("clean_flicker_noise: %.1f %% of the pixels are background", 100 * np.mean(mask))
    clean_integrations(ramp.data, ramp.groupdq, mask, background_method, background_box_size, n_sigma,
                       channels_for(fit_by_channel, readout.subarray, ramp.data.shape[-1]))
    return StepStatus.COMPLETE
