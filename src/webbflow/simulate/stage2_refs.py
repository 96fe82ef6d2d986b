"""Stage-2 imaging references of the simulated instrument: FLAT, PHOTOM, AREA, DISTORTION.

CRDS formats that stdatamodels opens as FlatModel, NrcImgPhotomModel,
PixelAreaModel and DistortionModel (ASDF), with complete selection headers
(REFTYPE, INSTRUME, DETECTOR, CHANNEL, MODULE, FILTER, PUPIL, EXP_TYPE,
SUBARRAY, SUBSTRT/SUBSIZE, USEAFTER, ...).

* FLAT (per detector, filter, pupil; the exposure's subarray): response ×
  relative pixel area, so dividing by it leaves surface brightness (jwst
  convention); a few NaN pixels exercise NO_FLAT_FIELD.
* AREA (per detector, full frame as jwst's photom cuts it with the science
  SUBSTRT, FILTER/PUPIL = ANY): relative pixel area from the distortion.
* PHOTOM (per detector): one row per filter (PUPIL CLEAR), PHOTMJSR; PIXAR_SR
  and PIXAR_A2 in the header.
* DISTORTION (per detector, ASDF): full-frame science pixel -> V2/V3.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits

from webbflow import dqflags
from webbflow.io.files import atomic_output
from webbflow.demo import ABVEGAOFFSET_NAME, APCORR_NAME
from webbflow.simulate import optics
from webbflow.simulate.detectors import DETECTORS

__all__ = ["STAGE2_REFTYPES", "flat_response", "flat_field_array", "retarget_exp_type", "stage2_reference_paths",
           "write_apcorr_reference", "write_apcorr_table", "write_demo_apcorr", "APCORR_NAME",
           "write_abvegaoffset_reference", "write_demo_abvegaoffset",
           "ABVEGAOFFSET_NAME",
           "write_stage2_references", "NAN_FLAT_PIXELS"]

STAGE2_REFTYPES = ("distortion", "flat", "photom", "area")
NAN_FLAT_PIXELS = 5
"""Pixels per flat set to NaN (no flat measured)."""

_IMAGING_EXP_TYPES = "NRC_IMAGE|NRC_TSIMAGE|NRC_FLAT|NRC_LED|NRC_WFSC|NRC_TACQ|NRC_TACONFIRM|NRC_FOCUS|NRC_DARK|NRC_CORON|"


def _smooth(rng, shape, offset, amplitude, scale):
    ny, nx = shape
    y = (np.arange(ny) + offset[0])[:, None] / 2048.0
    x = (np.arange(nx) + offset[1])[None, :] / 2048.0
    field = np.zeros(shape)
    for _ in range(3):
        kx, ky = rng.uniform(0.3, scale, 2)
        px, py = rng.uniform(0, 2 * np.pi, 2)
        field += np.cos(2 * np.pi * kx * x + px) * np.cos(2 * np.pi * ky * y + py)
    return amplitude * field / 3


@lru_cache(maxsize=16)
def flat_response(detector, geometry, filter_name, pupil, ref_seed):
    """Relative pixel response (no area term) on ``geometry``, float64 (ny, nx).

    Pixel-to-pixel part (1 %) is fixed per detector; a smooth ±3 % part depends
    on the filter.  Read-only array (cached).
    """
    sca = DETECTORS[detector].sca
    shape = geometry.shape
    offset = (geometry.ystart - 1, geometry.xstart - 1)
    # Pixel-to-pixel part drawn on the full frame so subarrays of one detector agree.
    full = np.random.default_rng([ref_seed, sca, 7]).normal(0, 0.01, (2048, 2048))
    p2p = full[geometry.slices]
    fseed = int.from_bytes(f"{filter_name}/{pupil}".encode(), "little") % (2**31)
    smooth = _smooth(np.random.default_rng([ref_seed, sca, fseed]), shape, offset, 0.03, 1.5)
    out = 1.0 + p2p + smooth
    out.setflags(write=False)
    return out


def _nan_pixels(detector, geometry, ref_seed):
    rng = np.random.default_rng([ref_seed, DETECTORS[detector].sca, 11])
    ny, nx = geometry.shape
    return rng.integers(8, ny - 8, NAN_FLAT_PIXELS), rng.integers(8, nx - 8, NAN_FLAT_PIXELS)


def flat_field_array(detector, geometry, filter_name, pupil, ref_seed):
    """The FLAT reference SCI on ``geometry``: response × area, NaN where not measured.

    The reference pixels (the detector's 4-pixel border, where ``geometry`` reaches it) see no
    light, so they have no flat: NaN, hence NO_FLAT_FIELD | DO_NOT_USE in the written DQ, and
    flat_field makes them NaN in the cal file.  Left in, their ~0 MJy/sr would be drizzled into
    the mosaic as dark 4-pixel bands at every exposure's edge, which outlier detection then
    flags (with the cores of the stars they cross) and which bias those stars' fluxes low.
    """
    flat = flat_response(detector, geometry, filter_name, pupil, ref_seed) \
        * optics.pixel_area_map(detector, geometry)
    flat = flat.astype(np.float32)
    flat[_nan_pixels(detector, geometry, ref_seed)] = np.nan
    flat[geometry.reference_pixels()] = np.nan
    return flat


def stage2_reference_paths(outdir, detector, filter_name, pupil, subarray):
    """File names of the stage-2 references for one exposure configuration."""
    refs = Path(outdir) / "refs"
    det = detector.lower()
    return {
        "flat": refs / f"webbflow_{det}_flat_{filter_name}_{pupil}_{subarray}.fits".lower(),
        "photom": refs / f"webbflow_{det}_photom.fits",
        "area": refs / f"webbflow_{det}_area_full.fits",
        "distortion": refs / f"webbflow_{det}_distortion.asdf",
    }


def _primary(reftype, model, detector, extra):
    info = DETECTORS[detector]
    keys = {
        "DATAMODL": model, "REFTYPE": reftype.upper(), "TELESCOP": "JWST", "INSTRUME": "NIRCAM",
        "DETECTOR": detector, "CHANNEL": info.channel, "MODULE": info.module,
        "FASTAXIS": info.fastaxis, "SLOWAXIS": info.slowaxis,
        "USEAFTER": "2022-01-01T00:00:00", "AUTHOR": "webbflow simulator",
        "PEDIGREE": "SIMULATION", "ORIGIN": "webbflow",
    }
    keys.update(extra)
    header = fits.Header()
    for k, v in keys.items():
        header[k] = v.item() if isinstance(v, np.generic) else v
    return header


def _dq_def():
    names = ("DO_NOT_USE", "NO_FLAT_FIELD")
    rows = [(int(np.log2(dqflags.PIXEL[n])), dqflags.PIXEL[n], n, n.replace("_", " ").lower())
            for n in names]
    return np.array(rows, dtype=[("BIT", "i4"), ("VALUE", "u4"), ("NAME", "S40"),
                                 ("DESCRIPTION", "S80")])


def retarget_exp_type(path, exp_type, p_exp_type):
    """Rewrite a reference's EXP_TYPE / P_EXP_TY (FITS primary header or ASDF meta), atomically.

    The local CRDS cache matches EXP_TYPE literally for the types whose rules use it (dark, area,
    distortion), so references written for imaging (NRC_IMAGE) are re-targeted to a time-series mode.

    Parameters
    ----------
    path : path-like
        A FITS or ASDF reference file.
    exp_type, p_exp_type : str
        New EXP_TYPE and P_EXP_TY values.

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    if path.suffix == ".asdf":
        from stdatamodels.jwst import datamodels

        with datamodels.open(path) as model:
            if model.meta.exposure.type == exp_type and model.meta.exposure.p_exptype == p_exp_type:
                return path
            model.meta.exposure.type = exp_type
            model.meta.exposure.p_exptype = p_exp_type
            with atomic_output(path) as tmp:
                model.save(tmp)
        return path
    with fits.open(path) as hdul:
        if hdul[0].header.get("EXP_TYPE") == exp_type and hdul[0].header.get("P_EXP_TY") == p_exp_type:
            return path
        hdul[0].header["EXP_TYPE"] = exp_type
        hdul[0].header["P_EXP_TY"] = p_exp_type
        with atomic_output(path) as tmp:
            hdul.writeto(tmp)
    return path


def _write_fits(path, hdus):
    with atomic_output(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)


def _write_flat(path, detector, geometry, filter_name, pupil, ref_seed, extra):
    flat = flat_field_array(detector, geometry, filter_name, pupil, ref_seed)
    dq = np.zeros(geometry.shape, np.uint32)
    dq[np.isnan(flat)] = dqflags.PIXEL["NO_FLAT_FIELD"] | dqflags.PIXEL["DO_NOT_USE"]
    header = _primary("flat", "FlatModel", detector, {
        "FILTER": filter_name, "PUPIL": pupil, "EXP_TYPE": "NRC_IMAGE", "P_EXP_TY": _IMAGING_EXP_TYPES,
        "SUBARRAY": geometry.name, "SUBSTRT1": geometry.xstart, "SUBSTRT2": geometry.ystart,
        "SUBSIZE1": geometry.xsize, "SUBSIZE2": geometry.ysize,
        "DESCRIP": f"webbflow synthetic flat {detector} {filter_name}/{pupil} {geometry.name}",
        "FILENAME": path.name, "WFFLATV": FLAT_VERSION, **extra})
    _write_fits(path, [fits.PrimaryHDU(header=header), fits.ImageHDU(flat, name="SCI"),
                       fits.ImageHDU(np.full(geometry.shape, 0.005, np.float32), name="ERR"),
                       fits.ImageHDU(dq, name="DQ"), fits.BinTableHDU(_dq_def(), name="DQ_DEF")])


def _write_area(path, detector, extra):
    a2 = optics.pixar_a2(detector)
    header = _primary("area", "PixelAreaModel", detector, {
        "FILTER": "ANY", "PUPIL": "ANY", "EXP_TYPE": "NRC_IMAGE", "P_EXP_TY": _IMAGING_EXP_TYPES,
        "SUBARRAY": "FULL", "SUBSTRT1": 1, "SUBSTRT2": 1, "SUBSIZE1": 2048, "SUBSIZE2": 2048,
        "PIXAR_SR": optics.pixar_sr(detector), "PIXAR_A2": a2,
        "DESCRIP": f"webbflow synthetic pixel area map {detector}", "FILENAME": path.name, **extra})
    _write_fits(path, [fits.PrimaryHDU(header=header),
                       fits.ImageHDU(optics.pixel_area_map(detector), name="SCI")])


def _photom_rows(detector):
    """(filter, pupil) rows of the imaging PHOTOM: CLEAR for every filter, and on the SW detectors
    the weak lens with the filters it is used with (time-series imaging: WLP8 + F210M ...); on every
    detector the coronagraphic Lyot stops (MASKRND, MASKBAR) with the channel's filters."""
    rows = [(f, "CLEAR") for f in sorted(optics.FILTERS)]
    long = DETECTORS[detector].is_long
    rows += [(f, stop) for stop in sorted(optics.LYOT_THROUGHPUT) for f in sorted(optics.FILTERS)
             if (optics.FILTERS[f][0] > 2.4) == long]
    if not DETECTORS[detector].is_long:
        rows += [(f, lens) for lens in sorted(optics.WEAK_LENS_THROUGHPUT)
                 for f in sorted(optics.FILTERS) if optics.FILTERS[f][0] < 2.4]
    return rows


def _write_photom(path, detector, extra):
    table = np.array([(f, p, optics.photmjsr(f, p), 0.01 * optics.photmjsr(f, p)) for f, p in _photom_rows(detector)],
                     dtype=[("filter", "S12"), ("pupil", "S12"), ("photmjsr", "f4"),
                            ("uncertainty", "f4")])
    header = _primary("photom", "NrcImgPhotomModel", detector, {
        "EXP_TYPE": "NRC_IMAGE", "P_EXP_TY": _IMAGING_EXP_TYPES, "SUBARRAY": "GENERIC",
        "PIXAR_SR": optics.pixar_sr(detector), "PIXAR_A2": optics.pixar_a2(detector),
        "DESCRIP": f"webbflow synthetic photometric calibration {detector}",
        "FILENAME": path.name, **extra})
    _write_fits(path, [fits.PrimaryHDU(header=header), fits.BinTableHDU(table, name="PHOTOM")])


def _write_distortion(path, detector, extra):
    import astropy.units as u
    from stdatamodels.jwst.datamodels import DistortionModel

    info = DETECTORS[detector]
    model = DistortionModel()
    model.model = optics.distortion_model(detector)
    meta = model.meta
    meta.reftype = "DISTORTION"
    meta.instrument.name = "NIRCAM"
    meta.instrument.detector = detector
    meta.instrument.channel = info.channel
    meta.instrument.module = info.module
    meta.instrument.filter = "N/A"
    meta.instrument.pupil = "ANY"
    meta.instrument.p_pupil = "CLEAR|CLEARP|F162M|F164N|F323N|F405N|F466N|F470N|WLM8|WLP8|"
    meta.exposure.type = "NRC_IMAGE"
    # the grism modes place their source through the imaging distortion too
    meta.exposure.p_exptype = _IMAGING_EXP_TYPES + "NRC_TSGRISM|NRC_WFSS|"
    meta.subarray.name = "GENERIC"
    meta.useafter = "2022-01-01T00:00:00"
    meta.author = "webbflow simulator"
    meta.pedigree = "SIMULATION"
    meta.description = f"webbflow synthetic distortion {detector}: science pixel -> V2/V3"
    meta.telescope = "JWST"
    meta.input_units = u.pix
    meta.output_units = u.arcsec
    for k, v in extra.items():
        model.meta.instance.setdefault("webbflow", {})[k.lower()] = v
    with atomic_output(path) as tmp:
        model.save(tmp)
    model.close()


def write_stage2_references(outdir, detector, geometry, filter_name, pupil, ref_seed,
                            extra_keywords=None, overwrite=False):
    """Write (if missing) the FLAT, PHOTOM, AREA and DISTORTION references of one configuration.

    Parameters
    ----------
    outdir : path-like
        Files go to ``<outdir>/refs/``.
    detector : str
    geometry : Geometry
        Array of the flat (the exposure's subarray).
    filter_name, pupil : str
    ref_seed : int
        Seed of the detector model (flat pattern).
    extra_keywords : dict, optional
        Added to the headers (e.g. ``WFSEED``).
    overwrite : bool
        Rewrite existing files.

    Returns
    -------
    dict
        reftype -> Path.
    """
    extra = dict(extra_keywords or {})
    paths = stage2_reference_paths(outdir, detector, filter_name, pupil, geometry.name)
    writers = {
        "flat": lambda p: _write_flat(p, detector, geometry, filter_name, pupil, ref_seed, extra),
        "photom": lambda p: _write_photom(p, detector, extra),
        "area": lambda p: _write_area(p, detector, extra),
        "distortion": lambda p: _write_distortion(p, detector, extra),
    }
    for reftype, path in paths.items():
        if overwrite or not path.exists() or (reftype == "flat" and _stale(path, ref_seed)):
            writers[reftype](path)
    return paths


# Version of the flat's content: a flat written before reference pixels were NaN (version 1) is rewritten.
FLAT_VERSION = 2


def _stale(path, ref_seed):
    try:
        header = fits.getheader(path)
        return header.get("WFSEED") != ref_seed or header.get("WFFLATV", 1) != FLAT_VERSION
    except OSError:
        return True


# Stage-3 references for jwst's source_catalog (the oracle needs both; webbflow
# reads the APCORR table through ``steps.source_catalog.apcorr_file``).

def write_apcorr_reference(path, detector, filter_name, pupil, eefractions, radii, apcorrs, skyin, skyout):
    """Write a NIRCam imaging APCORR reference (NrcImgApcorrModel) with one filter/pupil's rows.

    Parameters
    ----------
    path : path-like
    detector : str
        Only for the selection header (the table itself is per filter/pupil).
    filter_name, pupil : str
    eefractions, radii, apcorrs : sequence of float
        Encircled-energy fraction, aperture radius (i2d pixels at pixel_scale_ratio 1)
        and the correction to total flux, one row each.
    skyin, skyout : float
        Background annulus radii (pixels), the same for every row (as jwst requires).

    Returns
    -------
    pathlib.Path
    """
    rows = [(filter_name, pupil, f, r, c, skyin, skyout) for f, r, c in zip(eefractions, radii, apcorrs)]
    return write_apcorr_table(path, rows, detector, f"{filter_name}/{pupil}")


def write_apcorr_table(path, rows, detector="ANY", what="every filter"):
    """Write a NIRCam imaging APCORR reference (NrcImgApcorrModel, jwst's FITS layout) from table rows.

    Parameters
    ----------
    path : path-like
    rows : sequence of tuple
        ``(filter, pupil, eefraction, radius, apcorr, skyin, skyout)``; radii in i2d pixels.
    detector : str
        A detector name, or ``"ANY"`` for a file of every detector (as CRDS's NIRCam APCORR files:
        CRDS selects them by EXP_TYPE only).
    what : str
        For the file's DESCRIP.

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    table = np.array([tuple(r) for r in rows], dtype=[("filter", "S12"), ("pupil", "S15"), ("eefraction", "f4"),
                                                      ("radius", "f4"), ("apcorr", "f4"), ("skyin", "f4"),
                                                      ("skyout", "f4")])
    extra = {"EXP_TYPE": "NRC_IMAGE", "P_EXP_TY": _IMAGING_EXP_TYPES, "SUBARRAY": "GENERIC",
             "DESCRIP": f"webbflow aperture corrections {what}", "FILENAME": path.name}
    if detector in DETECTORS:
        header = _primary("apcorr", "NrcImgApcorrModel", detector, extra)
    else:
        header = fits.Header()
        for k, v in {"DATAMODL": "NrcImgApcorrModel", "REFTYPE": "APCORR", "TELESCOP": "JWST",
                     "INSTRUME": "NIRCAM", "DETECTOR": "ANY", "USEAFTER": "2022-01-01T00:00:00",
                     "AUTHOR": "webbflow simulator", "PEDIGREE": "SIMULATION", "ORIGIN": "webbflow",
                     **extra}.items():
            header[k] = v
    _write_fits(path, [fits.PrimaryHDU(header=header), fits.BinTableHDU(table, name="APCORR")])
    return path




def write_demo_apcorr(outdir):
    """Write (if missing) ``<outdir>/refs/``:data:`APCORR_NAME`: every filter with PUPIL CLEAR, radii and
    corrections from the simulator's own point source as the i2d shows it
    (:func:`webbflow.simulate.apcorr.apcorr_rows`); CRDS (and the cache stand-in) select it by EXP_TYPE."""
    from webbflow.simulate.apcorr import apcorr_rows

    path = Path(outdir) / "refs" / APCORR_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_apcorr_table(path, [row for f in sorted(optics.FILTERS) for row in apcorr_rows(f)])
    return path




def write_demo_abvegaoffset(outdir):
    """Write (if missing) ``<outdir>/refs/``:data:`ABVEGAOFFSET_NAME`: every filter with PUPIL CLEAR at
    :func:`optics.abvega_offset`; the CRDS cache stand-in selects it by EXP_TYPE, as CRDS does."""
    path = Path(outdir) / "refs" / ABVEGAOFFSET_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_abvegaoffset_reference(path, "ANY", {(f, "CLEAR"): optics.abvega_offset(f) for f in sorted(optics.FILTERS)})
    return path


def write_abvegaoffset_reference(path, detector, offsets):
    """Write an ABVEGAOFFSET reference (ABVegaOffsetModel, ASDF as in CRDS).

    ``offsets`` is {(filter, pupil): m_AB - m_Vega}.  Returns the path.
    """
    from astropy.table import Table
    from stdatamodels.jwst.datamodels import ABVegaOffsetModel

    path = Path(path)
    with ABVegaOffsetModel() as model:
        model.meta.reftype = "ABVEGAOFFSET"
        model.meta.instrument.name = "NIRCAM"
        if detector not in ("ANY", "N/A", None):
            model.meta.instrument.detector = detector
        model.meta.telescope = "JWST"
        model.meta.author = "webbflow simulator"
        model.meta.pedigree = "SIMULATION"
        model.meta.useafter = "2022-01-01T00:00:00"
        model.meta.description = "webbflow AB to Vega offsets"
        model.abvega_offset = Table(rows=[(f, p, float(v)) for (f, p), v in offsets.items()],
                                    names=("filter", "pupil", "abvega_offset"))
        with atomic_output(path) as tmp:
            model.save(tmp)
    return path
