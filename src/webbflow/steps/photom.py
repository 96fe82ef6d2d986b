"""photom (NIRCam imaging): DN/s -> MJy/sr with the PHOTOM table, as jwst 3.0 does.

The row matching FILTER and PUPIL (and SUBARRAY when the table has that
column) gives PHOTMJSR; data and ERR are multiplied by it, the variances by
its square (in float32, the table's type).  PHOTUJA2 = PHOTMJSR × 23.5044…
(MJy/sr -> µJy/arcsec²).  The AREA array and PIXAR_SR/PIXAR_A2 come from the
AREA reference (the photom table's header is the fallback).
"""

import numpy as np

from webbflow.ramp import StepStatus
from webbflow.steps.flat_field import match_nans_and_flags

__all__ = ["MJSR_TO_UJA2", "find_conversion", "run"]

MJSR_TO_UJA2 = 1e12 * (np.pi / 180.0 / 3600.0) ** 2
"""µJy/arcsec² per MJy/sr (= 23.5044305...)."""


def _text(value):
    return (value.decode() if isinstance(value, bytes) else str(value)).strip().upper()


def find_conversion(table, filter_name, pupil, subarray=None):
    """PHOTMJSR (float32) and its uncertainty for an exposure, or (None, None).

    Parameters
    ----------
    table : structured array or astropy/FITS table
        Columns ``filter``, ``pupil``, ``photmjsr``, ``uncertainty`` (+ optional ``subarray``).
    filter_name, pupil : str
    subarray : str, optional
        Matched only when the table has a ``subarray`` column.
    """
    names = [n.lower() for n in table.dtype.names]
    col = {n.lower(): n for n in table.dtype.names}
    want = {"filter": filter_name, "pupil": pupil}
    if "subarray" in names and subarray is not None:
        want["subarray"] = subarray
    for row in table:
        if all(_text(row[col[k]]) == str(v).upper() for k, v in want.items()):
            return np.float32(row[col["photmjsr"]]), np.float32(row[col["uncertainty"]])
    return None, None


def run(arrays, photmjsr):
    """Convert ``arrays`` (DN/s) to MJy/sr in place.

    Parameters
    ----------
    arrays : object
        ``data, err, var_poisson, var_rnoise, var_flat`` (float32), ``dq``.
    photmjsr : float or None
        (MJy/sr) per (DN/s); None means no matching row: SKIPPED, data untouched.

    Returns
    -------
    str
        ``COMPLETE`` or ``SKIPPED``.
    """
    if photmjsr is None or not np.isfinite(photmjsr):
        return StepStatus.SKIPPED
    conv = np.float32(photmjsr)
    conv2 = conv * conv
    arrays.data *= conv
    arrays.err *= conv
    for name in ("var_poisson", "var_rnoise", "var_flat"):
        var = getattr(arrays, name, None)
        if var is not None and var.size:
            var *= conv2
    match_nans_and_flags(arrays)
    return StepStatus.COMPLETE
