"""Stage 3 for imaging (calwebb_image3): cal images of one association -> crf + i2d + segm + cat.

Steps, in jwst's order, all in memory: tweakreg (align the WCSs), skymatch
(sky levels), outlier_detection (flag cosmic rays left by the jump step and
other outliers against the median of the drizzled exposures), resample
(drizzle into the i2d) and source_catalog.  Inputs are read (and checked)
first; products are written at the end, each atomically.
"""

import logging
import time
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.time import Time

from webbflow.config import IMAGE3_STEPS, step_kwargs
from webbflow.io.errors import InputError
from webbflow.io.image3 import image_input, read_cal, write_catalog, write_crf, write_i2d, write_segm
from webbflow.steps import outlier_detection as outlier_step
from webbflow.steps import resample as resample_step
from webbflow.steps import skymatch as skymatch_step
from webbflow.steps import source_catalog as catalog_step
from webbflow.steps import tweakreg as tweakreg_step

__all__ = ["CATALOG_REFERENCE_KEYS", "IMAGE3_STEPS", "DEFAULTS", "catalog_provenance", "catalog_references", "crf_name",
           "observation_epoch", "read_refcat", "run", "run_models"]

log = logging.getLogger(__name__)

DEFAULTS = {
    "tweakreg": dict(skip=False, snr_threshold=10.0, kernel_fwhm=2.5, bkg_boxsize=400, brightest=200,
                     peakmax=None, fitgeometry="rshift", searchrad=2.0, separation=1.0, tolerance=0.7,
                     use2dhist=True, nclip=3, sigma=3.0, minobj=15, abs_refcat=None, abs_proper_motion=False,
                     abs_fitgeometry="rshift",
                     abs_searchrad=6.0, abs_separation=1.0, abs_tolerance=0.7, abs_nclip=3, abs_sigma=3.0,
                     abs_minobj=15, abs_merge_sources=False, expand_refcat=False, enforce_user_order=False, abs_fallback=False,
                     abs_fallback_searchrad=2.0, abs_fallback_offset=0.02),
    "skymatch": dict(skip=False, skymethod="match", match_down=True, subtract=False, skystat="mode", nclip=5,
                     lsigma=4.0, usigma=4.0, lower=None, upper=None),
    "outlier_detection": dict(skip=False, snr=[5.0, 4.0], scale=[1.2, 0.7], backg=0.0, maskpt=0.7, pixfrac=1.0,
                              kernel="square", weight_type="ivm"),
    "resample": dict(pixfrac=1.0, kernel="square", weight_type="ivm", pixel_scale=None, pixel_scale_ratio=1.0,
                     rotation=None, crval=None, output_shape=None),
    "source_catalog": dict(skip=False, bkg_boxsize=1000, kernel_fwhm=2.0, snr_threshold=3.0, npixels=25,
                           deblend=False, aperture_ee1=30, aperture_ee2=50, aperture_ee3=70, apcorr_file=None,
                           abvegaoffset_file=None, ci1_star_threshold=2.0, ci2_star_threshold=1.8,
                           clip_apertures=False, measure_apcorr=False),
}
"""jwst 3.0 defaults of the image3 step parameters (``config/schema.yaml`` holds the same)."""


def crf_name(cal_path, asn_id):
    """``<exposure root>_<asn id>_crf.fits`` for a ``<exposure root>_cal.fits`` input."""
    name = Path(cal_path).name
    root = name[: -len("_cal.fits")] if name.endswith("_cal.fits") else Path(name).stem
    return f"{root}_{asn_id}_crf.fits"


