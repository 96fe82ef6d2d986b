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

Each model evaluation is jwst's to the bit, only cheaper (the forward-difference Jacobian of the
float32 model is round-off, so any other rounding would change the fitted shifts):
:func:`_shift_spectrum` is ``scipy.ndimage.fourier_shift``'s arithmetic (the phase angle summed per
axis in float64, its cosine and sine, the complex product in float64) with one ``cos``/``sin`` for
each pair of frequencies ``k`` and ``-k`` (their angles are exact negatives), and the inverse FFT is
``numpy.fft.ifftn``'s sequence of 1-D transforms (last axis first, ``1/n`` per axis) through
``scipy.fft`` in place; the residuals are computed in one pass, in float64 as numpy's promotion does.
"""

import logging
import math
import mmap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft
from scipy import optimize
from scipy.ndimage import fourier_shift

from webbflow.jobmode import fork_safe, run_forked
from webbflow.steps._jit import dispatcher, lazy_njit

__all__ = ["PRECISIONS", "align_many", "align_refs", "fit_shift", "fit_shift_float64", "fourier_imshift"]

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
    spectrum = np.fft.fftn(image)
    if not np.isfinite(image).all():
        # every output pixel is NaN then; jwst's own calls give its NaNs' sign bits too (byte-identical
        # products: the fast path's operand order differs, and with it which NaN propagates)
        return np.fft.ifftn(fourier_shift(spectrum, np.asarray(shift, np.float64)[:2][::-1])).real
    return _ifft2(_shift_spectrum(spectrum, *_angles(spectrum.shape, shift), np.empty_like(spectrum))).real


def _frequencies(n):
    """``fourier_shift``'s signed frequency indices of an axis of ``n`` (0, 1, ..., -1) as float64."""
    return np.concatenate([np.arange((n + 1) // 2), np.arange(-(n // 2), 0)]).astype(np.float64)


def _angles(shape, shift, freqs=None):
    """Per-axis phase angles of a shift by ``shift = (dx, dy)``: ``fourier_shift``'s
    ``(-2 pi s / n) * k`` in float64, the same operations in the same order (rows: dy; columns: dx)."""
    ny, nx = shape
    fy, fx = freqs if freqs is not None else (_frequencies(ny), _frequencies(nx))
    return (-2.0 * np.pi * float(shift[1]) / float(ny)) * fy, (-2.0 * np.pi * float(shift[0]) / float(nx)) * fx


@lazy_njit(cache=True, nogil=True)
def _shift_spectrum(spectrum, ay, ax, out):  # pragma: no cover (numba)
    """``scipy.ndimage.fourier_shift(spectrum, ...)`` into ``out`` (same dtype), bit for bit.

    ``ay``/``ax``: :func:`_angles`.  The angle of frequency (-ky, -kx) is exactly minus that of (ky, kx)
    (IEEE negation commutes with the products and the sum), and libm's cosine is even and its sine
    odd: one cos/sin serves both.  The Nyquist row (even ``ny``) has no mirror row inside the grid:
    all its columns are computed; the Nyquist column's mirror is itself (``i2 < half``).
    """
    ny, nx = spectrum.shape
    half = nx // 2 + 1
    for j in range(ny):
        jm = (ny - j) % ny
        nyquist = ny % 2 == 0 and j == ny // 2  # its mirror row is not in the grid: every column here
        for i in range(nx if nyquist else half):
            t = 0.0 + ay[j] + ax[i]
            c = math.cos(t)
            s = math.sin(t)
            v = spectrum[j, i]
            re = np.float64(v.real)
            im = np.float64(v.imag)
            out[j, i] = complex(re * c - im * s, re * s + im * c)
            i2 = (nx - i) % nx
            if not nyquist and i2 >= half:
                # fourier_shift's own expressions with sin(-t) = -s (same operand order: same NaN signs)
                ns = -s
                w = spectrum[jm, i2]
                re = np.float64(w.real)
                im = np.float64(w.imag)
                out[jm, i2] = complex(re * c - im * ns, re * ns + im * c)
    return out


def _ifft2(spectrum):
    """``numpy.fft.ifftn`` of a 2-D spectrum (last axis, then the first), overwriting ``spectrum``."""
    return scipy.fft.ifft(scipy.fft.ifft(spectrum, axis=1, overwrite_x=True), axis=0, overwrite_x=True)


@lazy_njit(cache=True, nogil=True)
def _residuals(target, beta, model, mask):  # pragma: no cover (numba)
    """``((target - beta * model.real) * mask).ravel()`` in float64 (numpy's promotion of jwst's
    float32 arrays with the float64 beta), one pass, no temporaries."""
    ny, nx = target.shape
    out = np.empty(ny * nx, np.float64)
    for j in range(ny):
        for i in range(nx):
            out[j * nx + i] = (np.float64(target[j, i]) - beta * np.float64(model[j, i].real)) * np.float64(mask[j, i])
    return out


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
    mask = np.ones(target.shape, np.float32) if mask is None else np.asarray(mask, mask.dtype.newbyteorder("="))
    reference_fft = np.ascontiguousarray(reference_fft)
    freqs = (_frequencies(target.shape[0]), _frequencies(target.shape[1]))
    shifted = {}

    def residuals(params):
        # MINPACK's forward-difference column for beta (and a repeated trial point) keeps (x, y): the
        # shifted reference is the same array, so it is computed once per (x, y) (identical numbers).
        key = params[:2].tobytes()
        offset = shifted.get(key)
        if offset is None:
            # the oldest buffer is reused: only the latest points come back
            out = shifted.pop(next(iter(shifted))) if len(shifted) > 4 else np.empty_like(reference_fft)
            offset = shifted[key] = _ifft2(_shift_spectrum(reference_fft, *_angles(target.shape, params, freqs), out))
        return _residuals(target, float(params[2]), offset, mask)

    # MINPACK says that xtol = ftol = 1e-15 cannot be met (jwst's values; it stops at round-off): with
    # full_output leastsq returns that message instead of warning it (the same fit; no process-wide
    # warning filters, which the fits of align_refs' threads would race on)
    result, *_, message, info = optimize.leastsq(residuals, [0.0, 0.0, 1.0], xtol=xtol, ftol=ftol, full_output=True)
    if info not in (1, 2, 3, 4):
        log.debug("leastsq: %s", message)
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


def align_refs(reference, psf_data, psf_err, mask, precision="jwst", workers=1):
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
    workers : int
        Processes (this one and forked helpers, :func:`_align_forked`) or, where this process may
        not fork (other threads running), threads that fit the planes: each plane's fit and shift
        are independent of the others', the same numbers whatever the count.

    Returns
    -------
    data, err : ndarray
        Aligned planes, float32 (``err`` None when ``psf_err`` is).
    shifts : ndarray
        (npsf, 3) fitted (dx, dy, beta) per plane; the planes are moved by (-dx, -dy).
    """
    return align_many([(reference, psf_data, psf_err)], mask, precision, workers)[0]


def align_many(targets, mask, precision="jwst", workers=1):
    """:func:`align_refs` for several references at once, each with its own PSF stack: the planes of
    all of them fitted by one set of workers (one fork of helpers for a coron3 association's science
    exposures instead of one each; the same numbers).

    Parameters
    ----------
    targets : sequence of (reference, psf_data, psf_err)
        As :func:`align_refs`' arguments.
    mask, precision, workers :
        As :func:`align_refs`'.

    Returns
    -------
    list of (data, err, shifts)
        :func:`align_refs`' answer for each target, in order.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"align_refs precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "float64":
        mask = np.asarray(mask, np.float64)
        targets = [(np.asarray(ref, np.float64), np.asarray(psf, np.float64),
                    None if err is None else np.asarray(err, np.float64)) for ref, psf, err in targets]
    tasks = [(t, k) for t, (_, psf, _) in enumerate(targets) for k in range(len(psf))]
    workers = max(1, min(int(workers), len(tasks)))
    # several workers: forked helpers where this process may fork (:func:`_align_forked`), else threads
    forked = workers > 1 and _fork_safe()

    def empty(shape, dtype):
        # the helpers' planes come back through shared anonymous memory (freed with its last view)
        if not forked:
            return np.empty(shape, dtype)
        count = math.prod(shape)
        return np.frombuffer(mmap.mmap(-1, max(1, count * np.dtype(dtype).itemsize)), dtype, count).reshape(shape)

    ref_ffts = [np.fft.rfft2(ref) if precision == "float64" else np.fft.fftn(ref) for ref, _, _ in targets]
    out = [(empty(psf.shape, np.float32), None if err is None else empty(psf.shape, np.float32),
            empty((psf.shape[0], 3), np.float64)) for _, psf, err in targets]
    fit = fit_shift_float64 if precision == "float64" else fit_shift

    def align(task):
        t, k = task
        psf_data, psf_err = targets[t][1], targets[t][2]
        aligned, aligned_err, shifts = out[t]
        shifts[k] = fit(ref_ffts[t], psf_data[k], mask)
        aligned[k] = fourier_imshift(psf_data[k], -shifts[k])
        if psf_err is not None:
            aligned_err[k] = fourier_imshift(psf_err[k], -shifts[k])

    if workers == 1:
        for task in tasks:
            align(task)
    elif forked:
        if precision == "jwst":
            _load_kernels()
        _align_forked(align, tasks, workers)
        # this process's own arrays (copies): the shared memory goes with the views
        out = [tuple(None if a is None else np.array(a) for a in arrays) for arrays in out]
    else:
        for kernel in (_shift_spectrum, _residuals):  # made once here, not by two threads' first calls
            dispatcher(kernel)
        with ThreadPoolExecutor(workers, thread_name_prefix="align_refs") as pool:
            list(pool.map(align, tasks))  # list(): a fit's error is raised here
    for _, _, shifts in out:
        log.info("align_refs (%s): |shift| median %.3g, max %.3g pixel over %d PSF planes", precision,
                 np.median(np.hypot(shifts[:, 0], shifts[:, 1])), np.max(np.hypot(shifts[:, 0], shifts[:, 1])),
                 len(shifts))
    return out


def _fork_safe():
    """Whether this process may fork helpers (:func:`webbflow.jobmode.fork_safe`)."""
    return fork_safe()


def _load_kernels():
    """Load the jwst model's kernels (the signatures of its complex64 spectra and float32 planes)
    before a fork: the helpers then find them loaded instead of each loading them again."""
    spectrum = np.ones((2, 2), np.complex64)
    angles = np.zeros(2, np.float64)
    _shift_spectrum(spectrum, angles, angles, np.empty_like(spectrum))
    _residuals(np.ones((2, 2), np.float32), 1.0, spectrum, np.ones((2, 2), np.float32))


def _align_forked(align, tasks, workers):
    """``align(task)`` for every plane's task, in this process and ``workers - 1`` forked helpers
    (:func:`webbflow.jobmode.run_forked`), each taking every ``workers``-th task (``align`` fills
    arrays in shared memory).

    Why processes, not threads: a jwst-line fit's MINPACK steps and Python calls hold the GIL (about
    half of its CPU), so two threads fitted the demo's planes ~1.5x faster than one, two processes
    ~2x.  Each plane's numbers are the serial loop's (the same code on the same inputs).
    """
    def part(worker):
        def fit():
            for task in tasks[worker::workers]:
                align(task)
        return fit

    for worker in run_forked([part(w) for w in range(workers)]):
        log.warning("align_refs: helper %d failed; its planes were fitted by the job's process", worker)
