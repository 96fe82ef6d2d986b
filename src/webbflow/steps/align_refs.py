"""align_refs for coronagraphy: register every PSF-reference plane on the science target.

``precision="jwst"`` is jwst 3.0's ``coron.imageregistration.align_models`` number for number:
for each plane ``P`` of the PSF stack, ``scipy.optimize.leastsq`` (x0 = (0, 0, 1),
xtol = ftol = 1e-15) minimises ``sum(((P - beta * shift(S; x, y)) * M)**2)`` where ``S`` is the
first science integration, ``M`` the PSFMASK weights (0 = ignored) and ``shift`` the periodic
Fourier shift (``numpy.fft`` + ``scipy.ndimage.fourier_shift``); the aligned plane is
``shift(P; -x, -y)`` (ERR likewise), beta is discarded.

The jwst quirk: the science data are float32 and numpy >= 2 keeps FFTs in single precision,
so every model evaluation is float32, while MINPACK's forward-difference step for a parameter
at 0 is sqrt(eps(float64)) ~ 1.5e-8 pixel, far below float32 resolution.  The x/y Jacobian
columns are round-off and the fit stays at the start (|shift| < 1e-3 pixel whatever the true
offset).  ``precision="float64"`` (a config option, not jwst) evaluates the model in float64,
so the fit recovers real sub-pixel offsets (to ~1e-4 pixel on noiseless data).

The FFT of ``S`` is computed once per science exposure (jwst redoes it every evaluation; the
values are identical).
"""

import logging
import warnings

import numpy as np
from scipy import optimize
from scipy.ndimage import fourier_shift

__all__ = ["PRECISIONS", "align_refs", "fit_shift", "fourier_imshift"]

log = logging.getLogger(__name__)

PRECISIONS = ("jwst", "float64")


def fourier_imshift(image, shift):
    """Shift a 2-D image by ``shift = (dx, dy)`` pixels with a periodic Fourier shift.

    Parameters
    ----------
    image : ndarray
        2-D; its dtype sets the FFT precision (float32 -> complex64, as jwst's).
    shift : (float, float)
        x (columns) and y (rows) shifts.

    Returns
    -------
    ndarray
        The real part of the shifted image (same float precision as ``image``).
    """
    return np.fft.ifftn(fourier_shift(np.fft.fftn(image), np.asarray(shift)[:2][::-1])).real


def fit_shift(reference_fft, target, mask, xtol=1e-15, ftol=1e-15):
    """Least-squares (dx, dy, beta) that best matches ``beta * shift(reference)`` to ``target``.

    Parameters
    ----------
    reference_fft : ndarray
        ``numpy.fft.fftn`` of the reference image (complex64 for jwst's float32 path).
    target : ndarray
        2-D image to match.
    mask : ndarray or None
        Weights multiplying the residuals (PSFMASK: 0 ignores a pixel).

    Returns
    -------
    ndarray
        (dx, dy, beta), float64.
    """
    def residuals(params):
        offset = np.fft.ifftn(fourier_shift(reference_fft, params[:2][::-1])).real
        diff = target - params[2] * offset
        return (diff * mask).ravel() if mask is not None else diff.ravel()

    with warnings.catch_warnings(record=True) as caught:
        # MINPACK says that xtol = ftol = 1e-15 cannot be met (jwst's values; it stops at round-off).
        warnings.simplefilter("always", RuntimeWarning)
        result, _ = optimize.leastsq(residuals, [0.0, 0.0, 1.0], xtol=xtol, ftol=ftol)
    for w in caught:
        log.debug("leastsq: %s", w.message)
    return result


def align_refs(reference, psf_data, psf_err, mask, precision="jwst"):
    """Align every PSF plane on the reference image.

    Parameters
    ----------
    reference : ndarray
        (ny, nx): the first science integration after bad-pixel replacement.
    psf_data, psf_err : ndarray
        (npsf, ny, nx) PSF stack after bad-pixel replacement (``psf_err`` may be None).
    mask : ndarray
        (ny, nx) PSFMASK weights.
    precision : {"jwst", "float64"}
        ``jwst``: the float32 model of jwst 3.0 (parity, fits barely move); ``float64``: a
        double-precision model whose fit finds sub-pixel shifts.

    Returns
    -------
    data, err : ndarray
        Aligned planes, float32 (``err`` None when ``psf_err`` is).
    shifts : ndarray
        (npsf, 3) fitted (dx, dy, beta) per plane; the planes are moved by (-dx, -dy).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"align_refs precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "float64":
        reference = np.asarray(reference, np.float64)
        psf_data = np.asarray(psf_data, np.float64)
        psf_err = None if psf_err is None else np.asarray(psf_err, np.float64)
        mask = np.asarray(mask, np.float64)
    ref_fft = np.fft.fftn(reference)
    shifts = np.empty((psf_data.shape[0], 3), np.float64)
    aligned = np.empty(psf_data.shape, np.float32)
    aligned_err = None if psf_err is None else np.empty(psf_data.shape, np.float32)
    for k, plane in enumerate(psf_data):
        shifts[k] = fit_shift(ref_fft, plane, mask)
        aligned[k] = fourier_imshift(plane, -shifts[k])
        if psf_err is not None:
            aligned_err[k] = fourier_imshift(psf_err[k], -shifts[k])
    log.info("align_refs (%s): |shift| median %.3g, max %.3g pixel over %d PSF planes", precision,
             np.median(np.hypot(shifts[:, 0], shifts[:, 1])), np.max(np.hypot(shifts[:, 0], shifts[:, 1])),
             len(shifts))
    return aligned, aligned_err, shifts
