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
values are identical), and its shift once per (x, y) that MINPACK asks for (its beta column of the
forward-difference Jacobian reuses the point's (x, y): a quarter of jwst's shifts, identical values).
"""

import logging
import warnings

import numpy as np
from scipy import optimize
from scipy.ndimage import fourier_shift

__all__ = ["PRECISIONS", "align_refs", "fit_shift", "fit_shift_float64", "fourier_imshift"]

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
    target = np.asarray(target, target.dtype.newbyteorder("="))  # FITS's big-endian: same values, faster
    shifted = {}

    def residuals(params):
        # MINPACK's forward-difference column for beta (and a repeated trial point) keeps (x, y): the
        # shifted reference is the same array, so it is computed once per (x, y) (identical numbers).
        key = params[:2].tobytes()
        offset = shifted.get(key)
        if offset is None:
            offset = shifted[key] = np.fft.ifftn(fourier_shift(reference_fft, params[:2][::-1])).real
            if len(shifted) > 4:  # only the latest points come back
                del shifted[next(iter(shifted))]
        diff = target - params[2] * offset
        return (diff * mask).ravel() if mask is not None else diff.ravel()

    with warnings.catch_warnings(record=True) as caught:
        # MINPACK says that xtol = ftol = 1e-15 cannot be met (jwst's values; it stops at round-off).
        warnings.simplefilter("always", RuntimeWarning)
        result, _ = optimize.leastsq(residuals, [0.0, 0.0, 1.0], xtol=xtol, ftol=ftol)
    for w in caught:
        log.debug("leastsq: %s", w.message)
    return result


def _shift_phases(n, d, half):
    """Phase factors of a shift ``d`` along an axis of ``n`` pixels (``half``: rfft's half axis) and
    their derivatives; the Nyquist bin gets the real part of its phase, ``cos(pi d)``."""
    f = np.fft.rfftfreq(n) if half else np.fft.fftfreq(n)
    e = np.exp(-2j * np.pi * f * d)
    de = -2j * np.pi * f * e
    if n % 2 == 0:
        k = len(f) - 1 if half else n // 2
        e[k], de[k] = np.cos(np.pi * d), -np.pi * np.sin(np.pi * d)
    return e, de


def fit_shift_float64(reference_rfft, target, mask, xtol=1e-10, ftol=1e-10):
    """Least-squares (dx, dy, beta) of ``beta * Re(shift(reference))`` to ``target``, in float64 with
    real FFTs and the analytic Jacobian (the ``precision="float64"`` fit).

    Parameters
    ----------
    reference_rfft : ndarray
        ``numpy.fft.rfft2`` of the float64 reference image.
    target : ndarray
        2-D float64 image to match.
    mask : ndarray
        Weights multiplying the residuals (PSFMASK: 0 ignores a pixel).
    xtol, ftol : float
        MINPACK's relative tolerances (1e-10: far below any meaningful sub-pixel offset).

    Returns
    -------
    ndarray
        (dx, dy, beta), float64: the model is :func:`fourier_imshift` (same periodic shift, its
        real part) of the reference by (dx, dy), times beta.
    """
    ny, nx = target.shape
    even = ny % 2 == 0 and nx % 2 == 0
    state = {}

    def spectra(p):
        ex, dex = _shift_phases(nx, p[0], True)
        ey, dey = _shift_phases(ny, p[1], False)
        phase, dphx, dphy = ey[:, None] * ex[None, :], ey[:, None] * dex[None, :], dey[:, None] * ex[None, :]
        if even:  # the (Nyquist, Nyquist) bin is its own mirror: the real part of its phase
            c, s = np.cos(np.pi * (p[0] + p[1])), -np.pi * np.sin(np.pi * (p[0] + p[1]))
            phase[ny // 2, -1], dphx[ny // 2, -1], dphy[ny // 2, -1] = c, s, s
        return phase, dphx, dphy

    def residuals(p):
        phase, dphx, dphy = spectra(p)
        model = np.fft.irfft2(reference_rfft * phase, s=(ny, nx))
        state.update(p=p.copy(), model=model, dphx=dphx, dphy=dphy)
        return ((target - p[2] * model) * mask).ravel()

    def jacobian(p):
        if "p" not in state or not np.array_equal(state["p"], p):
            residuals(p)
        d = np.fft.irfft2(np.stack([reference_rfft * state["dphx"], reference_rfft * state["dphy"]]), s=(ny, nx),
                          axes=(-2, -1))
        return np.stack([-p[2] * d[0] * mask, -p[2] * d[1] * mask, -state["model"] * mask]).reshape(3, -1)

    result, _ = optimize.leastsq(residuals, [0.0, 0.0, 1.0], Dfun=jacobian, col_deriv=1, xtol=xtol, ftol=ftol)
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
        ref_fft = np.fft.rfft2(reference)
    else:
        ref_fft = np.fft.fftn(reference)
    shifts = np.empty((psf_data.shape[0], 3), np.float64)
    aligned = np.empty(psf_data.shape, np.float32)
    aligned_err = None if psf_err is None else np.empty(psf_data.shape, np.float32)
    for k, plane in enumerate(psf_data):
        shifts[k] = (fit_shift_float64 if precision == "float64" else fit_shift)(ref_fft, plane, mask)
        aligned[k] = fourier_imshift(plane, -shifts[k])
        if psf_err is not None:
            aligned_err[k] = fourier_imshift(psf_err[k], -shifts[k])
    log.info("align_refs (%s): |shift| median %.3g, max %.3g pixel over %d PSF planes", precision,
             np.median(np.hypot(shifts[:, 0], shifts[:, 1])), np.max(np.hypot(shifts[:, 0], shifts[:, 1])),
             len(shifts))
    return aligned, aligned_err, shifts
