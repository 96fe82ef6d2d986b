"""Spectroscopic light curves of a grism time series and a least-squares transit fit (issue #13, part 6).

Beyond jwst's ``white_light`` (a bare ``nansum`` of FLUX per integration), this module gives what a
transit analysis starts from:

* :func:`spectroscopic_light_curves`: per integration the mid-times (MJD_UTC, BJD_TDB), the white
  light and N wavelength bins, each the sum of FLUX over the columns of the bin with errors summed in
  quadrature from FLUX_ERROR, normalised by the out-of-transit (or overall) median.  Only columns
  with a finite flux in every integration are summed, so every integration sums the same columns (a
  column that drops out in one integration would look like a dip).  A column-integration that lost
  pixels of the box (outlier_detection makes them NaN and jwst's box sum skips them) is filled from
  its neighbours in time (:func:`replace_lost_pixels`).
* :func:`fit_transit`: the quadratic limb-darkened transit of :mod:`webbflow.transit` times a baseline
  (normalisation and a linear slope in time), fitted with ``scipy.optimize.least_squares``;
  1-σ uncertainties from the Jacobian, scaled by the reduced χ² when it exceeds 1.
* :func:`fit_light_curves`: the white light, then every bin divided by the white light's residual
  (:func:`common_mode`: noise coherent along the trace's rows is common to all bins).
* :func:`plot_light_curves`: a QA figure (white light with its fit and residuals, binned curves offset).

:func:`light_curve_products` chains them for a workflow rule: x1dints → light-curve ECSV, fit ECSV, PNG.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from webbflow.transit import TransitParams, relative_flux

__all__ = ["TransitFit", "common_mode", "fit_light_curves", "fit_transit", "light_curve_products", "plot_light_curves",
           "read_x1dints_spectra", "replace_lost_pixels", "spectroscopic_light_curves", "write_light_curves"]

log = logging.getLogger(__name__)

_TRANSIT_FIELDS = tuple(f.name for f in dataclasses.fields(TransitParams))
# central-difference steps of the Jacobian, in the fitted parameter's units (t0 is fitted in seconds
# from the guess: a relative step on an MJD of ~6e4 would be tens of seconds, longer than ingress)
_STEPS = {"t0": 1e-2, "per": 1e-7, "a": 1e-4, "inc": 1e-4, "rp": 1e-5, "u1": 1e-4, "u2": 1e-4,
          "norm": 1e-6, "slope": 1e-6}
_BAND_LEVEL = 0.05  # default wave_range: columns at least this fraction of the brightest
_BOUNDS = {"rp": (0.0, 1.0), "a": (1.0, np.inf), "inc": (0.0, 90.0), "per": (0.0, np.inf),
           "u1": (-1.0, 2.0), "u2": (-1.0, 2.0)}


# -- reading ----------------------------------------------------------------------------------------

def read_x1dints_spectra(source):
    """The per-integration spectra of an ``x1dints`` product, all segments joined in time order.

    Parameters
    ----------
    source : path-like, TSOMultiSpecModel, or sequence of tables
        An ``x1dints.fits`` (stage 2 or tso3), an open TSOMultiSpecModel, or EXTRACT1D tables
        (FITS records or astropy tables with the x1dints columns), one per segment.

    Returns
    -------
    dict
        ``int_num``, ``segment``, ``mjd_utc``, ``bjd_tdb`` (n,), and (n, ncols) float64 arrays
        ``wavelength``, ``flux``, ``flux_error``, ``flux_var_poisson``, ``flux_var_rnoise``,
        ``npixels``; ``flux_unit``.  Shorter segments are padded with NaN (NPIXELS 0).
    """
    tables = _spec_tables(source)
    if not tables:
        raise ValueError("no EXTRACT1D table in the x1dints")
    width = max(np.atleast_2d(np.asarray(t["FLUX"])).shape[1] for t, _ in tables)
    names = {"wavelength": "WAVELENGTH", "flux": "FLUX", "flux_error": "FLUX_ERROR",
             "flux_var_poisson": "FLUX_VAR_POISSON", "flux_var_rnoise": "FLUX_VAR_RNOISE", "npixels": "NPIXELS"}
    parts = {k: [] for k in (*names, "int_num", "segment", "mjd_utc", "bjd_tdb")}
    for table, unit in tables:
        n = len(table)
        for key, col in names.items():
            value = np.full((n, width), 0.0 if key == "npixels" else np.nan)
            if col in _colnames(table):
                v = np.atleast_2d(np.asarray(table[col], float))
                value[:, :v.shape[1]] = v
            parts[key].append(value)
        parts["int_num"].append(np.asarray(table["INT_NUM"], int) if "INT_NUM" in _colnames(table)
                                else np.arange(n) + 1)
        parts["segment"].append(np.asarray(table["SEGMENT"], int) if "SEGMENT" in _colnames(table)
                                else np.ones(n, int))
        parts["mjd_utc"].append(np.asarray(table["MJD-AVG"], float))
        parts["bjd_tdb"].append(np.asarray(table["TDB-MID"], float))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    order = np.argsort(out["mjd_utc"], kind="stable")
    out = {k: v[order] for k, v in out.items()}
    out["flux_unit"] = tables[0][1]
    return out


def _colnames(table):
    names = getattr(table, "colnames", None) or getattr(getattr(table, "columns", None), "names", None)
    return list(names if names is not None else table.dtype.names)


def _spec_tables(source):
    """[(table, flux unit)] from a path, a TSOMultiSpecModel or tables."""
    if isinstance(source, (str, Path)):
        from astropy.io import fits

        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: x1dints not found")
        with fits.open(path) as hdul:
            return [(np.array(h.data), h.columns["FLUX"].unit or "") for h in hdul
                    if h.name == "EXTRACT1D" and h.data is not None]
    spec = getattr(source, "spec", None)
    if spec is not None:  # TSOMultiSpecModel
        return [(np.array(s.spec_table), "") for s in spec]
    return [(t, str(getattr(getattr(t, "columns", {}).get("FLUX", None), "unit", "") or "")) for t in source]


# -- light curves -----------------------------------------------------------------------------------

def _out_of_transit(times, out_of_transit):
    if out_of_transit is None:
        return np.ones(times.size, bool)
    if isinstance(out_of_transit, TransitParams):
        return relative_flux(times, [out_of_transit.wave_ref], out_of_transit)[:, 0] == 1.0
    mask = np.asarray(out_of_transit, bool)
    if mask.shape != times.shape:
        raise ValueError(f"out_of_transit has {mask.size} values for {times.size} integrations")
    return mask


def replace_lost_pixels(flux, npixels):
    """Fill the column fluxes of integrations that lost pixels of the box, from the neighbouring integrations.

    jwst's box extraction sums the pixels that are not NaN (pixel_replace is skipped by default), so
    a pixel that outlier_detection (or jump) removed in one integration lowers that integration's
    FLUX of its column by the pixel's share -- up to a third of the column on the trace's peak row,
    a dip of several 1e-4 in the white light.  A column-integration whose NPIXELS is a pixel or more
    below the column's median NPIXELS gets the mean FLUX of the nearest integrations before and after
    it that kept all their pixels.

    Parameters
    ----------
    flux, npixels : ndarray (nints, ncols)

    Returns
    -------
    flux : ndarray
        A copy with the replaced values.
    lost : ndarray of bool
        The column-integrations replaced.
    """
    flux = np.array(flux, float)
    npixels = np.asarray(npixels, float)
    nominal = np.median(npixels, axis=0)
    lost = (npixels < nominal[None, :] - 0.5) & np.isfinite(flux)
    if not lost.any():
        return flux, lost
    n = flux.shape[0]
    index = np.arange(n)
    for col in np.flatnonzero(lost.any(axis=0)):
        good = ~lost[:, col] & np.isfinite(flux[:, col])
        if good.sum() < 2:
            continue
        gi = index[good]
        for i in index[lost[:, col]]:
            k = np.searchsorted(gi, i)
            near = [gi[j] for j in (k - 1, k) if 0 <= j < gi.size]
            flux[i, col] = np.mean(flux[near, col])
    return flux, lost


def spectroscopic_light_curves(source, nbins=None, edges=None, wave_range=None, out_of_transit=None,
                               replace_lost=True):
    """White-light and binned light curves of a grism time series.

    Parameters
    ----------
    source : path-like, TSOMultiSpecModel, or sequence of tables
        The ``x1dints`` (see :func:`read_x1dints_spectra`).
    nbins : int, optional
        Number of equal-width wavelength bins over ``wave_range``.
    edges : array_like, optional
        Bin edges (µm); a column is in bin k when ``edges[k] <= λ < edges[k+1]``.  Overrides ``nbins``.
        Neither: the white light only.
    replace_lost : bool
        Fill the FLUX of column-integrations that lost pixels of the extraction box from their
        neighbours in time (:func:`replace_lost_pixels`; default).  False: sum FLUX as it is.
    wave_range : (float, float), optional
        Wavelengths (µm) of the white light and of the ``nbins`` bins (default: the usable columns
        whose out-of-transit median flux is at least 5 % of the brightest column's, i.e. the band).
    out_of_transit : bool array or TransitParams, optional
        Integrations that set the normalisation (a TransitParams: where its model is 1).  None: all
        integrations (the overall median).

    Returns
    -------
    astropy.table.QTable
        One row per integration: ``integration``, ``segment``, ``MJD_UTC``, ``BJD_TDB`` (d),
        ``white_flux``, ``white_error``, and with bins ``flux``, ``error``, ``var_poisson``, ``var_rnoise``
        (n, nbins), all relative (÷ the median); plus ``white_var_poisson``, ``white_var_rnoise``.
        Meta: ``bin_edges_um``, ``bin_wave_um`` (flux-weighted mean λ), ``bin_n_columns``,
        ``wave_range_um``, ``white_n_columns``, ``norm`` (white then bins, in the FLUX unit),
        ``flux_unit``, ``n_out_of_transit``.

    Notes
    -----
    A column enters only if its FLUX is finite in every integration: jwst's box extraction gives NaN
    only where a whole column is masked, and summing a column in some integrations but not others
    would put steps in the curve.  The relative variances are those of the products (FLUX_VAR_POISSON
    and FLUX_VAR_RNOISE summed over the columns, ÷ norm²): the photon + read-noise prediction.
    """
    import astropy.units as u
    from astropy.table import QTable

    s = read_x1dints_spectra(source)
    flux, err = s["flux"], s["flux_error"]
    lost = np.zeros(flux.shape, bool)
    if replace_lost:
        flux, lost = replace_lost_pixels(flux, s["npixels"])
    wave = np.nanmedian(np.where(np.isfinite(s["wavelength"]), s["wavelength"], np.nan), axis=0) \
        if np.isfinite(s["wavelength"]).any() else np.full(flux.shape[1], np.nan)
    usable = np.isfinite(wave) & np.all(np.isfinite(flux), axis=0) & np.all(np.isfinite(err), axis=0)
    if not usable.any():
        raise ValueError("no column has a finite flux in every integration")
    oot = _out_of_transit(s["mjd_utc"], out_of_transit)
    if not oot.any():
        raise ValueError("no out-of-transit integration to normalise by")
    if wave_range is None:
        # where the star is: columns beyond the filter's edges hold only noise (and sums near 0 that
        # no normalisation survives)
        level = np.where(usable, np.median(np.where(usable[None, :], flux, 0.0)[oot], axis=0), 0.0)
        bright = usable & (level >= _BAND_LEVEL * level.max())
        lo, hi = float(np.min(wave[bright])), float(np.max(wave[bright]))
    else:
        lo, hi = map(float, wave_range)
    white_cols = usable & (wave >= lo) & (wave <= hi)
    if not white_cols.any():
        raise ValueError(f"no usable column between {lo} and {hi} um")
    if edges is None and nbins:
        edges = np.linspace(lo, hi + 1e-9 * max(abs(hi), 1.0), int(nbins) + 1)  # the last column is in the last bin
    edges = None if edges is None else np.asarray(edges, float)
    if edges is not None and (edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0)):
        raise ValueError("bin edges must be an increasing sequence of at least two wavelengths")

    def band(cols):
        f = flux[:, cols].sum(1)
        e = np.sqrt((err[:, cols] ** 2).sum(1))
        vp = np.nansum(s["flux_var_poisson"][:, cols], 1)
        vr = np.nansum(s["flux_var_rnoise"][:, cols], 1)
        norm = float(np.median(f[oot]))
        if not norm > 0:
            raise ValueError(f"the median flux of {int(cols.sum())} columns is {norm:g}: no light curve to "
                             "normalise (choose edges or wave_range inside the band)")
        return f / norm, e / norm, vp / norm ** 2, vr / norm ** 2, norm

    table = QTable()
    table["integration"] = s["int_num"].astype(np.int32)
    table["segment"] = s["segment"].astype(np.int32)
    table["MJD_UTC"] = s["mjd_utc"] * u.d
    table["BJD_TDB"] = s["bjd_tdb"] * u.d
    wf, we, wvp, wvr, wnorm = band(white_cols)
    table["white_flux"], table["white_error"] = wf, we
    table["white_var_poisson"], table["white_var_rnoise"] = wvp, wvr
    norms, bin_wave, bin_n = [wnorm], [], []
    if edges is not None:
        cols_f, cols_e, cols_vp, cols_vr = [], [], [], []
        for k in range(edges.size - 1):
            cols = usable & (wave >= edges[k]) & (wave < edges[k + 1])
            if not cols.any():
                raise ValueError(f"wavelength bin {edges[k]:.4f}-{edges[k + 1]:.4f} um has no usable column")
            f, e, vp, vr, norm = band(cols)
            cols_f.append(f), cols_e.append(e), cols_vp.append(vp), cols_vr.append(vr)
            norms.append(norm)
            level = np.median(flux[oot][:, cols], axis=0)
            bin_wave.append(float((wave[cols] * level).sum() / level.sum()))
            bin_n.append(int(cols.sum()))
        table["flux"] = np.column_stack(cols_f)
        table["error"] = np.column_stack(cols_e)
        table["var_poisson"] = np.column_stack(cols_vp)
        table["var_rnoise"] = np.column_stack(cols_vr)
    table.meta.update({
        "comments": ["webbflow spectroscopic light curves: FLUX summed over the columns of each wavelength bin"
                     " (columns finite in every integration), errors in quadrature from FLUX_ERROR, all divided"
                     " by the median of the out-of-transit integrations (norm, in flux_unit); flux[:, k] is the"
                     " bin from bin_edges_um[k] to bin_edges_um[k+1]"],
        "bin_edges_um": [] if edges is None else [float(e) for e in edges],
        "bin_wave_um": bin_wave, "bin_n_columns": bin_n, "wave_range_um": [lo, hi],
        "white_n_columns": int(white_cols.sum()), "norm": norms, "flux_unit": s["flux_unit"],
        "n_out_of_transit": int(oot.sum()), "n_columns_dropped": int((np.isfinite(wave) & ~usable).sum()),
        "n_replaced": int(lost[:, white_cols].sum())})
    return table


def write_light_curves(table, path):
    """Write a light-curve or fit table as ECSV, atomically."""
    from webbflow.io.files import write_ecsv

    write_ecsv(path, table)
    return Path(path)


# -- transit fit ------------------------------------------------------------------------------------

@dataclass
class TransitFit:
    """Result of :func:`fit_transit`.

    Attributes
    ----------
    params : TransitParams
        Best-fitting transit (the guess with the free parameters replaced; slopes in λ kept).
    values, errors : dict
        Free parameter -> best value and 1-σ uncertainty (``norm`` and ``slope`` included; ``slope``
        is per day of ``time − tref``).
    depth, depth_error : float
        rp² and its uncertainty (2 rp σ_rp; NaN when rp is not free).
    chi2 : float
        χ² of the best fit (with the errors as given).
    dof : int
        Points − free parameters.
    redchi2 : float
        chi2 / dof.
    error_scale : float
        √redchi2 when it exceeds 1 (the uncertainties are scaled by it), else 1.
    rms : float
        rms of the relative residuals ``flux / model − 1``.
    model : ndarray
        Best model (baseline × transit) at ``time``.
    transit_model : ndarray
        Transit alone (1 out of transit).
    residuals : ndarray
        ``flux − model``.
    tref : float
        Time the slope is measured from (the mean time).
    covariance : ndarray
        Scaled covariance of the free parameters, in the order of ``free``.
    free : tuple of str
    success : bool
    message : str
    """

    params: TransitParams
    values: dict
    errors: dict
    depth: float
    depth_error: float
    chi2: float
    dof: int
    redchi2: float
    error_scale: float
    rms: float
    model: np.ndarray
    transit_model: np.ndarray
    residuals: np.ndarray
    tref: float
    covariance: np.ndarray
    free: tuple = ()
    success: bool = True
    message: str = ""
    extra: dict = field(default_factory=dict)


def fit_transit(time, flux, error, guess, free=("rp", "t0"), fit_baseline=True):
    """Least-squares fit of a quadratic limb-darkened transit × a linear baseline.

    The model is ``norm · (1 + slope · (t − tref)) · F(t; params)`` with F from
    :func:`webbflow.transit.relative_flux` evaluated at ``guess.wave_ref`` (rp, u1 and u2 are the values
    of the light curve's band: pass a guess with the band's limb darkening).

    Parameters
    ----------
    time : array_like
        Mid-times (days, the scale of ``guess.t0``; MJD UTC for the products of this pipeline).
    flux, error : array_like
        Relative flux and its 1-σ errors (non-finite points are left out).
    guess : TransitParams
        Start values; the parameters not in ``free`` stay fixed at these.
    free : sequence of str
        Transit parameters to fit, from ``rp``, ``t0``, ``a``, ``inc``, ``u1``, ``u2``, ``per``.
    fit_baseline : bool
        Fit ``norm`` and ``slope`` too (default); False fixes them at 1 and 0.

    Returns
    -------
    TransitFit

    Notes
    -----
    ``scipy.optimize.least_squares`` (trf, bounded: 0 ≤ rp ≤ 1, a ≥ 1, inc ≤ 90°, -1 ≤ u ≤ 2) on
    (flux − model)/error.  The Jacobian is a central difference with fixed steps per parameter (t0
    in seconds), since the model is a numerical integral; the covariance is (JᵀJ)⁻¹ at the optimum,
    multiplied by χ²/dof when that exceeds 1 (errors that underestimate the scatter), as is usual
    for least squares.
    """
    from scipy.optimize import least_squares

    time = np.asarray(time, float)
    flux = np.asarray(flux, float)
    error = np.asarray(error, float)
    if not (time.shape == flux.shape == error.shape):
        raise ValueError("time, flux and error must have the same shape")
    ok = np.isfinite(time) & np.isfinite(flux) & np.isfinite(error) & (error > 0)
    free = tuple(free)
    unknown = [p for p in free if p not in ("rp", "t0", "a", "inc", "u1", "u2", "per")]
    if unknown:
        raise ValueError(f"cannot fit {unknown}: choose from rp, t0, a, inc, u1, u2, per")
    names = free + (("norm", "slope") if fit_baseline else ())
    if ok.sum() <= len(names):
        raise ValueError(f"{int(ok.sum())} usable points for {len(names)} free parameters")
    t, f, e = time[ok], flux[ok], error[ok]
    tref = float(np.mean(t))
    # the transit is fixed in λ: evaluate it at wave_ref with no slopes
    base = dataclasses.replace(guess, rp_slope=0.0, u1_slope=0.0, u2_slope=0.0)

    def unpack(x):
        v = dict(zip(names, x))
        kw = {k: v[k] for k in free if k != "t0"}
        if "t0" in v:
            kw["t0"] = guess.t0 + v["t0"] / 86400.0
        return dataclasses.replace(base, **kw), v.get("norm", 1.0), v.get("slope", 0.0)

    def model(x, tt):
        p, norm, slope = unpack(x)
        transit = relative_flux(tt, [p.wave_ref], p)[:, 0]
        return norm * (1.0 + slope * (tt - tref)) * transit, transit

    def resid(x):
        return (f - model(x, t)[0]) / e

    def jac(x):
        cols = []
        for k, name in enumerate(names):
            h = _STEPS[name]
            xp, xm = x.copy(), x.copy()
            xp[k] += h
            xm[k] -= h
            cols.append((resid(xp) - resid(xm)) / (2 * h))
        return np.column_stack(cols)

    start = {"t0": 0.0, "norm": float(np.median(f)), "slope": 0.0}
    x0 = np.array([start[n] if n in start else getattr(guess, n) for n in names], float)
    lo = np.array([_BOUNDS.get(n, (-np.inf, np.inf))[0] for n in names])
    hi = np.array([_BOUNDS.get(n, (-np.inf, np.inf))[1] for n in names])
    # keep the start strictly inside the bounds (trf needs it): inc = 90 is a common guess
    x0 = np.clip(x0, lo + 1e-9 * (np.isfinite(lo)), np.where(np.isfinite(hi), hi - 1e-6, hi))
    sol = least_squares(resid, x0, jac=jac, bounds=(lo, hi), x_scale="jac", method="trf",
                        xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=200)
    J = jac(sol.x)
    chi2 = float(np.sum(sol.fun ** 2))
    dof = int(t.size - len(names))
    redchi2 = chi2 / dof
    scale = float(np.sqrt(redchi2)) if redchi2 > 1 else 1.0
    try:
        cov = np.linalg.inv(J.T @ J) * scale ** 2
    except np.linalg.LinAlgError:
        cov = np.full((len(names), len(names)), np.nan)
    sig = np.sqrt(np.clip(np.diag(cov), 0, None))
    values = dict(zip(names, map(float, sol.x)))
    errors = dict(zip(names, map(float, sig)))
    if "t0" in values:  # report t0 in days, as it was given
        values["t0"] = guess.t0 + values["t0"] / 86400.0
        errors["t0"] = errors["t0"] / 86400.0
    best, _, _ = unpack(sol.x)
    best = dataclasses.replace(best, rp_slope=guess.rp_slope, u1_slope=guess.u1_slope, u2_slope=guess.u2_slope)
    full_model = np.full(time.shape, np.nan)
    full_transit = np.full(time.shape, np.nan)
    m, tr = model(sol.x, t)
    full_model[ok], full_transit[ok] = m, tr
    rel = f / m - 1.0
    depth = values["rp"] ** 2 if "rp" in values else float("nan")
    depth_err = 2 * values["rp"] * errors["rp"] if "rp" in values else float("nan")
    return TransitFit(params=best, values=values, errors=errors, depth=float(depth), depth_error=float(depth_err),
                      chi2=chi2, dof=dof, redchi2=float(redchi2), error_scale=scale,
                      rms=float(np.sqrt(np.mean(rel ** 2))), model=full_model, transit_model=full_transit,
                      residuals=flux - full_model, tref=tref, covariance=cov, free=names,
                      success=bool(sol.success), message=str(sol.message))


def common_mode(curves, white_fit):
    """The white light's residual per integration, ``white_flux / model``: noise common to every bin.

    Noise that is coherent along the rows of the trace (1/f left on the trace's rows, the reference
    pixels' row correction) lands in every column of an integration alike, so every bin shares it;
    dividing each bin by the white light's residual takes it out (the "common-mode" correction of
    JWST transit spectroscopy) without touching the bins' depths, since the residual holds no transit.

    Parameters
    ----------
    curves : astropy.table.QTable
        From :func:`spectroscopic_light_curves`.
    white_fit : TransitFit
        The fit of ``curves["white_flux"]``.

    Returns
    -------
    ndarray
        (nints,) factor to divide each bin's flux and error by.
    """
    factor = np.asarray(curves["white_flux"], float) / white_fit.model
    return np.where(np.isfinite(factor), factor, 1.0)


def fit_light_curves(curves, guess, free=("rp", "t0"), bin_free=("rp",), limb_darkening=None,
                     common_mode_correction=True):
    """Fit the white light and every bin of :func:`spectroscopic_light_curves`.

    The white-light fit sets the geometry; each bin then fits ``bin_free`` (default rp, with the
    baseline) with the other parameters at the white-light values, after dividing it by the white
    light's residual (:func:`common_mode`) unless ``common_mode_correction`` is False.

    Parameters
    ----------
    curves : astropy.table.QTable
        From :func:`spectroscopic_light_curves`.
    guess : TransitParams
        Start values (t0 on the ``MJD_UTC`` scale).  Its λ slopes give each bin's rp and limb darkening
        at the bin's mean wavelength, unless ``limb_darkening`` is given.
    free, bin_free : sequence of str
        Free transit parameters of the white-light and of the bin fits.
    limb_darkening : sequence of (u1, u2), optional
        Per bin.
    common_mode_correction : bool
        Divide the bins by the white light's residual before fitting them (default).

    Returns
    -------
    white : TransitFit
    bins : list of TransitFit
    table : astropy.table.QTable
        One row per band ("white", then "bin_k"): wave_min, wave_max, wave, depth, depth_error, rp,
        rp_error, t0, redchi2, rms, error_scale, chi2, dof.
    """
    from astropy.table import QTable

    time = np.asarray(curves["MJD_UTC"].value if hasattr(curves["MJD_UTC"], "value") else curves["MJD_UTC"], float)
    white = fit_transit(time, curves["white_flux"], curves["white_error"], guess, free=free)
    fits_ = []
    rows = [("white", *curves.meta["wave_range_um"], float(np.mean(curves.meta["wave_range_um"])), white)]
    edges = curves.meta.get("bin_edges_um") or []
    geometry = {k: getattr(white.params, k) for k in ("t0", "a", "inc", "per")}
    cm = common_mode(curves, white) if common_mode_correction else np.ones(len(curves))
    for k in range(len(edges) - 1):
        w = curves.meta["bin_wave_um"][k]
        u1, u2 = limb_darkening[k] if limb_darkening is not None else guess.ld_at(w)
        g = dataclasses.replace(white.params, rp=float(guess.rp_at(w)), u1=float(u1), u2=float(u2),
                                wave_ref=float(w), rp_slope=0.0, u1_slope=0.0, u2_slope=0.0, **geometry)
        fit = fit_transit(time, np.asarray(curves["flux"][:, k]) / cm, np.asarray(curves["error"][:, k]) / cm, g,
                          free=bin_free)
        fits_.append(fit)
        rows.append((f"bin_{k}", edges[k], edges[k + 1], w, fit))
    table = QTable(rows=[(name, lo, hi, w, f.depth, f.depth_error, f.values.get("rp", np.nan),
                          f.errors.get("rp", np.nan), f.params.t0, f.redchi2, f.rms, f.error_scale, f.chi2, f.dof)
                         for name, lo, hi, w, f in rows],
                   names=("band", "wave_min", "wave_max", "wave", "depth", "depth_error", "rp", "rp_error", "t0",
                          "redchi2", "rms", "error_scale", "chi2", "dof"))
    table.meta["common_mode_correction"] = bool(common_mode_correction)
    table.meta["comments"] = ["webbflow transit fits (least squares, quadratic limb darkening, linear baseline):"
                              " white light first (free: " + ", ".join(white.free) + "), then each bin"
                              " (free: " + ", ".join(fits_[0].free if fits_ else bin_free) + ");"
                              " uncertainties scaled by sqrt(redchi2) where it exceeds 1"]
    return white, fits_, table


# -- QA figure --------------------------------------------------------------------------------------

def plot_light_curves(curves, path, white_fit=None, bin_fits=None, title=None, offset=None,
                      common_mode_correction=True):
    """QA figure: the white-light curve with its fit and residuals, and the binned curves offset.

    Parameters
    ----------
    curves : astropy.table.QTable
        From :func:`spectroscopic_light_curves`.
    path : path-like
        PNG to write (atomically).
    white_fit : TransitFit, optional
    bin_fits : list of TransitFit, optional
    title : str, optional
    offset : float, optional
        Vertical spacing of the binned curves (default: 1.5 × the deepest bin's depth or 6 × its rms).
    common_mode_correction : bool
        With ``white_fit``, the bins are drawn divided by its residual, as :func:`fit_light_curves`
        fits them.

    Returns
    -------
    pathlib.Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from webbflow.io.files import atomic_output

    time = np.asarray(curves["MJD_UTC"].value if hasattr(curves["MJD_UTC"], "value") else curves["MJD_UTC"], float)
    t = (time - time[0]) * 24 * 60  # minutes from the first integration
    binned = "flux" in curves.colnames
    fig = plt.figure(figsize=(11, 6.5), dpi=100)
    grid = fig.add_gridspec(3, 2 if binned else 1, height_ratios=(3, 1.2, 0.01), hspace=0.08, wspace=0.22)
    ax = fig.add_subplot(grid[0, 0])
    res = fig.add_subplot(grid[1, 0], sharex=ax)
    wf = np.asarray(curves["white_flux"], float)
    ax.errorbar(t, wf, np.asarray(curves["white_error"], float), fmt=".", ms=3, color="k", ecolor="0.7", lw=0.6)
    if white_fit is not None:
        ax.plot(t, white_fit.model, color="tab:red", lw=1.2,
                label=f"depth {white_fit.depth * 1e6:.0f} ± {white_fit.depth_error * 1e6:.0f} ppm")
        ax.legend(loc="lower left", fontsize=8, frameon=False)
        r = (wf - white_fit.model) * 1e6
        res.plot(t, r, ".", ms=3, color="k")
        res.axhline(0, color="tab:red", lw=0.8)
        res.set_title(f"rms {white_fit.rms * 1e6:.0f} ppm, χ²/dof {white_fit.redchi2:.2f}", fontsize=8, loc="right",
                      y=0.75)
    res.set_ylabel("residual (ppm)")
    res.set_xlabel("minutes from the first integration")
    ax.set_ylabel("relative flux")
    ax.set_title("white light" + (f" ({curves.meta['wave_range_um'][0]:.2f}-{curves.meta['wave_range_um'][1]:.2f} µm)"
                                  if "wave_range_um" in curves.meta else ""), fontsize=9)
    plt.setp(ax.get_xticklabels(), visible=False)
    if binned:
        bx = fig.add_subplot(grid[:2, 1])
        flux = np.asarray(curves["flux"], float)
        if white_fit is not None and common_mode_correction:
            flux = flux / common_mode(curves, white_fit)[:, None]
        nb = flux.shape[1]
        if offset is None:
            depth = np.nanmax(1 - np.nanmin(flux, axis=0))
            scatter = np.nanmax(np.nanstd(np.diff(flux, axis=0), axis=0))
            offset = max(1.5 * depth, 6 * scatter, 1e-4)
        cmap = plt.get_cmap("viridis")
        waves = curves.meta.get("bin_wave_um") or list(range(nb))
        for k in range(nb):
            shift = -k * offset
            bx.plot(t, flux[:, k] + shift, ".", ms=2.5, color=cmap(k / max(nb - 1, 1)))
            if bin_fits:
                bx.plot(t, bin_fits[k].model + shift, color="k", lw=0.7)
            bx.text(t[-1] + 0.01 * (t[-1] - t[0] + 1e-9), 1 + shift, f"{waves[k]:.2f} µm", fontsize=6, va="center")
        cm = " ÷ white-light residual" if white_fit is not None and common_mode_correction else ""
        bx.set_title(f"{nb} wavelength bins{cm} (offset {offset:.3g})", fontsize=9)
        bx.set_xlabel("minutes from the first integration")
        bx.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return Path(path)


# -- for a workflow rule ----------------------------------------------------------------------------

def light_curve_products(x1dints, curves_path, fits_path=None, png_path=None, nbins=None, edges=None,
                         wave_range=None, transit=None, free=("rp", "t0"), bin_free=("rp",),
                         common_mode_correction=True):
    """x1dints → spectroscopic light curves (ECSV), and with a transit guess its fits (ECSV) and QA PNG.

    Parameters
    ----------
    x1dints : path-like
        tso3's ``<product>_x1dints.fits`` (or a stage-2 one).
    curves_path : path-like
        Light-curve ECSV to write.
    fits_path, png_path : path-like, optional
        Fit table and figure (the figure is drawn without fits when ``transit`` is None).
    nbins, edges, wave_range
        As :func:`spectroscopic_light_curves`.
    transit : TransitParams or dict, optional
        Transit guess (t0 MJD UTC, per, a, inc, rp, u1, u2 …); normalisation is then out of transit.
    free, bin_free, common_mode_correction
        As :func:`fit_light_curves`.

    Returns
    -------
    dict
        name -> Path of what was written.
    """
    if isinstance(transit, dict):
        transit = TransitParams(**transit)
    curves = spectroscopic_light_curves(x1dints, nbins=nbins, edges=edges, wave_range=wave_range,
                                        out_of_transit=transit)
    written = {"curves": write_light_curves(curves, curves_path)}
    white = bins = None
    if transit is not None:
        white, bins, table = fit_light_curves(curves, transit, free=free, bin_free=bin_free,
                                              common_mode_correction=common_mode_correction)
        if fits_path is not None:
            written["fits"] = write_light_curves(table, fits_path)
    if png_path is not None:
        written["png"] = plot_light_curves(curves, png_path, white_fit=white, bin_fits=bins,
                                           title=Path(x1dints).name.removesuffix("_x1dints.fits"),
                                           common_mode_correction=common_mode_correction)
    return written