def read_refcat(path, epoch=None):
    """A reference catalog (ECSV/FITS/CSV) as ``ra``/``dec`` (deg), optionally moved to ``epoch``.

    Parameters
    ----------
    path : str, Path or astropy.table.Table
        File (or the table itself) with ``ra``/``dec`` (any case) in degrees; for ``epoch``, also
        ``pmra`` (mas/yr, times cos dec, Gaia's convention) and ``pmdec``
        (mas/yr), and the catalog epoch (Julian year) as a ``ref_epoch`` (or
        ``epoch``) column or ``ref_epoch``/``epoch`` in the table's meta.
    epoch : float, optional
        Julian year of the observation.  None: positions as listed (jwst's
        behaviour for a catalog file).  Stars without a proper motion (NaN,
        Gaia's 2-parameter solutions) stay where they are listed.

    Returns
    -------
    astropy.table.Table
        ``ra``, ``dec`` (deg).
    """
    try:
        table = path if isinstance(path, Table) else Table.read(path)
    except Exception as exc:
        raise InputError(path, f"cannot be read as a table ({exc})",
                         "give an ECSV/FITS catalog with ra and dec columns in degrees") from None
    cols = {c.lower(): c for c in table.colnames}
    if "ra" not in cols or "dec" not in cols:
        raise InputError(path, f"has no ra/dec columns (columns: {', '.join(table.colnames)})",
                         "name the columns ra and dec (degrees)")
    ra = np.asarray(table[cols["ra"]], float)
    dec = np.asarray(table[cols["dec"]], float)
    if epoch is not None:
        ra, dec = _propagate(path, table, cols, ra, dec, float(epoch))
    return Table({"ra": ra, "dec": dec})


def _propagate(path, table, cols, ra, dec, epoch):
    """Linear proper motion from the catalog's epoch to ``epoch`` (mas-level exact over decades off the poles)."""
    if "pmra" not in cols or "pmdec" not in cols:
        raise InputError(path, "has no pmra/pmdec columns, needed by abs_proper_motion",
                         "add pmra/pmdec (mas/yr) and ref_epoch, or set steps.tweakreg.abs_proper_motion: false")
    meta = {k.lower(): v for k, v in table.meta.items()}
    if "ref_epoch" in cols or "epoch" in cols:
        ref_epoch = np.asarray(table[cols.get("ref_epoch", cols.get("epoch"))], float)
    elif "ref_epoch" in meta or "epoch" in meta:
        ref_epoch = float(meta.get("ref_epoch", meta.get("epoch")))
    else:
        raise InputError(path, "has proper motions but no catalog epoch",
                         "add a ref_epoch column or meta entry (Julian year, e.g. 2016.0 for Gaia DR3)")
    dt = epoch - ref_epoch
    pmra = np.nan_to_num(np.asarray(table[cols["pmra"]], float))
    pmdec = np.nan_to_num(np.asarray(table[cols["pmdec"]], float))
    mas = 1.0 / 3.6e6
    dec_out = dec + pmdec * dt * mas
    ra_out = ra + pmra * dt * mas / np.cos(np.radians(dec))
    log.info("tweakreg: reference catalog moved by its proper motions over %.2f yr (median %.1f mas)",
             float(np.median(dt)), float(np.median(np.hypot(pmra, pmdec) * np.abs(dt))) if len(ra) else 0.0)
    return ra_out, dec_out


def observation_epoch(models):
    """Julian year of the middle of the exposures (mean EXPMID; else DATE-OBS/TIME-OBS of the first)."""
    mids = [m.meta.exposure.mid_time for m in models if getattr(m.meta.exposure, "mid_time", None)]
    if mids:
        return float(Time(np.mean(mids), format="mjd", scale="utc").jyear)
    obs = models[0].meta.observation
    return float(Time(f"{obs.date}T{obs.time or '00:00:00'}", scale="utc").jyear)


def _params(params):
    out = {}
    for step in IMAGE3_STEPS:
        merged = dict(DEFAULTS[step])
        merged.update((params or {}).get(step, {}))
        out[step] = merged
    return out


def _wcsinfo(model):
    """The pointing keywords jwst's resample takes from the first input (scale and roll of the grid)."""
    info = model.meta.wcsinfo
    return {k: getattr(info, k, None) for k in ("ra_ref", "dec_ref", "roll_ref", "v3yangle", "vparity")}


def catalog_references(sc, references=None):
    """The APCORR and ABVEGAOFFSET files source_catalog reads.

    A file given by path (``apcorr_file``, ``abvegaoffset_file``) wins, as jwst's ``override_<type>``;
    else the one CRDS chose (``references``), as jwst's ``get_reference_file``.  ``measure_apcorr``
    (beyond jwst) measures the aperture radii and correction on the mosaic instead of a CRDS APCORR;
    with no APCORR anywhere (no CRDS: a reference folder, overrides only) they are measured too.

    Parameters
    ----------
    sc : dict
        The source_catalog parameters.
    references : dict, optional
        ``apcorr`` / ``abvegaoffset`` -> path chosen by CRDS (None or absent: none).

    Returns
    -------
    dict
        ``apcorr`` and ``abvegaoffset`` -> path or None.
    """
    references = references or {}
    apcorr = sc.get("apcorr_file") or (None if sc.get("measure_apcorr") else references.get("apcorr"))
    return {"apcorr": apcorr, "abvegaoffset": sc.get("abvegaoffset_file") or references.get("abvegaoffset")}


