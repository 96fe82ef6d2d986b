"""Stage 3 for grism time series (calwebb_tso3): one exposure's segments → crfints, x1dints, whtlt.

As jwst 3.0's Tso3Pipeline for NRC_TSGRISM, per association (the segments of one exposure, or the
exposures of one observation and optical path): outlier_detection in time ("tso" mode: rolling
median over ``rolling_window_width`` integrations) on each member's calints → ``crfints``;
extract_1d on each → its spectra, one EXTRACT1D table per segment in one ``x1dints`` whose INT_TIMES
has a row per integration of the exposure; white_light → ``whtlt.ecsv`` (band-summed flux against
MJD_UTC and BJD_TDB, ``number_of_integrations`` in its meta).

Members may be our calints or jwst's (with its gwcs); the products are written atomically, and a
member that fails leaves nothing of the association's products.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from pathlib import Path

import astropy.units as u
import numpy as np

from webbflow.config import TSO3_STEPS
from webbflow.provenance import reference_names, stage_provenance
from webbflow.io import unvalidated
from webbflow.io.cal import CalArrays, open_product, write_model
from webbflow.io.errors import InputError, ReferenceFileError
from webbflow.io.files import write_ecsv
from webbflow.io.spec import X1dintsStream, X1dRowSpool, member_header, tso_spec, x1d_rows
from webbflow import dqflags
from webbflow.ramp import StepStatus
from webbflow.steps import extract_1d, outlier_detection, trace, white_light

__all__ = ["TSO3_STEPS", "read_calints", "run", "run_photometry"]

log = logging.getLogger(__name__)


def read_calints(path, imaging=False, cubes=True):
    """Open a time-series ``calints``: grism (SlitModel with WAVELENGTH) or imaging (CubeModel).

    Parameters
    ----------
    path : path-like
    imaging : bool
        An imaging time series' calints (NRC_TSIMAGE, image2's CubeModel) instead of a grism one.
    cubes : bool
        False: the cubes are not read (placeholders of their shape that take no memory; read them with
        :class:`webbflow.io.spec.CubeReader`), and ``arrays`` is None.

    Returns
    -------
    model : stdatamodels SlitModel or CubeModel
        The product (caller closes it).
    arrays : CalArrays
        Its arrays, float32 (``dq`` uint32, ``var_flat`` included): the model's own, not copies, so a
        segment is held once; the stage changes them in place (and the crfints is written from them).

    Raises
    ------
    InputError
        Missing file, not a 3-D SlitModel with a wavelength array (CubeModel when ``imaging``) and
        INT_TIMES.
    """
    from stdatamodels.jwst import datamodels

    def check(model):
        if imaging:
            if not isinstance(model, datamodels.CubeModel) or model.data.ndim != 3:
                return (f"is a {type(model).__name__}, not a 3-D CubeModel calints",
                        "give the *_calints.fits of an imaging time series (image2 on its rateints)")
        elif not isinstance(model, datamodels.SlitModel) or model.data.ndim != 3:
            return (f"is a {type(model).__name__} {getattr(model, 'data', np.empty(0)).ndim}-D, not a 3-D "
                    "SlitModel calints", "give the *_calints.fits of a grism time series")
        elif model.wavelength is None or not np.isfinite(model.wavelength).any():
            return ("has no WAVELENGTH array", "give a calints written by spec2 (extract_2d computes it)")
        if model.int_times is None or len(model.int_times) == 0:
            return ("has no INT_TIMES table", "reduce the segment again with detector1 and "
                    + ("image2" if imaging else "spec2"))
        return None

    # a calints (image2's or spec2's, ours or jwst's: written by stdatamodels) is opened without
    # stdatamodels' per-value schema check and asdf's validation of its tree
    # (:func:`webbflow.io.unvalidated.open_model`): neither changes the model read from a valid
    # product, and its later assignments (outlier_detection's arrays, the step status) are the
    # model's own arrays and valid values
    model = open_product(path, "calints", "image2" if imaging else "spec2", check,
                         native=True if cubes else "lazy", validate=False)
    return model, (CalArrays.from_model(model, var_flat=True, share=True) if cubes else None)


MAX_MEMORY_MB = 256
"""A member whose cubes (and outlier_detection's work arrays) need more than this (MB) is reduced in
bounded memory (:func:`_streamed_member`); smaller ones are read whole."""

_BYTES_PER_PIXEL = 48
"""Bytes per pixel and integration while a member is reduced whole, or a block of it: six float32
cubes, outlier_detection's median and masked copy, extract_1d's temporaries."""


def _member_shape(path):
    from astropy.io import fits

    try:
        h = fits.getheader(path, "SCI")
        return (int(h["NAXIS3"]), int(h["NAXIS2"]), int(h["NAXIS1"])) if h.get("NAXIS") == 3 else None
    except (OSError, KeyError):
        return None  # read_calints says what is wrong


def _streamed_member(member, model, crf_path, od, extract, trace_columns):
    """One member in bounded memory: outlier_detection by blocks of rows (each pixel's every
    integration; the weight threshold decided on the whole cube, as in memory) written into the
    crfints in place, then extract_1d (``extract(arrays, i0)`` -> extent; it keeps the spectra of
    integrations ``i0 ..``) and the trace's profiles on chunks of integrations read back.  Returns
    (crfints path or None, extent, profiles or None); the products are those of the whole member
    at once."""
    from webbflow.dqflags import good_pixel_mask
    from webbflow.io.spec import CubeReader, cube_stream

    reader = CubeReader(member)
    nints, ny, nx = reader.shape
    budget = MAX_MEMORY_MB * 2**20 / _BYTES_PER_PIXEL
    rows = int(max(1, min(ny, budget // (nints * nx))))
    step = int(max(1, min(nints, budget // (ny * nx))))
    stream, source = None, reader
    try:
        if not od.get("skip"):
            snr = od.get("snr", (5.0, 4.0))
            snr = tuple(float(v) for v in (snr.split() if isinstance(snr, str) else snr))
            any_good = any(good_pixel_mask(reader.read_rows(r, min(ny, r + rows), ("dq",)).dq,
                                           ~np.uint32(dqflags.DO_NOT_USE)).any() for r in range(0, ny, rows))
            threshold = (outlier_detection.compute_weight_threshold(np.ones(1, np.float32), float(od.get("maskpt", 0.7)))
                         if any_good else 0.0)
            model.meta.cal_step.outlier_detection = "COMPLETE"
            stream = cube_stream(model, crf_path, (nints, ny, nx)).__enter__()
            flagged = 0
            step_log = logging.getLogger(outlier_detection.__name__)
            level = step_log.level
            step_log.setLevel(logging.WARNING)  # one count for the member below, not one per block
            try:
                for r in range(0, ny, rows):
                    block = reader.read_rows(r, min(ny, r + rows))
                    flagged += outlier_detection.tso_outlier_detection(
                        block, maskpt=float(od.get("maskpt", 0.7)),
                        rolling_window_width=int(od.get("rolling_window_width", 25)), snr=snr, nints=nints,
                        weight_threshold=threshold)
                    stream.write_rows(r, block)
            finally:
                step_log.setLevel(level)
            log.info("outlier_detection  %d pixels flagged (blocks of %d rows)", flagged, rows)
            source = CubeReader(stream.tmp)
        profiles, extent = [], None
        for i0 in range(0, nints, step):
            arrays = source.read(i0, min(nints, i0 + step))
            extent_i = extract(arrays, i0)
            extent = extent_i if extent is None else extent
            if trace_columns is not None:
                profiles.append(trace.collapsed_profiles(arrays.data, arrays.dq, trace_columns(extent)))
            arrays = None
    except BaseException:
        if stream is not None:
            stream.__exit__(*sys.exc_info())
        raise
    if stream is not None:
        stream.__exit__(None, None, None)
    return (Path(crf_path) if stream is not None else None), extent, \
        (np.concatenate(profiles) if trace_columns is not None else None)


def _outliers(model, arrays, od, crf_path=None):
    """outlier_detection in time (jwst's "tso" mode) on one member, in place; writes its crfints
    (at ``crf_path``; None: the caller writes it later with :func:`_write_crfints`)."""
    snr = od.get("snr", (5.0, 4.0))
    snr = tuple(float(v) for v in (snr.split() if isinstance(snr, str) else snr))
    flagged = outlier_detection.tso_outlier_detection(
        arrays, maskpt=float(od.get("maskpt", 0.7)),
        rolling_window_width=int(od.get("rolling_window_width", 25)), snr=snr)
    log.info("outlier_detection  %d pixels flagged", flagged)
    with unvalidated.assignments(model):
        model.meta.cal_step.outlier_detection = "COMPLETE"
    if crf_path is None:
        return None
    _assign(model, arrays)
    write_model(model, crf_path)
    return Path(crf_path)


def _assign(model, arrays):
    """Give ``model`` the arrays of ``arrays``: its own (read_calints shares them, perhaps as
    big-endian views), float32/uint32 of its shape, so valid by construction and not validated
    again (~0.03 s CPU a grism segment)."""
    with unvalidated.assignments(model):
        for name in ("data", "dq", "err", "var_poisson", "var_rnoise", "var_flat"):
            value = getattr(arrays, name)
            if value is not None:
                setattr(model, name, value)


def _write_crfints(model, arrays, crf_path):
    """Write a member's crfints once the stage is done with its arrays (outlier_detection ran on
    them: :func:`_outliers` without a path).  The float cubes are byte-swapped in place to FITS
    order first (:func:`webbflow.io.cal.fits_order`): astropy then neither swaps each cube for its
    DATASUM and for its write nor swaps it back (four passes over each cube less, ~0.05 s CPU a
    SUBGRISM64 segment of 20 integrations); the file is the same.  ``arrays`` then hold the
    big-endian views (the same values)."""
    from webbflow.io.cal import fits_order

    for name in ("data", "err", "var_poisson", "var_rnoise", "var_flat"):
        value = getattr(arrays, name)
        if value is not None:
            setattr(arrays, name, fits_order(value))
    _assign(model, arrays)
    write_model(model, crf_path)
    return Path(crf_path)


def _freeze_older_objects():
    """Leave what this process held before the stage (the imports, asdf's and stdatamodels' caches:
    ~240,000 objects) out of the per-member collections (``gc.freeze``): a full collection costs
    ~0.1 s CPU for them alone, and only the members' models are garbage.  True when this froze them
    (then ``gc.unfreeze()`` when done, so that a long-lived process collects them again); False when
    the caller had frozen objects already (a job server's child: they stay frozen)."""
    if gc.get_freeze_count():
        return False
    gc.freeze()
    return True


def _metadata_only(model):
    """The first member's primary-header metadata and INT_TIMES, all that the association's products
    take from it, in a new model; the member itself (cubes, file) is closed and let go."""
    keep = type(model)()
    keep.update(model, only="PRIMARY")
    keep.int_times = model.int_times.copy()
    model.close()
    return keep


def _exposure_int_times(first, members_times):
    """INT_TIMES with a row per integration of the exposure (NINTS), each member's rows at number − 1."""
    nints = int(first.meta.exposure.nints or sum(len(t) for t in members_times))
    template = np.asarray(first.int_times)
    table = np.zeros(nints, template.dtype)
    for times in members_times:
        for row in np.asarray(times):
            k = int(row["integration_number"]) - 1
            if not 0 <= k < nints:
                raise ValueError(f"INT_TIMES integration_number {k + 1} is outside 1..NINTS={nints}")
            table[k] = row
    return table


def _blend(first, members_meta):
    """Exposure-level keywords over the segments, as jwst's ModelBlender does for these three."""
    exp = first.meta.exposure
    ends = [m["integration_end"] for m in members_meta if m["integration_end"] is not None]
    if ends:
        exp.integration_end = max(ends)
    for key in ("duration", "exposure_time"):
        values = [m[key] for m in members_meta if m[key] is not None]
        if values:
            setattr(exp, key, float(sum(values)))


def _slit_sky(model, aperture_rows):
    """SLIT_RA/SLIT_DEC from a member's gwcs (jwst's calints have one) at the aperture's centre; else None."""
    wcs = getattr(model.meta, "wcs", None)
    if wcs is None:
        return None, None
    try:
        y = float(np.mean(aperture_rows))
        ra, dec = wcs(model.data.shape[-1] / 2.0, y)[:2]
    except Exception:  # noqa: BLE001 - a WCS that cannot be evaluated only loses two keywords
        return None, None
    return (float(ra), float(dec)) if np.isfinite(ra) and np.isfinite(dec) else (None, None)


def _write_trace(path, whtlt, traces, meta):
    """``<product>_trace.ecsv``: the white-light times and the trace's row and width per integration."""
    from astropy.table import Table

    table = Table()
    for name in ("MJD_UTC", "BJD_TDB"):
        table[name] = whtlt[name]
    for key, name, unit in (("y", "trace_y", "pix"), ("y_err", "trace_y_err", "pix"),
                            ("width", "trace_width", "pix"), ("width_err", "trace_width_err", "pix")):
        table[name] = np.concatenate([t[key] for t in traces]) * u.pix
    table.meta.update(meta)
    table.meta["comments"] = ["trace_y: 0-based row of the cutout (extract_2d keeps rows from 0, so also of the "
                              "subarray) of a Gaussian fit to the spectrum collapsed over the extraction columns; "
                              "trace_width: its sigma (webbflow, not jwst)"]
    write_ecsv(path, table)


# the crfints and the x1dints are trees valid by construction (validated members' metadata, this
# stage's arrays and statuses): asdf writes them unvalidated, in validation's key order (the same bytes)
@unvalidated.ordered_writes()
def run(members, crfints_paths, x1dints_path, whtlt_path, references, params, provenance=None, asn=None,
        trace_path=None):
    """Reduce one TSO association: outlier_detection, extract_1d, white_light (and the trace's drift).

    Parameters
    ----------
    members : sequence of path-like
        The calints of the association's segments, in segment order.
    crfints_paths : sequence of path-like
        One ``crfints`` per member.
    x1dints_path, whtlt_path : path-like
        The association's products (level-3 names).
    references : dict
        ``extract1d`` -> the EXTRACT1D JSON.
    params : dict
        step -> {parameter: value} for ``outlier_detection`` (``maskpt``, ``rolling_window_width``,
        ``snr``, ``skip``), ``extract_1d`` (as in spec2) and ``white_light`` (``min_wavelength``,
        ``max_wavelength``).
    provenance : dict, optional
    asn : dict, optional
        ``asn_pool`` and ``asn_table`` recorded in x1dints (ASNPOOL, ASNTABLE).
    trace_path : path-like, optional
        Also write ``<product>_trace.ecsv`` (not in jwst): the trace's row and Gaussian width per
        integration (:func:`webbflow.steps.trace.trace_positions` on the crfints, over the
        extraction columns), for decorrelating the light curves against the pointing.

    Returns
    -------
    dict
        step -> status.

    Raises
    ------
    webbflow.io.InputError
        A member that cannot be read or does not fit the others; nothing is written then.
    """
    t0 = time.perf_counter()
    params = {s: dict(params.get(s) or {}) for s in TSO3_STEPS}
    if len(crfints_paths) != len(members):
        raise ValueError("one crfints path per member is needed")
    if not references.get("extract1d"):
        raise ReferenceFileError(members[0] if members else x1dints_path, "no extract1d reference for tso3",
                                 "set references.dir to a folder holding it or name it with overrides.extract1d")
    ref = extract_1d.read_extract1d_json(references["extract1d"])
    od = params["outlier_detection"]
    ex = params["extract_1d"]
    overrides = {k: ex.get(k) for k in ("subtract_background", "bkg_fit", "bkg_order", "smoothing_length")}
    statuses = {"outlier_detection": StepStatus.SKIPPED if od.get("skip") else StepStatus.COMPLETE}
    specs, series, times, written, first, blend, traces, headers = [], [], [], [], None, [], [], []
    steps = {"outlier_detection": statuses["outlier_detection"], "extract_1d": StepStatus.COMPLETE}
    skipped = ("pixel_replace", "adaptive_trace_model")
    wl = params["white_light"]
    # x1dints: a table of 18 float64 vectors an integration per member, kept on disk until laid out
    spool = X1dRowSpool(x1dints_path).__enter__()
    frozen = _freeze_older_objects()
    try:
        for member, crf_path in zip(members, crfints_paths):
            shape = _member_shape(member)
            streamed = (shape is not None and (ex.get("method") or "box") == "box"
                        and np.prod(shape) * _BYTES_PER_PIXEL > MAX_MEMORY_MB * 2**20)
            model, arrays = read_calints(member, cubes=not streamed)
            member_name = model.meta.filename  # the calints' (HDRTAB), before a crfints is saved from it
            try:
                if first is None:
                    first = model
                    first_shape = model.data.shape[1:]
                elif (model.meta.instrument.filter, model.meta.subarray.name, model.data.shape[1:]) != \
                        (first.meta.instrument.filter, first.meta.subarray.name, first_shape):
                    raise InputError(member, "does not match the association's first member (FILTER, SUBARRAY "
                                     "or cutout shape)", "list the segments of one exposure only")
                log.info("%s: %d integrations%s", Path(member).name, model.data.shape[0],
                         " (in bounded memory)" if streamed else "")
                if od.get("skip"):
                    model.meta.cal_step.outlier_detection = "SKIPPED"  # as jwst records it (S_OUTLIR)
                elif not streamed:
                    _outliers(model, arrays, od)  # its crfints written once the member is extracted
                photom_done = model.meta.cal_step.photom == "COMPLETE"
                order = int(model.meta.wcsinfo.spectral_order or 1)
                wavelength = np.array(model.wavelength, np.float32)
                pixar_sr = model.meta.photometry.pixelarea_steradians if photom_done else None

                kept = {"first": None, "band": [], "mjd": [], "tdb": []}

                def extract(cube, i0=0, model=model, kept=kept):
                    """extract_1d on integrations ``i0 ..`` of the member: their x1dints rows spooled,
                    their white-light sums and times kept; returns the extraction's extent."""
                    columns, extent = extract_1d.extract(cube, wavelength, aperture, method=ex.get("method") or "box",
                                                         optimal_sigma=ex.get("optimal_sigma", 5.0), pixar_sr=pixar_sr)
                    rows = x1d_rows(model, columns, i0)
                    spool.append(len(specs), rows)
                    kept["first"] = kept["first"] or {k: v[:1] for k, v in columns.items()}
                    kept["band"].append(white_light.band_sum(columns["WAVELENGTH"], columns["FLUX"],
                                                             wl.get("min_wavelength"), wl.get("max_wavelength")))
                    kept["mjd"].append(rows["MJD-AVG"])
                    kept["tdb"].append(rows["TDB-MID"])
                    return extent

                def trace_columns(extent):
                    return (slice(None) if extent.get("xstart") is None
                            else slice(extent["xstart"], extent["xstop"] + 1))

                try:
                    aperture = extract_1d.aperture_from_reference(ref, model.data.shape, order, **overrides)
                    if streamed:
                        crf, extent, profiles = _streamed_member(
                            member, model, crf_path, od, extract, trace_columns if trace_path is not None else None)
                        written += [crf] if crf is not None else []
                    else:
                        extent = extract(arrays)
                except ValueError as exc:
                    raise ReferenceFileError(references["extract1d"], f"extract1d reference does not fit the "
                                             f"cutout ({exc})", "name one whose aperture lies on the trace "
                                             "with overrides.extract1d") from None
                slit_ra, slit_dec = _slit_sky(model, (extent["ystart"], extent["ystop"]))
                extent.update(source_xpos=model.source_xpos, source_ypos=model.source_ypos, slit_ra=slit_ra,
                              slit_dec=slit_dec)
                e = model.meta.exposure
                blend.append({"integration_end": e.integration_end, "duration": e.duration,
                              "exposure_time": e.exposure_time})
                flux_unit = "Jy" if photom_done else "DN/s"
                # the layout of its EXTRACT1D table (its rows are spooled)
                specs.append(tso_spec(model, kept["first"], order=order, flux_unit=flux_unit, extraction=extent))
                series.append(white_light.SpectralSeries(np.concatenate(kept["mjd"]), np.concatenate(kept["tdb"]),
                                                         None, None, flux_unit,
                                                         band_flux=np.concatenate(kept["band"])))
                times.append(np.asarray(model.int_times))
                # jwst's HDRTAB row of this member (its extract_1d result's metadata)
                headers.append(member_header(model, filename=member_name, cal_steps=steps,
                                             ref_files={"extract1d": references["extract1d"]},
                                             provenance=provenance, skipped=skipped, asn=asn))
                if trace_path is not None:
                    traces.append(trace.trace_from_profiles(profiles) if streamed else
                                  trace.trace_positions(arrays.data, arrays.dq, trace_columns(extent)))
                if not streamed and not od.get("skip"):
                    written.append(_write_crfints(model, arrays, crf_path))
            finally:
                # this member's cubes are done with (``e`` is a node of its model, which it keeps alive)
                if model is not first:
                    model.close()
                else:
                    first = _metadata_only(first)
                # ``extract`` holds the model as a default argument: dropped too, or this member's cubes
                # would live on beside the next member's until its ``extract`` is defined
                model = arrays = e = extract = None
                # a closed datamodel sits in reference cycles: collect it now, or every member's cubes
                # stay alive until the cyclic collector happens to run and the peak grows with the members
                gc.collect()
        statuses["extract_1d"] = StepStatus.COMPLETE
        log.info("extract_1d         %d segment(s)", len(specs))
        try:
            int_times = _exposure_int_times(first, times)
        except ValueError as exc:
            raise InputError(members[0], str(exc), "list the segments of one exposure only") from None

        provenance = stage_provenance(params, provenance, members=[Path(m).name for m in members],
                                      references=reference_names({"extract1d": references["extract1d"]}))
        _blend(first, blend)
        if asn:
            first.meta.asn.pool_name = asn.get("asn_pool")
            first.meta.asn.table_name = asn.get("asn_table")
        with X1dintsStream(x1dints_path, first, specs, spool.nrows, int_times=int_times, cal_steps=steps,
                           ref_files={"extract1d": references["extract1d"]}, provenance=provenance,
                           skipped=skipped, members=headers) as x1dints:
            spool.write_into(x1dints)
        written.append(Path(x1dints_path))

        # the white-light curve is tso3's product: always written
        meta = {"instrument": first.meta.instrument.name, "exp_type": first.meta.exposure.type,
                "subarray": first.meta.subarray.name, "filter": first.meta.instrument.filter,
                "pupil": first.meta.instrument.pupil, "target_name": first.meta.target.catalog_name}
        table = white_light.white_light(series, wl.get("min_wavelength"), wl.get("max_wavelength"), meta)
        table.meta["number_of_integrations"] = len(table)
        write_ecsv(whtlt_path, table)
        written.append(Path(whtlt_path))
        statuses["white_light"] = StepStatus.COMPLETE
        if trace_path is not None:
            _write_trace(trace_path, table, traces, meta)
            written.append(Path(trace_path))
    except BaseException:
        for path in written:  # nothing of a failed association is left
            path.unlink(missing_ok=True)
        raise
    finally:
        spool.__exit__(None, None, None)
        if first is not None:
            first.close()
        if frozen:
            gc.unfreeze()
    log.info("tso3 done in %.2f s: %s", time.perf_counter() - t0, Path(x1dints_path).name)
    return statuses


def _check_photometry_geometry(path, model, params):
    """Refuse what would give a silently wrong light curve: the planned position (XREF_SCI/YREF_SCI)
    off the subarray, or an aperture that cannot fit in it (SUB64P + WLP8 sums the whole subarray
    and has neither)."""
    from webbflow.steps.tso_photometry import PHOT_DEFAULTS, whole_subarray

    ny, nx = model.data.shape[1:]
    w = model.meta.wcsinfo
    if w.siaf_xref_sci is None or w.siaf_yref_sci is None:
        raise InputError(path, "has no XREF_SCI/YREF_SCI (where target acquisition put the star)",
                         "give a calints written by image2 from an uncal with the SIAF keywords")
    x, y = w.siaf_xref_sci - 1, w.siaf_yref_sci - 1
    if not (0 <= x < nx and 0 <= y < ny):
        raise InputError(path, f"the target (XREF_SCI, YREF_SCI) = ({w.siaf_xref_sci}, {w.siaf_yref_sci}) lies off "
                         f"the {nx}x{ny} subarray {model.meta.subarray.name}",
                         "check the exposure's SIAF keywords (the star must be on the subarray)")
    if whole_subarray(model.meta.instrument.pupil, model.meta.subarray.name) and params.get("whole_subarray", True):
        return
    for key in ("radius", "radius_outer"):
        r = float(params.get(key, PHOT_DEFAULTS[key]))
        if 2 * r > min(nx, ny):
            raise InputError(path, f"steps.tso_photometry.{key} = {r:g} px: the aperture is larger than the "
                             f"{nx}x{ny} subarray {model.meta.subarray.name}",
                             f"set steps.tso_photometry.{key} to at most {min(nx, ny) / 2:g} px")
    inner = float(params.get("radius_inner", PHOT_DEFAULTS["radius_inner"]))
    for r in params.get("radii") or ():
        if float(r) > inner:  # the aperture would take in the annulus that measures its background
            raise InputError(path, f"steps.tso_photometry.radii has {float(r):g} px, beyond radius_inner = {inner:g} px",
                             "list radii up to steps.tso_photometry.radius_inner (or move the annulus out)")


# the crfints are trees valid by construction, as run's: written unvalidated, in validation's key order
@unvalidated.ordered_writes()
def run_photometry(members, crfints_paths, phot_path, references, params, provenance=None):
    """Reduce one imaging TSO association (NRC_TSIMAGE): outlier_detection and tso_photometry.

    As jwst 3.0's Tso3Pipeline for NRC_TSIMAGE: per member (segment) outlier_detection in time →
    ``crfints``, then tso_photometry on it (:mod:`webbflow.steps.tso_photometry`); the members'
    tables stacked → ``<product>_phot.ecsv`` with ``number_of_integrations`` in its meta.

    Parameters
    ----------
    members : sequence of path-like
        The calints (image2 on the rateints) of the association's segments, in segment order.
    crfints_paths : sequence of path-like
        One ``crfints`` per member.
    phot_path : path-like
        The association's ``_phot.ecsv``.
    references : dict
        ``gain`` -> the GAIN reference (DN/s data are converted to electrons with it; MJy/sr data,
        photom done, to Jy without it).
    params : dict
        step -> {parameter: value} for ``outlier_detection`` and ``tso_photometry`` (``radius``,
        ``radius_inner``, ``radius_outer``, ``centroid_source``, ``search_box_width``,
        ``fit_box_width``, ``moving_centroid``, ``skip``; beyond jwst ``centroid_method``,
        ``centroid_radius``, ``background_method``, ``background_sigma``, ``radii``, ``whole_subarray``,
        ``roeba``: :data:`webbflow.steps.tso_photometry.BEYOND_DEFAULTS`).  With ``radii`` the table's
        meta gains ``radius_scan``: the point-to-point rms (ppm) of each radius' normalised light curve.
    provenance : dict, optional
        Accepted as by :func:`run`; the table's meta stays jwst's (the crfints keep the calints'
        provenance keywords).

    Returns
    -------
    dict
        step -> status.

    Raises
    ------
    webbflow.io.InputError
        A member that cannot be read or does not fit the others, the target off the subarray or an
        aperture larger than it (naming the config key); nothing is written then.
    """
    from astropy.table import vstack

    from webbflow.io.cal import load_gain
    from webbflow.steps import tso_photometry

    t0 = time.perf_counter()
    if len(crfints_paths) != len(members):
        raise ValueError("one crfints path per member is needed")
    od = dict(params.get("outlier_detection") or {})
    tp = dict(params.get("tso_photometry") or {})
    statuses = {"outlier_detection": StepStatus.SKIPPED if od.get("skip") else StepStatus.COMPLETE,
                "tso_photometry": StepStatus.SKIPPED if tp.get("skip") else StepStatus.COMPLETE}
    tables, written, first_key = [], [], None
    try:
        for member, crf_path in zip(members, crfints_paths):
            model, arrays = read_calints(member, imaging=True)
            try:
                key = (model.meta.instrument.filter, model.meta.instrument.pupil, model.meta.subarray.name,
                       model.data.shape[1:])
                if first_key is None:
                    first_key = key
                elif key != first_key:
                    raise InputError(member, "does not match the association's first member (FILTER, PUPIL, "
                                     "SUBARRAY or shape)", "list the segments of one exposure only")
                log.info("%s: %d integrations", Path(member).name, arrays.data.shape[0])
                if not tp.get("skip"):
                    _check_photometry_geometry(member, model, tp)
                if not od.get("skip"):
                    written.append(_outliers(model, arrays, od, crf_path))
                if tp.get("skip"):
                    continue
                gain = None
                if model.meta.bunit_data == "DN/s" and references.get("gain"):
                    sci = {"shape": arrays.data.shape[1:], "xstart": int(model.meta.subarray.xstart or 1),
                           "ystart": int(model.meta.subarray.ystart or 1),
                           "detector": model.meta.instrument.detector}
                    gain = load_gain(references["gain"], sci)
                context = tso_photometry.PhotContext.from_model(model, gain)
                try:
                    tables.append(tso_photometry.run(arrays.data, arrays.dq, arrays.err, context, tp))
                except ValueError as exc:
                    raise InputError(member, f"tso_photometry cannot run ({exc})",
                                     "give a calints written by image2 from detector1's rateints") from None
            finally:
                model.close()
        if tables:
            table = vstack(tables)
            table.meta["number_of_integrations"] = len(table)
            radii = [r for r in (tp.get("radii") or ()) if tso_photometry.radius_column(r) in table.colnames]
            if radii:
                scan = tso_photometry.radius_scan(table, radii)
                table.meta["radius_scan"] = scan  # webbflow: the radii side by side (not in jwst)
                best = min(scan, key=lambda row: row["rms_ppm"] if np.isfinite(row["rms_ppm"]) else np.inf)
                log.info("tso_photometry     radius scan (point-to-point rms, ppm): %s; lowest at r = %g px",
                         ", ".join(f"r={row['radius']:g}: {row['rms_ppm']:.0f}" for row in scan), best["radius"])
            write_ecsv(phot_path, table)
            written.append(Path(phot_path))
            log.info("tso_photometry     %d integrations, %s", len(table), table.meta.get("apertures"))
    except BaseException:
        for path in written:  # nothing of a failed association is left
            path.unlink(missing_ok=True)
        raise
    log.info("tso3 done in %.2f s: %s", time.perf_counter() - t0, Path(phot_path).name)
    return statuses
