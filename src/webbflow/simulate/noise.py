"""Correlated detector noise generated in readout order.

1/f noise is a time series per amplifier sampled every 10 µs in the order the
pixels are read (fast direction along detector rows, 12 overhead samples per
row, one overhead row per frame), so it is correlated along the fast-read
direction and seen identically by reference and science pixels.  It is built in
the DETECTOR frame and flipped to the science frame with FASTAXIS/SLOWAXIS.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import irfft, next_fast_len

from webbflow.simulate.detectors import AMP_WIDTH, ROW_OVERHEAD, to_detector_frame

__all__ = ["pink_noise", "OneOverF", "amplifier_offsets", "sirs_kernel_coefficients"]


def pink_noise(n, rng):
    """Unit-variance noise with a 1/f power spectrum, ``n`` samples (float32).

    The spectrum runs from 1/n (one cycle over the series) to Nyquist; the
    variance is normalised analytically (not per realization), so a slice of a
    long series keeps its true, smaller low-frequency power.
    """
    n_out = n
    n = next_fast_len(n, real=True)  # awkward lengths make the FFT several times slower
    nf = n // 2 + 1
    k = np.arange(nf, dtype=np.float64)
    w = np.zeros(nf)
    w[1:] = 1.0 / np.sqrt(k[1:])
    spec = (rng.standard_normal(nf) + 1j * rng.standard_normal(nf)) * w
    x = irfft(spec, n)[:n_out]
    x *= n / (2.0 * np.sqrt(np.sum(w[1:-1] ** 2) + 0.25 * w[-1] ** 2))
    return x.astype(np.float32)


def _layout(geometry):
    """(number of outputs, columns per output, samples per row, samples per frame)."""
    ny, nx = geometry.shape
    if geometry.noutputs == 4:
        width = AMP_WIDTH
        per_frame = (width + ROW_OVERHEAD) * (ny + 1) + 1
        return 4, width, width + ROW_OVERHEAD, per_frame
    return 1, nx, nx + ROW_OVERHEAD, (nx + ROW_OVERHEAD) * (ny + 2)


class OneOverF:
    """1/f noise of one integration, ``nframes`` frames long.

    Parameters
    ----------
    geometry : Geometry
    detector : str
    nframes : int
        Frames read in the integration (dropped frames included: time runs on).
    rms : float
        Standard deviation of each amplifier's series, DN.
    rng : numpy.random.Generator
    common_fraction : float
        Fraction of the variance shared by all amplifiers.  NIRCam's 1/f comes
        largely from electronics common to the four outputs (stripes run across
        the full detector width), which is what lets the side reference
        pixels of amplifiers A and D correct amplifiers B and C too.
    """

    def __init__(self, geometry, detector, nframes, rms, rng, common_fraction=0.8):
        self.geometry = geometry
        self.detector = detector
        self.noutputs, self.width, self.rowlen, self.per_frame = _layout(geometry)
        n = nframes * self.per_frame
        common = pink_noise(n, rng) * np.float32(rms * np.sqrt(common_fraction))
        own = np.float32(rms * np.sqrt(1.0 - common_fraction))
        self.series = [common + pink_noise(n, rng) * own for _ in range(self.noutputs)]

    def frame(self, k):
        """Science-frame (ny, nx) float32 noise of frame ``k`` (0-based)."""
        ny, nx = self.geometry.shape
        det = np.empty((ny, nx), np.float32)
        start = k * self.per_frame
        for amp, series in enumerate(self.series):
            rows = series[start: start + ny * self.rowlen].reshape(ny, self.rowlen)[:, : self.width]
            # Amplifiers alternate their fast-read direction (+, -, +, -).
            det[:, amp * self.width: (amp + 1) * self.width] = rows if amp % 2 == 0 else rows[:, ::-1]
        return np.ascontiguousarray(to_detector_frame(det, self.detector))


def amplifier_offsets(geometry, detector, rms, rng):
    """Per-amplifier bias offsets with an odd/even-column split (science frame).

    Each amplifier gets a common offset ~N(0, rms) plus separate offsets for
    its even and odd detector columns ~N(0, rms/4) -- what refpix removes.
    """
    ny, nx = geometry.shape
    noutputs, width, _, _ = _layout(geometry)
    det = np.empty(nx, np.float32)
    for amp in range(noutputs):
        common = rng.normal(0.0, rms)
        even_odd = rng.normal(0.0, rms / 4, 2)
        cols = np.arange(width)
        det[amp * width: (amp + 1) * width] = common + even_odd[cols % 2]
    det2 = np.broadcast_to(det, (ny, nx))
    return np.ascontiguousarray(to_detector_frame(det2, detector))


def sirs_kernel_coefficients(rms, common_fraction, read_noise, nrows=2048, nchan=4, halfwidth=30):
    """SIRS Fourier weights (SIRSKERNEL ``gamma``/``zeta``) that are optimal for :class:`OneOverF`.

    Rauscher's (2022) least-squares estimate of each amplifier's row-averaged 1/f from the row
    means of the left (amplifier A) and right (amplifier D) side reference pixels, for this
    simulator's noise, with kernels of ``2 * halfwidth + 1`` rows (jwst cuts the kernels to that
    length, so they are designed at that length rather than cut from an infinite Wiener filter,
    whose 1/f tails would be lost).  Sampled once per row, a 1/f series of per-sample variance
    ``rms**2`` has the two-sided power ``P(f) = A / |f|`` (f in cycles per row, ``A = rms**2 /
    (2 ln(samples per frame / 2))``, the zero frequency taken at half the lowest one); a fraction
    ``common_fraction`` is shared by the four amplifiers.  The side-pixel row means also carry
    white noise: read noise over 4 pixels plus the 1/f that varies within a row.  The normal
    equations use the covariances (inverse FFT of those spectra on the ``nrows`` grid); the
    kernels are returned as their real FFTs on that grid, which jwst's ``make_kernels`` turns back
    into the same kernels.

    Parameters
    ----------
    rms : float
        1/f rms per amplifier (DN); values <= 0 give the kernel of 1 DN.
    common_fraction : float
        Fraction of the 1/f variance common to all amplifiers.
    read_noise : float
        Read noise of one reference pixel read (DN).
    nrows : int
        Detector rows (``nrows // 2 + 1`` frequencies).
    nchan : int
        Amplifier channels.
    halfwidth : int
        Kernel half-width (rows), jwst's ``halfwidth``.

    Returns
    -------
    gamma, zeta : ndarray, (nchan, nrows // 2 + 1), float64
        Weights of the left and right side pixels.
    """
    rms = float(rms) if rms > 0 else 1.0
    fc = float(np.clip(common_fraction, 0.0, 1.0))
    per_frame = (AMP_WIDTH + ROW_OVERHEAD) * (nrows + 1) + 1
    a = rms**2 / (2.0 * np.log(per_frame / 2.0))
    f = np.arange(nrows // 2 + 1) / nrows
    f[0] = f[1] / 2.0
    # autocovariance (per row lag) of a series with two-sided power a/|f|, circular on nrows rows
    cov = np.fft.irfft(a / f, nrows) * nrows
    noise = read_noise**2 / 4.0 + 2.0 * a * np.log((AMP_WIDTH + ROW_OVERHEAD) / 4.0)
    lags = np.arange(-halfwidth, halfwidth + 1)
    block = cov[np.abs(lags[:, None] - lags[None, :])]
    c_xx = np.block([[block + noise * np.eye(lags.size), fc * block],
                     [fc * block, block + noise * np.eye(lags.size)]])
    gamma = np.empty((nchan, f.size))
    zeta = np.empty((nchan, f.size))
    for k in range(nchan):
        t_left = (1.0 if k == 0 else fc) * cov[np.abs(lags)]
        t_right = (1.0 if k == nchan - 1 else fc) * cov[np.abs(lags)]
        w = np.linalg.solve(c_xx, np.concatenate([t_left, t_right]))
        for out, h in ((gamma, w[:lags.size]), (zeta, w[lags.size:])):
            circ = np.zeros(nrows)
            circ[lags % nrows] = h
            out[k] = np.fft.rfft(circ).real
    return gamma, zeta