# Catalog metadata keys of the references source_catalog read.  jwst 3.0 records neither type (its core
# schema has no ref_file entry for them, and its catalog's metadata no reference names): these follow
# the R_<TYPE> keywords of its FITS products, CRDS files as crds://<file>.
CATALOG_REFERENCE_KEYS = {"apcorr": "R_APCORR", "abvegaoffset": "R_ABVEGA"}


def catalog_provenance(used, references=None, provenance=None):
    """The catalog's record of the references its source_catalog read.

    Parameters
    ----------
    used : dict
        ``apcorr`` / ``abvegaoffset`` -> path read (None: none; ``run_models``'s ``catalog_references``).
    references : dict, optional
        The paths chosen by CRDS (a file used from among them is named as in ``provenance``).
    provenance : dict, optional
        ``reference_names`` (reftype -> ``crds://<file>``), ``crds_context``, ``crds_version``.

    Returns
    -------
    dict
        ``R_APCORR`` / ``R_ABVEGA`` for each file read (``crds://<file>`` when CRDS chose it, else its
        name), and ``CRDS_CTX`` / ``CRDS_VER`` when one of them came from CRDS.
    """
    references, provenance = references or {}, provenance or {}
    names = provenance.get("reference_names") or {}
    meta, from_crds = {}, False
    for reftype, key in CATALOG_REFERENCE_KEYS.items():
        path = (used or {}).get(reftype)
        if not path:
            continue
        crds = references.get(reftype) and Path(references[reftype]).resolve() == Path(path).resolve() \
            and str(names.get(reftype, "")).startswith("crds://")
        meta[key] = names[reftype] if crds else Path(path).name
        from_crds = from_crds or bool(crds)
    if from_crds:
        meta["CRDS_CTX"] = provenance.get("crds_context")
        meta["CRDS_VER"] = provenance.get("crds_version")
    return meta


