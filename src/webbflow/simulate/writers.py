"""Write uncal exposures, CRDS-format references and truth files (atomically)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from webbflow import dqflags
from webbflow.io.files import atomic_output, write_ecsv
from webbflow.simulate.detectors import DETECTORS
from webbflow.simulate.events import SNOWBALL_FIELDS

__all__ = ["write_uncal", "write_reference_files", "write_truth",
           "reference_path", "REFTYPES", "write_table", "write_pointing_truth"]

REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")

_DQ_DEF_FLAGS = ("DO_NOT_USE", "SATURATED", "DEAD", "HOT", "WARM", "NO_LIN_CORR",
                 "NO_SAT_CHECK", "UNRELIABLE_BIAS", "REFERENCE_PIXEL")


def _header(keywords):
    header = fits.Header()
    for key, value in keywords.items():
        if isinstance(value, np.generic):
            value = value.item()
        header[key] = value
    return header


def _dq_def():
    rows = [(int(np.log2(dqflags.PIXEL[n])), dqflags.PIXEL[n], n, n.replace("_", " ").lower())
            for n in _DQ_DEF_FLAGS]
    return np.array(rows, dtype=[("BIT", "i4"), ("VALUE", "u4"), ("NAME", "S40"),
                                 ("DESCRIPTION", "S80")])


def write_uncal(path, sci, primary, sci_header, group, int_times, zeroframe=None):
    """Write an uncal file that stdatamodels opens as ``Level1bModel``.

    Plain FITS (no ASDF extension): PRIMARY (all exposure keywords, DATAMODL),
    SCI uint16, optional ZEROFRAME uint16, GROUP and INT_TIMES tables with the
    schema dtypes, and zero PIXELDQ (uint32) / GROUPDQ (uint8) images.  Written
    with astropy directly -- ~20x faster than building a datamodel.

    Parameters
    ----------
    path : path-like
    sci : ndarray uint16 (nints, ngroups, ny, nx)
    primary, sci_header : dict
        FITS keyword -> value for the PRIMARY and SCI headers.
    group, int_times : structured ndarray
        GROUP and INT_TIMES tables.
    zeroframe : ndarray uint16 (nints, ny, nx), optional

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    nints, ngroups, ny, nx = sci.shape
    hdus = [fits.PrimaryHDU(header=_header(primary)),
            fits.ImageHDU(sci, _header(sci_header), name="SCI")]
    if zeroframe is not None:
        hdus.append(fits.ImageHDU(zeroframe, name="ZEROFRAME"))
    hdus += [fits.BinTableHDU(group, name="GROUP"),
             fits.BinTableHDU(int_times, name="INT_TIMES"),
             fits.ImageHDU(np.zeros((ny, nx), np.uint32), name="PIXELDQ"),
             fits.ImageHDU(np.zeros((nints, ngroups, ny, nx), np.uint8), name="GROUPDQ")]
    with atomic_output(path) as tmp:
        _save_through_datamodel(fits.HDUList(hdus), tmp, "Level1bModel")
    return path


def _save_through_datamodel(hdulist, path, model_name):
    """Write ``hdulist`` via stdatamodels so the file gains its ASDF extension.

    jwst reads exposure metadata from the ASDF tree (``read_metadata``), so a
    plain FITS uncal is refused.  Loading the FITS (fast: one validation of
    the whole tree, which also rejects invalid enum values) and saving it adds
    the tree; extra HDUs (PIXELDQ, GROUPDQ) are kept.
    """
    from stdatamodels.jwst import datamodels

    plain = path.with_name(path.name + ".plain.fits")
    hdulist.writeto(plain)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an invalid keyword value would be dropped silently
        model = getattr(datamodels, model_name)(str(plain))
    try:
        model.save(path)
    finally:
        model.close()
        plain.unlink()


def reference_path(outdir, detector, reftype, subarray):
    """``<outdir>/refs/webbflow_<det>_<reftype>_<subarray>.fits`` (lower case)."""
    return Path(outdir) / "refs" / f"webbflow_{detector}_{reftype}_{subarray}.fits".lower()


_REF_MODELS = {"mask": "MaskModel", "saturation": "SaturationModel",
               "superbias": "SuperBiasModel", "linearity": "LinearityModel",
               "dark": "DarkModel", "gain": "GainModel", "readnoise": "ReadnoiseModel"}


