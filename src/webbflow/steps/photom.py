"""photom (NIRCam imaging): DN/s -> MJy/sr with the PHOTOM table, as jwst 3.0 does.

The row matching FILTER and PUPIL (and SUBARRAY when the table has that
column) gives PHOTMJSR; data and ERR are multiplied by it, the variances by
its square (in float32, the table's type).  PHOTUJA2 = PHOTMJSR × 23.5044…
(MJy/sr -> µJy/arcsec²).  The AREA array and PIXAR_SR/PIXAR_A2 come from the
AREA reference (the photom table's header is the fallback).
"""

import numpy as np

from webbflow import dqflags
from webbflow.ramp import StepStatus
from webbflow.steps.flat_field import match_nans_and_flags

__all__ = ["MJSR_TO_UJA2", "find_conversion", "grism_conversion", "run"]

MJSR_TO_UJA2 = 1e12 * (np.pi / 180.0 / 3600.0) ** 2
"""µJy/arcsec² per MJy/sr (= 23.5044305...)."""


def _text(value):
    return (value.decode() if isinstance(value, bytes) else str(value)).strip().upper()


def _find_row(table, want):
    """Index of the first row whose columns equal ``want`` (case-insensitive text, integers), or None."""
    col = {n.lower(): n for n in table.dtype.names}
    for i, row in enumerate(table):
        if all((_text(row[col[k]]) == str(v).upper()) if k != "order" else int(row[col[k]]) == int(v)
               for k, v in want.items()):
            return i
    return None


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
    i = _find_row(table, want)
    if i is None:
        return None, None
    return np.float32(table[i][col["photmjsr"]]), np.float32(table[i][col["uncertainty"]])


def grism_conversion(table, filter_name, pupil, order, wavelength):
    """The 2-D conversion of a grism cutout (jwst 3.0 ``photom_io`` → ``create_2d_conversion``).

    ``PHOTMJSR × relresponse(λ) / |dλ/dx|`` per pixel, with the response interpolated on the first
    ``nelem`` table wavelengths (metres scaled to µm as jwst does) and the dispersion from
    ``np.gradient`` along each row of the (float32) wavelength array.

    Parameters
    ----------
    table : structured array
        NrcWfssPhotomModel PHOTOM table (filter, pupil, order, photmjsr, nelem, wavelength, relresponse).
    filter_name, pupil : str
    order : int
    wavelength : ndarray
        (ny, nx) wavelengths of the cutout, µm (NaN where none).

    Returns
    -------
    conversion : ndarray or None
        float64 (ny, nx), 0 where there is no response; None when no row matches.
    no_cal : ndarray or None
        bool (ny, nx): pixels without a response (DO_NOT_USE).
    photmjsr : numpy.float32 or None
        The scalar PHOTMJSR of the row (``meta.photometry.conversion_megajanskys``).
    """
    col = {n.lower(): n for n in table.dtype.names}
    i = _find_row(table, {"filter": filter_name, "pupil": pupil, "order": order})
    if i is None:
        return None, None, None
    row = table[i]
    photmjsr = row[col["photmjsr"]]
    waves, resp = np.asarray(row[col["wavelength"]]), np.asarray(row[col["relresponse"]])
    if "nelem" in col:
        n = int(row[col["nelem"]])
        waves, resp = waves[:n], resp[:n]
    if not np.all(np.diff(waves) > 0):
        order_ = np.argsort(waves)
        waves, resp = waves[order_].copy(), resp[order_].copy()
    if 0.0 < waves.max() < 1.0e-4:  # metres
        waves = waves * 1.0e6
    wl = np.array(wavelength)
    wl[np.isnan(wl)] = -1.0
    conv = np.interp(wl, waves, resp, left=np.nan, right=np.nan)
    dispersion = np.zeros(wl.shape)
    for r in range(wl.shape[0]):
        dispersion[r] = np.gradient(wl[r])
    conv /= np.abs(dispersion)
    conversion = photmjsr * conv
    no_cal = np.isnan(conv)
    conversion[no_cal] = 0.0
    return conversion, no_cal, np.float32(photmjsr)


def run(arrays, photmjsr, no_cal=None):
    """Convert ``arrays`` (DN/s) to MJy/sr in place.

    Parameters
    ----------
    arrays : object
        ``data, err, var_poisson, var_rnoise, var_flat`` (float32), ``dq``.
    photmjsr : float, ndarray or None
        (MJy/sr) per (DN/s), a scalar or (for grisms) a per-pixel array from
        :func:`grism_conversion`; None means no matching row: SKIPPED, data untouched.
    no_cal : ndarray, optional
        Pixels without a conversion: flagged DO_NOT_USE (and so set to NaN).

    Returns
    -------
    str
        ``COMPLETE`` or ``SKIPPED``.
    """
    if photmjsr is None or (np.ndim(photmjsr) == 0 and not np.isfinite(photmjsr)):
        return StepStatus.SKIPPED
    # a scalar stays float32 (the table's type); a grism's 2-D conversion is float64, as jwst's
    conv = np.float32(photmjsr) if np.ndim(photmjsr) == 0 else np.asarray(photmjsr, np.float64)
    conv2 = conv * conv
    arrays.data *= conv
    arrays.err *= conv
    for name in ("var_poisson", "var_rnoise", "var_flat"):
        var = getattr(arrays, name, None)
        if var is not None and var.size:
            var *= conv2
    if no_cal is not None:
        arrays.dq[..., no_cal] |= np.uint32(dqflags.DO_NOT_USE)
    match_nans_and_flags(arrays)
    return StepStatus.COMPLETE
