"""photutils' circular peak verification, compiled (tweakreg's source finder).

``photutils.detection.find_peaks`` (IRAFStarFinder's peak search) finds the local maxima in a
circular footprint with two box maximum filters, then checks the "ring candidates" (the maxima of
the inscribed box that are not those of the circumscribed one) against the circle one by one in a
Python loop: on a full-frame NIRCam image, a few hundred thousand noise peaks, ~0.3 s of the finder's
~0.8 s.  :class:`fast_ring_verification` swaps that loop for :func:`_verify_ring` (the same
comparisons, so the same peaks) while the finder runs, and the two box filters (scipy's
``maximum_filter``, ~0.2 s each per full frame) for :func:`_box_peaks` (the same maxima: a maximum is
one of the values compared, whatever the order, so the masks are the same bits).
"""

import numpy as np

from webbflow.steps._jit import lazy_njit
from webbflow.steps._photutils import import_photutils

__all__ = ["fast_ring_verification"]


@lazy_njit(cache=True)
def _verify_ring(data, peak_mask, ys, xs, footprint, half, size):
    ny, nx = data.shape
    for k in range(ys.size):
        y, x = ys[k], xs[k]
        y0, x0 = y - half, x - half
        local_max = -np.inf
        clipped = nan = False
        for a in range(size):
            yy = y0 + a
            if yy < 0 or yy >= ny:
                clipped = True
                continue
            for b in range(size):
                xx = x0 + b
                if xx < 0 or xx >= nx:
                    clipped = True
                    continue
                if footprint[a, b]:
                    v = data[yy, xx]
                    if v != v:
                        nan = True  # numpy's max is NaN, which nothing equals
                    elif v > local_max:
                        local_max = v
        # a footprint reaching past the image also compares with maximum_filter's cval 0
        if clipped and local_max < 0.0:
            local_max = 0.0
        if not nan and data[y, x] == local_max:
            peak_mask[y, x] = True


@lazy_njit(cache=True)
def _box_peaks(data, size):
    # data == maximum_filter(data, size=size, mode="constant", cval=0.0): scipy's separable filter,
    # its window [i - size // 2, i - size // 2 + size - 1] on each axis, 0 outside the image
    ny, nx = data.shape
    lo = size // 2
    rows = np.empty((ny, nx), data.dtype)
    zero = data.dtype.type(0.0)
    for y in range(ny):
        for x in range(nx):
            a = x - lo
            b = a + size - 1
            m = zero if a < 0 or b >= nx else data[y, max(a, 0)]
            for k in range(max(a, 0), min(b, nx - 1) + 1):
                v = data[y, k]
                if v > m:
                    m = v
            rows[y, x] = m
    out = np.empty((ny, nx), np.bool_)
    best = np.empty(nx, data.dtype)
    for y in range(ny):
        a = y - lo
        b = a + size - 1
        if a < 0 or b >= ny:
            best[:] = zero
            for x in range(nx):
                v = rows[max(a, 0), x]
                if v > best[x]:
                    best[x] = v
        else:
            best[:] = rows[a]
        for k in range(max(a, 0) + 1, min(b, ny - 1) + 1):
            for x in range(nx):
                v = rows[k, x]
                if v > best[x]:
                    best[x] = v
        for x in range(nx):
            out[y, x] = data[y, x] == best[x]
    return out


def _fast_circular_peaks(data, radius, original):
    """photutils' ``_fast_circular_peaks(data, radius)`` with the box filters of :func:`_box_peaks`
    (``original`` for data it does not take: not a finite float32/float64 2-D array)."""
    if not (type(data) is np.ndarray and data.ndim == 2 and data.dtype in (np.float64, np.float32)
            and min(data.shape) > 0 and np.isfinite(data).all()):
        return original(data, radius)
    peakfinder = import_photutils("photutils.detection.peakfinder")

    # photutils' footprint, its centre and the inscribed box, computed as it computes them
    idx = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(idx, idx)
    footprint_bool = (xx ** 2 + yy ** 2) <= radius ** 2
    footprint_size = len(idx)
    half = footprint_size // 2
    if footprint_size % 2 == 0:
        half_side = int(np.floor(radius / np.sqrt(2) - 0.5))
    else:
        half_side = int(np.floor(radius / np.sqrt(2)))
    side_insc = max(2 * half_side + 1, 3)
    data = np.ascontiguousarray(data)
    definite = _box_peaks(data, int(footprint_size))
    candidates = _box_peaks(data, int(side_insc))
    needs_verify = candidates & ~definite
    peak_mask = definite.copy()
    peakfinder._verify_ring_candidates(data, peak_mask, needs_verify, footprint_bool, half, footprint_size)
    return peak_mask


def _verify_ring_candidates(data, peak_mask, needs_verify, footprint_bool, half, footprint_size):
    """photutils' ``_verify_ring_candidates`` (same arguments, ``peak_mask`` updated in place)."""
    ys, xs = needs_verify.nonzero()
    if len(ys) == 0:
        return
    _verify_ring(np.ascontiguousarray(data), peak_mask, ys.astype(np.int64), xs.astype(np.int64),
                 np.ascontiguousarray(footprint_bool, np.bool_), int(half), int(footprint_size))


class fast_ring_verification:
    """Within: ``photutils.detection.peakfinder`` verifies ring candidates with
    :func:`_verify_ring_candidates` (restored on leaving; a no-op for a photutils without that
    function, or with float data other than float64/float32 or a peak mask that is not a writable
    bool array, which it leaves to photutils)."""

    def __enter__(self):
        try:
            peakfinder = import_photutils("photutils.detection.peakfinder")
        except ImportError:
            peakfinder = None
        self._module = peakfinder
        self._saved = getattr(peakfinder, "_verify_ring_candidates", None)
        if self._saved is not None:
            saved = self._saved

            def verify(data, peak_mask, needs_verify, footprint_bool, half, footprint_size):
                if (isinstance(data, np.ndarray) and data.ndim == 2 and data.dtype in (np.float64, np.float32)
                        and isinstance(peak_mask, np.ndarray) and peak_mask.dtype == np.bool_
                        and peak_mask.flags.writeable and peak_mask.shape == data.shape):
                    return _verify_ring_candidates(data, peak_mask, needs_verify, footprint_bool, half,
                                                   footprint_size)
                return saved(data, peak_mask, needs_verify, footprint_bool, half, footprint_size)

            peakfinder._verify_ring_candidates = verify
        self._saved_peaks = getattr(peakfinder, "_fast_circular_peaks", None)
        if self._saved is not None and self._saved_peaks is not None:
            original = self._saved_peaks

            def peaks(data, radius):
                return _fast_circular_peaks(data, radius, original)

            peakfinder._fast_circular_peaks = peaks
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            self._module._verify_ring_candidates = self._saved
            if self._saved_peaks is not None:
                self._module._fast_circular_peaks = self._saved_peaks
        return False