def _ref_primary(reftype, det_model, extra=None):
    geom = det_model.geometry
    info = DETECTORS[det_model.detector]
    keys = {
        "DATAMODL": _REF_MODELS[reftype], "REFTYPE": reftype.upper(), "TELESCOP": "JWST",
        "INSTRUME": "NIRCAM", "DETECTOR": det_model.detector,
        "SUBARRAY": geom.name, "SUBSTRT1": geom.xstart, "SUBSTRT2": geom.ystart,
        "SUBSIZE1": geom.xsize, "SUBSIZE2": geom.ysize,
        "FASTAXIS": info.fastaxis, "SLOWAXIS": info.slowaxis,
        "USEAFTER": "2022-01-01T00:00:00", "AUTHOR": "webbflow simulator",
        "PEDIGREE": "SIMULATION", "ORIGIN": "webbflow",
        "DESCRIP": f"webbflow synthetic {reftype} for {det_model.detector} {geom.name}",
        "FILENAME": reference_path(".", det_model.detector, reftype, geom.name).name,
    }
    keys.update(extra or {})
    return _header(keys)


def write_reference_files(det_model, outdir, n_dark_frames, extra_keywords=None, dark_noise=0.0, dark_seed=0):
    """Write the seven stage-1 references of ``det_model`` into ``<outdir>/refs``.

    CRDS layout (jwst-formats.md §3.5), plain FITS with DATAMODL/REFTYPE so
    that ``stdatamodels`` opens them as MaskModel, SaturationModel,
    SuperBiasModel, LinearityModel, DarkModel, GainModel and ReadnoiseModel.

    Parameters
    ----------
    det_model : DetectorModel
    outdir : path-like
    n_dark_frames : int
        Frames of the dark (NFRAMES=1, GROUPGAP=0).
    extra_keywords : dict, optional
        Added to every primary header.
    dark_noise : float
        White noise (DN rms per frame, independent between frames) added to the DARK (ERR then holds
        it; DRKNOISE records it): a dark measured from few exposures.
    dark_seed : int
        Seed of that noise.

    Returns
    -------
    dict
        reftype -> Path.
    """
    shape = det_model.geometry.shape
    zero_dq = np.zeros(shape, np.uint32)
    f32 = np.float32
    dark = det_model.dark_frames(n_dark_frames)
    dark_err = np.zeros_like(dark)
    if dark_noise > 0:
        rng = np.random.default_rng([int(dark_seed), 31])
        dark = dark + rng.normal(0.0, dark_noise, dark.shape).astype(np.float32)
        dark_err[:] = dark_noise

    def img(data, name):
        return fits.ImageHDU(np.ascontiguousarray(data), name=name)

    def dq_hdus(dq):
        return [img(dq, "DQ"), fits.BinTableHDU(_dq_def(), name="DQ_DEF")]

    content = {
        "mask": (None, dq_hdus(det_model.mask)),
        "saturation": (None, [img(det_model.sat_thresh, "SCI")] + dq_hdus(zero_dq)),
        "superbias": ({"READPATT": "ANY"},
                      [img(det_model.superbias, "SCI"), img(np.full(shape, 2.0, f32), "ERR")]
                      + dq_hdus(zero_dq)),
        "linearity": (None, [img(det_model.coeffs, "COEFFS")] + dq_hdus(zero_dq)),
        "dark": ({"READPATT": "ANY", "NFRAMES": 1, "GROUPGAP": 0, "NGROUPS": n_dark_frames,
                  "NOUTPUTS": det_model.geometry.noutputs, "EXP_TYPE": "NRC_IMAGE", "DRKNOISE": float(dark_noise)},
                 [img(dark, "SCI"), img(dark_err, "ERR")] + dq_hdus(zero_dq)),
        "gain": (None, [img(det_model.gain, "SCI")]),
        "readnoise": ({"READPATT": "ANY"}, [img(det_model.readnoise, "SCI")]),
    }
    paths = {}
    for reftype, (extra, hdus) in content.items():
        header = _ref_primary(reftype, det_model, {**(extra or {}), **(extra_keywords or {})})
        path = reference_path(outdir, det_model.detector, reftype, det_model.geometry.name)
        with atomic_output(path) as tmp:
            fits.HDUList([fits.PrimaryHDU(header=header)] + hdus).writeto(tmp)
        paths[reftype] = path
    return paths


