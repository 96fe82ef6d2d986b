"""extract_2d for NIRCam grism time series (jwst 3.0 ``extract_2d/grisms.py::_extract_tso_tsgrism_object``).

jwst 3.0 cuts every column and a block of rows that starts at row 0 of the subarray, whatever
YREF_SCI says: its row logic centres on a fixed row 34 and then always lands on
``0 … min(h, ny) − 1`` for an extraction height ``h ≥ 2`` (``tsgrism_extract_height``; default
the subarray height), and ``0 … min(34, ny)`` for h < 2.  So a 64-row cutout of a full-frame
TSGRISM exposure (YREF_SCI 280) misses the trace (known issue NC-TS02); the height is a config
line here, and the default keeps the whole strip.
"""

from __future__ import annotations

import numpy as np

from webbflow.io.cal import CalArrays

__all__ = ["cutout", "tsgrism_rows", "EXTRACT_Y_CENTER"]

EXTRACT_Y_CENTER = 34
"""The row jwst 3.0 centres TSGRISM cutouts on (and writes as SOURCEYP / the cutout's YREF_SCI)."""


def tsgrism_rows(height, ysize):
    """First and last row (0-based, inclusive) of jwst 3.0's TSGRISM cutout.

    Parameters
    ----------
    height : int or None
        ``tsgrism_extract_height``; None means the subarray height.
    ysize : int
        Rows of the subarray.

    Returns
    -------
    (int, int)
    """
    h = ysize if height is None else int(height)
    split = int(h / 2)
    below = EXTRACT_Y_CENTER - split
    if below == EXTRACT_Y_CENTER:
        ymin, ymax = 0, EXTRACT_Y_CENTER + split
    elif below < 0:
        ymin, ymax = 0, h - 1
    else:
        # jwst: centre − 34 and centre + h − 34 − 1, with the centre forced to 34
        ymin, ymax = 0, h - 1
    # jwst clips the last row at ysize (one past the array), and slices up to ymax + 1
    return max(ymin, 0), min(ymax, ysize)


def cutout(arrays, ymin, ymax):
    """The rows ``ymin … ymax`` (inclusive) of every 3-D array of ``arrays`` (copies; ``arrays``
    itself when the rows are all of them, the usual TSGRISM cutout: no second copy of the segment)."""
    if ymin == 0 and ymax + 1 == arrays.data.shape[-2]:
        return arrays
    rows = slice(ymin, ymax + 1)

    def cut(a):
        return None if a is None else np.array(a[..., rows, :])

    return CalArrays(data=cut(arrays.data), dq=cut(arrays.dq), err=cut(arrays.err),
                     var_poisson=cut(arrays.var_poisson), var_rnoise=cut(arrays.var_rnoise),
                     var_flat=cut(arrays.var_flat))
