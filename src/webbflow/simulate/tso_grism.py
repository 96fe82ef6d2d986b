"""A grism time series: one star's spectrum dispersed along the rows, transited by a planet.

The scene of ``ExposureSpec(scene="tso_grism", tso=TsoGrismScene(...))``:

* **Wavelength of a column** is :func:`webbflow.simulate.grism.trace_wavelength` at the full-frame
  column ``x + SUBSTRT1 − 1`` for the SCI header's XREF_SCI (1-based, as jwst stores it): the same
  λ(x) that jwst's assign_wcs computes from the SPECWCS reference that ``grism.write_specwcs`` writes.
* **Stellar spectrum**: a blackbody photon spectrum × a smooth F322W2 band (tanh edges) × the grism's
  :func:`~webbflow.simulate.grism.relative_response`, scaled so its brightest column has
  ``peak_rate`` DN/s (all rows together, before the pixel response).
* **Cross-dispersion profile**: a pixel-integrated Gaussian around the trace row of
  :func:`~webbflow.simulate.grism.trace_row` (0-based ~33.6–34.4 on SUBGRISM strips), with
  σ(λ) = ``sigma_ref`` · λ / ``wave_ref`` (diffraction grows with λ), moved by the pointing drift.
* **Transit**: :func:`webbflow.transit.relative_flux` with rp(λ) and limb darkening per
  column, evaluated at each integration's INT_TIMES ``int_mid_MJD_UTC``; the rate is constant within
  an integration (no supersampling: integrations last seconds).
* **Drift**: dy(t) = ``drift_rate`` · (t − exposure start) + ``jitter_rms`` · N(0, 1) per integration
  (drawn for the whole exposure from ``jitter_seed``, so every segment sees the same draws).
* **Sky**: ``spec.sky`` DN/s per pixel × relative pixel area.

Rate of integration i (DN/s): ``(S(x) f_i(x) P_i(y, x) + sky · area) × response``, with
``response`` = flat response (:func:`stage2_refs.flat_response` with the exposure's PUPIL) × the
detector model's QE (0 on reference and dead pixels), i.e. what dividing by the FLAT reference
(response × area) undoes.

Truth (:func:`write_tso_truth`): ``transit.ecsv`` (per integration: white-light and per-bin relative
flux, drift), ``spectrum.ecsv`` (per column: λ, stellar rate, depth, limb darkening, trace row),
``bins.ecsv`` (the wavelength bins and their depths) and ``drift.ecsv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import erf

from webbflow.simulate import grism, optics
from webbflow.simulate.headers import exposure_timing, int_times_table
from webbflow.transit import TransitParams, relative_flux

__all__ = ["TSGRISM_FILTERS", "TsoGrismScene", "column_wavelength", "detector_rate", "drift_offsets",
           "exposure_times", "pointing_track", "render_tso_rate", "star_rate_cube", "stellar_spectrum",
           "trace_centre", "transit_meta", "tso_truth", "write_truth_tables", "write_tso_truth"]

_H_C_OVER_K = 14387.77  # µm·K (second radiation constant)

TSGRISM_FILTERS = {
    "F322W2": {"xref_sci": 1581.0, "yref_sci": 35.0, "band": (2.42, 3.98),
               "bin_edges": tuple(np.round(np.linspace(2.45, 3.95, 16), 4))},
    "F444W": {"xref_sci": 858.0, "yref_sci": 35.0, "band": (3.88, 4.98),
              "bin_edges": tuple(np.round(np.linspace(3.9, 4.9, 11), 4))},
}
"""Per filter: the SIAF reference point of the SUBGRISM apertures (XREF_SCI/YREF_SCI, 1-based,
tso-algorithms.md §1.3), the half-power band (µm) and the truth wavelength bin edges (0.1 µm bins)."""


@dataclass(frozen=True)
class TsoGrismScene:
    """The star, its transit and the pointing of a grism time series (see the module docstring).

    Attributes
    ----------
    transit : TransitParams
        The planet (t0 in MJD UTC, the scale of INT_TIMES ``int_mid_MJD_UTC``).
    peak_rate : float
        DN/s of the brightest column (summed over rows, before the pixel response).
    teff : float
        Blackbody temperature of the star, K.
    band : (float, float) or None
        Half-power edges of the filter band, µm (None: the filter's, :data:`TSGRISM_FILTERS`).
    band_edge : float
        Width (µm) of the tanh edges of the band.
    sigma_ref : float
        Gaussian σ (rows) of the cross-dispersion profile at ``wave_ref``.
    wave_ref : float
        Wavelength (µm) where σ = ``sigma_ref``.
    drift_rate : float
        Slow drift of the trace in y, rows per second of exposure.
    jitter_rms : float
        Per-integration pointing jitter in y, rows (rms).
    jitter_seed : int
        Seed of the jitter draws.
    bin_edges : tuple of float or None
        Wavelength bin edges (µm) of the per-bin truth (None: the filter's).
    """

    transit: TransitParams
    peak_rate: float = 20000.0
    teff: float = 4500.0
    band: tuple | None = None
    band_edge: float = 0.015
    sigma_ref: float = 1.2
    wave_ref: float = 3.2
    drift_rate: float = 0.0
    jitter_rms: float = 0.0
    jitter_seed: int = 0
    bin_edges: tuple | None = None


def _scene(spec):
    if spec.tso is None:
        raise ValueError("scene='tso_grism' needs ExposureSpec.tso (a TsoGrismScene)")
    return spec.tso


def _xref_yref(spec):
    from webbflow.simulate.headers import pointing_keywords

    kw = pointing_keywords(spec)
    return float(kw["XREF_SCI"]), float(kw["YREF_SCI"])


def column_wavelength(spec):
    """Wavelength (µm) of every subarray column (0-based x), as jwst's assign_wcs computes it.

    λ depends on the full-frame column ``x + SUBSTRT1 − 1`` and the SCI header's XREF_SCI only
    (GRISMR: y does not enter); VELOSYS is 0 in the simulated headers, so no Doppler factor.
    """
    geom = spec.geometry
    xref, _ = _xref_yref(spec)
    x_full = np.arange(geom.xsize) + geom.xstart - 1
    return grism.trace_wavelength(spec.filter, x_full, xref)


def trace_centre(spec):
    """0-based subarray row of the trace centre per column, before drift."""
    geom = spec.geometry
    xref, yref = _xref_yref(spec)
    x_full = np.arange(geom.xsize) + geom.xstart - 1
    return grism.trace_row(spec.filter, x_full, xref, yref) - (geom.ystart - 1)


def _filter_default(filter_name, key):
    try:
        return TSGRISM_FILTERS[filter_name.upper()][key]
    except KeyError:
        raise ValueError(f"no grism time-series defaults for FILTER={filter_name!r} "
                         f"(have {', '.join(TSGRISM_FILTERS)})") from None


def _band(scene, filter_name):
    return scene.band if scene.band is not None else _filter_default(filter_name, "band")


def _bin_edges(scene, filter_name):
    return scene.bin_edges if scene.bin_edges is not None else _filter_default(filter_name, "bin_edges")


def _shape(scene, wave, filter_name):
    wave = np.asarray(wave, float)
    with np.errstate(over="ignore"):
        # photon spectrum of a blackbody: B_λ / (hc/λ) ∝ λ^-4 / (exp(hc/λkT) − 1)
        photons = wave ** -4 / np.expm1(_H_C_OVER_K / (wave * scene.teff))
    lo, hi = _band(scene, filter_name)
    band = 0.25 * (1 + np.tanh((wave - lo) / scene.band_edge)) * (1 + np.tanh((hi - wave) / scene.band_edge))
    return photons * band * grism.relative_response(wave)


def stellar_spectrum(scene, wave, filter_name="F322W2"):
    """True stellar rate (DN/s per column) at wavelengths ``wave`` through ``filter_name``, peak ``scene.peak_rate``.

    The peak is taken on a fixed fine grid (2.0–5.5 µm), so it does not depend on the columns asked for.
    """
    grid = np.linspace(2.0, 5.5, 35001)
    return scene.peak_rate * _shape(scene, wave, filter_name) / _shape(scene, grid, filter_name).max()


def pointing_track(spec, drift_rate, jitter_rms, jitter_seed, integrations=None, stream=17):
    """Injected pointing offset along one axis per integration: slow linear drift + jitter (pixels).

    Shared by the time-series scenes (the grism's dy, the imaging star's x and y): the offset of
    integration n is ``drift_rate · (n − ½) t_int + jitter_rms · N(0, 1)``, the draws made for the
    whole exposure from ``(jitter_seed, stream)``, so every segment sees the same numbers.

    Parameters
    ----------
    spec : ExposureSpec
        Any segment of the exposure.
    drift_rate : float
        Pixels per second of exposure.
    jitter_rms : float
        Pixels (rms) per integration.
    jitter_seed : int
    integrations : array_like of int, optional
        1-based integration numbers of the exposure; default those of ``spec``'s file.
    stream : int
        Second seed word: one independent jitter series per axis.

    Returns
    -------
    ndarray
        Offset per integration, pixels.
    """
    tm = exposure_timing(spec)
    if integrations is None:
        integrations = spec.first_int + 1 + np.arange(spec.nints)
    integrations = np.asarray(integrations, int)
    t_mid = (integrations - 0.5) * tm["t_int"]  # seconds from the exposure start
    jitter = np.random.default_rng([jitter_seed, stream]).normal(0.0, 1.0, spec.nints_total)
    return drift_rate * t_mid + jitter_rms * jitter[integrations - 1]


def drift_offsets(spec, integrations=None):
    """Injected y offset (rows) of the trace per integration (1-based numbers of the exposure).

    Parameters
    ----------
    spec : ExposureSpec
        Any segment of the exposure (the drift is a function of the exposure, not the file).
    integrations : array_like of int, optional
        Integration numbers; default those of ``spec``'s file.

    Returns
    -------
    ndarray
        dy per integration, rows.
    """
    scene = _scene(spec)
    return pointing_track(spec, scene.drift_rate, scene.jitter_rms, scene.jitter_seed, integrations)


def _profile(ny, centre, sigma):
    """Pixel-integrated Gaussian (ny, nx) with per-column centre and σ; columns sum to 1 (to erf tails)."""
    edges = np.arange(ny + 1)[:, None] - 0.5
    c = erf((edges - centre[None, :]) / (np.sqrt(2.0) * sigma[None, :]))
    return 0.5 * np.diff(c, axis=0)


def star_rate_cube(spec):
    """The star alone, per integration: S(x) f_i(x) P_i(y, x), DN/s, float64 (nints, ny, nx).

    Before the pixel response and without sky; the truth that the trace sums of the rate follow.
    """
    scene = _scene(spec)
    ny, nx = spec.geometry.shape
    wave = column_wavelength(spec)
    spectrum = stellar_spectrum(scene, wave, spec.filter)
    t_mid = int_times_table(spec)["int_mid_MJD_UTC"]
    flux = relative_flux(t_mid, wave, scene.transit)  # (nints, nx)
    centre = trace_centre(spec)
    sigma = scene.sigma_ref * wave / scene.wave_ref
    dy = drift_offsets(spec)
    out = np.empty((spec.nints, ny, nx))
    for i in range(spec.nints):
        out[i] = _profile(ny, centre + dy[i], sigma) * (spectrum * flux[i])[None, :]
    return out


def render_tso_rate(spec, model):
    """True count rate (DN/s) of every integration of a ``tso_grism`` exposure.

    Parameters
    ----------
    spec : ExposureSpec
        ``scene="tso_grism"``, ``tso`` a :class:`TsoGrismScene`.
    model : DetectorModel
        Supplies the QE (0 on reference and dead pixels).

    Returns
    -------
    ndarray float32 (nints, ny, nx)
    """
    return detector_rate(spec, model, star_rate_cube(spec))


def detector_rate(spec, model, star):
    """What the pixels see of a time-series scene: ``(star + sky · area) × response`` as float32.

    Parameters
    ----------
    spec : ExposureSpec
    model : DetectorModel
        Supplies the QE (0 on reference and dead pixels).
    star : ndarray (nints, ny, nx)
        The source alone, DN/s, before the pixel response.

    Returns
    -------
    ndarray float32 (nints, ny, nx)
        ``response`` = flat response (:func:`stage2_refs.flat_response` with the exposure's PUPIL)
        × QE, i.e. what dividing by the FLAT reference (response × area) undoes.
    """
    from webbflow.simulate.stage2_refs import flat_response

    geom = spec.geometry
    response = flat_response(spec.detector, geom, spec.filter, spec.pupil, spec.ref_seed) * model.qe
    sky = spec.sky * optics.pixel_area_map(spec.detector, geom)
    return ((star + sky[None]) * response[None]).astype(np.float32)


def exposure_times(specs):
    """INT_TIMES of a whole exposure from its segment specs, and the segment of each integration.

    Parameters
    ----------
    specs : sequence of ExposureSpec
        The exposure's segments, any order.

    Returns
    -------
    specs : list of ExposureSpec
        Sorted by first integration.
    times : ndarray
        The INT_TIMES rows of every segment, in order.
    segment : ndarray of int
        EXSEGNUM per row (1 for an unsegmented exposure).

    Raises
    ------
    ValueError
        If the segments do not cover consecutive integrations.
    """
    specs = sorted(specs, key=lambda s: s.first_int)
    times = np.concatenate([int_times_table(s) for s in specs])
    seg = np.concatenate([np.full(s.nints, 1 if s.segment is None else s.segment[0]) for s in specs])
    if np.any(np.diff(times["integration_number"]) != 1):
        raise ValueError("the segments do not cover consecutive integrations")
    return specs, times, seg


def transit_meta(tp):
    """The transit parameters as truth-table metadata (the keys the light-curve fits read)."""
    return {"t0_mjd_utc": tp.t0, "period_d": tp.per, "a_rs": tp.a, "inc_deg": tp.inc, "rp_ref": tp.rp,
            "rp_slope_per_um": tp.rp_slope, "wave_ref_um": tp.wave_ref, "u1_ref": tp.u1, "u2_ref": tp.u2,
            "u1_slope_per_um": tp.u1_slope, "u2_slope_per_um": tp.u2_slope}


def tso_truth(specs):
    """Truth tables of one exposure from all its segment specs.

    Parameters
    ----------
    specs : sequence of ExposureSpec
        The exposure's segments (any order; ``tso_grism`` scenes).

    Returns
    -------
    dict of astropy.table.QTable
        ``transit``, ``spectrum``, ``bins``, ``drift``.
    """
    import astropy.units as u
    from astropy.table import QTable

    specs, times, seg = exposure_times(specs)
    spec = specs[0]
    scene = _scene(spec)
    wave = column_wavelength(spec)
    spectrum = stellar_spectrum(scene, wave, spec.filter)
    flux = relative_flux(times["int_mid_MJD_UTC"], wave, scene.transit)
    white = (flux * spectrum).sum(1) / spectrum.sum()
    edges = np.asarray(_bin_edges(scene, spec.filter), float)
    depth = scene.transit.depth_at(wave)
    u1, u2 = scene.transit.ld_at(wave)
    rows, bin_flux = [], []
    for k in range(edges.size - 1):
        sel = (wave >= edges[k]) & (wave < edges[k + 1])
        w = spectrum[sel]
        bin_flux.append((flux[:, sel] * w).sum(1) / w.sum())
        cols = np.flatnonzero(sel)
        rows.append((k, edges[k], edges[k + 1], (wave[sel] * w).sum() / w.sum(),
                     (depth[sel] * w).sum() / w.sum(), (u1[sel] * w).sum() / w.sum(),
                     (u2[sel] * w).sum() / w.sum(), sel.sum(), cols.min(), cols.max(), w.sum()))
    dy = drift_offsets(spec, times["integration_number"])

    transit = QTable()
    transit["integration"] = times["integration_number"].astype(np.int32)
    transit["segment"] = seg.astype(np.int32)
    transit["int_mid_MJD_UTC"] = times["int_mid_MJD_UTC"] * u.d
    transit["int_mid_BJD_TDB"] = times["int_mid_BJD_TDB"] * u.d
    transit["white_flux"] = white
    transit["bin_flux"] = np.column_stack(bin_flux)
    transit["dy"] = dy * u.pix
    tp = scene.transit
    transit.meta.update({
        "comments": ["webbflow simulated transit truth: relative flux (1 out of transit) per integration,"
                     " evaluated at int_mid_MJD_UTC; bin_flux[:, k] is bins.ecsv row k;"
                     " dy = injected trace drift (rows)"],
        **transit_meta(tp),
        "white_depth": float((depth * spectrum).sum() / spectrum.sum()),
        "bin_edges_um": [float(e) for e in edges], "nints": int(times.size)})

    geom = spec.geometry
    spec_t = QTable()
    spec_t["column"] = np.arange(geom.xsize, dtype=np.int32)
    spec_t["x_full"] = (np.arange(geom.xsize) + geom.xstart - 1).astype(np.int32)
    spec_t["wavelength"] = wave * u.um
    spec_t["stellar_rate"] = spectrum * u.Unit("DN/s")
    spec_t["depth"] = depth
    spec_t["rp"] = tp.rp_at(wave)
    spec_t["u1"] = u1
    spec_t["u2"] = u2
    spec_t["trace_row"] = trace_centre(spec) * u.pix
    spec_t["sigma"] = scene.sigma_ref * wave / scene.wave_ref * u.pix
    xref, yref = _xref_yref(spec)
    spec_t.meta.update({
        "comments": ["webbflow simulated stellar spectrum per subarray column (0-based): wavelength as jwst's"
                     " assign_wcs computes it, true stellar rate (all rows, before the pixel response),"
                     " true transit depth rp^2, limb darkening, trace row (0-based, before drift)"],
        "filter": spec.filter, "pupil": spec.pupil, "xref_sci": xref, "yref_sci": yref,
        "substrt1": geom.xstart, "substrt2": geom.ystart, "teff": scene.teff, "peak_rate": scene.peak_rate})

    bins = QTable(rows=rows, names=("bin", "wave_min", "wave_max", "wave_mean", "depth", "u1", "u2",
                                    "n_columns", "column_min", "column_max", "stellar_rate"))
    for c in ("wave_min", "wave_max", "wave_mean"):
        bins[c].unit = u.um
    bins["stellar_rate"].unit = u.Unit("DN/s")
    bins.meta["comments"] = ["webbflow truth wavelength bins: columns with wave_min <= wavelength < wave_max;"
                             " depth, u1, u2, wave_mean weighted by the stellar rate"]

    drift = QTable()
    drift["integration"] = transit["integration"]
    drift["int_mid_MJD_UTC"] = transit["int_mid_MJD_UTC"]
    drift["dx"] = np.zeros(times.size) * u.pix
    drift["dy"] = transit["dy"]
    drift.meta.update({"comments": ["webbflow injected pointing drift of the trace (rows/columns)"],
                       "drift_rate_pix_per_s": scene.drift_rate, "jitter_rms_pix": scene.jitter_rms,
                       "jitter_seed": scene.jitter_seed})
    return {"transit": transit, "spectrum": spec_t, "bins": bins, "drift": drift}


def write_truth_tables(outdir, tables):
    """Write ``truth/<name>.ecsv`` for each ``name -> table`` of ``tables``, atomically; returns name -> Path."""
    from webbflow.io.files import write_ecsv

    truth = Path(outdir) / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, table in tables.items():
        path = truth / f"{name}.ecsv"
        write_ecsv(path, table)
        paths[name] = path
    return paths


def write_tso_truth(outdir, specs):
    """Write ``truth/{transit,spectrum,bins,drift}.ecsv`` for one exposure; returns name -> Path."""
    return write_truth_tables(outdir, tso_truth(specs))
