"""Reference-pixel correction for the NIR detectors (jwst ``refpix``, median and SIRS algorithms).

Everything is done in the DETECTOR frame (amplifier outputs along detector
columns), reached from the science frame by the flips/transposition that
FASTAXIS/SLOWAXIS describe; the arrays are views, never copies of the ramp.

Four-amplifier readouts (full frame, or a subarray read with NOUTPUTS=4):

* per amplifier (512-column stripes) and per column parity, the 3-sigma
  clipped mean of the top (detector rows 2044-2047) and of the bottom (rows
  0-3) reference pixels without DO_NOT_USE; top and bottom are averaged and
  subtracted from every pixel of that amplifier and parity;
* side ("1/f") correction: for each detector row, the median of the left
  (columns 0-3) and of the right (2044-2047) reference pixels in a window of
  ``side_smoothing_length`` rows (reflected at the detector edges, DO_NOT_USE
  excluded); left and right are averaged (one missing: the other; both
  missing: 0) and ``side_gain`` times that is subtracted from the row.

With ``refpix_algorithm="sirs"`` (full frames) the side correction is jwst 3.0's SIRS instead:
per amplifier, the side pixels convolved with the SIRSKERNEL reference's kernels.

One-amplifier subarrays: the clipped mean of the pixels flagged
REFERENCE_PIXEL (and not DO_NOT_USE), per detector-column parity, is
subtracted from the whole subarray.  Without such pixels the step is skipped.

The ZEROFRAME is corrected the same way (its zeros stay zero).

Parity with jwst down to float32 rounding needs one of its quirks: once a
group has been through the side correction, jwst keeps working on a float64
buffer, so every later group (and the ZEROFRAME) has its clipped means,
medians and corrections computed in float64 and rounded once; the very first
group is computed in float32.  We reproduce that.
"""

import logging

import numpy as np

from webbflow.steps._jit import njit, prange

from webbflow import dqflags
from webbflow.ramp import StepStatus

__all__ = ["run", "clipped_mean", "one_over_f_record", "sirs_kernels", "sirs_template", "to_detector_frame"]

log = logging.getLogger(__name__)

DETECTOR_SIZE = 2048
AMP_WIDTH = 512
NREF = 4  # width of each reference-pixel border
SIGLIMIT = 3.0

_DNU = dqflags.DO_NOT_USE
_REF = dqflags.REFERENCE_PIXEL


def to_detector_frame(arr, fastaxis, slowaxis):
    """View of ``arr`` (..., ny, nx) in the detector frame.

    Parameters
    ----------
    arr : ndarray
        Array in the DMS science frame.
    fastaxis, slowaxis : int
        FASTAXIS / SLOWAXIS keywords (+-1, +-2).

    Returns
    -------
    ndarray
        A view; writing to it writes to ``arr``.
    """
    if abs(fastaxis) == 1:
        return arr[..., :: int(np.sign(slowaxis)), :: int(np.sign(fastaxis))]
    return np.swapaxes(arr[..., :: int(np.sign(fastaxis)), :: int(np.sign(slowaxis))], -2, -1)


def _detector_offsets(readout, ny, nx):
    """(row, col) of the subarray's first detector-frame pixel on the detector."""
    r0, c0 = readout.substrt2 - 1, readout.substrt1 - 1
    # Offsets after the flips, in the science-frame axis order.
    if abs(readout.fastaxis) == 1:
        flip_rows, flip_cols = readout.slowaxis < 0, readout.fastaxis < 0
    else:
        flip_rows, flip_cols = readout.fastaxis < 0, readout.slowaxis < 0
    row_off = DETECTOR_SIZE - (r0 + ny) if flip_rows else r0
    col_off = DETECTOR_SIZE - (c0 + nx) if flip_cols else c0
    if abs(readout.fastaxis) == 1:
        return row_off, col_off
    return col_off, row_off


def clipped_mean(values, dq=None, siglimit=SIGLIMIT):
    """Sigma-clipped mean with ``scipy.stats.sigmaclip`` semantics.

    Parameters
    ----------
    values : ndarray, 1-D
        Values in the order jwst passes them (row-major); the dtype sets the
        precision of the sums, as in numpy.
    dq : ndarray or None
        Pixels with DO_NOT_USE are ignored.
    siglimit : float
        Clip at mean +- siglimit * std, iterated until nothing changes.

    Returns
    -------
    numpy scalar or None
        None when no usable pixel is left; a float64 plain mean when the
        values have zero spread (as jwst does), else the clipped mean in the
        values' dtype.
    """
    if dq is not None:
        values = values[(dq & _DNU) == 0]
    if values.size == 0:
        return None
    if np.std(values, dtype=np.float64) == 0.0:
        return values.mean(dtype=np.float64)
    c = values
    while True:
        c_std = c.std()
        c_mean = c.mean()
        size = c.size
        keep = (c >= c_mean - c_std * siglimit) & (c <= c_mean + c_std * siglimit)
        c = c[keep]
        if c.size == size:
            break
    return c.mean()


@njit(cache=True)
def _block_sum(a, lo, n, zero):
    """numpy's pairwise summation of at most 128 values ``a[lo:lo + n]``: eight accumulators."""
    if n < 8:
        res = zero
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    m = n - n % 8
    i = 8
    while i < m:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True)
