"""white_light: the band-integrated flux of a time-series spectrum per integration (jwst 3.0).

For NIRCam grism time series (one order, one detector) jwst sums ``FLUX`` over every column whose
wavelength lies in ``[min_wave, max_wave]`` (default: all; NIRCam has no reference range), with
``np.nansum`` so that an all-NaN spectrum gives 0.0, not NaN.  Integrations whose mid-time is NaN
or repeats an earlier one (first kept) are dropped; the table is sorted by time.  The result is
identical to jwst's whenever the mid-times increase (jwst 3.0 misplaces sums of out-of-order times).
"""

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["SpectralSeries", "band_sum", "white_light"]

log = logging.getLogger(__name__)


@dataclass
class SpectralSeries:
    """One segment's extracted spectra, one row per integration.

    Attributes
    ----------
    mjd_utc, bjd_tdb : ndarray
        (n,) mid-times (``MJD-AVG``, ``TDB-MID``; BJD stored in MJD form, as jwst does).
    wavelength, flux : ndarray
        (n, ncols) in µm and in the flux unit ``flux_unit``; or None with ``band_flux``.
    flux_unit : str
        Unit of ``flux`` (``"Jy"`` after photom, ``"DN/s"`` when photom was skipped).
    band_flux : ndarray, optional
        (n,) :func:`band_sum` of the spectra over the curve's wavelength window, summed as they were
        extracted (a segment's spectra need not be held whole then).
    """

    mjd_utc: np.ndarray
    bjd_tdb: np.ndarray
    wavelength: np.ndarray | None
    flux: np.ndarray | None
    flux_unit: str = "Jy"
    band_flux: np.ndarray | None = None


def band_sum(wavelength, flux, min_wave=None, max_wave=None):
    """The white-light flux of each spectrum: the sum of its finite fluxes whose wavelength lies in
    [``min_wave``, ``max_wave``] µm (None: no limit, jwst's -1 and 1e10).

    Parameters
    ----------
    wavelength, flux : ndarray
        (n, ncols).
    min_wave, max_wave : float, optional

    Returns
    -------
    ndarray
        (n,); each row's alone, so spectra summed a chunk at a time give the same values.
    """
    lo = -1.0 if min_wave is None else min_wave
    hi = 1.0e10 if max_wave is None else max_wave
    window = (wavelength >= lo) & (wavelength <= hi)
    return np.nansum(np.where(window, flux, np.nan), axis=1)


def white_light(segments, min_wave=None, max_wave=None, meta=None):
    """White-light curve of a time series from its segments' spectra.

    Parameters
    ----------
    segments : sequence of SpectralSeries
        The segments of one exposure, in order.
    min_wave, max_wave : float, optional
        Wavelength window in µm (None: no limit, jwst's -1 and 1e10).
    meta : dict, optional
        Table metadata (jwst: instrument, exp_type, subarray, filter, pupil, target_name).

    Returns
    -------
    astropy.table.QTable
        Columns ``MJD_UTC``, ``BJD_TDB`` and ``whitelight_flux`` (with the flux unit).
    """
    from astropy import units as u
    from astropy.table import QTable

    times, tdbs, sums = [], [], []
    for seg in segments:
        mid = np.array(seg.mjd_utc, dtype=float)
        # only the first of repeated mid-times is kept, per segment and then over all (as jwst)
        first = np.zeros(mid.shape, bool)
        first[np.unique(mid, return_index=True)[1]] = True
        mid[~first] = np.nan
        good = ~np.isnan(mid)
        if (~good).any():
            log.warning("%d integrations with no or a repeated mid-time are left out of the white-light curve",
                        int((~good).sum()))
        times.append(mid)
        tdbs.append(np.asarray(seg.bjd_tdb, dtype=float))
        # an integration left out (no or a repeated mid-time) is dropped below whatever its sum
        sums.append(seg.band_flux if seg.band_flux is not None else band_sum(seg.wavelength, seg.flux, min_wave, max_wave))
    mid, tdb, total = (np.concatenate(a) for a in (times, tdbs, sums))
    good = ~np.isnan(mid)
    mid, tdb, total = mid[good], tdb[good], total[good]
    unique, index = np.unique(mid, return_index=True)
    table = QTable(meta=dict(meta or {}))
    table["MJD_UTC"] = unique
    table["BJD_TDB"] = tdb[index]
    # jwst puts the sums in input order into the time-sorted rows (and fails on a time repeated
    # across segments); the first sum of each time, sorted with it, is the same for ordered
    # times and right for the rest.
    flux = total[index]
    unit = segments[0].flux_unit if segments else None
    table["whitelight_flux"] = flux << u.Unit(unit) if unit else flux
    return table