def run_models(models, params=None, names=None, references=None):
    """Run the image3 steps on open cal models (no files written).

    Parameters
    ----------
    models : list of ImageModel
        Calibrated images of one association.
    params : dict, optional
        step -> {parameter: value}; missing ones take :data:`DEFAULTS`.
    names : list of str, optional
        Names for the log (default the models' file names).
    references : dict, optional
        ``apcorr`` / ``abvegaoffset`` -> path chosen by CRDS for source_catalog
        (:func:`catalog_references` says which it reads).

    Returns
    -------
    dict
        ``images`` (list of ImageInput: updated dq, wcs, sky), ``resampled``
        (ResampleResult), ``catalog`` (CatalogResult or None), ``cal_steps``
        (step -> status), ``alignment`` (list of tweakreg Alignment or None), ``catalog_references``
        (``apcorr`` / ``abvegaoffset`` -> the path source_catalog read, or None).
    """
    p = _params(params)
    names = names or [m.meta.filename or f"image{i}" for i, m in enumerate(models)]
    images = [image_input(m, n) for m, n in zip(models, names)]
    status = {}
    t0 = time.perf_counter()

    tw = p["tweakreg"]
    refcat = None
    if tw.get("abs_refcat"):
        epoch = observation_epoch(models) if tw["abs_proper_motion"] else None
        refcat = read_refcat(tw["abs_refcat"], epoch)
        log.info("tweakreg: absolute alignment to %s (%d sources)", tw["abs_refcat"], len(refcat))
    elif not tw["skip"]:
        log.info("tweakreg: no abs_refcat; relative alignment only (the mosaic keeps the reference "
                 "exposure's pointing error; set steps.tweakreg.abs_refcat to a Gaia/HST catalog)")
    alignment = None
    if tw["skip"] or (len(images) < 2 and refcat is None):
        status["tweakreg"] = "SKIPPED"
        if not tw["skip"]:
            log.info("tweakreg: one image and no reference catalog; nothing to align")
    else:
        catalogs = [tweakreg_step.find_sources(im.data, im.dq, snr_threshold=tw["snr_threshold"],
                                               kernel_fwhm=tw["kernel_fwhm"], bkg_boxsize=tw["bkg_boxsize"],
                                               brightest=tw["brightest"], peakmax=tw["peakmax"])
                    for im in images]
        for im, cat in zip(images, catalogs):
            log.info("tweakreg: %d sources in %s", len(cat), im.name)
        keys = ("fitgeometry", "searchrad", "separation", "tolerance", "use2dhist", "nclip", "sigma", "minobj",
                "abs_fitgeometry", "abs_searchrad", "abs_separation", "abs_tolerance", "abs_nclip", "abs_sigma",
                "abs_minobj", "abs_merge_sources", "expand_refcat", "enforce_user_order", "abs_fallback", "abs_fallback_searchrad",
                "abs_fallback_offset")
        alignment = tweakreg_step.align([im.wcs for im in images], catalogs, [im.name for im in images],
                                        groups=[im.group for im in images], abs_refcat=refcat,
                                        **{k: tw[k] for k in keys})
        status["tweakreg"] = "COMPLETE" if any(a.status.startswith("aligned") for a in alignment) else "SKIPPED"
    log.info("tweakreg %s (%.1f s)", status["tweakreg"], time.perf_counter() - t0)

    rs = p["resample"]
    out_wcs, out_shape, pscale = resample_step.make_output_wcs(
        [im.wcs for im in images], [im.data.shape for im in images], pixel_scale=rs["pixel_scale"],
        pixel_scale_ratio=rs["pixel_scale_ratio"], rotation=rs["rotation"], crval=rs["crval"],
        output_shape=tuple(rs["output_shape"]) if rs["output_shape"] else None, ref_wcsinfo=_wcsinfo(models[0]))
    log.info("output grid %s at %.4f arcsec/pixel", out_shape, pscale)

    sm = p["skymatch"]
    if sm["skip"]:
        status["skymatch"] = "SKIPPED"
    else:
        skymatch_step.skymatch(images, out_wcs, out_shape, **step_kwargs(p, "skymatch"))
        status["skymatch"] = "COMPLETE"

    od = p["outlier_detection"]
    if od["skip"] or len({im.group for im in images}) < 2:
        status["outlier_detection"] = "SKIPPED"
        if not od["skip"]:
            log.info("outlier_detection: fewer than two exposures; skipped")
    else:
        outlier_step.outlier_detection(images, out_wcs, out_shape, snr=tuple(od["snr"]), scale=tuple(od["scale"]),
                                       backg=od["backg"], maskpt=od["maskpt"], pixfrac=od["pixfrac"],
                                       kernel=od["kernel"], weight_type=od["weight_type"])
        status["outlier_detection"] = "COMPLETE"
    log.info("outlier_detection %s (%.1f s)", status["outlier_detection"], time.perf_counter() - t0)

    resampled = resample_step.drizzle_images(images, out_wcs, out_shape, pscale, pixfrac=rs["pixfrac"],
                                             kernel=rs["kernel"], weight_type=rs["weight_type"])
    status["resample"] = "COMPLETE"
    log.info("resample done (%.1f s)", time.perf_counter() - t0)

    sc = p["source_catalog"]
    catalog = None
    used = {}
    if sc["skip"]:
        status["source_catalog"] = "SKIPPED"
    else:
        inst = models[0].meta.instrument
        used = catalog_references(sc, references)
        if used["apcorr"]:
            log.info("source_catalog: APCORR reference %s", used["apcorr"])
            apcorr = catalog_step.read_apcorr(used["apcorr"], inst.filter, inst.pupil or "CLEAR")
        else:
            apcorr = None
            log.info("source_catalog: aperture radii and correction measured on the mosaic (%s)",
                     "steps.source_catalog.measure_apcorr" if sc.get("measure_apcorr")
                     else "no APCORR reference: steps.source_catalog.apcorr_file null and none from CRDS")
        if used["abvegaoffset"]:
            log.info("source_catalog: ABVEGAOFFSET reference %s", used["abvegaoffset"])
            abvega = catalog_step.read_abvega_offset(used["abvegaoffset"], inst.filter, inst.pupil or "CLEAR")
        else:
            abvega = 0.0
            log.warning("source_catalog: no ABVEGAOFFSET reference (steps.source_catalog.abvegaoffset_file, "
                        "or CRDS); the catalog's Vega magnitudes equal its AB magnitudes and are not correct")
        catalog = catalog_step.source_catalog(
            resampled.data, resampled.err, out_wcs, (pscale / 206264.80624709636) ** 2,
            mask=resampled.wht == 0, bkg_boxsize=sc["bkg_boxsize"], kernel_fwhm=sc["kernel_fwhm"],
            snr_threshold=sc["snr_threshold"], npixels=sc["npixels"], deblend=sc["deblend"],
            aperture_ee=(sc["aperture_ee1"], sc["aperture_ee2"], sc["aperture_ee3"]), apcorr_table=apcorr,
            ci1_star_threshold=sc["ci1_star_threshold"], ci2_star_threshold=sc["ci2_star_threshold"],
            abvega_offset=abvega, clip_apertures=sc["clip_apertures"])
        status["source_catalog"] = "COMPLETE"
    log.info("source_catalog %s (%.1f s)", status["source_catalog"], time.perf_counter() - t0)
    return {"images": images, "resampled": resampled, "catalog": catalog, "cal_steps": status,
            "alignment": alignment, "catalog_references": used}


