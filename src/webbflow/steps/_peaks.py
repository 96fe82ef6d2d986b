"""photutils' circular peak verification, compiled (tweakreg's source finder).

``photutils.detection.find_peaks`` (IRAFStarFinder's peak search) finds the local maxima in a
circular footprint with two box maximum filters, then checks the "ring candidates" (the maxima of
the inscribed box that are not those of the circumscribed one) against the circle one by one in a
Python loop: on a full-frame NIRCam image, a few hundred thousand noise peaks, ~0.3 s of the finder's
~0.8 s.  :class:`fast_ring_verification` swaps that loop for :func:`_verify_ring` (the same
comparisons, so the same peaks) while the finder runs.
"""

import numpy as np

from webbflow.steps._jit import lazy_njit

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
            from photutils.detection import peakfinder
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
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            self._module._verify_ring_candidates = self._saved
        return False
