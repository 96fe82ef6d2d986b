"""outlier_detection for imaging, as jwst's ``outlier_detection`` (imaging mode).

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
from astropy.stats import sigma_clip
from drizzle.resample import blot_image
from scipy import ndimage

from webbflow import dqflags
from webbflow.steps.resample import drizzle_images, pixmap

__all__ = ["abs_deriv", "compute_weight_threshold", "flag_resampled_crs", "median_image", "outlier_detection"]

log = logging.getLogger(__name__)


def compute_weight_threshold(weight, maskpt):
    """``maskpt`` x the 3-sigma clipped mean of the non-zero finite weights."""
    w = weight[np.isfinite(weight) & (weight != 0)]
    if w.size == 0:
        return 0.0
    return float(np.mean(sigma_clip(w, sigma=3, maxiters=5, masked=False, copy=False), dtype="f8") * maskpt)


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


def flag_resampled_crs(data, err, blot, snr1, snr2, scale1, scale2, backg):
    """Boolean outlier mask from an image, its error and the blotted median."""
    err = np.nan_to_num(err)
    deriv = abs_deriv(blot)
    diff = np.abs(data - blot - backg)
    mask1 = diff > scale1 * deriv + snr1 * err
    grown = ndimage.convolve(mask1.astype(int), np.ones((3, 3), int), mode="nearest") > 0
    mask2 = diff > scale2 * deriv + snr2 * err
    return grown & mask2


def median_image(images, out_wcs, out_shape, *, maskpt=0.7, pixfrac=1.0, kernel="square", weight_type="ivm",
                 good_bits=None):
    """NaN-median of the exposures drizzled one by one (low-weight pixels ignored)."""
    groups = {}
    for im in images:
        groups.setdefault(im.group or im.name, []).append(im)
    stack = np.full((len(groups),) + tuple(out_shape), np.nan, np.float32)
    for k, members in enumerate(groups.values()):
        single = drizzle_images(members, out_wcs, out_shape, 0.0, pixfrac=pixfrac, kernel=kernel,
                                fillval=np.nan, weight_type=weight_type, good_bits=good_bits, with_variance=False)
        threshold = compute_weight_threshold(single.wht, maskpt)
        data = single.data
        data[single.wht < threshold] = np.nan
        stack[k] = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns outside every footprint
        return np.nanmedian(stack, axis=0)


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
    if good_bits is None:
        good_bits = ~np.uint32(dqflags.DO_NOT_USE)
    if len({im.group or im.name for im in images}) < 2:
        log.warning("fewer than two exposures: outlier detection cannot compare them; nothing flagged")
        return None, [0] * len(images)
    median = median_image(images, out_wcs, out_shape, maskpt=maskpt, pixfrac=pixfrac, kernel=kernel,
                          weight_type=weight_type, good_bits=good_bits)
    counts = []
    for im in images:
        pmap = pixmap(im.wcs, out_wcs, im.data.shape)
        pmap[np.isnan(pmap)] = -1  # tblot cannot take NaN (jwst does the same)
        blot = np.full(im.data.shape, np.nan, np.float32)
        blot_image(median.astype(np.float32), pmap, out_img=blot, fillval=np.nan, iscale=1.0, interp="linear")
        level = im.sky if im.sky else backg
        mask = flag_resampled_crs(im.data, im.err, blot, snr[0], snr[1], scale[0], scale[1], level)
        new = mask & ((im.dq & dqflags.OUTLIER) == 0)
        im.dq[mask] |= np.uint32(dqflags.DO_NOT_USE | dqflags.OUTLIER)
        counts.append(int(new.sum()))
        log.info("%s: %d pixels flagged as outliers", im.name, counts[-1])
    return median, counts