def write_sirs_kernel(outdir, detector, gamma, zeta):
    """Write a SIRSKERNEL reference for ``detector`` into ``<outdir>/refs``.

    jwst's format (``SIRSKernelModel``, an ASDF file as CRDS has it): the Fourier weights
    ``gamma`` (left side pixels) and ``zeta`` (right) of every amplifier channel under the
    lower-case detector name; ``meta`` carries reftype, instrument and detector, so the reference
    folder's scan selects it like the other references.

    Parameters
    ----------
    outdir : path-like
    detector : str
    gamma, zeta : ndarray, (nchan, nfreq)
        :func:`webbflow.simulate.noise.sirs_kernel_coefficients`.

    Returns
    -------
    Path
        ``<outdir>/refs/webbflow_<det>_sirskernel_full.asdf``.
    """
    from stdatamodels.jwst import datamodels

    path = reference_path(outdir, detector, "sirskernel", "FULL").with_suffix(".asdf")
    model = datamodels.SIRSKernelModel()
    setattr(model, detector.lower(), {"gamma": np.asarray(gamma, np.float64), "zeta": np.asarray(zeta, np.float64)})
    meta = model.meta
    meta.telescope, meta.instrument.name, meta.instrument.detector = "JWST", "NIRCAM", detector.upper()
    meta.useafter, meta.author = "2022-01-01T00:00:00", "webbflow simulator"
    meta.pedigree, meta.description = "SIMULATION", f"webbflow SIRS kernel (simulator 1/f model) for {detector}"
    meta.filename = path.name
    with atomic_output(path) as tmp:
        model.save(str(tmp))
    model.close()
    return path


def write_truth(outdir, rootname, rate, deposits, first_saturated, meta):
    """Write the truth products of one exposure into ``<outdir>/truth``.

    Returns
    -------
    dict
        ``rate``, ``cosmic_rays``, ``snowballs``, ``first_saturated`` -> Path.
    """
    truth = Path(outdir) / "truth"
    header = fits.Header()
    for key, value in meta.items():
        header[key[:8].upper()] = value
    paths = {
        "rate": truth / f"{rootname}_truth_rate.fits",
        "cosmic_rays": truth / f"{rootname}_cosmic_rays.ecsv",
        "snowballs": truth / f"{rootname}_snowballs.ecsv",
        "first_saturated": truth / f"{rootname}_first_saturated.fits",
    }
    h = header.copy()
    h["BUNIT"] = ("DN/s", "true count rate, dark current excluded")
    with atomic_output(paths["rate"]) as tmp:
        fits.PrimaryHDU(rate.astype(np.float32), h).writeto(tmp)
    h = header.copy()
    h["COMMENT"] = "first group (0-based) at or above the saturation threshold; -1 = never"
    with atomic_output(paths["first_saturated"]) as tmp:
        fits.PrimaryHDU(first_saturated.astype(np.int16), h).writeto(tmp)
    table = Table({
        "x": deposits.x.astype(np.int32), "y": deposits.y.astype(np.int32),
        "integration": deposits.integration.astype(np.int32),
        "group": deposits.group.astype(np.int32),
        "amplitude": deposits.amplitude.astype(np.float64),
        "frame": deposits.frame.astype(np.int32), "time": deposits.time.astype(np.float64),
        "kind": deposits.kind.astype(str),
    })
    table["amplitude"].unit = "DN"
    table["time"].unit = "s"
    table.meta.update(meta)
    table.meta["comments"] = ["0-based x, y, integration, group (first group showing the hit);"
                              " amplitude = deposited charge in linear DN"]
    write_ecsv(paths["cosmic_rays"], table)
    events = Table({n: np.asarray(deposits.snowballs[n], np.int32 if n in ("integration", "group", "frame")
                                  else np.float64) for n in SNOWBALL_FIELDS})
    for n, unit in (("time", "s"), ("x", "pix"), ("y", "pix"), ("r_core", "pix"), ("halo_amplitude", "DN"),
                    ("halo_radius", "pix")):
        events[n].unit = unit
    events.meta.update(meta)
    events.meta["comments"] = ["one row per snowball: 0-based integration, first group showing it, core centre"
                               " (x, y: pixel centres are integers) and radius, halo amplitude at the core's edge"
                               " and the radius where it falls to the faintest deposit written; its pixels are"
                               " the kind == snowball rows of the cosmic_rays table"]
    write_ecsv(paths["snowballs"], events)
    return paths


def write_table(path, table):
    """Write an astropy table as ECSV atomically."""
    write_ecsv(path, table)
    return Path(path)


def write_pointing_truth(outdir, rows):
    """``<outdir>/truth/pointing.ecsv``: one row per exposure with its injected pointing error.

    Parameters
    ----------
    rows : list of dict
        ``rootname``, ``filter``, ``detector``, ``dither``, ``dra_arcsec``
        (true - commanded RA × cos Dec), ``ddec_arcsec``, ``droll_deg`` (true - commanded
        V3 position angle), and the commanded and
        true RA_REF/DEC_REF of the exposure's aperture (deg).
    """
    table = Table(rows=rows, names=list(rows[0])) if rows else Table()
    for col in ("dra_arcsec", "ddec_arcsec"):
        if col in table.colnames:
            table[col].unit = "arcsec"
    if "droll_deg" in table.colnames:
        table["droll_deg"].unit = "deg"
    table.meta["comments"] = ["pointing error = true - commanded attitude; the headers carry the "
                              "commanded one"]
    return write_table(Path(outdir) / "truth" / "pointing.ecsv", table)