def run(cal_paths, *, i2d, cat, segm, crf_dir, asn_id, product, params=None, provenance=None, pool="none",
        references=None):
    """Run image3 on files and write every product.

    Parameters
    ----------
    cal_paths : list of str or os.PathLike
        The association's science members (``_cal.fits``).
    i2d, cat, segm : str or os.PathLike
        Output paths (``<product>_i2d.fits``, ``_cat.ecsv``, ``_segm.fits``).
    crf_dir : str or os.PathLike
        Folder of the per-exposure ``<root>_<asn_id>_crf.fits``.
    asn_id, product : str
        Association id (``o001``) and product name.
    params : dict, optional
        step -> parameters.
    provenance : dict, optional
        ``step_parameters`` and ``config_digest``; with CRDS references also ``crds_context``,
        ``crds_version`` and ``reference_names`` (reftype -> ``crds://<file>``), which the catalog
        records for the references its source_catalog read.
    pool : str
        Association pool name recorded in the products.
    references : dict, optional
        ``apcorr`` / ``abvegaoffset`` -> path chosen by CRDS (:func:`run_models`).

    Returns
    -------
    dict
        Paths written (``i2d``, ``cat``, ``segm``, ``crf`` list).
    """
    models = [read_cal(p) for p in cal_paths]
    try:
        result = run_models(models, params, [Path(p).name for p in cal_paths], references)
        status = result["cal_steps"]
        crfs = []
        for model, image, path in zip(models, result["images"], cal_paths):
            crfs.append(write_crf(model, image, Path(crf_dir) / crf_name(path, asn_id), asn_id=asn_id,
                                  cal_steps={k: v for k, v in status.items() if k in
                                             ("tweakreg", "skymatch", "outlier_detection")},
                                  provenance=provenance))
        p = _params(params)
        members = [Path(x).name for x in cal_paths]
        asn = {"asn_id": asn_id, "product": product, "pool": pool}
        written = {"crf": [str(c) for c in crfs]}
        i2d_path, i2d_model = write_i2d(result["resampled"], i2d, models[0], members=members, asn=asn,
                                        cal_steps=status, params=p["resample"], provenance=provenance, keep=True)
        written["i2d"] = str(i2d_path)
        catalog = result["catalog"]
        if catalog is None:
            # An empty catalog and segmentation keep the rule's outputs complete.
            catalog = catalog_step.CatalogResult(Table(), np.zeros(result["resampled"].data.shape, np.int32), None)
        with i2d_model:
            written["segm"] = str(write_segm(catalog.segmentation, segm, i2d_model, provenance))
        written["cat"] = str(write_catalog(catalog.catalog, cat, {
            "product": product, "asn_id": asn_id, "members": members, "bunit": "Jy",
            "step_status": status, **catalog_provenance(result["catalog_references"], references, provenance)}))
        log.info("wrote %s, %s, %s and %d crf", written["i2d"], written["cat"], written["segm"], len(crfs))
        return written
    finally:
        for m in models:
            m.close()
