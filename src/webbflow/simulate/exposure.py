"""Simulate one exposure end to end: references, ramps, uncal file and truth."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.time import Time

from webbflow.demo import GAIA_CATALOG
from webbflow.simulate import optics
from webbflow.simulate.detector_model import DetectorModel, make_detector_model
from webbflow.simulate.detectors import DETECTORS
from webbflow.simulate.events import Deposits, afterglow_deposits, draw_deposits, frames_read
from webbflow.simulate.headers import group_table, int_times_table, primary_keywords, sci_keywords
from webbflow.simulate.readout import integrate_exposure
from webbflow.simulate.scene import render_rate
from webbflow.simulate.sky import catalog_for, gaia_like_catalog, render_sky_rate
from webbflow.simulate.stage2_refs import (flat_response, write_demo_abvegaoffset, write_demo_apcorr,
                                            write_stage2_references)
from webbflow.simulate.writers import (reference_path, write_reference_files, write_table,
                                       write_truth, write_uncal)
from webbflow.simulate.wisps import wisp_cut, write_wisp_template

__all__ = ["simulate_exposure", "write_references", "detector_model_for", "SimulatedExposure",
           "pointing_truth"]


class SimulatedExposure:
    """Paths and in-memory truth of a simulated exposure (see :func:`simulate_exposure`)."""

    def __init__(self, uncal, refs, truth, model, rate, deposits, first_saturated):
        self.uncal = uncal
        self.refs = refs
        self.truth = truth
        self.model = model
        self.rate = rate
        self.deposits = deposits
        self.first_saturated = first_saturated


@lru_cache(maxsize=8)
def _cached_model(detector, geometry, ref_seed, bad_pixel_fraction):
    rng = np.random.default_rng([ref_seed, DETECTORS[detector].sca])
    return make_detector_model(detector, geometry, rng, bad_pixel_fraction=bad_pixel_fraction)


def detector_model_for(spec) -> DetectorModel:
    """The detector model (= reference files) an exposure of ``spec`` is drawn from.

    Deterministic in (detector, geometry, ``ref_seed``, ``bad_pixel_fraction``)
    so that every exposure of a detector shares one set of references.
    """
    return _cached_model(spec.detector, spec.geometry, spec.ref_seed, spec.bad_pixel_fraction)


def write_references(detector, geometry, outdir, rng=None, *, n_dark_frames=100,
                     bad_pixel_fraction=0.002, model=None):
    """Write mask, saturation, superbias, linearity, dark, gain and readnoise references.

    Parameters
    ----------
    detector : str
        DETECTOR value.
    geometry : Geometry
        Array the references cover (SUBARRAY/SUBSTRT/SUBSIZE keywords follow it).
    outdir : path-like
        Files go to ``<outdir>/refs/webbflow_<det>_<reftype>_<subarray>.fits``.
    rng : numpy.random.Generator, optional
        Draws the detector model (ignored when ``model`` is given).
    n_dark_frames : int
        Frames in the dark reference (NFRAMES=1, GROUPGAP=0).
    bad_pixel_fraction : float
    model : DetectorModel, optional
        Write this model instead of drawing one.

    Returns
    -------
    dict
        reftype -> Path.
    """
    if model is None:
        rng = np.random.default_rng() if rng is None else rng
        model = make_detector_model(detector, geometry, rng, bad_pixel_fraction=bad_pixel_fraction)
    return write_reference_files(model, outdir, n_dark_frames)


def _ensure_references(spec, model, outdir, n_dark_frames):
    """Write the references of ``model`` unless an identical, long-enough set exists."""
    from astropy.io import fits

    dark = reference_path(outdir, spec.detector, "dark", model.geometry.name)
    paths = {r: reference_path(outdir, spec.detector, r, model.geometry.name)
             for r in ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")}
    if all(p.exists() for p in paths.values()):
        with fits.open(dark) as hdul:
            have = hdul["SCI"].shape[0]
            same = (hdul[0].header.get("WFSEED") == spec.ref_seed
                    and float(hdul[0].header.get("DRKNOISE", 0.0)) == float(spec.dark_ref_noise))
        if have >= n_dark_frames and same:
            return paths
    return write_reference_files(model, outdir, n_dark_frames,
                                 extra_keywords={"WFSEED": spec.ref_seed},
                                 dark_noise=spec.dark_ref_noise, dark_seed=spec.ref_seed)


def _sirs_reference(spec, model, outdir):
    """The detector's SIRSKERNEL reference (full frames), from this simulator's 1/f model.

    The kernels are the least-squares ones for the exposure's 1/f (rms, common fraction) and the
    side pixels' read noise (:func:`webbflow.simulate.noise.sirs_kernel_coefficients`).
    """
    from webbflow.simulate.noise import sirs_kernel_coefficients
    from webbflow.simulate.writers import write_sirs_kernel

    side = np.concatenate([model.readnoise[:, :4].ravel(), model.readnoise[:, -4:].ravel()])
    read_noise = float(np.median(side)) / np.sqrt(2.0)  # one read (the reference is CDS)
    gamma, zeta = sirs_kernel_coefficients(spec.one_over_f, spec.one_over_f_common, read_noise)
    return write_sirs_kernel(outdir, spec.detector, gamma, zeta)


def pointing_truth(spec):
    """Row of ``truth/pointing.ecsv`` for ``spec``: injected error and both aperture pointings."""
    commanded = optics.aperture_pointing(spec)
    true = optics.aperture_pointing(spec, optics.true_attitude(spec))
    return {"rootname": spec.rootname, "filter": spec.filter, "detector": spec.detector,
            "dither": spec.dither_position, "dra_arcsec": float(spec.pointing_error[0]),
            "ddec_arcsec": float(spec.pointing_error[1]), "droll_deg": float(spec.roll_error),
            "ra_ref": commanded["ra_ref"], "dec_ref": commanded["dec_ref"],
            "ra_ref_true": true["ra_ref"], "dec_ref_true": true["dec_ref"]}


_CATALOGS_WRITTEN = set()


def _render_sky(spec, model, outdir):
    """Sky-mode rate, stage-2 references and sky truth of one exposure."""
    geom = spec.geometry
    refs = write_stage2_references(outdir, spec.detector, geom, spec.filter, spec.pupil,
                                   spec.ref_seed, extra_keywords={"WFSEED": spec.ref_seed})
    write_demo_abvegaoffset(outdir)  # stage 3's AB-to-Vega offsets (source_catalog)
    write_demo_apcorr(outdir)  # stage 3's aperture radii and corrections (source_catalog)
    area = optics.pixel_area_map(spec.detector, geom)
    response = flat_response(spec.detector, geom, spec.filter, spec.pupil, spec.ref_seed) * model.qe
    catalog = catalog_for(spec)
    wisp = wisp_cut(spec.detector, spec.filter, geom) * spec.wisp if spec.wisp else None
    rate, placed = render_sky_rate(spec, catalog, response, area, wisp)
    truth_dir = Path(outdir) / "truth"
    key = (str(Path(outdir).resolve()), spec.scene_seed, spec.ra, spec.dec, spec.field_half_size,
           spec.n_bright_stars, spec.n_stars, spec.n_galaxies, spec.n_saturating_stars)
    if (key not in _CATALOGS_WRITTEN or not (truth_dir / "sources.ecsv").exists()
            or not (Path(outdir) / GAIA_CATALOG).exists()):
        write_table(truth_dir / "sources.ecsv", catalog)  # shared by the program: write once
        # What a user would download for the field: the absolute-astrometry catalog (an input, not truth).
        epoch = Time(spec.date_obs, format="isot", scale="utc").jyear
        write_table(Path(outdir) / GAIA_CATALOG, gaia_like_catalog(catalog, epoch, seed=spec.scene_seed))
        _CATALOGS_WRITTEN.add(key)
    paths = {"sources": truth_dir / "sources.ecsv",
             "placed_sources": write_table(truth_dir / f"{spec.rootname}_sources.ecsv", placed)}
    sky_mjysr = spec.sky * optics.photmjsr(spec.filter, spec.pupil)
    row = pointing_truth(spec)
    meta = {"SCENE": "sky", "SKY_MJSR": sky_mjysr, "PHOTMJSR": optics.photmjsr(spec.filter),
            "PIXAR_SR": optics.pixar_sr(spec.detector), "PNTERRRA": row["dra_arcsec"],
            "PNTERRDE": row["ddec_arcsec"], "RAREFTRU": row["ra_ref_true"],
            "DECREFTR": row["dec_ref_true"]}
    if wisp is not None:
        # the cal holds WISPMJSR x the template (normalised to 1 at its peak) on top of the sky
        template = write_wisp_template(outdir, spec.detector, spec.filter, spec.pupil)
        meta.update({"WISPAMP": spec.wisp, "WISPMJSR": spec.wisp * optics.photmjsr(spec.filter, spec.pupil),
                     "WISPTMPL": template.name})
        paths["wisp_template"] = template
    return rate, {"meta": meta, "paths": paths, "refs": refs}


def simulate_exposure(spec, outdir, rng=None, *, n_dark_frames=None, return_details=False, afterglow=None):
    """Simulate ``spec`` and write its uncal file, references and truth under ``outdir``.

    Parameters
    ----------
    spec : ExposureSpec
    outdir : path-like
        Layout: ``uncal/<rootname>_uncal.fits``, ``refs/…``, ``truth/<rootname>_…``.
    rng : numpy.random.Generator, optional
        Noise source; default ``numpy.random.default_rng(spec.seed)``.
    n_dark_frames : int, optional
        Frames in the dark reference (default: what this exposure needs, at least 100).
    return_details : bool
        Return a :class:`SimulatedExposure` (paths + in-memory truth) instead of the path.
    afterglow : dict, optional
        Persistence from an earlier exposure: keyword arguments ``x_full``, ``y_full``,
        ``amplitude``, ``tau``, ``delay`` of :func:`~webbflow.simulate.events.afterglow_deposits`.
        Its deposits (kind ``"afterglow"``) join the truth's; None (default) adds nothing and
        leaves every random draw unchanged.

    Returns
    -------
    pathlib.Path or SimulatedExposure
        The uncal path.
    """
    outdir = Path(outdir)
    rng = np.random.default_rng(spec.seed) if rng is None else rng
    model = detector_model_for(spec)
    needed = frames_read(spec.ngroups, spec.nframes, spec.groupgap)
    refs = _ensure_references(spec, model, outdir, max(needed, n_dark_frames or 100))
    if model.geometry.name.upper() == "FULL" and model.geometry.noutputs == 4:
        refs = {**refs, "sirskernel": _sirs_reference(spec, model, outdir)}

    r_events, r_ramp = rng.spawn(2)
    sky_truth = None
    if spec.scene == "sky":
        rate, sky_truth = _render_sky(spec, model, outdir)
    elif spec.scene == "tso_grism":
        from webbflow.simulate.tso_grism import render_tso_rate

        rate = render_tso_rate(spec, model)  # (nints, ny, nx): the transit changes it per integration
    elif spec.scene == "tso_image":
        from webbflow.simulate.tso_grism import detector_rate
        from webbflow.simulate.tso_image import star_rate_cube

        rate = detector_rate(spec, model, star_rate_cube(spec))
    elif spec.scene == "coron":
        from webbflow.simulate.coron import coron_rate
        from webbflow.simulate.tso_grism import detector_rate

        rate = detector_rate(spec, model, coron_rate(spec)[None])[0]
    else:
        rate = render_rate(spec, model.qe)
    deposits = draw_deposits(spec, model, r_events)
    if afterglow is not None:
        deposits = Deposits.concatenate([deposits, afterglow_deposits(spec, model, **afterglow)])
    ramps = integrate_exposure(spec, model, rate, deposits, r_ramp)

    name = f"{spec.rootname}_uncal.fits"
    sci_header = sci_keywords(spec)
    if spec.exp_type == "NRC_TSGRISM":
        # assign_wcs multiplies λ by 1/(1 + VELOSYS/c); 0 keeps λ(x) exactly the specwcs trace's
        sci_header["VELOSYS"] = 0.0
    uncal = write_uncal(outdir / "uncal" / name, ramps.sci, primary_keywords(spec, name),
                        sci_header, group_table(spec), int_times_table(spec),
                        zeroframe=ramps.zeroframe if spec.zeroframe else None)
    meta = {"SEED": spec.seed, "REFSEED": spec.ref_seed, "SCNSEED": spec.scene_seed,
            "ONEOVERF": spec.one_over_f, "CRRATE": spec.cr_rate, "SNOWBALL": spec.snowballs,
            "SKY": spec.sky, "POISSON": spec.poisson, "RDNOISE": spec.read_noise,
            "KTC": spec.ktc, "AMPOFF": spec.amp_offsets, "NONLIN": spec.nonlinearity,
            "DETECTOR": spec.detector, "SUBARRAY": spec.geometry.name, "FILTER": spec.filter,
            "UNCAL": name}
    if sky_truth is not None:
        meta.update(sky_truth["meta"])
    truth = write_truth(outdir, spec.rootname, rate, deposits, ramps.first_saturated, meta)
    if sky_truth is not None:
        truth.update(sky_truth["paths"])
        refs = {**refs, **sky_truth["refs"]}
    if return_details:
        return SimulatedExposure(uncal, refs, truth, model, rate, deposits, ramps.first_saturated)
    return uncal
