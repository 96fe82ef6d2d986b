"""photutils' Background2D mesh resize done as two small matrix products instead of ``ndimage.zoom``.

``Background2D`` expands its low-resolution mesh to the image with ``scipy.ndimage.zoom`` (cubic
spline, ``mode='reflect'``, ``grid_mode=True``), a 16-tap evaluation per output pixel that costs
~1 s of CPU per 2048 x 2048 image, twice per background (level and rms).  A tensor-product spline
resize is linear and separable: the result is ``Ay @ mesh @ Ax.T`` where column ``j`` of ``Ay`` is
the 1-D zoom of the ``j``-th unit vector.  The matrices are a few thousand by a few numbers, so the
products cost ~0.03 s; the values equal zoom's to float64 rounding (~1e-16 relative).
"""

import numpy as np
from scipy.ndimage import zoom

__all__ = ["SeparableZoomInterpolator", "use_separable_zoom"]


def _axis_matrix(n, factor, order, mode, cval):
    """(n * factor, n): the 1-D zoom of every unit vector of length ``n``, as columns."""
    eye = np.eye(n)
    return np.stack([zoom(eye[j], factor, order=order, mode=mode, cval=cval, grid_mode=True)
                     for j in range(n)], axis=1)


class SeparableZoomInterpolator:
    """photutils' default mesh interpolator (``_BkgZoomInterpolator(order=3, mode='reflect',
    clip=True)``), evaluated as ``Ay @ mesh @ Ax.T``.

    Parameters
    ----------
    order : int
        Spline order (photutils' default 3).
    mode : str
        ``ndimage.zoom``'s boundary mode (photutils' default ``'reflect'``).
    cval : float
        Value outside the mesh for ``mode='constant'``.
    clip : bool
        Clip to the mesh's range, as photutils does by default.
    """

    def __init__(self, *, order=3, mode="reflect", cval=0.0, clip=True):
        self.order, self.mode, self.cval, self.clip = order, mode, cval, clip

    def __call__(self, data, **kwargs):
        """The mesh ``data`` resized to ``kwargs['shape']`` (photutils' interpolator protocol)."""
        data = np.asanyarray(data)
        data = getattr(data, "value", data)
        shape = kwargs["shape"]
        if np.ptp(data) == 0:
            return np.full(shape, np.min(data), dtype=kwargs["dtype"])
        box = kwargs["box_size"]
        by, bx = (box, box) if np.ndim(box) == 0 else box
        ny, nx = data.shape
        ay = _axis_matrix(ny, by, self.order, self.mode, self.cval)[: shape[0]]
        ax = _axis_matrix(nx, bx, self.order, self.mode, self.cval)[: shape[1]]
        result = (ay @ np.asarray(data, np.float64) @ ax.T).astype(data.dtype)
        if self.clip:
            np.clip(result, np.min(data), np.max(data), out=result)
        return result


def use_separable_zoom(bkg):
    """Give a ``Background2D`` built with the default interpolator the separable one; returns ``bkg``."""
    if type(bkg.interpolator).__name__ == "_BkgZoomInterpolator":
        old = bkg.interpolator
        bkg.interpolator = SeparableZoomInterpolator(order=old.order, mode=old.mode, cval=old.cval, clip=old.clip)
    return bkg