def _pairwise_sum(a, n, zero, partial):
    """numpy's pairwise summation of ``a[:n]`` (``np.add.reduce`` of a contiguous 1-D array, in its
    dtype): blocks of up to 128 values (:func:`_block_sum`), longer runs split in halves at a multiple
    of 8 and the halves' sums added.  The recursion runs on an explicit stack (numba's cache cannot
    reload a recursive kernel); ``partial`` (>= 64 values of ``a``'s dtype) holds the left halves' sums.
    """
    if n <= 128:
        return _block_sum(a, 0, n, zero)
    los = np.empty(64, np.int64)
    ns = np.empty(64, np.int64)
    stage = np.empty(64, np.int8)
    depth = 0
    los[0], ns[0], stage[0] = 0, n, 0
    res = zero
    while depth >= 0:
        m = ns[depth]
        if m <= 128:
            res = _block_sum(a, los[depth], m, zero)
            depth -= 1
            continue
        n2 = m // 2
        n2 -= n2 % 8
        if stage[depth] == 0:  # sum the left half first
            stage[depth] = 1
            los[depth + 1], ns[depth + 1], stage[depth + 1] = los[depth], n2, 0
            depth += 1
        elif stage[depth] == 1:  # the left half's sum is in res: now the right half
            partial[depth] = res
            stage[depth] = 2
            los[depth + 1], ns[depth + 1], stage[depth + 1] = los[depth] + n2, m - n2, 0
            depth += 1
        else:
            res = partial[depth] + res
            depth -= 1
    return res


@njit(cache=True)
def _mean_of(a, n, tmp):
    """``a[:n].mean()`` as numpy computes it: the pairwise sum from 0, divided by the count in float64
    and rounded to ``a``'s dtype (through ``tmp``, :func:`_clipped_mean_section`'s)."""
    tmp[0] = tmp[1] + _pairwise_sum(a, n, tmp[1], tmp[3:])
    tmp[0] = np.float64(tmp[0]) / n
    return tmp[0]


@njit(cache=True)
def _clipped_mean_section(vals, dq, buf, sq, tmp, dnu, is32):
    """:func:`clipped_mean` of ``vals`` (2-D, row-major order) without DO_NOT_USE pixels, in ``buf``'s dtype.

    ``sq`` is scratch of ``buf``'s size and dtype; ``tmp`` holds [scratch, 0, siglimit, 64 x scratch] in that dtype;
    ``is32``: ``buf`` is float32.
    Returns (value, kind): kind 0 no usable pixel, 1 the clipped mean (``buf``'s dtype), 2 the float64
    mean of values with zero spread.  The arithmetic is numpy's (``_methods._mean``/``_var``:
    pairwise sums, float64 divisions rounded to the dtype), so the value is bit-identical.
    """
    zero = tmp[1]
    n = 0
    for r in range(vals.shape[0]):
        for c in range(vals.shape[1]):
            if (dq[r, c] & dnu) == 0:
                buf[n] = vals[r, c]
                n += 1
    if n == 0:
        return 0.0, 0
    if is32:
        # np.std(dtype=float64) == 0 exactly when every value is the same finite number (the float64
        # sums of k copies of a float32 are exact), whose float64 mean is itself
        v0 = buf[0]
        same = np.isfinite(v0)
        for i in range(1, n):
            if buf[i] != v0:
                same = False
                break
        if same:
            return np.float64(v0), 2
    else:
        m = _mean_of(buf, n, tmp)
        for i in range(n):
            d = buf[i] - m
            sq[i] = d * d
        tmp[0] = zero + _pairwise_sum(sq, n, zero, tmp[3:])
        if np.sqrt(np.float64(tmp[0]) / n) == 0.0:
            return np.float64(m), 2
    lim = tmp[2]
    while True:
        if n == 0:  # everything clipped (NaN spread): numpy's mean of nothing
            return np.nan, 1
        m = _mean_of(buf, n, tmp)
        for i in range(n):
            d = buf[i] - m
            sq[i] = d * d
        tmp[0] = zero + _pairwise_sum(sq, n, zero, tmp[3:])
        tmp[0] = np.float64(tmp[0]) / n
        tmp[0] = np.sqrt(tmp[0])
        std = tmp[0]
        lo = m - std * lim
        hi = m + std * lim
        k = 0
        for i in range(n):
            x = buf[i]
            if x >= lo and x <= hi:
                buf[k] = x
                k += 1
        if k == n:
            break
        n = k
    return np.float64(_mean_of(buf, n, tmp)), 1


def _section_clipped_mean(vals, dq, float64, siglimit=SIGLIMIT, scratch=None):
    """:func:`clipped_mean` of ``vals.ravel()`` without ``dq``'s DO_NOT_USE pixels (``float64``: of the values
    as float64), by :func:`_clipped_mean_section`: the same numpy scalar, one compiled call.

    ``scratch``: a dict in which the work arrays are kept for the next call (a corrector's, per group).
    """
    dtype = np.dtype(np.float64 if float64 else vals.dtype)
    key = (vals.size, dtype.char, siglimit)
    work = None if scratch is None else scratch.get(key)
    if work is None:
        work = (np.empty(vals.size, dtype), np.empty(vals.size, dtype),
                np.array([0, 0, siglimit] + [0] * 64, dtype))
        if scratch is not None:
            scratch[key] = work
    value, kind = _clipped_mean_section(vals, dq, *work, np.uint32(_DNU), dtype == np.float32)
    if kind == 0:
        return None
    if kind == 1 and np.isnan(value):  # NaN or inf reference pixels: numpy's own NaN (its bits) instead
        vals = vals.astype(dtype, copy=False)
        return clipped_mean(vals.ravel(), dq.ravel(), siglimit)
    return np.float64(value) if kind == 2 else dtype.type(value)


