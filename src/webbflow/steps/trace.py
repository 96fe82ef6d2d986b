"""The trace's row position and width per integration of a grism time series (not in jwst).

Pointing drift and jitter move the spectrum across the rows; the light curves decorrelate
against that motion (Eureka!'s stage 3 records ``centroid_y`` and ``centroid_sy`` for the
same reason).  The spectrum is collapsed along the dispersion over the extraction columns
(a shift common to all columns shifts the collapsed profile by the same amount; a tilted
trace only broadens it), and a Gaussian plus a constant is fitted per integration to the rows
around the peak of the median profile.
"""

import logging
import warnings

import numpy as np

from webbflow import dqflags

__all__ = ["collapsed_profiles", "fit_profile", "trace_positions"]

log = logging.getLogger(__name__)


def collapsed_profiles(data, dq=None, columns=None):
    """Per integration, the mean over ``columns`` of each row (unusable pixels left out).

    Parameters
    ----------
    data : ndarray, (nints, ny, nx)
    dq : ndarray, optional
        Pixels with DO_NOT_USE are left out.
    columns : slice, optional
        The extraction columns (default all).

    Returns
    -------
    ndarray, float64, (nints, ny)
    """
    columns = columns or slice(None)
    cube = np.array(data[..., columns], dtype=np.float64)
    if dq is not None:
        cube[(np.asarray(dq[..., columns]) & dqflags.DO_NOT_USE) != 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without a usable pixel are NaN
        return np.nanmean(cube, axis=2)


def _gauss(p, y):
    amp, mu, sigma, const = p
    return amp * np.exp(-0.5 * ((y - mu) / sigma) ** 2) + const


def fit_profile(rows, profile, guess=None):
    """Least-squares Gaussian + constant fit of one collapsed profile.

    Parameters
    ----------
    rows, profile : ndarray
        Row coordinates and values (NaN values are left out).
    guess : tuple, optional
        (amplitude, centre, sigma, constant); default from the moments.

    Returns
    -------
    centre, sigma, centre_err, sigma_err : float
        NaN when the fit fails or has fewer than 5 usable rows.
    """
    from scipy.optimize import least_squares  # ~0.4 s to import: only the jobs that fit a trace pay it

    good = np.isfinite(profile)
    y, p = rows[good], profile[good]
    if y.size < 5:
        return (np.nan,) * 4
    if guess is None:
        const = np.min(p)
        w = np.clip(p - const, 0, None)
        mu = np.sum(w * y) / max(np.sum(w), 1e-30)
        sigma = np.sqrt(max(np.sum(w * (y - mu) ** 2) / max(np.sum(w), 1e-30), 0.25))
        guess = (np.max(p) - const, mu, sigma, const)
    try:
        fit = least_squares(lambda q: _gauss(q, y) - p, guess, method="lm", x_scale="jac")
    except (ValueError, np.linalg.LinAlgError):
        return (np.nan,) * 4
    if not fit.success:
        return (np.nan,) * 4
    dof = max(y.size - 4, 1)
    resid_var = np.sum(fit.fun ** 2) / dof
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac) * resid_var
        err = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        err = np.full(4, np.nan)
    return float(fit.x[1]), float(abs(fit.x[2])), float(err[1]), float(err[2])


def trace_positions(data, dq=None, columns=None, half_width=6):
    """Row position and Gaussian width of the trace in every integration.

    Parameters
    ----------
    data : ndarray, (nints, ny, nx)
        The 2-D spectra (calints/crfints cutouts), dispersion along x.
    dq : ndarray, optional
        DQ of ``data``; DO_NOT_USE pixels are left out.
    columns : slice, optional
        Columns to collapse (the extraction columns).
    half_width : int
        Rows on each side of the median profile's peak used in the fit.

    Returns
    -------
    dict of ndarray, (nints,)
        ``y`` (0-based row of the cutout), ``width`` (Gaussian sigma, rows), ``y_err``, ``width_err``.
    """
    return trace_from_profiles(collapsed_profiles(data, dq, columns), half_width)


def trace_from_profiles(profiles, half_width=6):
    """:func:`trace_positions` from the integrations' collapsed profiles ((nints, ny),
    :func:`collapsed_profiles`), which a segment read a chunk of integrations at a time gives."""
    nints, ny = profiles.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(profiles, axis=0)
    out = {k: np.full(nints, np.nan) for k in ("y", "width", "y_err", "width_err")}
    if not np.any(np.isfinite(median)):
        return out
    peak = int(np.nanargmax(median))
    lo, hi = max(peak - half_width, 0), min(peak + half_width + 1, ny)
    rows = np.arange(lo, hi, dtype=np.float64)
    first = fit_profile(rows, median[lo:hi])
    for i in range(nints):
        guess = None
        if np.isfinite(first[0]):
            p = profiles[i, lo:hi]
            guess = (np.nanmax(p) - np.nanmin(p), first[0], first[1], np.nanmin(p))
        y, w, ye, we = fit_profile(rows, profiles[i, lo:hi], guess)
        out["y"][i], out["width"][i], out["y_err"][i], out["width_err"][i] = y, w, ye, we
    return out
