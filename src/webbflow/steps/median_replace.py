"""Bad-pixel median replacement before PSF alignment, as jwst 3.0's ``coron.median_replace_img``.

For each plane, each pixel flagged with ``bad_bits`` or NaN is replaced, in row-major order, by
the median of the good pixels (finite and not flagged) of the ``box``-wide window around it;
replacements are written immediately, so a replaced NaN-but-unflagged pixel counts as good for
the pixels after it.  jwst's window is ``data[y-h : y+h+1, x-h : x+h+1]`` with ``h = int(box/2)``:
a negative start gives an empty slice, so bad pixels in row 0 or column 0 become 0 (no good
pixel), even boxes act like ``box + 1`` and ``box = 0`` gives 0.  DQ is left as it is.  These
quirks are reproduced for parity.
"""

import numpy as np

__all__ = ["median_replace"]


def median_replace(data, dq, box_size=3, bad_bits=1):
    """Replace bad pixels of a cube in place by the median of their good neighbours.

    Parameters
    ----------
    data : ndarray
        (nplanes, ny, nx) float; modified in place.
    dq : ndarray
        (nplanes, ny, nx) uint32.
    box_size : int
        jwst's ``median_box_length``.
    bad_bits : int
        DQ bits that mark a pixel bad (jwst's ``bad_bits``, default DO_NOT_USE); 0 treats only NaNs
        as bad.

    Returns
    -------
    int
        Pixels replaced.
    """
    h = int(box_size / 2)
    bad_bits = np.uint32(bad_bits)
    count = 0
    for plane, plane_dq in zip(data, dq):
        bad = ((plane_dq & bad_bits) > 0) | np.isnan(plane)
        ys, xs = np.nonzero(bad)  # row-major, as np.where
        count += ys.size
        # Sequential on purpose: each replacement is seen by the next window (jwst's write-through).
        for y, x in zip(ys.tolist(), xs.tolist()):
            win = plane[y - h: y + h + 1, x - h: x + h + 1]
            good = np.isfinite(win) & ((plane_dq[y - h: y + h + 1, x - h: x + h + 1] & bad_bits) == 0)
            plane[y, x] = np.median(win[good]) if good.any() else 0.0
    return count
