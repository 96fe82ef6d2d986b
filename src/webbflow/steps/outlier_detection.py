"""outlier_detection for imaging, as jwst's ``outlier_detection`` (imaging mode), for time
series (mode "tso", :func:`tso_outlier_detection`: a rolling median in time, no resampling) and
for coronagraphy (mode "coron", :func:`coron_outlier_detection`: the median over integrations).

1. Each exposure (group of images sharing an exposure id) is drizzled alone
   onto the output grid (``resample_data``; weights as resample, sky removed).
2. Pixels of each drizzled image with a weight below ``maskpt`` x the
   sigma-clipped mean weight are set to NaN, and the stack's NaN-median is the
   outlier-free reference.
3. The median is blotted back onto each input (linear interpolation) and a
   pixel is an outlier when ``|data - blot - sky| > scale1 |d blot| + snr1 err``
   and, after a 3x3 box of that mask, also above ``scale2 |d blot| + snr2 err``
   (stcal ``flag_resampled_crs``).  Outliers get ``DO_NOT_USE | OUTLIER`` in DQ.
"""

import logging
import warnings

import numpy as np

from webbflow import dqflags
from webbflow.dqflags import good_pixel_mask
from webbflow.steps._jit import lazy_njit
from webbflow.steps.flat_field import match_nans_and_flags

# astropy.stats, drizzle, scipy and resample (gwcs, astropy.modeling) are imported where the imaging
# mode uses them: a time-series job (tso3) loads none of them, ~70 MiB and ~1 s less per process.
# numba too, until a time series is longer than its rolling window (lazy_njit): image3 and coron3
# jobs never load it.

__all__ = ["abs_deriv", "compute_weight_threshold", "coron_outlier_detection", "flag_resampled_crs", "median_image", "moving_median",
           "outlier_detection", "tso_outlier_detection"]

log = logging.getLogger(__name__)


def compute_weight_threshold(weight, maskpt):
    """``maskpt`` x the 3-sigma clipped mean of the non-zero finite weights.

    The clipping is astropy's ``sigma_clip(w, sigma=3, maxiters=5, masked=False)`` (median centre,
    ``np.nanstd``, the values outside the bounds dropped each iteration until none is); for float32
    weights the medians are found by :func:`_median_f32` (the value ``np.median`` returns, without
    its ~40 ms partition of a full-frame grid per iteration), otherwise astropy's runs.
    """
    from astropy.stats import sigma_clip

    w = weight[np.isfinite(weight) & (weight != 0)]
    if w.size == 0:
        return 0.0
    if w.dtype != np.float32:
        return float(np.mean(sigma_clip(w, sigma=3, maxiters=5, masked=False, copy=False), dtype="f8") * maskpt)
    for _ in range(5):
        size = w.size
        cen, std = _median_f32(w), np.nanstd(w)
        w = w[(w >= cen - std * 3.0) & (w <= cen + std * 3.0)]
        if w.size == size or w.size == 0:
            break
    return float(np.mean(w, dtype="f8") * maskpt)


