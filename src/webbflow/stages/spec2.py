"""Stage 2 for grism time series (calwebb_spec2 on NRC_TSGRISM): ``rateints`` → ``calints`` + ``x1dints``.

jwst 3.0's order for grisms: assign_wcs → flat_field → extract_2d → srctype → photom → extract_1d,
in memory on one segment's arrays.  Every reference and keyword is read and checked before the
first step; both products are written atomically at the end.

What differs from jwst, on purpose: nothing by default.  ``photom.skip`` (the NIRCam team's
choice for relative measurements: the response and dispersion terms only add noise to a light
curve) and ``extract_2d.tsgrism_extract_height`` are config lines.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np

from webbflow.config import SPEC2_STEPS
from webbflow.provenance import reference_names, stage_provenance
from webbflow.io import unvalidated
from webbflow.io.cal import load_distortion, load_flat, load_photom
from webbflow.io.errors import InputError, ReferenceFileError
from webbflow.io.spec import (CalintsStream, CubeReader, X1dintsStream, load_specwcs, load_wavelengthrange,
                              read_rateints, tso_spec, x1d_rows)
from webbflow.ramp import StepStatus
from webbflow.refs.check import check_exposure_geometry
from webbflow.steps import assign_wcs, extract_1d, extract_2d, flat_field, photom

__all__ = ["MAX_MEMORY_MB", "SPEC2_STEPS", "STEP_REFTYPES", "ints_per_chunk", "run"]

log = logging.getLogger(__name__)

STEP_REFTYPES = {"assign_wcs": ("specwcs", "distortion"), "flat_field": ("flat",),
                 "extract_2d": ("wavelengthrange",), "srctype": (), "photom": ("photom",),
                 "extract_1d": ("extract1d",)}
"""Reference types each step reads (distortion only places the source for SOURCEXP; optional)."""

_OPTIONAL = {"distortion"}


def _check_references(path, model, references, params):
    missing = []
    for step in SPEC2_STEPS:
        if params[step].get("skip"):
            continue
        missing += [t for t in STEP_REFTYPES[step] if t not in _OPTIONAL and not references.get(t)]
    if missing:
        inst = model.meta.instrument
        raise ReferenceFileError(
            path, f"no {', '.join(missing)} reference for DETECTOR={inst.detector} FILTER={inst.filter} "
            f"PUPIL={inst.pupil} SUBARRAY={model.meta.subarray.name}",
            "set references.dir to a folder holding them, name them with overrides.<reftype>, "
            "or skip the step with steps.<step>.skip: true")


def _source_xpos(model, distortion):
    """SOURCEXP as jwst's ``compute_tso_offset_center``: the distortion's inverse at the offset V2/V3."""
    w = model.meta.wcsinfo
    xref = float(w.siaf_xref_sci)
    if distortion is None or w.v2_ref is None or w.v3_ref is None:
        return xref - 1.0
    x_off = float(model.meta.dither.x_offset or 0.0)
    y_off = float(model.meta.dither.y_offset or 0.0)
    angle = np.deg2rad(float(w.v3yangle or 0.0))
    parity = float(w.vparity or -1)
    v2 = w.v2_ref + parity * x_off * np.cos(angle) + y_off * np.sin(angle)
    v3 = w.v3_ref - parity * x_off * np.sin(angle) + y_off * np.cos(angle)
    try:
        x, _ = distortion.inverse(v2, v3)
    except NotImplementedError:
        return xref - 1.0
    return float(x)


def _slit_sky(model, distortion):
    """SLIT_RA/SLIT_DEC: jwst evaluates the TSGRISM WCS, whose direct-image position is the constant
    (XREF_SCI, YREF_SCI) taken as 0-based full-frame pixels, through the imaging distortion and pointing."""
    if distortion is None:
        return None, None
    w = model.meta.wcsinfo
    try:
        wcs = assign_wcs.build_wcs(distortion, assign_wcs.model_pointing(model), (1, 1), (2048, 2048))
        ra, dec = wcs(float(w.siaf_xref_sci), float(w.siaf_yref_sci))
    except ValueError as exc:
        log.warning("no SLIT_RA/SLIT_DEC: %s", exc)
        return None, None
    return (None, None) if not (np.isfinite(ra) and np.isfinite(dec)) else (float(ra), float(dec))


def _cutout_wcs(model, dispersion, distortion, sci, ymin, shape, order):
    """The calints' gwcs as jwst builds it (None without a distortion or the pointing: the
    wavelengths do not need it, only SLIT_RA/SLIT_DEC and jwst's own tso3 do)."""
    if distortion is None:
        return None
    w = model.meta.wcsinfo
    try:
        return assign_wcs.tsgrism_wcs(dispersion, distortion, assign_wcs.model_pointing(model),
                                      (sci["xstart"], sci["ystart"]), (w.siaf_xref_sci, w.siaf_yref_sci),
                                      (ymin, shape), order, _float_or_none(w.velosys))
    except ValueError as exc:
        log.warning("calints without a gwcs: %s", exc)
        return None