def _average_with_none(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return 0.5 * (a + b)


@njit(cache=True)
def _tb_value(v, ref, kind):
    """Top/bottom-corrected value of one pixel, as float64 (exact in both precisions).

    kind 0: no correction; 1: float32 subtraction (float32 reference);
    2: float64 subtraction rounded to float32 (float64 reference, float32 data);
    3: float64 subtraction kept in float64 (jwst's float64 buffer).
    """
    if kind == 1:
        return np.float64(v - np.float32(ref))
    if kind == 2:
        return np.float64(np.float32(np.float64(v) - ref))
    if kind == 3:
        return np.float64(v) - ref
    return np.float64(v)


@njit(cache=True)
def _side_values(g, cols, colref, colkind):
    """Top/bottom-corrected values of the given local columns, float64."""
    nr = g.shape[0]
    out = np.empty((nr, cols.size), np.float64)
    for r in range(nr):
        for k in range(cols.size):
            c = cols[k]
            out[r, k] = _tb_value(g[r, c], colref[c], colkind[c])
    return out


@njit(cache=True)
def _running_median(vals, good, roff, nrows_det, length, mode64):
    """Median over ``length`` detector rows (reflected at the edges) per row.

    ``vals``/``good`` are (nr, ncols) side reference pixels of the local rows
    ``roff .. roff+nr-1``; rows outside them are unusable.  NaN when no good
    pixel; NaN when the window holds a NaN (as ``np.median``).
    """
    nr, ncols = vals.shape
    sm = length if length % 2 == 1 else length + 1
    half = sm // 2
    out = np.full(nr, np.nan)
    # One thread: even a full frame is ~2048 medians of ~44 values (about a millisecond), less
    # than what waking numba's thread pool costs on a busy machine at every group.
    buf = np.empty(length * ncols, np.float64)  # one buffer: each row's window is sorted in its head
    for r in range(nr):
        n = 0
        has_nan = False
        for k in range(length):
            p = roff + r - half + k
            if p < 0:
                p = -p
            elif p > nrows_det - 1:
                p = 2 * (nrows_det - 1) - p
            q = p - roff
            if q < 0 or q >= nr:
                continue
            for c in range(ncols):
                if good[q, c]:
                    x = vals[q, c]
                    if np.isnan(x):
                        has_nan = True
                    buf[n] = x
                    n += 1
        if n == 0:
            continue
        if has_nan:
            out[r] = np.nan
            continue
        s = buf[:n]
        s.sort()
        if n % 2 == 1:
            out[r] = s[n // 2]
        elif mode64:
            out[r] = (s[n // 2 - 1] + s[n // 2]) / 2.0
        else:
            # np.median of float32: the two middle values summed in float32
            out[r] = np.float64((np.float32(s[n // 2 - 1]) + np.float32(s[n // 2])) / np.float32(2.0))
    return out


@njit(cache=True)
def _apply_row(g, r, colref, colkind, side, chan, use_side):
    for c in range(g.shape[1]):
        t = _tb_value(g[r, c], colref[c], colkind[c])
        if use_side:
            t = t - side[r, chan[c]]
        g[r, c] = np.float32(t)


@njit(cache=True, parallel=True)
def _apply_parallel(g, colref, colkind, side, chan, use_side):
    for r in prange(g.shape[0]):
        _apply_row(g, r, colref, colkind, side, chan, use_side)


@njit(cache=True)
def _apply_serial(g, colref, colkind, side, chan, use_side):
    for r in range(g.shape[0]):
        _apply_row(g, r, colref, colkind, side, chan, use_side)


# Frames smaller than this are corrected on one thread: the kernel runs once per group, and on a
# subarray (a 64 x 2048 grism cutout: ~0.3 ms of work) waking the thread pool costs more.
_PARALLEL_MIN_PIXELS = 1 << 20


def _apply(g, colref, colkind, side, chan, use_side):
    """Write the corrected group back (float32) into the detector-frame view.

    ``side`` is (rows, channels) and ``chan`` the channel of every column: one channel for the
    running median, the four amplifiers for SIRS.
    """
    kernel = _apply_parallel if g.size >= _PARALLEL_MIN_PIXELS else _apply_serial
    kernel(g, colref, colkind, side, chan, use_side)


def sirs_kernels(gamma, zeta, gaussmooth=1.0, halfwidth=30):
    """SIRS convolution kernels from a SIRSKERNEL reference's Fourier coefficients.

    jwst 3.0's ``optimized_convolution.make_kernels``: per amplifier channel, the inverse real
    FFT of the coefficients, centred and cut to ``2 * halfwidth + 1`` rows, then smoothed by a
    normalised Gaussian of ``gaussmooth`` rows (a low-pass filter).

    Parameters
    ----------
    gamma, zeta : ndarray, (nchan, nfreq)
        Fourier weights of the left and right side reference pixels, per channel.
    gaussmooth : float
        Sigma (rows) of the Gaussian smoothing.
    halfwidth : int
        Half-width (rows) of the kernels.

    Returns
    -------
    list of two lists of ndarray
        ``[left kernels, right kernels]``, one float64 kernel per channel.
    """
    x = np.arange(-halfwidth, halfwidth + 1)
    window = np.exp(-(x**2) / (2 * gaussmooth**2))
    window /= np.sum(window)
    left, right = [], []
    for g, z in zip(np.asarray(gamma), np.asarray(zeta)):
        n = len(g) - 1
        kl = np.fft.fftshift(np.fft.irfft(g))[n - halfwidth: n + halfwidth + 1]
        kr = np.fft.fftshift(np.fft.irfft(z))[n - halfwidth: n + halfwidth + 1]
        left.append(np.convolve(kl, window, mode="same"))
        right.append(np.convolve(kr, window, mode="same"))
    return [left, right]


def sirs_template(left, right, kernels, sigreject=4.0):
    """SIRS side-pixel signal per channel and row (jwst 3.0's ``apply_conv_kernel``).

    The left and right reference columns are masked where they differ from their median by more
    than ``sigreject`` robust sigma (1.48 MAD), averaged per row with the masked pixels as zeros,
    convolved with each channel's kernels and renormalised for the masked pixels.  The numpy
    calls are jwst's, in its order, so the result is bit-identical.

    Parameters
    ----------
    left, right : ndarray, (nrows, 4), float64
        Top/bottom-corrected side reference pixels (detector columns 0-3 and 2044-2047).
    kernels : list
        :func:`sirs_kernels`.
    sigreject : float

    Returns
    -------
    ndarray, (nchan, nrows), float64
        Subtracted from every column of channel ``k`` (detector columns ``512 k .. 512 k + 511``).
    """
    mad = 1.48
    medl = np.median(left)
    sigl = mad * np.median(np.abs(left - medl))
    medr = np.median(right)
    sigr = mad * np.median(np.abs(right - medr))
    goodl = 1 * (np.abs(left - medl) <= sigreject * sigl)
    nl = np.sum(goodl, axis=1)
    goodr = 1 * (np.abs(right - medr) <= sigreject * sigr)
    nr = np.sum(goodr, axis=1)
    lmean = np.sum(left * goodl, axis=1) / 4
    rmean = np.sum(right * goodr, axis=1) / 4
    kernels_l, kernels_r = kernels
    out = np.empty((len(kernels_l), left.shape[0]))
    for chan, (kl, kr) in enumerate(zip(kernels_l, kernels_r)):
        norm_l = np.convolve(np.ones(nl.shape), kl, mode="same")
        norm_l /= np.convolve(nl / 4, kl, mode="same")
        norm_r = np.convolve(np.ones(nr.shape), kr, mode="same")
        norm_r /= np.convolve(nr / 4, kr, mode="same")
        template = np.convolve(lmean, kl, mode="same") * norm_l
        template += np.convolve(rmean, kr, mode="same") * norm_r
        out[chan] = template
    return out


class _Corrector:
    """Per-exposure state: geometry, DQ in the detector frame, precision mode."""

    def __init__(self, pixeldq_det, roff, coff, four_amp, odd_even, use_side, smoothing, gain, sirs=None):
        self.pdq = pixeldq_det
        self.roff, self.coff = roff, coff
        self.nr, self.nc = pixeldq_det.shape
        self.four_amp = four_amp
        self.odd_even = odd_even
        self.use_side = use_side and four_amp
        self.smoothing = int(smoothing)
        self.gain = float(gain)
        # SIRS kernels (full frame only, as jwst), else the running median of the side pixels
        self.sirs = sirs if self.use_side else None
        # jwst's float32 -> float64 switch after the first side correction.
        self.mode64 = False
        self._scratch = {}  # work arrays of the compiled clipped means, kept between groups
        if four_amp:
            self._setup_four_amp()
        else:
            self._setup_one_amp()

    # -- geometry ---------------------------------------------------------
    def _local_rows(self, start, stop):
        a, b = max(start - self.roff, 0), min(stop - self.roff, self.nr)
        return slice(a, b) if a < b else None

    def _local_cols(self, start, stop, parity=None):
        a, b = max(start - self.coff, 0), min(stop - self.coff, self.nc)
        if a >= b:
            return None
        if parity is None:
            return slice(a, b)
        if (self.coff + a) % 2 != parity:
            a += 1
        return slice(a, b, 2) if a < b else None

    def _setup_four_amp(self):
        self.amp_width = AMP_WIDTH
        self.namp = DETECTOR_SIZE // AMP_WIDTH
        edges = {"bottom": (0, NREF), "top": (DETECTOR_SIZE - NREF, DETECTOR_SIZE)}
        self.sections = []  # per amp: list of (parity index, [(rows, cols), ...])
        parities = (0, 1) if self.odd_even else (None,)
        for amp in range(self.namp):
            lo, hi = amp * AMP_WIDTH, (amp + 1) * AMP_WIDTH
            per_parity = []
            for par in parities:
                per_edge = []
                for edge in ("top", "bottom"):
                    rows = self._local_rows(*edges[edge])
                    cols = self._local_cols(lo, hi, par)
                    per_edge.append(None if rows is None or cols is None else (rows, cols))
                per_parity.append(per_edge)
            self.sections.append(per_parity)
        side_cols = []
        for lo, hi in ((0, NREF), (DETECTOR_SIZE - NREF, DETECTOR_SIZE)):
            sl = self._local_cols(lo, hi)
            side_cols.append(np.arange(self.nc)[sl] if sl is not None else np.zeros(0, np.int64))
        self.side_cols = side_cols
        self.side_good = [((self.pdq[:, c] & _DNU) == 0) for c in side_cols]

    def _setup_one_amp(self):
        self.amp_width = 1 << 30  # a single "amplifier" covering everything
        self.namp = 1
        refmask = ((self.pdq & _REF) != 0) & ((self.pdq & _DNU) == 0)
        parity = (self.coff + np.arange(self.nc)) % 2
        if self.odd_even:
            self.refmasks = [refmask & (parity == 0)[None, :], refmask & (parity == 1)[None, :]]
        else:
            self.refmasks = [refmask]
        self.nref = int(refmask.sum())

    def n_good_refpix(self):
        """Reference pixels the correction would use (0 means no effect)."""
        if not self.four_amp:
            return self.nref
        n = 0
        for per_parity in self.sections:
            for per_edge in per_parity:
                for sec in per_edge:
                    if sec is not None:
                        n += int(np.count_nonzero((self.pdq[sec] & _DNU) == 0))
        n += sum(int(g.sum()) for g in self.side_good)
        return n

    # -- per group --------------------------------------------------------
    def _values(self, g, sec):
        vals = g[sec]
        if vals.dtype in (np.float32, np.float64) and self.pdq.dtype == np.uint32:
            return _section_clipped_mean(vals, self.pdq[sec], self.mode64, scratch=self._scratch)
        if self.mode64:
            vals = vals.astype(np.float64)
        return clipped_mean(vals.ravel(), self.pdq[sec].ravel())

    def _ref_table(self, g):
        refs = np.zeros((max(self.namp, 1), 2), np.float64)
        is32 = np.zeros((max(self.namp, 1), 2), np.bool_)
        valid = np.zeros(max(self.namp, 1), np.bool_)
        if self.four_amp:
            for amp, per_parity in enumerate(self.sections):
                signals = []
                for per_edge in per_parity:
                    top, bottom = (None if s is None else self._values(g, s) for s in per_edge)
                    signals.append(_average_with_none(top, bottom))
                if any(s is None for s in signals):
                    continue  # jwst leaves this amplifier uncorrected
                valid[amp] = True
                for par in (0, 1):
                    s = signals[par if self.odd_even else 0]
                    refs[amp, par] = s
                    is32[amp, par] = isinstance(s, np.float32)
        else:
            vals = g if not self.mode64 else g.astype(np.float64)
            signals = [clipped_mean(vals[m]) for m in self.refmasks]
            if any(s is None for s in signals):
                log.warning("refpix: no usable reference pixel in one column parity; "
                            "that parity is left uncorrected")
            for par in (0, 1):
                s = signals[par if self.odd_even else 0]
                if s is None:
                    continue
                valid[0] = True
                refs[0, par] = s
                is32[0, par] = isinstance(s, np.float32)
            if any(s is None for s in signals):
                # per-parity validity is not representable: fall back on NaN-free
                # handling by correcting only the parities that have a value.
                return refs, is32, valid, signals
        return refs, is32, valid, None

    def _column_tables(self, refs, is32, valid):
        """Reference value and arithmetic kind (see ``_tb_value``) per local column."""
        amp = np.minimum((self.coff + np.arange(self.nc)) // self.amp_width, self.namp - 1)
        par = (self.coff + np.arange(self.nc)) % 2
        colref = refs[amp, par]
        if self.mode64:
            kind = np.where(valid[amp], 3, 0)
        else:
            kind = np.where(valid[amp], np.where(is32[amp, par], 1, 2), 0)
        return colref, kind.astype(np.int8)

    def read_mask(self):
        """Boolean (nr, nc) detector-frame mask of the pixels :meth:`plan` reads (the reference pixels used).

        The fused pass (:mod:`webbflow.steps.fused`) subtracts the superbias from these first, so that
        the corrections are computed from the same values as when the steps run one after another.
        """
        mask = np.zeros((self.nr, self.nc), np.bool_)
        if self.four_amp:
            for per_parity in self.sections:
                for per_edge in per_parity:
                    for sec in per_edge:
                        if sec is not None:
                            mask[sec] = True
            if self.use_side:
                for cols in self.side_cols:
                    mask[:, cols] = True
        else:
            for m in self.refmasks:
                mask |= np.broadcast_to(m, mask.shape)
        return mask

    def correct(self, g):
        """Correct one detector-frame group view in place."""
        tables, partial = self.plan(g)
        if partial is not None:
            self._one_amp_partial(g, partial)
            return
        _apply(g, *tables, self.use_side)
        if self.use_side:
            self.mode64 = True

    def plan(self, g):
        """The correction of one detector-frame group view, without applying it.

        Returns
        -------
        tables : tuple or None
            ``(colref, colkind, side, chan)`` for :func:`_apply` (None with ``partial``).
        partial : list or None
            The per-parity signals of a one-amplifier frame with a parity lacking reference pixels
            (:meth:`_one_amp_partial`), else None.

        The caller applies the tables and then, with ``use_side``, sets ``mode64`` (:meth:`correct`).
        """
        refs, is32, valid, partial = self._ref_table(g)
        if partial is not None:
            return None, partial
        colref, colkind = self._column_tables(refs, is32, valid)
        chan = np.zeros(self.nc, np.int64)
        side = np.zeros((self.nr, 1))
        if self.use_side and self.sirs is not None:
            sirs_kernels_, sigreject = self.sirs
            left, right = (_side_values(g, cols, colref, colkind) for cols in self.side_cols)
            side = np.ascontiguousarray(sirs_template(left, right, sirs_kernels_, sigreject).T)
            chan = np.minimum((self.coff + np.arange(self.nc)) // AMP_WIDTH, side.shape[1] - 1)
        elif self.use_side:
            med = []
            for cols, good in zip(self.side_cols, self.side_good):
                vals = _side_values(g, cols, colref, colkind)
                med.append(_running_median(vals, good, self.roff, DETECTOR_SIZE, self.smoothing, self.mode64))
            left, right = med
            combined = np.where(np.isnan(left), right,
                                np.where(np.isnan(right), left, 0.5 * (left + right)))
            side[:, 0] = self.gain * np.nan_to_num(combined, nan=0.0)
        return (colref, colkind, side, chan), None

    def _one_amp_partial(self, g, signals):
        # Rare: a parity without reference pixels.  jwst would fail; we
        # correct the parity that has a value.
        for par, s in enumerate(signals if self.odd_even else signals * 2):
            if s is None:
                continue
            first = (par - self.coff) % 2
            np.subtract(g[:, first::2], s, out=g[:, first::2], casting="unsafe")


def pseudo_reference_dq(pixeldq, rows=4):
    """``pixeldq`` with its first and last ``rows`` rows (DMS frame) flagged REFERENCE_PIXEL.

    spaceKLIP's pseudo reference pixels for subarrays that have none (coronagraphy, issue #15;
    coron-algorithms.md §2.2): the unilluminated bottom and top edge rows of the subarray stand in
    for reference rows (``nlower = nupper = 4``), the side columns are not used.  A copy; the
    exposure's own DQ is not changed.
    """
    out = np.array(pixeldq, copy=True)
    n = int(rows)
    out[..., :n, :] |= _REF
    out[..., out.shape[-2] - n:, :] |= _REF
    return out


def run(ramp, readout, odd_even_columns=True, use_side_ref_pixels=True,
        side_smoothing_length=11, side_gain=1.0, roeba=False, roeba_nsigma=3.0, roeba_grow=2,
        roeba_min_pixels=16, roeba_mask=None, roeba_level="group", roeba_estimator="median", roeba_relative=False,
        first_integration=0, one_over_f=None,
        pseudo_refpix=False, pseudo_refpix_rows=4, refpix_algorithm="median", sirs_kernel=None,
        sigreject=4.0, gaussmooth=1.0, halfwidth=30):
    """Apply the reference-pixel correction to a ramp, in place.

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
        Superbias-subtracted ramp; ``data`` (and ZEROFRAME) corrected in place.
    readout : webbflow.ramp.Readout
        Geometry: ``fastaxis``, ``slowaxis``, ``noutputs``, ``substrt1/2``.
    odd_even_columns : bool
        Separate means for odd and even detector columns.
    use_side_ref_pixels : bool
        Apply the side (row-by-row) correction (four-amplifier readouts).
    side_smoothing_length : int
        Rows in the running-median window.
    side_gain : float
        Fraction of the side signal subtracted.
    roeba : bool
        Then remove the 1/f stripes row by row, per amplifier, from the
        background pixels (:mod:`webbflow.steps.roeba`; not in jwst, off by
        default; the time-series presets turn it on).  It runs even where
        the subarray has no reference pixels.
    roeba_nsigma, roeba_grow : float, int
        Source masking of ROEBA (:func:`webbflow.steps.roeba.background_mask`).
    roeba_min_pixels : int
        Fewest background pixels for ROEBA to correct an amplifier row.
    roeba_level : {"group", "integration"}
        What ROEBA keeps of each amplifier's level: its median in every group (``"group"``) or
        one per integration (``"integration"``: the background pixels then also set the level of
        every group, and rows without background pixels are interpolated from their neighbours;
        :func:`webbflow.steps.roeba.correct_frames`).
    roeba_estimator : {"median", "mean"}
        ROEBA's row level: the median of the background pixels or their 3-sigma clipped mean
        (:func:`webbflow.steps.roeba.correct_frames`); with ``roeba_level="group"`` only.
    roeba_relative : bool
        Estimate each group's rows from its background pixels less the per-pixel mean of the
        integration's groups (:func:`webbflow.steps.roeba.correct_ramp`): kTC, bias residuals and
        accumulated sky no longer jitter the row levels from group to group; with ``roeba_level="group"`` only
        (``"integration"`` measures its rows relative to the integration's mean already: either
        option there raises ValueError).
    roeba_mask : ndarray of bool, (ny, nx), optional
        ROEBA's background pixels, when already found
        (:func:`webbflow.steps.roeba.background_mask` of the exposure's first
        integrations; a long exposure calibrated in chunks of integrations
        passes the one mask to every chunk).
    first_integration : int
        Index in the exposure of the ramp's first integration (a chunk of a
        long exposure): jwst's side-pixel arithmetic switches from float32 to
        float64 after the exposure's first group, so a later chunk starts in
        float64.
    pseudo_refpix : bool
        On a one-output subarray without reference pixels (the coronagraphic ones), use its
        ``pseudo_refpix_rows`` bottom and top rows as reference rows (spaceKLIP's pseudo reference
        pixels, :func:`pseudo_reference_dq`): per integration and group one 3σ-clipped mean of the
        even and one of the odd detector columns of those rows, subtracted from every even/odd
        column.  Side pixels are not used.  Not in jwst (off by default); the coronagraphy preset
        turns it on.  No effect where real reference pixels exist.
    pseudo_refpix_rows : int
        Rows at each of the bottom and top edges (spaceKLIP: 4).
    refpix_algorithm : {"median", "sirs"}
        Side-pixel algorithm.  ``"sirs"`` is jwst 3.0's Simple Improved Reference Subtraction
        (Rauscher 2022): per amplifier, the left and right side reference pixels convolved with
        the SIRSKERNEL reference's kernels (:func:`sirs_kernels`, :func:`sirs_template`) replace
        the running median (``side_smoothing_length`` and ``side_gain`` are then unused).  As in
        jwst it applies to full frames only; a subarray, or a full frame without a kernel for
        its detector, gets the running median.
    sirs_kernel : dict, optional
        ``{"gamma": (nchan, nfreq), "zeta": (nchan, nfreq)}`` of the exposure's detector (the
        ``sirskernel`` reference, :func:`webbflow.refs.load.load_reference`).
    sigreject, gaussmooth, halfwidth : float, float, int
        SIRS: outlier rejection (robust sigma) of the side pixels, Gaussian smoothing (rows) and
        half-width (rows) of the kernels.
    one_over_f : list, optional
        When given, one record (dict) is appended: the 1/f left in every
        integration's slope before and after ROEBA
        (:func:`webbflow.steps.roeba.one_over_f_per_integration` on ROEBA's
        background pixels, which are found even with ``roeba`` off):
        ``first_integration``, ``roeba``, ``edges`` (detector-frame amplifier
        columns) and ``before``/``after`` (residual, white, rows).  With
        ``roeba`` off the two are the same measurement.  The ramp is not
        changed by it.

    Returns
    -------
    str
        ``"COMPLETE"``; ``"SKIPPED"`` for a subarray that has no usable
        reference pixels (and ``roeba`` off) or does not fit on the
        detector (data unchanged).
    """
    if roeba:
        from webbflow.steps.roeba import check_options

        check_options(roeba_level, roeba_estimator, roeba_relative)  # before the ramp is touched
    setup = _setup(ramp, readout, odd_even_columns, use_side_ref_pixels, side_smoothing_length, side_gain,
                   first_integration, pseudo_refpix, pseudo_refpix_rows, refpix_algorithm, sirs_kernel, sigreject,
                   gaussmooth, halfwidth)
    if setup is None:
        return StepStatus.SKIPPED
    corr, is_subarray, four_amp, coff = setup
    fa, sa = readout.fastaxis, readout.slowaxis
    nints, ngroups = ramp.data.shape[:2]
    roeba_kw = {"odd_even": odd_even_columns, "nsigma": roeba_nsigma, "grow": roeba_grow,
                "min_pixels": roeba_min_pixels, "mask": roeba_mask, "level": roeba_level,
                "estimator": roeba_estimator, "relative": roeba_relative}
    if is_subarray and corr.n_good_refpix() == 0:
        if roeba:
            log.warning("refpix: subarray %s (%d outputs) has no usable reference pixels: only ROEBA runs",
                        readout.subarray, readout.noutputs)
            _roeba(ramp, readout, coff, four_amp, one_over_f=one_over_f, first_integration=first_integration,
                   **roeba_kw)
            return StepStatus.COMPLETE
        log.warning("refpix: subarray %s (%d outputs) has no usable reference pixels "
                    "(none flagged REFERENCE_PIXEL without DO_NOT_USE); step skipped",
                    readout.subarray, readout.noutputs)
        if one_over_f is not None:
            _roeba(ramp, readout, coff, four_amp, apply=False, one_over_f=one_over_f,
                   first_integration=first_integration, **roeba_kw)
        return StepStatus.SKIPPED
    _log_setup(corr, is_subarray, four_amp, odd_even_columns)

    data_det = to_detector_frame(ramp.data, fa, sa)
    for i in range(nints):
        for g in range(ngroups):
            corr.correct(data_det[i, g])

    correct_zeroframe(ramp, readout, corr)
    if roeba or one_over_f is not None:
        _roeba(ramp, readout, coff, four_amp, apply=roeba, one_over_f=one_over_f,
               first_integration=first_integration, **roeba_kw)
    return StepStatus.COMPLETE


def _setup(ramp, readout, odd_even_columns, use_side_ref_pixels, side_smoothing_length, side_gain,
           first_integration, pseudo_refpix, pseudo_refpix_rows, refpix_algorithm, sirs_kernel, sigreject,
           gaussmooth, halfwidth):
    """:func:`run`'s corrector: (corrector, is_subarray, four_amp, column offset), None if the subarray is off
    the detector (logged)."""
    ny, nx = ramp.data.shape[-2:]
    is_subarray, four_amp, (roff, coff) = _geometry(readout, ny, nx)
    if is_subarray:
        r0, c0 = readout.substrt2 - 1, readout.substrt1 - 1
        if r0 < 0 or c0 < 0 or r0 + ny > DETECTOR_SIZE or c0 + nx > DETECTOR_SIZE:
            log.warning("refpix: subarray (%d, %d)+(%d, %d) does not fit on the detector; "
                        "step skipped", r0, c0, ny, nx)
            return None

    fa, sa = readout.fastaxis, readout.slowaxis
    sirs = _sirs_setup(refpix_algorithm, readout, is_subarray, sirs_kernel, sigreject, gaussmooth, halfwidth)
    pdq_det = to_detector_frame(ramp.pixeldq, fa, sa)
    corr = _Corrector(pdq_det, roff, coff, four_amp, odd_even_columns, use_side_ref_pixels,
                      side_smoothing_length, side_gain, sirs=sirs)
    if pseudo_refpix and is_subarray and not four_amp and corr.n_good_refpix() == 0:
        log.info("refpix: subarray %s has no reference pixels: %d pseudo reference rows at its bottom and top",
                 readout.subarray, pseudo_refpix_rows)
        pdq_det = to_detector_frame(pseudo_reference_dq(ramp.pixeldq, pseudo_refpix_rows), fa, sa)
        corr = _Corrector(pdq_det, roff, coff, four_amp, odd_even_columns, False,
                          side_smoothing_length, side_gain)
    corr.mode64 = corr.use_side and first_integration > 0
    return corr, is_subarray, four_amp, coff


def _geometry(readout, ny, nx):
    """(is_subarray, four_amp, (row, col) offsets of :func:`_detector_offsets`, zeros for a full frame)
    of an ``ny`` x ``nx`` science array."""
    is_subarray = ny < DETECTOR_SIZE or nx < DETECTOR_SIZE
    offsets = _detector_offsets(readout, ny, nx) if is_subarray else (0, 0)
    return is_subarray, (not is_subarray) or readout.noutputs == 4, offsets


def one_over_f_record(slopes, nints, mask, readout, shape, first_integration=0, min_pixels=16):
    """The record :func:`run` appends to ``one_over_f`` with ROEBA off, from the integrations' slopes.

    For a caller that sums the slopes itself as it corrects the groups (:mod:`webbflow.steps.fused`);
    the numbers are those of :func:`webbflow.steps.roeba.one_over_f_per_integration` on the ramp
    after this step.

    Parameters
    ----------
    slopes : iterable of ndarray float64, (ny, nx)
        Each integration's slope (:func:`webbflow.steps.roeba.slope_weights`), science frame; empty
        for fewer than two groups.
    nints : int
        Integrations.
    mask : ndarray of bool, (ny, nx)
        ROEBA's background pixels (:func:`webbflow.steps.roeba.background_mask`), science frame.
    readout : webbflow.ramp.Readout
    shape : tuple of int
        The science array's (ny, nx).
    first_integration : int
        Index in the exposure of the first integration.
    min_pixels : int
        ``roeba_min_pixels``.

    Returns
    -------
    dict
        ``first_integration``, ``roeba`` (False), ``edges``, ``before`` and ``after`` (the same).
    """
    from webbflow.steps import roeba

    fa, sa = readout.fastaxis, readout.slowaxis
    _, four_amp, (_, coff) = _geometry(readout, *shape)
    mask_det = np.ascontiguousarray(to_detector_frame(mask, fa, sa))
    edges = roeba.amplifier_edges(mask_det.shape[1], coff, four_amp)
    before = roeba.one_over_f_of_slopes((to_detector_frame(s, fa, sa) for s in slopes), nints, mask_det, edges,
                                        min_pixels)
    return {"first_integration": int(first_integration), "roeba": False, "edges": edges, "before": before,
            "after": before}


def _log_setup(corr, is_subarray, four_amp, odd_even_columns):
    log.info("refpix: %s, %d output(s), odd_even_columns=%s, side=%s",
             "subarray" if is_subarray else "full frame", 4 if four_amp else 1,
             odd_even_columns, corr.use_side)


def corrector(ramp, readout, odd_even_columns=True, use_side_ref_pixels=True, side_smoothing_length=11,
              side_gain=1.0, roeba=False, first_integration=0, pseudo_refpix=False, pseudo_refpix_rows=4,
              refpix_algorithm="median", sirs_kernel=None, sigreject=4.0, gaussmooth=1.0, halfwidth=30,
              **roeba_options):
    """The per-group corrector :func:`run` would use on ``ramp`` (same parameters), for a caller that applies
    it itself (:mod:`webbflow.steps.fused`); None where :func:`run` would do more or other than correct each
    group and the ZEROFRAME (ROEBA on, or a subarray it skips).

    Call it with ``ramp.pixeldq`` as :func:`run` would see it (after superbias).  Each group's
    :meth:`_Corrector.plan` gives its tables; :func:`correct_zeroframe` finishes as :func:`run` does.
    """
    if roeba:
        return None
    setup = _setup(ramp, readout, odd_even_columns, use_side_ref_pixels, side_smoothing_length, side_gain,
                   first_integration, pseudo_refpix, pseudo_refpix_rows, refpix_algorithm, sirs_kernel, sigreject,
                   gaussmooth, halfwidth)
    if setup is None:
        return None
    corr, is_subarray, four_amp, _ = setup
    if is_subarray and corr.n_good_refpix() == 0:
        return None
    _log_setup(corr, is_subarray, four_amp, odd_even_columns)
    return corr


def correct_zeroframe(ramp, readout, corr):
    """Correct ``ramp``'s ZEROFRAME (if any) with ``corr`` after the groups, its zeros kept (as :func:`run`)."""
    if ramp.zeroframe is None:
        return
    zf = ramp.zeroframe
    unusable = zf == 0.0
    zf_det = to_detector_frame(zf, readout.fastaxis, readout.slowaxis)
    for i in range(zf.shape[0]):
        corr.correct(zf_det[i])
    zf[unusable] = 0.0


def _sirs_setup(algorithm, readout, is_subarray, sirs_kernel, sigreject, gaussmooth, halfwidth):
    """(kernels, sigreject) when SIRS applies to this exposure, else None (jwst's conditions)."""
    if algorithm == "median":
        return None
    if algorithm != "sirs":
        raise ValueError(f"refpix_algorithm must be 'median' or 'sirs', not {algorithm!r}")
    if is_subarray or "FULL" not in str(readout.subarray).upper():
        log.info("refpix: SIRS is not applied to subarray data (as jwst); running median used")
        return None
    if sirs_kernel is None or sirs_kernel.get("gamma") is None:
        log.warning("refpix: no SIRS kernel for detector %s; the running median is used for the side pixels",
                    readout.detector)
        return None
    log.info("refpix: SIRS side-pixel correction (sigreject=%g, gaussmooth=%g, halfwidth=%d)",
             sigreject, gaussmooth, halfwidth)
    return sirs_kernels(sirs_kernel["gamma"], sirs_kernel["zeta"], gaussmooth, int(halfwidth)), float(sigreject)


def _roeba(ramp, readout, coff, four_amp, odd_even, nsigma, grow, min_pixels, mask=None, apply=True,
           one_over_f=None, first_integration=0, level="group", estimator="median", relative=False):
    """The ROEBA stage of :func:`run` (groups and ZEROFRAME, detector frame), with the 1/f statistic
    before and after it appended to ``one_over_f`` (a list) when given; ``apply=False`` only measures."""
    from webbflow.steps import roeba

    fa, sa = readout.fastaxis, readout.slowaxis
    if mask is None:
        mask = roeba.background_mask(ramp.data, ramp.pixeldq, nsigma=nsigma, grow=grow)
    mask_det = np.ascontiguousarray(to_detector_frame(mask, fa, sa))
    edges = roeba.amplifier_edges(mask_det.shape[1], coff, four_amp)
    if one_over_f is not None:
        frames = to_detector_frame(ramp.data, fa, sa)
        record = {"first_integration": int(first_integration), "roeba": bool(apply), "edges": edges,
                  "before": roeba.one_over_f_per_integration(frames, mask_det, edges, readout.tgroup, min_pixels)}
        record["after"] = record["before"]
        one_over_f.append(record)
    if not apply:
        return
    if relative:
        borrowed, skipped = roeba.correct_ramp(to_detector_frame(ramp.data, fa, sa), mask_det, edges, odd_even,
                                               min_pixels, estimator=estimator)
    else:
        borrowed, skipped = roeba.correct_frames(to_detector_frame(ramp.data, fa, sa), mask_det, edges, odd_even,
                                                 min_pixels, level=level, estimator=estimator)
    if ramp.zeroframe is not None:
        roeba.correct_frames(to_detector_frame(ramp.zeroframe, fa, sa), mask_det, edges, odd_even, min_pixels,
                             keep_zero=True, level=level, estimator=estimator)
    nrows = ramp.data.shape[0] * ramp.data.shape[1] * mask_det.shape[0] * (edges.size - 1)
    log.info("refpix: ROEBA on %d amplifier(s), %.1f %% background pixels; of %d amplifier rows %d took the "
             "other amplifiers' stripe and %d had too few background pixels (%s)",
             edges.size - 1, 100.0 * mask.mean(), nrows, borrowed, skipped,
             "interpolated from their neighbours" if level == "integration" else "left uncorrected")
    if one_over_f is not None:
        record["after"] = roeba.one_over_f_per_integration(frames, mask_det, edges, readout.tgroup, min_pixels)