def _median_f32(v):
    """``np.median(v)`` of a 1-D float32 array without NaN (non-empty), by radix selection: the middle
    order statistics of ``v``, and for an even count their mean as numpy takes it (float32 sum
    halved)."""
    n = v.size
    hi = _kth_f32(v, n // 2)
    if n % 2:
        return hi
    return np.float32(_kth_f32(v, n // 2 - 1) + hi) / np.float32(2.0)


def _kth_f32(v, k):
    """The ``k``-th smallest (0-based) value of a float32 array without NaN."""
    key = _kth_key(np.ascontiguousarray(v).view(np.uint32).ravel(), k)
    bits = key ^ 0x80000000 if key & 0x80000000 else ~key & 0xFFFFFFFF  # back from the order key
    return np.array([bits], np.uint32).view(np.float32)[0]


@lazy_njit(cache=True)
def _kth_key(bits, k):
    # Order keys of float32 bit patterns (sign flipped for positives, all bits for negatives: unsigned
    # order is numeric order, -0.0 just below 0.0), selected 16 bits at a time by counting.
    hist = np.zeros(65536, np.int64)
    for b in bits:
        key = b ^ np.uint32(0xFFFFFFFF) if b & np.uint32(0x80000000) else b | np.uint32(0x80000000)
        hist[key >> np.uint32(16)] += 1
    top, below = 0, 0
    while below + hist[top] <= k:
        below += hist[top]
        top += 1
    hist[:] = 0
    for b in bits:
        key = b ^ np.uint32(0xFFFFFFFF) if b & np.uint32(0x80000000) else b | np.uint32(0x80000000)
        if (key >> np.uint32(16)) == top:
            hist[key & np.uint32(0xFFFF)] += 1
    low = 0
    while below + hist[low] <= k:
        below += hist[low]
        low += 1
    return (top << 16) | low


def abs_deriv(array):
    """Largest absolute difference of each pixel with its four neighbours."""
    out = np.zeros_like(array)
    out[np.isnan(array)] = np.nan
    row = np.abs(np.diff(array, axis=0))
    np.putmask(out[1:], np.isfinite(row), row)
    view = out[:-1]
    np.putmask(view, row > view, row)
    col = np.abs(np.diff(array, axis=1))
    view = out[:, 1:]
    np.putmask(view, col > view, col)
    view = out[:, :-1]
    np.putmask(view, col > view, col)
    return out


def _grow3x3(mask):
    """``ndimage.convolve(mask.astype(int), np.ones((3, 3), int), mode="nearest") > 0`` (stcal's
    growth of the first outlier mask) as boolean ORs of shifted views: a pixel is set when any pixel
    of its 3 x 3 box is (the box clipped at the edges, which for an OR is the "nearest" padding),
    without the int64 copy and the convolution (~0.1 s per full frame)."""
    mask = np.asarray(mask, bool)
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    grown = rows.copy()
    grown[:, 1:] |= rows[:, :-1]
    grown[:, :-1] |= rows[:, 1:]
    return grown


def flag_resampled_crs(data, err, blot, snr1, snr2, scale1, scale2, backg):
    """Boolean outlier mask from an image, its error and the blotted median."""
    err = np.nan_to_num(err)
    deriv = abs_deriv(blot)
    diff = np.abs(data - blot - backg)
    mask1 = diff > scale1 * deriv + snr1 * err
    grown = _grow3x3(mask1)
    mask2 = diff > scale2 * deriv + snr2 * err
    return grown & mask2


def median_image(images, out_wcs, out_shape, *, maskpt=0.7, pixfrac=1.0, kernel="square", weight_type="ivm",
                 good_bits=None):
    """NaN-median of the exposures drizzled one by one (low-weight pixels ignored)."""
    from webbflow.steps.resample import drizzle_images

    groups = {}
    for im in images:
        groups.setdefault(im.group or im.name, []).append(im)
    stack = np.full((len(groups),) + tuple(out_shape), np.nan, np.float32)
    for k, members in enumerate(groups.values()):
        single = drizzle_images(members, out_wcs, out_shape, 0.0, pixfrac=pixfrac, kernel=kernel,
                                fillval=np.nan, weight_type=weight_type, good_bits=good_bits, with_variance=False,
                                release_pixmaps=False)  # the blot and the resample use them again
        threshold = compute_weight_threshold(single.wht, maskpt)
        data = single.data
        data[single.wht < threshold] = np.nan
        stack[k] = data
    # np.nanmedian's numbers in row blocks: its masked-array path holds float64 and int64 copies of
    # the whole stack (~6x its size), the blocks only a sorted copy of 256 rows.
    median = np.empty(stack.shape[1:], stack.dtype)
    for r0 in range(0, stack.shape[1], 256):
        median[r0:r0 + 256] = _nanmedian_axis0(stack[:, r0:r0 + 256])
    return median


def outlier_detection(images, out_wcs, out_shape, *, snr=(5.0, 4.0), scale=(1.2, 0.7), backg=0.0, maskpt=0.7,
                      pixfrac=1.0, kernel="square", weight_type="ivm", good_bits=None):
    """Flag outliers in place (DQ |= DO_NOT_USE | OUTLIER).

    Parameters
    ----------
    images : list of webbflow.steps.resample.ImageInput
        ``dq`` updated in place; ``sky`` (skymatch) is honoured.
    out_wcs, out_shape :
        Grid of the median (the resample grid).
    snr, scale : (float, float)
        jwst's ``snr='5.0 4.0'`` and ``scale='1.2 0.7'``.
    backg : float
        Background added to the blot when the image has no sky level.
    maskpt, pixfrac, kernel, weight_type, good_bits :
        As jwst's outlier_detection (good_bits default: all but DO_NOT_USE).

    Returns
    -------
    median : ndarray
        The median image on the output grid.
    counts : list of int
        Newly flagged pixels per image.
    """
    from drizzle.resample import blot_image

    from webbflow.steps.resample import image_pixmap

    if good_bits is None:
        good_bits = ~np.uint32(dqflags.DO_NOT_USE)
    if len({im.group or im.name for im in images}) < 2:
        log.warning("fewer than two exposures: outlier detection cannot compare them; nothing flagged")
        return None, [0] * len(images)
    median = median_image(images, out_wcs, out_shape, maskpt=maskpt, pixfrac=pixfrac, kernel=kernel,
                          weight_type=weight_type, good_bits=good_bits)
    counts = []
    median32 = np.asarray(median, np.float32)  # one copy for every blot, none when float32
    for im in images:
        # the drizzle's map, kept for the final resample: NaN -> -1 on a copy (tblot cannot take NaN;
        # jwst does the same)
        pmap = image_pixmap(im, out_wcs)
        pmap = np.where(np.isnan(pmap), -1.0, pmap)
        blot = np.full(im.data.shape, np.nan, np.float32)
        blot_image(median32, pmap, out_img=blot, fillval=np.nan, iscale=1.0, interp="linear")
        level = im.sky if im.sky else backg
        mask = flag_resampled_crs(im.data, im.err, blot, snr[0], snr[1], scale[0], scale[1], level)
        new = mask & ((im.dq & dqflags.OUTLIER) == 0)
        im.dq[mask] |= np.uint32(dqflags.DO_NOT_USE | dqflags.OUTLIER)
        counts.append(int(new.sum()))
        log.info("%s: %d pixels flagged as outliers", im.name, counts[-1])
    return median, counts


# --- Time series (jwst's ``outlier_detection`` mode "tso": calwebb_tso3 on calints) -------------------


@lazy_njit(cache=True, error_model="numpy")
def _rolling_median_kernel(cube, w, out):
    # out[s + w//2] = median(cube[s:s+w]) per pixel, in float64 as jwst stores it; any NaN in the
    # window gives NaN (jwst uses np.median, not nanmedian).  The two middle values are averaged in
    # float64, as np.median's mean into a float64 ``out`` does, so the result is bit-identical.
    n, ny, nx = cube.shape
    hw = w // 2
    buf = np.empty(w, np.float64)
    for y in range(ny):
        for x in range(nx):
            for s in range(n - w + 1):
                bad = False
                for k in range(w):
                    v = cube[s + k, y, x]
                    if np.isnan(v):
                        bad = True
                        break
                    buf[k] = v
                if bad:
                    out[s + hw, y, x] = np.nan
                    continue
                b = np.sort(buf)
                if w % 2:
                    out[s + hw, y, x] = b[hw]
                else:
                    out[s + hw, y, x] = (b[hw - 1] + b[hw]) / 2.0


_NUMPY_MEDIAN_VALUES = 2**23
"""Window values (windows x pixels x width) up to which :func:`moving_median` sorts with numpy
(a sorted copy of at most 32 MiB); larger cubes go to the numba kernel."""


def _rolling_median_numpy(cube, w, out):
    """:func:`_rolling_median_kernel` with numpy, the same numbers: for a small cube (an imaging
    time series' segment) importing numba and loading the kernel would cost ~0.6 s of CPU and ~120
    MiB, a hundred times the sort itself."""
    from numpy.lib.stride_tricks import sliding_window_view

    hw = w // 2
    ordered = np.sort(sliding_window_view(cube, w, axis=0), axis=-1)  # (windows, ny, nx, w); NaN last
    median = ordered[..., hw].astype(np.float64)
    if not w % 2:  # the two middle values averaged in float64, as the kernel (and np.median into float64)
        median += ordered[..., hw - 1]
        median /= 2.0
    median[np.isnan(ordered[..., -1])] = np.nan  # any NaN in the window: no median
    out[hw:hw + median.shape[0]] = median


def _nanmedian_axis0(a):
    """The NaN-median over the first axis, bit-identical to ``np.nanmedian(a, axis=0)``.

    For fewer than 600 planes numpy takes the median of a masked array (NaNs masked): an
    argsort, index arrays and masked copies of the whole stack, several times its size in
    int64 and float64.  Here NaNs sort last in a plain sort, and the two middle values of the
    ``n`` finite ones are combined with numpy's arithmetic: ``(low + high) / 2`` in the array's
    dtype, also when ``n`` is odd (low is high then).  All-NaN lanes give NaN (numpy also warns).
    Only the sign of a zero median may differ (ties of -0.0 and 0.0 sort either way in both), which
    leaves ``|data - median|`` unchanged.

    Parameters
    ----------
    a : ndarray
        Floating point, at least 2-D, fewer than 600 planes along axis 0.

    Returns
    -------
    ndarray
        ``a.shape[1:]``, ``a.dtype``.
    """
    a = np.asarray(a)
    if a.shape[0] >= 600 or a.dtype.kind != "f":
        return np.nanmedian(a, axis=0)
    # each lane sorted as a contiguous row (the planes last): numpy sorts every 1-D slice alike, and
    # a copy with the lanes contiguous sorts in half the time of the strided lanes (a SUBGRISM64
    # segment of 20 integrations: ~11 ms instead of ~21 ms)
    ordered = np.sort(np.ascontiguousarray(np.moveaxis(a, 0, -1)), axis=-1)  # NaN after +inf
    n = a.shape[0] - np.count_nonzero(np.isnan(a), axis=0)
    high = n // 2
    low = np.where(n % 2 == 1, high, high - 1)
    pick = np.take_along_axis
    lo = pick(ordered, np.maximum(low, 0)[..., np.newaxis], axis=-1)[..., 0]
    hi = pick(ordered, high[..., np.newaxis], axis=-1)[..., 0]
    del ordered
    median = np.add(lo, hi)
    np.true_divide(median, 2.0, out=median, casting="unsafe")
    median[n == 0] = np.nan
    return median


def moving_median(cube, w):
    """Median of a moving window of ``w`` integrations, stored at the window's centre.

    As jwst's ``moving_median_over_zeroth_axis``: float64 output, NaN wherever the window holds a
    NaN, and the ``w // 2`` edge planes at each end copied from the nearest computed one.

    Parameters
    ----------
    cube : ndarray
        (nints, ny, nx) float32.
    w : int
        Window width, 1 < w <= nints.

    Returns
    -------
    ndarray
        (nints, ny, nx) float64.
    """
    if not 1 < w <= cube.shape[0]:
        raise ValueError(f"rolling window {w} must be > 1 and <= the {cube.shape[0]} integrations")
    out = np.full(cube.shape, np.nan)
    n, ny, nx = cube.shape
    if (n - w + 1) * ny * nx * w <= _NUMPY_MEDIAN_VALUES:
        _rolling_median_numpy(cube, int(w), out)
    else:
        _rolling_median_kernel(np.ascontiguousarray(cube), int(w), out)
    hw, odd = divmod(w, 2)
    out[:hw] = out[hw]
    if odd:
        out[-hw:] = out[-hw - 1]
    else:
        out[-hw + 1:] = out[-hw]
    return out


def tso_outlier_detection(arrays, *, maskpt=0.7, rolling_window_width=25, snr=(5.0, 4.0), good_bits=None,
                          nints=None, weight_threshold=None):
    """Flag outliers of a time-series cube in place, as jwst 3.0's outlier_detection (mode "tso").

    A pixel is an outlier in an integration when ``|data - median| > snr[0] * err`` (NaN errors
    count as 0), the median being the rolling median in time over ``rolling_window_width``
    integrations (pixels with weight below ``maskpt`` x the mean weight set to NaN first, so a bad
    pixel anywhere in the window gives no median and flags nothing), or the NaN-median over all
    integrations when the window is not narrower than the cube.  ``snr[1]`` is not used in this
    mode (jwst's neither).  Outliers get ``DO_NOT_USE | OUTLIER``, then NaNs and DO_NOT_USE are
    matched across the arrays.

    Parameters
    ----------
    arrays : object
        Attributes ``data, err`` (float32, (nints, ny, nx)), ``dq`` (uint32) and any of
        ``var_poisson, var_rnoise, var_flat``; updated in place.
    maskpt : float
        jwst's ``maskpt``.
    rolling_window_width : int
        jwst's ``rolling_window_width`` (1 or >= nints: the whole-cube median).
    snr : (float, float)
        jwst's ``snr='5.0 4.0'``; only the first value is used.
    good_bits : int, optional
        DQ bits that keep a pixel's weight (default: all but DO_NOT_USE).
    nints, weight_threshold : optional
        For a block of rows of a larger cube (every integration, so the result is the whole cube's):
        its integrations and the threshold :func:`compute_weight_threshold` gives on the whole cube.

    Returns
    -------
    int
        Pixels flagged.
    """
    nints = arrays.data.shape[0] if nints is None else nints
    w = int(rolling_window_width)
    return _cube_outliers(arrays, maskpt, snr[0], good_bits, window=w if 1 < w < nints else None,
                          mask_whole_cube=False, threshold=weight_threshold)


def _cube_outliers(arrays, maskpt, snr, good_bits, window, mask_whole_cube, threshold=None):
    """Flag a cube against its median in time: rolling over ``window`` integrations, or over the whole
    cube when ``window`` is None (low-weight pixels left out of it only when ``mask_whole_cube``:
    jwst's coron mode does, its tso mode does not)."""
    if good_bits is None:
        good_bits = ~np.uint32(dqflags.DO_NOT_USE)
    if window is not None or mask_whole_cube:
        # a float32 cube: made only where it masks, and let go before the flagging's temporaries
        weight = good_pixel_mask(arrays.dq, good_bits).astype(np.float32)
        if threshold is None:
            threshold = compute_weight_threshold(weight, maskpt)
        sci = np.where(weight < threshold, np.float32(np.nan), arrays.data)
        del weight
    else:
        sci = arrays.data
    if window is not None:
        median = moving_median(sci, window)
    else:
        median = np.empty(sci.shape[1:], sci.dtype)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
            for rows in _row_blocks(sci.shape):  # each pixel's median is its own lane's
                median[rows] = _nanmedian_axis0(sci[:, rows])
        median = np.broadcast_to(median, arrays.data.shape)
    del sci
    return _flag_against_median(arrays, median, snr)


_BLOCK_VALUES = 1 << 20
"""Values (integrations x rows x columns) per block of rows of the whole-cube median and of the
flagging: their temporaries (sorted copies, differences, masks) are a few MiB instead of several
times the cube, which set a grism tso3 job's peak memory; every pixel's result is its own, so
the blocks give the same numbers."""


def _row_blocks(shape):
    """Slices of the rows (axis 1) of a (nints, ny, nx) cube, ~:data:`_BLOCK_VALUES` values each."""
    nints, ny, nx = shape
    rows = max(1, _BLOCK_VALUES // max(1, nints * nx))
    return [slice(r, min(ny, r + rows)) for r in range(0, ny, rows)]


def _flag_against_median(arrays, median, snr):
    """DQ |= DO_NOT_USE | OUTLIER where ``|data - median| > snr * err`` (NaN err as 0), then NaN/DQ
    matched across the arrays (jwst's ``flag_model_crs``); returns the number flagged."""
    flag = np.uint32(dqflags.DO_NOT_USE | dqflags.OUTLIER)
    count = 0
    for rows in _row_blocks(arrays.data.shape):  # elementwise: blocks only bound the temporaries
        outliers = np.greater(np.abs(arrays.data[:, rows] - median[:, rows]),
                              snr * np.nan_to_num(arrays.err[:, rows]))
        arrays.dq[:, rows] |= outliers.astype(np.uint32) * flag
        count += int(np.count_nonzero(outliers))
    match_nans_and_flags(arrays)
    log.info("%d pixels marked as outliers", count)
    return count


# --- Coronagraphy (jwst's ``outlier_detection`` mode "coron": calwebb_coron3 on each calints) ----------


def coron_outlier_detection(arrays, *, maskpt=0.7, snr=(5.0, 4.0), good_bits=None):
    """Flag outliers of one coronagraphic exposure in place, as jwst 3.0's ``coron.detect_outliers``.

    The weight of a pixel is 1 where DQ has no bad bit, else 0; pixels whose weight is below
    ``maskpt`` x the clipped mean weight are set to NaN and the NaN-median over the integrations
    is the reference; a pixel is an outlier where ``|data - median| > snr[0] * err`` (NaN errors as
    0).  Outliers get ``DO_NOT_USE | OUTLIER``, then NaN and DO_NOT_USE are matched across the
    arrays.  ``snr[1]``, scale, backg and the resampling parameters play no part (as in jwst).

    Parameters
    ----------
    arrays : object
        ``data, err`` (float32, (nints, ny, nx)), ``dq`` (uint32), optional ``var_*``; updated in
        place.
    maskpt, snr, good_bits :
        As :func:`tso_outlier_detection` (only ``snr[0]`` is used).

    Returns
    -------
    int
        Pixels flagged.
    """
    return _cube_outliers(arrays, maskpt, snr[0], good_bits, window=None, mask_whole_cube=True)
