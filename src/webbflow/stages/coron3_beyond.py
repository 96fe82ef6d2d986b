"""coron3 beyond jwst: KLIP in sectors with ADI + RDI references, the calibrated contrast curve and
the companions (``steps.klip.sectors``, ``contrast``, ``companions``; all off by default and under
``step_defaults: jwst``).  jwst's products are untouched: this runs after its klip, on the same
median-replaced science cubes and aligned PSF planes.

* The rolls are registered on the first science exposure's first integration with
  :func:`webbflow.steps.align_refs.align_refs` (float64, PSFMASK weights), so the star sits at one
  pixel in every roll and the first exposure's aligned PSF planes serve every roll (RDI).
* The star's pixel (``klip.center``, default the target's RA/Dec, else the aperture reference
  RA_REF/DEC_REF, through the first exposure's WCS; with ``klip.center_method: symmetry`` measured
  behind the mask from there, :func:`webbflow.steps.star_centre.symmetry_centre`), each roll's north
  angle and the pixel scale come from the WCS; the combination is a plain spline rotation about the
  star (north up, east left, the detector's pixel scale), not a drizzle.
* Companion RA/Dec are relative astrometry, as instrument teams report them: the companion's offset
  from the star's pixel (separation and PA through the WCS) applied to the target's catalogue
  position (TARG_RA/TARG_DEC).  With the WCS centre this is the WCS position of the companion; with
  the measured centre the target-acquisition offset, which the WCS does not know, drops out.
* Contrast is flux over ``klip.star_flux``: the unocculted star's total flux in the calints' units
  summed over pixels (MJy/sr x pixels: Jy / (1e6 PIXAR_SR)); the companion template is
  ``klip.psf_template`` (an unocculted PSF, FITS) or a Gaussian of ``klip.fwhm`` pixels (default
  1.028 lambda / 6.5 m with lambda from the filter name).  The occulter's transmission near the
  mask is not divided out.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np

from webbflow.io.errors import InputError
from webbflow.io.files import atomic_output, write_ecsv
from webbflow.steps import align_refs as align_step
from webbflow.steps import klip as klip_step

# webbflow.steps.contrast (scipy.stats and scipy.optimize, ~0.5 s CPU to import) is imported by the
# functions that use it: a coron3 job imports this module for DEFAULTS and enabled() alone.

__all__ = ["DEFAULTS", "enabled", "reduce_beyond", "write_beyond"]

log = logging.getLogger(__name__)

DEFAULTS = dict(sectors=False, references="adi+rdi", annuli=1, subsections=1, numbasis=[1, 2, 5, 10, 20, 50],
                minmove=1.0, iwa=None, owa=None, center=None, center_method="wcs", center_radius=[0.13, 1.26],
                contrast=False, companions=False, snr_threshold=5.0,
                star_flux=None, psf_template=None, fwhm=None, contrast_numbasis=None,
                injection_pas=[0, 60, 120, 180, 240, 300], injection_sigma=20.0)
"""Beyond-jwst klip keys (webbflow's; jwst has none of them)."""


def enabled(kp):
    """True when any beyond-jwst klip product is asked for."""
    return bool(kp.get("sectors") or kp.get("contrast") or kp.get("companions"))


def _geometry(model, center):
    """Star pixel, north angle (deg CCW from +y) and pixel scale (arcsec) from a calints' WCS."""
    wcs = model.meta.wcs
    if center is None:
        ra, dec = model.meta.target.ra, model.meta.target.dec
        if ra is None or dec is None:
            ra, dec = model.meta.wcsinfo.ra_ref, model.meta.wcsinfo.dec_ref
        if ra is None or dec is None or wcs is None:
            raise InputError(model.meta.filename or "<science calints>", "has no target or aperture RA/Dec with a "
                             "WCS to place the star", "set steps.klip.center: [x, y] (0-based pixels)")
        center = [float(v) for v in wcs.world_to_pixel_values(ra, dec)]
    ra0, dec0 = wcs.pixel_to_world_values(*center)
    step = 1.0 / 3600  # 1 arcsec north
    nx, ny = np.array(wcs.world_to_pixel_values(ra0, dec0 + step)) - np.array(center)
    angle = float(np.degrees(np.arctan2(-nx, ny)))
    return tuple(center), angle, 1.0 / float(np.hypot(nx, ny)), (float(ra0), float(dec0))


def _template(kp, model, scale):
    from astropy.io import fits

    from webbflow.steps import contrast as contrast_step

    if kp.get("psf_template"):
        path = Path(kp["psf_template"])
        try:
            with fits.open(path) as hdul:
                psf = next(np.array(h.data, np.float64) for h in hdul if h.data is not None and h.data.ndim == 2)
        except (OSError, StopIteration) as exc:
            raise InputError(path, f"cannot be read as a 2-D PSF template ({exc})",
                             "give a FITS image of the unocculted PSF (odd sizes, centred)") from None
        psf = psf[: psf.shape[0] - 1 + psf.shape[0] % 2, : psf.shape[1] - 1 + psf.shape[1] % 2]
        half = np.sum(psf > 0.5 * psf.max())
        return psf, float(kp.get("fwhm") or 2 * np.sqrt(half / np.pi))
    fwhm = kp.get("fwhm")
    if not fwhm:
        match = re.match(r"F(\d{3})", str(model.meta.instrument.filter or ""))
        if not match:
            raise InputError(model.meta.filename or "<science calints>", f"filter {model.meta.instrument.filter!r} "
                             "gives no wavelength for the PSF FWHM", "set steps.klip.fwhm (pixels) or psf_template")
        fwhm = 1.028 * int(match.group(1)) / 100 * 1e-6 / 6.5 * 206264.8 / scale
    return contrast_step.gaussian_psf(float(fwhm)), float(fwhm)


def reduce_beyond(models, science, mask, kp):
    """The sector KLIP, contrast curve and companions in memory.

    Parameters
    ----------
    models : list
        Science calints models (WCS, filter).
    science : list of dict
        Per science exposure, ``replaced`` (median-replaced cube) and ``aligned`` (PSF planes, ERR).
    mask : ndarray
        PSFMASK weights.
    kp : dict
        The klip parameters.

    Returns
    -------
    dict
        ``image`` (nkl, ny, nx) north-up combination, ``numbasis``, ``center``, ``angles``, ``scale``,
        ``fwhm``, and where asked ``contrast`` (astropy Table) and ``companions`` (Table).
    """
    from webbflow.stages.coron3 import job_threads  # (coron3 imports this module)
    from webbflow.steps import contrast as contrast_step

    workers = job_threads()
    kp = {**DEFAULTS, **kp}
    if kp["references"] not in klip_step.REFERENCE_MODES:
        raise InputError("<config>", f"steps.klip.references {kp['references']!r} is unknown",
                         f"use one of {klip_step.REFERENCE_MODES}")
    if (kp["contrast"] or kp["companions"]) and not kp["star_flux"]:
        raise InputError("<config>", "steps.klip.contrast/companions need the unocculted star's flux",
                         "set steps.klip.star_flux (calints units summed over pixels: Jy / (1e6 PIXAR_SR))")
    first = science[0]["replaced"][0]
    rolls = [science[0]["replaced"].astype(np.float64)]
    for sci in science[1:]:  # register every other roll on the first science integration
        cube = sci["replaced"]
        rolls.append(align_step.align_refs(first, cube, None, mask, precision="float64")[0].astype(np.float64))
    center, _, scale, star_radec = _geometry(models[0], kp["center"])
    if kp["center_method"] not in ("wcs", "symmetry"):
        raise InputError("<config>", f"steps.klip.center_method {kp['center_method']!r} is unknown",
                         "use wcs (the target through the WCS, or klip.center) or symmetry (measured behind the mask)")
    if kp["center_method"] == "symmetry":
        from webbflow.steps.star_centre import symmetry_centre

        rmin, rmax = (float(v) / scale for v in kp["center_radius"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
            star_image = np.nanmean(science[0]["replaced"].astype(np.float64), axis=0)
        measured = symmetry_centre(star_image, mask, center, rmin=rmin, rmax=rmax)
        log.info("star measured behind the mask at (%.3f, %.3f), %.2f mas from the WCS's (%.3f, %.3f)", *measured,
                 1000 * scale * np.hypot(measured[0] - center[0], measured[1] - center[1]), *center)
        center, _, scale, _ = _geometry(models[0], list(measured))
    target_radec = _target_radec(models[0], star_radec)
    angles = [_geometry(m, center)[1] for m in models]
    psf, fwhm = _template(kp, models[0], scale)
    refs = [science[0]["aligned"][0].astype(np.float64)] * len(rolls)
    numbasis = [int(n) for n in kp["numbasis"]]
    iwa = float(kp["iwa"]) if kp["iwa"] is not None else fwhm
    owa = None if kp["owa"] is None else float(kp["owa"])

    def reduce(cubes, windows=None):
        res = klip_step.klip_sectors(cubes, angles, refs, center, numbasis=numbasis, iwa=iwa, owa=owa,
                                     annuli=int(kp["annuli"]), subsections=int(kp["subsections"]),
                                     references=kp["references"], minmove=float(kp["minmove"]), windows=windows)
        return klip_step.combine_rolls(res, angles, center, windows=windows)

    image = reduce(rolls)
    finite = [k for k in range(len(numbasis)) if np.isfinite(image[k]).any()]
    if not finite:
        raise InputError("<config>", f"no KL cut-off of {numbasis} is supported by the reference library",
                         "lower steps.klip.numbasis")
    if kp["contrast_numbasis"] and int(kp["contrast_numbasis"]) not in numbasis:
        raise InputError("<config>", f"steps.klip.contrast_numbasis {kp['contrast_numbasis']} is not one of "
                         f"numbasis {numbasis}", "pick one of the numbasis cut-offs (or null: the largest)")
    k_use = numbasis.index(int(kp["contrast_numbasis"])) if kp["contrast_numbasis"] else finite[-1]
    out = {"image": image, "numbasis": numbasis, "center": center, "angles": angles, "scale": scale, "fwhm": fwhm,
           "k": k_use, "center_method": kp["center_method"]}
    log.info("klip sectors: %d rolls, north angles %s, star at (%.2f, %.2f), KL %s", len(rolls),
             np.round(angles, 2), *center, numbasis)
    pas = [float(p) for p in kp["injection_pas"]]
    companions = []
    if kp["companions"]:

        wcs = models[0].meta.wcs
        a = np.radians(angles[0])

        def fitted(difference, x, y):  # the fakes measured as the companion is (free position and constant)
            return contrast_step.fit_companion(difference, psf, x, y, fwhm, 1.0)["flux"]
        # Detected brightest first and peeled: each fitted companion is subtracted before the next search,
        # so a bright one's diffraction rings and KLIP residual wings are not listed as companions.
        work = image[k_use].copy()
        for x0, y0, snr in _peel(work, center, psf, fwhm, kp["snr_threshold"], iwa, owa):
            noise = contrast_step.pixel_noise(work, center, x0, y0, fwhm)
            fit = contrast_step.fit_companion(work, psf, x0, y0, fwhm, noise)
            work -= contrast_step.place_psf(work.shape, psf, fit["x"], fit["y"], fit["flux"])
            u, v = fit["x"] - center[0], fit["y"] - center[1]
            sep = float(np.hypot(u, v))
            pa = float(np.degrees(np.arctan2(-u, v)) % 360)
            tp, tpall = contrast_step.throughput(reduce, rolls, angles, center, psf, [sep], abs(fit["flux"]),
                                                 pas=[pa + d for d in np.linspace(0, 360, len(pas) + 1)[1:-1]],
                                                 fwhm=fwhm, base=image, measure=fitted, windowed=True,
                                                 workers=workers)
            t, t_err = tp[k_use, 0], np.nanstd(tpall[k_use, 0], ddof=1)
            xd, yd = center[0] + np.cos(a) * u - np.sin(a) * v, center[1] + np.sin(a) * u + np.cos(a) * v
            ra, dec = _relative_radec(wcs, center, (xd, yd), target_radec)
            flux = fit["flux"] / t
            flux_err = abs(flux) * np.hypot(fit["flux_err"] / fit["flux"], t_err / t)
            pos_err = float(np.hypot(fit["x_err"], fit["y_err"]) / np.sqrt(2))
            companions.append(dict(x=fit["x"], y=fit["y"], x_err=fit["x_err"], y_err=fit["y_err"], x_det=xd,
                                   y_det=yd, separation=sep * scale, separation_err=pos_err * scale,
                                   position_angle=pa, position_angle_err=float(np.degrees(pos_err / sep)),
                                   ra=float(ra), dec=float(dec), snr=snr, throughput=t, flux=flux, flux_err=flux_err,
                                   contrast=flux / kp["star_flux"], contrast_err=flux_err / kp["star_flux"]))
            log.info("companion at sep %.3f\" PA %.2f deg, S/N %.1f, contrast %.3g", sep * scale, pa, snr,
                     flux / kp["star_flux"])
        out["companions"] = companions
    if kp["contrast"]:
        exclude = [(c["x"], c["y"]) for c in companions]
        # the noise is measured with the companions (fitted in each cut-off's image at their positions)
        # taken out, so their wings and rings beyond the exclusion radius do not raise the curve
        clean = image.copy()
        for k in finite:
            for x, y in exclude:
                clean[k] -= contrast_step.place_psf(clean[k].shape, psf, x, y,
                                                    contrast_step.measure_flux(clean[k], psf, x, y))
        # the separations of the cut-off used (a cut-off beyond the library's modes is all NaN: its curve is NaN)
        used = contrast_step.contrast_curve(clean[k_use], center, psf, fwhm, kp["star_flux"], iwa=iwa, owa=owa,
                                            exclude=exclude)
        seps = used["separation"]
        # (the cut-off used at its own separations is that curve again: not measured twice)
        curves = [used if k == k_use else contrast_step.contrast_curve(clean[k], center, psf, fwhm, kp["star_flux"],
                                                                       separations=seps, exclude=exclude)
                  for k in range(len(numbasis))]
        sigma = np.nan_to_num(curves[k_use]["sigma"], nan=np.nanmax(curves[k_use]["sigma"]))
        # throughput: injected minus plain reductions (both with the companions)
        tp, _ = contrast_step.throughput(reduce, rolls, angles, center, psf, seps,
                                         float(kp["injection_sigma"]) * sigma, pas=pas, fwhm=fwhm, base=image,
                                         windowed=True, workers=workers)
        out["contrast"] = {"separation": seps, "curves": curves, "throughput": tp}
    return out


def _target_radec(model, fallback):
    """The star's catalogue position: TARG_RA/TARG_DEC, else ``fallback`` (the WCS at the star's pixel)."""
    ra, dec = model.meta.target.ra, model.meta.target.dec
    return (float(ra), float(dec)) if ra is not None and dec is not None else fallback


def _relative_radec(wcs, star_pixel, pixel, star_radec):
    """RA/Dec of ``pixel``: its separation and position angle from ``star_pixel`` through ``wcs``, applied to
    the star's catalogue position ``star_radec`` (degrees)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    star = SkyCoord(*wcs.pixel_to_world_values(*star_pixel), unit="deg")
    point = SkyCoord(*wcs.pixel_to_world_values(*pixel), unit="deg")
    moved = SkyCoord(star_radec[0] * u.deg, star_radec[1] * u.deg).directional_offset_by(
        star.position_angle(point), star.separation(point))
    return float(moved.ra.deg), float(moved.dec.deg)


def _peel(work, center, psf, fwhm, snr_threshold, iwa, owa):
    """The candidates of ``work`` (x, y, snr), brightest first, each re-checked after the brighter ones
    were fitted and subtracted from ``work`` by the caller: a candidate with no peak above the threshold
    within one FWHM of it any more (a bright companion's rings or residual wings) is dropped.  Peeling
    only removes candidates of the first search, never adds one."""
    from webbflow.steps import contrast as contrast_step

    candidates = contrast_step.find_companions(work, center, psf, fwhm, snr_threshold, iwa=iwa, owa=owa)
    for n, (x0, y0, snr) in enumerate(candidates):
        if n:
            again = [c for c in contrast_step.find_companions(work, center, psf, fwhm, snr_threshold, iwa=iwa, owa=owa)
                     if np.hypot(c[0] - x0, c[1] - y0) <= fwhm]
            if not again:
                log.info("candidate at (%d, %d), S/N %.1f, explained by a brighter companion: dropped", x0, y0, snr)
                continue
        yield x0, y0, snr


def write_beyond(result, product, out_dir, meta, template=None, sectors=False, provenance=None):
    """Write the beyond-jwst products that were asked for.

    Parameters
    ----------
    result : dict
        From :func:`reduce_beyond`.
    product : str
        The association's product name.
    out_dir : path-like
        Folder.
    meta : dict
        Extra table metadata (``asn_id``, ``star_flux``).
    template : DataModel, optional
        Science model whose metadata the ``_klipsub`` cube inherits (not its WCS: the cube is north up).
    sectors : bool
        Write ``<product>_klipsub.fits``: a CubeModel, one north-up plane per KL cut-off.
    provenance : dict, optional
        Recorded in the FITS product.

    Returns
    -------
    dict
        ``klipsub``, ``contrast``, ``contrast_plot`` (``<product>_contrast.ecsv`` / ``.png``),
        ``companions`` (``<product>_companions.ecsv``): paths of what was written.
    """
    import astropy.units as u
    from astropy.table import QTable

    out_dir = Path(out_dir)
    written = {}
    if sectors:
        from stdatamodels.jwst import datamodels

        from webbflow.io.image3 import save_model

        cube = datamodels.CubeModel(data=result["image"].astype(np.float32))
        if template is not None:
            cube.update(template)
        cube.meta.wcs = None
        cube.meta.cal_step.klip = "COMPLETE"
        # the model validated every assignment: asdf's validation of the tree before the write finds nothing
        written["klipsub"] = save_model(cube, out_dir / f"{product}_klipsub.fits", provenance, validate_asdf=False)
        cube.close()
    common = {"center_x": result["center"][0], "center_y": result["center"][1],
              "center_method": result.get("center_method", "wcs"), "fwhm_pix": result["fwhm"],
              "pixel_scale_arcsec": result["scale"], "north_angles_deg": [float(a) for a in result["angles"]],
              "numbasis": result["numbasis"], **meta}
    if "contrast" in result:
        c = result["contrast"]
        t = QTable()
        t["separation_pix"] = c["separation"] * u.pix
        t["separation"] = c["separation"] * result["scale"] * u.arcsec
        for k, n in enumerate(result["numbasis"]):
            curve = c["curves"][k]
            t[f"n_res_kl{n}"] = curve["n_res"]
            t[f"sigma_kl{n}"] = curve["sigma"]
            t[f"throughput_kl{n}"] = c["throughput"][k]
            t[f"contrast_raw_kl{n}"] = curve["contrast_5sigma"]
            t[f"contrast_kl{n}"] = curve["contrast_5sigma"] / c["throughput"][k]
        t.meta.update(common)
        t.meta["comments"] = [
            "webbflow (not jwst): 5-sigma-equivalent contrast (Student-t, Mawet et al. 2014, pyKLIP meas_contrast) "
            "of the north-up KLIP combination: sigma = std of the matched-filter flux map in annuli of width fwhm; "
            "contrast_raw = (t_{n-1}(1-2.8665e-7) sqrt(1+1/n) sigma + mean) / star_flux; contrast = contrast_raw / "
            "throughput, throughput = recovered/injected flux of template copies injected at injection_pas with the "
            "reduction's own KLIP settings"]
        path = out_dir / f"{product}_contrast.ecsv"
        write_ecsv(path, t)
        written["contrast"] = path
        written["contrast_plot"] = _plot(t, result, out_dir / f"{product}_contrast.png")
    if "companions" in result:
        t = QTable(rows=[tuple(c.values()) for c in result["companions"]],
                   names=list(result["companions"][0]) if result["companions"] else
                   ["x", "y", "x_err", "y_err", "x_det", "y_det", "separation", "separation_err", "position_angle",
                    "position_angle_err", "ra", "dec", "snr", "throughput", "flux", "flux_err", "contrast",
                    "contrast_err"])
        for name, unit in (("x", u.pix), ("y", u.pix), ("x_err", u.pix), ("y_err", u.pix), ("x_det", u.pix),
                           ("y_det", u.pix), ("separation", u.arcsec), ("separation_err", u.arcsec),
                           ("position_angle", u.deg), ("position_angle_err", u.deg), ("ra", u.deg), ("dec", u.deg)):
            t[name].unit = unit
        t.meta.update(common)
        t.meta["comments"] = [
            "webbflow (not jwst): peaks above snr_threshold in the SNR map of the north-up KLIP combination; x, y: "
            "fitted template position in that image (star at center_x/y, north up, east left); x_det, y_det: in the "
            "first science exposure; ra, dec: the offset from the star's pixel (center_x/y) applied to the target's "
            "catalogue TARG_RA/TARG_DEC; PA east of north; flux: template flux / throughput (injections at the same "
            "separation, other PAs), calints units summed over pixels; contrast = flux / star_flux"]
        path = out_dir / f"{product}_companions.ecsv"
        write_ecsv(path, t)
        written["companions"] = path
    return written


def _plot(table, result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for n in result["numbasis"]:
        ax.plot(table["separation"].value, table[f"contrast_kl{n}"], label=f"KL {n}")
    for c in result.get("companions", []):
        ax.errorbar(c["separation"], c["contrast"], yerr=c["contrast_err"], fmt="r*", ms=10)
    ax.set_yscale("log")
    ax.set_xlabel("separation (arcsec)")
    ax.set_ylabel("5-sigma contrast (throughput-corrected)")
    ax.legend(fontsize=7)
    with atomic_output(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return path
