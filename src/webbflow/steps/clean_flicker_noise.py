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
import warnings

import numpy as np
from numba import njit

from webbflow import dqflags
from webbflow.ramp import StepStatus

__all__ = ["FFT_EXP_TYPES", "background_mask", "channels_for", "clean_integrations", "clip_to_background",
           "draft_rate", "run", "standard_options"]

log = logging.getLogger(__name__)

FFT_EXP_TYPES = ("NRS_MSASPEC", "NRS_IFU", "NRS_FIXEDSLIT", "NRS_BRIGHTOBJ")
"""The exposure types jwst 3.0 lets ``fit_method: fft`` (NSClean) run on."""

_CLIP = 3.0  # jwst's sigma limit for the basic statistics and the background's own clip


def _clipped_stats(values, mask=None):
    from astropy.stats import sigma_clipped_stats
    from astropy.utils.exceptions import AstropyUserWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=AstropyUserWarning)
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return sigma_clipped_stats(values, mask=mask, sigma=_CLIP)


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


def clip_to_background(image, mask, sigma_lower=3.0, sigma_upper=2.0, fit_histogram=False, lower_half_only=False):
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
    """
    if not np.any(mask):
        return
    image = image.astype(np.float64)
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


def _background(image, mask, method, box_size):
    """The background level of a group difference (scalar or image); clips ``mask`` in place as jwst does."""
    if method is None:
        return 0.0
    clip_to_background(image, mask, sigma_lower=_CLIP, sigma_upper=_CLIP, lower_half_only=True)
    if method == "model":
        from astropy.stats import SigmaClip
        from astropy.utils.exceptions import AstropyUserWarning
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
                                    bkg_estimator=MedianBackground()).background
        except ValueError:
            log.error("Background fit failed, using median value.")
    return np.nanmedian(image[mask])


@njit(cache=True, nogil=True)
def _row_median_kernel(image, mask, width, out):
    """Median of the masked pixels of each row segment of ``width`` columns into ``out`` (ny, nseg); 0 if none."""
    ny, nx = image.shape
    buf = np.empty(width, np.float64)
    for y in range(ny):
        for s in range(nx // width):
            n = 0
            for x in range(s * width, (s + 1) * width):
                if mask[y, x]:
                    buf[n] = image[y, x]
                    n += 1
            if n == 0:
                out[y, s] = 0.0
                continue
            v = np.sort(buf[:n])
            # numpy's median of an even count is the mean of the two middle values in the array's
            # dtype; (a + b) / 2 is exact in float64 for float32 a, b, so its rounding to float32 on
            # the store below is numpy's float32 result
            out[y, s] = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0


def _row_medians(image, mask, channels):
    """Masked median of each row (per channel of ``image.shape[1] // channels`` columns), 0 where none.

    The values numpy's masked median gives (jwst's ``np.ma.median``), in the image's dtype.
    """
    ny, nx = image.shape
    stripes = np.empty((ny, channels), image.dtype)
    _row_median_kernel(image, np.ascontiguousarray(mask), nx // channels, stripes)
    return np.repeat(stripes, nx // channels, axis=1)


def _clean_difference(diff, mask, background_method, box_size, n_sigma, channels):
    """The cleaned group difference, or None when no background pixel is left."""
    image = diff.astype(np.float32)  # a copy: the caller's difference is not changed
    nan_pix = np.isnan(image)
    image[nan_pix] = 0.0
    mask[nan_pix] = False
    if not np.any(mask):
        return None
    background = _background(image, mask, background_method, box_size)
    residual = image - background
    if background_method is not None and n_sigma > 0:
        clip_to_background(residual, mask, sigma_lower=n_sigma, sigma_upper=n_sigma, lower_half_only=True)
    cleaned = residual - _row_medians(residual, mask, channels)
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
    for i in range(nints):
        plane_mask = mask[first_integration + i] if mask.ndim == 3 else mask
        original = data[i].copy()  # differences come from the input ramp, not the cleaned one
        for j in range(ngroups - 1):
            m = plane_mask & ((groupdq[i, j + 1] & unusable) == 0)
            cleaned = _clean_difference(original[j + 1] - original[j], m, background_method,
                                        background_box_size, n_sigma, channels)
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