def _float_or_none(value):
    return None if value is None else float(value)


MAX_MEMORY_MB = 64
"""Working set of one chunk of integrations (MB): a segment is calibrated, extracted and written a
chunk at a time, so the peak memory does not grow with NINTS."""

_BYTES_PER_PIXEL = 48
"""Bytes per pixel of an integration while a chunk is calibrated: six float32 cubes, the file's
big-endian read buffer, flat_field's and extract_1d's temporaries."""


def ints_per_chunk(shape, max_memory_mb=MAX_MEMORY_MB):
    """Integrations per chunk for cubes of ``shape`` (nints, ny, nx) within ``max_memory_mb``."""
    nints, ny, nx = shape
    return int(max(1, min(nints, max_memory_mb * 2**20 // (_BYTES_PER_PIXEL * ny * nx))))


# the calints and x1dints trees are valid by construction (the rateints' validated metadata, our gwcs,
# arrays and statuses): asdf writes them unvalidated, in validation's key order (the same bytes)
@unvalidated.ordered_writes()
def run(rateints_path, calints_path, x1dints_path, references, params, provenance=None,
        max_memory_mb=MAX_MEMORY_MB):
    """Calibrate and extract one grism time-series segment.

    Every step works on each integration alone (flat_field, the extract_2d rows, photom, the box
    extraction), so the segment is read, calibrated, extracted and written in chunks of integrations
    (``max_memory_mb``); the products are those of the whole segment at once.  Optimal extraction
    builds its profile from all integrations: the segment is then one chunk.

    Parameters
    ----------
    rateints_path, calints_path, x1dints_path : path-like
    references : dict
        reftype -> path: specwcs, wavelengthrange, flat, photom, extract1d (required unless their step
        is skipped), distortion (optional: only SOURCEXP uses it).
    params : dict
        step -> {parameter: value} for :data:`SPEC2_STEPS`; ``skip: true`` skips a step.
        ``extract_2d.tsgrism_extract_height`` (None: the subarray height);
        ``extract_1d``: ``subtract_background``, ``bkg_fit``, ``bkg_order``, ``smoothing_length``,
        ``method`` (``box``, jwst's, or ``optimal``) and ``optimal_sigma``.
    provenance : dict, optional
    max_memory_mb : float
        Working set of one chunk of integrations (:func:`ints_per_chunk`).

    Returns
    -------
    dict
        step -> status.

    Raises
    ------
    webbflow.io.InputError
        Unreadable or wrong input, missing or mismatched references; nothing is written then.
    """
    t0 = time.perf_counter()
    params = {s: dict(params.get(s) or {}) for s in SPEC2_STEPS}
    references = {t: (str(p) if p else None) for t, p in (references or {}).items()}
    model, _ = read_rateints(rateints_path, cubes=False)
    try:
        _check_references(rateints_path, model, references, params)
        inst, sub, w = model.meta.instrument, model.meta.subarray, model.meta.wcsinfo
        nints, ny, nx = model.data.shape
        check_exposure_geometry(rateints_path, {"SUBSIZE1": sub.xsize, "SUBSIZE2": sub.ysize}, (ny, nx))
        if str(inst.pupil).upper() != "GRISMR":
            raise InputError(rateints_path, f"PUPIL={inst.pupil!r}: jwst 3.0 builds TSGRISM wavelengths for "
                             "GRISMR only", "give a GRISMR time series")
        if w.siaf_xref_sci is None or w.siaf_yref_sci is None:
            raise InputError(rateints_path, "XREF_SCI or YREF_SCI missing from the SCI header: the source "
                             "position sets every wavelength", "reduce the uncal from MAST again with detector1")
        try:
            reader = CubeReader(rateints_path)
        except ValueError as exc:
            raise InputError(rateints_path, f"cannot be read a chunk of integrations at a time ({exc})",
                             "give the *_rateints.fits written by detector1") from None
        sci = {"shape": (ny, nx), "xstart": int(sub.xstart or 1), "ystart": int(sub.ystart or 1),
               "detector": inst.detector}
        log.info("%s: %s %s/%s %s %d x %dx%d", Path(rateints_path).name, inst.detector, inst.filter, inst.pupil,
                 sub.name, nints, ny, nx)
        statuses, used = {}, {}

        # assign_wcs: the wavelength of every column (GRISMR: λ does not change down a column)
        if params["assign_wcs"].get("skip"):
            raise InputError(rateints_path, "assign_wcs cannot be skipped for a grism time series",
                             "remove steps.assign_wcs.skip")
        dispersion = load_specwcs(references["specwcs"], sci)
        orders, limits = load_wavelengthrange(references["wavelengthrange"], inst.filter)
        order = orders[0]
        try:
            wave = assign_wcs.tsgrism_wavelength(dispersion, float(w.siaf_xref_sci), float(w.siaf_yref_sci),
                                                 sci["xstart"], nx, order, _float_or_none(w.velosys))
        except ValueError as exc:
            raise ReferenceFileError(references["specwcs"], str(exc), "name the GRISMR SPECWCS of this "
                                     "filter with overrides.specwcs") from None
        distortion = load_distortion(references["distortion"], sci) if references.get("distortion") else None
        statuses["assign_wcs"] = StepStatus.COMPLETE
        used.update(specwcs=references["specwcs"], distortion=references.get("distortion"))
        log.info("assign_wcs    %s  order %d, %.4f-%.4f um over the columns", statuses["assign_wcs"], order,
                 np.nanmin(wave), np.nanmax(wave))

        # every reference read and checked before the first integration is calibrated
        flat = None
        if not params["flat_field"].get("skip"):
            flat = load_flat(references["flat"], sci)
            used["flat"] = references["flat"]
        ymin, ymax = 0, ny - 1
        if not params["extract_2d"].get("skip"):
            ymin, ymax = extract_2d.tsgrism_rows(params["extract_2d"].get("tsgrism_extract_height"), ny)
            used["wavelengthrange"] = references["wavelengthrange"]
        ny_cut = ymax - ymin + 1
        wavelength = np.broadcast_to(wave.astype(np.float32), (ny_cut, nx)).copy()
        statuses["srctype"] = StepStatus.COMPLETE  # every TSO source is POINT (jwst srctype)
        phot, pixar_sr, conv = {}, None, None
        if params["photom"].get("skip"):
            statuses["photom"] = StepStatus.SKIPPED
        else:
            table, pixar_sr, pixar_a2 = load_photom(references["photom"], sci)
            used["photom"] = references["photom"]
            conv, no_cal, photmjsr = photom.grism_conversion(table, inst.filter, inst.pupil, order, wavelength)
            if conv is None:
                log.warning("photom: no PHOTOM row for FILTER=%s PUPIL=%s order %d; data left in DN/s",
                            inst.filter, inst.pupil, order)
                statuses["photom"] = StepStatus.SKIPPED
                pixar_sr = None
            else:
                phot = {"conversion_megajanskys": photmjsr, "conversion_microjanskys": photmjsr * photom.MJSR_TO_UJA2,
                        "pixelarea_steradians": pixar_sr, "pixelarea_arcsecsq": pixar_a2}
        if params["extract_1d"].get("skip"):
            raise InputError(rateints_path, "extract_1d cannot be skipped: x1dints is this stage's product",
                             "remove steps.extract_1d.skip")
        ref = extract_1d.read_extract1d_json(references["extract1d"])
        overrides = {k: params["extract_1d"].get(k) for k in ("subtract_background", "bkg_fit", "bkg_order",
                                                               "smoothing_length")}
        method = params["extract_1d"].get("method") or "box"
        try:
            aperture = extract_1d.aperture_from_reference(ref, (nints, ny_cut, nx), order, **overrides)
        except ValueError as exc:
            raise ReferenceFileError(references["extract1d"], f"extract1d reference does not fit the cutout "
                                     f"({exc})", "name one whose aperture lies on the trace with "
                                     "overrides.extract1d") from None
        used["extract1d"] = references["extract1d"]
        ref_files = {t: used.get(t) for t in ("specwcs", "distortion", "flat", "wavelengthrange", "photom",
                                             "extract1d")}
        provenance = stage_provenance(params, provenance, references=reference_names(used))
        cut = {"ystart": ymin, "wavelength": wavelength, "order": order,
               "source_xpos": _source_xpos(model, distortion), "source_ypos": extract_2d.EXTRACT_Y_CENTER,
               "wcs": _cutout_wcs(model, dispersion, distortion, sci, ymin, (ny_cut, nx), order)}

        step = nints if method == "optimal" else ints_per_chunk((nints, ny, nx), max_memory_mb)
        if step < nints:
            log.info("spec2: %d integrations a chunk (max_memory_mb %g)", step, max_memory_mb)
        slit_ra, slit_dec = _slit_sky(model, distortion)
        extent, calints, x1dints = None, None, None
        try:
            for i0 in range(0, nints, step):
                i1 = min(nints, i0 + step)
                first = i0 == 0
                arrays = reader.read(i0, i1)
                if flat is not None:
                    statuses["flat_field"] = flat_field.run(arrays, *flat)
                else:
                    statuses["flat_field"] = StepStatus.SKIPPED
                if params["extract_2d"].get("skip"):
                    statuses["extract_2d"] = StepStatus.SKIPPED
                else:
                    arrays = extract_2d.cutout(arrays, ymin, ymax)
                    statuses["extract_2d"] = StepStatus.COMPLETE
                if conv is not None:
                    statuses["photom"] = photom.run(arrays, conv, no_cal)
                if first:
                    log.info("flat_field    %s", statuses["flat_field"])
                    log.info("extract_2d    %s  rows %d-%d of %d (lambda %.3f-%.3f um in the reference)",
                             statuses["extract_2d"], ymin, ymax, ny, *limits[order])
                    log.info("photom        %s", statuses["photom"])
                try:
                    columns, extent_i = extract_1d.extract(
                        arrays, wavelength, aperture, method=method,
                        optimal_sigma=params["extract_1d"].get("optimal_sigma", 5.0),
                        pixar_sr=pixar_sr if statuses["photom"] == "COMPLETE" else None,
                        progress_every=100 if nints >= 500 and step == nints else 0)
                except ValueError as exc:
                    raise ReferenceFileError(references["extract1d"], f"extract1d reference does not fit the "
                                             f"cutout ({exc})", "name one whose aperture lies on the trace "
                                             "with overrides.extract1d") from None
                extent = extent if extent is not None else extent_i
                statuses["extract_1d"] = StepStatus.COMPLETE
                if calints is None:  # the statuses are known now: lay the products out
                    calints = CalintsStream(calints_path, model, (nints, ny_cut, nx), arrays.var_flat is not None,
                                            cut, cal_steps=statuses, ref_files=ref_files, photometry=phot,
                                            provenance=provenance).__enter__()
                    flux_unit = "Jy" if statuses["photom"] == "COMPLETE" else "DN/s"
                    extent.update(source_xpos=cut["source_xpos"], source_ypos=cut["source_ypos"], slit_ra=slit_ra,
                                  slit_dec=slit_dec)
                    # x1dints (18 float64 vectors per integration) grows with NINTS: its rows are written
                    # a chunk at a time into the table laid out whole
                    layout = tso_spec(model, {k: v[:1] for k, v in columns.items()}, order=order,
                                      flux_unit=flux_unit, extraction=extent)
                    ncols = columns["FLUX"].shape[1]
                    try:
                        x1dints = X1dintsStream(x1dints_path, model, [layout], [nints], cal_steps=statuses,
                                                ref_files=ref_files, provenance=provenance).__enter__()
                    finally:
                        layout.close()
                calints.write_ints(i0, arrays)
                x1dints.write_rows(0, i0, x1d_rows(model, columns, i0))
                if step < nints and (i1 // step) % max(1, 500 // step) == 0:
                    log.info("spec2: %d of %d integrations done", i1, nints)
                arrays = columns = None
            log.info("extract_1d    %s  %d integrations x %d columns", statuses["extract_1d"], nints, ncols)
            x1dints, done = None, x1dints
            done.__exit__(None, None, None)
        except BaseException:
            for stream in (x1dints, calints):
                if stream is not None:
                    stream.__exit__(*sys.exc_info())  # removes the partial product
            raise
        try:
            calints.__exit__(None, None, None)
        except BaseException:
            Path(x1dints_path).unlink(missing_ok=True)  # never one product without the other
            raise
    finally:
        model.close()
    log.info("spec2 done in %.2f s: %s, %s", time.perf_counter() - t0, Path(calints_path).name,
             Path(x1dints_path).name)
    return statuses
