"""Grism time series, stage 2: read ``rateints`` and the grism references; write ``calints`` and ``x1dints``.

* ``_calints.fits``: a SlitModel with 3-D arrays (integration, row, column), as jwst 3.0 writes
  the extract_2d cutout after photom: SCI/ERR/DQ/VAR_*, WAVELENGTH (2-D), INT_TIMES, the slit
  attributes (XSTART, YSTART, SOURCEXP/SOURCEYP, SPORDER …) and S_*/R_* keywords.
* ``_x1dints.fits``: a TSOMultiSpecModel: INT_TIMES and one EXTRACT1D table with a row per
  integration (INT_NUM, the 18 vector columns, N_ALONGDISP, SEGMENT, MJD/TDB times), as
  jwst's ``make_tso_specmodel`` and ``populate_time_keywords`` fill it.

Both are written atomically; a failure leaves no product.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import webbflow
from webbflow.io.cal import CalArrays, _exposure, _open_fits, _provenance
from webbflow.io.errors import InputError, ReferenceFileError
from webbflow.io.files import atomic_output

__all__ = ["GrismDispersion", "load_specwcs", "load_wavelengthrange", "read_rateints", "tso_spec", "write_calints",
           "write_x1dints", "SPEC2_CAL_STEPS", "X1D_VECTOR_COLUMNS"]

SPEC2_CAL_STEPS = {"assign_wcs": "assign_wcs", "flat_field": "flat_field", "extract_2d": "extract_2d",
                   "srctype": "srctype", "photom": "photom", "extract_1d": "extract_1d"}
"""webbflow step -> ``meta.cal_step`` attribute (S_WCS, S_FLAT, S_EXTR2D, S_SRCTYP, S_PHOTOM, S_EXTR1D)."""

X1D_VECTOR_COLUMNS = ("WAVELENGTH", "FLUX", "FLUX_ERROR", "FLUX_VAR_POISSON", "FLUX_VAR_RNOISE", "FLUX_VAR_FLAT",
                      "SURF_BRIGHT", "SB_ERROR", "SB_VAR_POISSON", "SB_VAR_RNOISE", "SB_VAR_FLAT", "DQ",
                      "BACKGROUND", "BKGD_ERROR", "BKGD_VAR_POISSON", "BKGD_VAR_RNOISE", "BKGD_VAR_FLAT", "NPIXELS")
_SKIPPED_SPEC2 = ("bkg_subtract", "barshadow", "badpix_selfcal", "clean_flicker_noise", "wfss_contam", "fringe",
                  "imprint", "msa_flagging", "pathloss", "straylight")
"""calwebb_spec2 steps that do nothing for NRC_TSGRISM: jwst records them SKIPPED (S_BKDSUB …)."""
_SKIPPED_AFTER_CALINTS = ("pixel_replace", "adaptive_trace_model")
"""…and these two, skipped after calints is written, appear in x1dints only (S_PXREPL, S_TRCMOD)."""
_TIME_COLUMNS = ("MJD-BEG", "MJD-AVG", "MJD-END", "TDB-BEG", "TDB-MID", "TDB-END")
_INT_TIME_COLUMNS = ("int_start_MJD_UTC", "int_mid_MJD_UTC", "int_end_MJD_UTC", "int_start_BJD_TDB",
                     "int_mid_BJD_TDB", "int_end_BJD_TDB")


@dataclass
class GrismDispersion:
    """The dispersion models of a SPECWCS reference (NIRCAMGrismModel): lists over ``orders``."""

    orders: list
    displ: list
    dispx: list
    invdispx: list | None
    dispy: list | None = None


def _asdf_reference(path, reftype, sci, read):
    import asdf

    from webbflow.refs.check import check_reference_meta
    from webbflow.refs.select import asdf_summary

    try:
        with asdf.open(path, lazy_load=False, memmap=False) as af:
            summary = asdf_summary(af.tree)
            value = read(af.tree)
    except FileNotFoundError:
        raise ReferenceFileError(path, f"{reftype} reference not found",
                                 f"check references.dir or overrides.{reftype}") from None
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a deep traceback
        raise ReferenceFileError(path, f"{reftype} reference cannot be read ({exc})",
                                 f"give a NIRCam {reftype.upper()} .asdf with overrides.{reftype}") from None
    check_reference_meta(path, summary, reftype, _exposure(sci, pixels=False))
    return summary, value


def load_specwcs(path, sci=None):
    """SPECWCS reference (ASDF NIRCAMGrismModel) -> :class:`GrismDispersion`."""
    def read(tree):
        missing = [k for k in ("orders", "displ", "dispx") if tree.get(k) is None]
        if missing:
            raise ValueError(f"no {', '.join(missing)} in the tree")
        return GrismDispersion(list(tree["orders"]), list(tree["displ"]), list(tree["dispx"]),
                               list(tree["invdispx"]) if tree.get("invdispx") else None,
                               list(tree["dispy"]) if tree.get("dispy") else None)

    _, dispersion = _asdf_reference(path, "specwcs", sci, read)
    return dispersion


def load_wavelengthrange(path, filter_name):
    """WAVELENGTHRANGE reference -> (orders to extract, {order: (λmin, λmax)}) for ``filter_name``.

    As jwst 3.0's extract_2d: the reference must be for NRC_TSGRISM, rows are
    (order, pupil, filter, λmin, λmax), and only one order may be extracted.
    """
    summary, (ranges, extract_orders) = _asdf_reference(
        path, "wavelengthrange", None, lambda t: (list(t.get("wavelengthrange") or []),
                                                  list(t.get("extract_orders") or [])))
    if str(summary.get("EXP_TYPE") or "").upper() != "NRC_TSGRISM":
        raise ReferenceFileError(path, f"wavelengthrange reference is for EXP_TYPE={summary.get('EXP_TYPE')!r}, "
                                 "not NRC_TSGRISM", "name the TSGRISM one with overrides.wavelengthrange")
    want = filter_name.upper()
    orders = [list(o[1]) for o in extract_orders if str(o[0]).upper() == want]
    if not orders:
        raise ReferenceFileError(path, f"wavelengthrange reference lists no orders for FILTER={want}",
                                 "name one that covers this filter with overrides.wavelengthrange")
    if len(orders[0]) != 1:
        raise ReferenceFileError(path, f"wavelengthrange reference asks for orders {orders[0]}; a grism time "
                                 "series extracts exactly one", "name one with a single order per filter")
    limits = {}
    for row in ranges:
        if len(row) == 5 and str(row[2]).upper() == want:
            limits[int(row[0])] = (float(row[3]), float(row[4]))
    if orders[0][0] not in limits:
        raise ReferenceFileError(path, f"wavelengthrange reference has no (order, pupil, filter, min, max) row "
                                 f"for order {orders[0][0]} of FILTER={want}",
                                 "name a complete one with overrides.wavelengthrange")
    return orders[0], limits


def read_rateints(path):
    """Open a grism time-series ``rateints`` (CubeModel in DN/s).

    Returns
    -------
    model : stdatamodels CubeModel
        The product (caller closes it).
    arrays : CalArrays
        Float32 copies of its 3-D arrays.

    Raises
    ------
    InputError
        Missing file, not a 3-D CubeModel in DN/s, not NRC_TSGRISM, or no INT_TIMES.
    """
    from stdatamodels.jwst import datamodels

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "rateints file not found", "run detector1 first (snakemake makes it)")
    try:
        model = datamodels.open(str(path))
    except Exception as exc:  # noqa: BLE001
        raise InputError(path, f"cannot be opened as a JWST product ({exc})",
                         "give a *_rateints.fits written by detector1") from None
    problem = None
    if not isinstance(model, datamodels.CubeModel) or model.data.ndim != 3:
        problem = (f"is a {type(model).__name__}, not a 3-D CubeModel rateints", "give the *_rateints.fits product")
    elif model.meta.exposure.type != "NRC_TSGRISM":
        problem = (f"EXP_TYPE is {model.meta.exposure.type!r}, not NRC_TSGRISM",
                   "give a grism time-series rateints (imaging ones go to image2)")
    elif model.meta.bunit_data not in (None, "DN/s"):
        problem = (f"BUNIT is {model.meta.bunit_data!r}, expected 'DN/s'", "give an uncalibrated rateints")
    elif model.int_times is None or len(model.int_times) < model.data.shape[0]:
        problem = ("has no INT_TIMES row for every integration", "reduce the uncal again with detector1")
    if problem:
        model.close()
        raise InputError(path, *problem)
    f32 = np.float32
    arrays = CalArrays(data=np.array(model.data, f32), dq=np.array(model.dq, np.uint32),
                       err=np.array(model.err, f32), var_poisson=np.array(model.var_poisson, f32),
                       var_rnoise=np.array(model.var_rnoise, f32))
    return model, arrays


def _set_steps_and_refs(model, cal_steps, ref_files, provenance, skipped=_SKIPPED_SPEC2):
    for step in skipped:
        setattr(model.meta.cal_step, step, "SKIPPED")
    for step, attr in SPEC2_CAL_STEPS.items():
        if (cal_steps or {}).get(step):
            setattr(model.meta.cal_step, attr, cal_steps[step])
    # Files chosen through CRDS are recorded as jwst does (crds://<file>, the context), the rest by name.
    names = (provenance or {}).get("reference_names") or {}
    for reftype, ref in (ref_files or {}).items():
        node = getattr(model.meta.ref_file, reftype, None)
        if node is not None:
            node.name = (names.get(reftype) or Path(ref).name) if ref else "N/A"
    if (provenance or {}).get("crds_context"):
        model.meta.ref_file.crds.context_used = provenance["crds_context"]
        model.meta.ref_file.crds.sw_version = provenance.get("crds_version") or "unknown"
    model.meta.calibration_software_version = webbflow.__version__
    _provenance(model, provenance or {})


def _save(model, path):
    model.meta.filename = Path(path).name
    with atomic_output(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not valid in keyword.*")
        model.to_fits(tmp, overwrite=True)
    return Path(path)


def write_calints(path, rateints, arrays, cutout, *, cal_steps=None, ref_files=None, photometry=None,
                  provenance=None):
    """Write the calibrated cutout as jwst's ``_calints`` (SlitModel with 3-D data).

    Parameters
    ----------
    path : path-like
    rateints : CubeModel
        The input product (metadata and INT_TIMES are carried over).
    arrays : CalArrays
        The cutout's arrays (3-D) after flat_field and photom.
    cutout : dict
        ``ystart`` (0-based first row), ``wavelength`` (2-D float32), ``order``,
        ``source_xpos`` (0-based), ``source_ypos``, optional ``wcs`` (the cutout's gwcs).
    cal_steps, ref_files, photometry, provenance : dict, optional
        Step statuses, reftype -> path, ``meta.photometry`` values, webbflow provenance.

    Returns
    -------
    pathlib.Path
    """
    from stdatamodels.jwst import datamodels

    model = datamodels.SlitModel()
    model.update(rateints)
    model.data, model.dq, model.err = arrays.data, arrays.dq, arrays.err
    model.var_poisson, model.var_rnoise = arrays.var_poisson, arrays.var_rnoise
    if arrays.var_flat is not None:
        model.var_flat = arrays.var_flat
    model.wavelength = cutout["wavelength"]
    if cutout.get("wcs") is not None:
        model.meta.wcs = cutout["wcs"]
    model.int_times = rateints.int_times.copy()
    ny, nx = arrays.data.shape[-2:]
    model.name = "1"
    model.xstart, model.xsize = 1, nx
    model.ystart, model.ysize = cutout["ystart"] + 1, ny
    model.source_id = 1
    model.source_xpos, model.source_ypos = cutout["source_xpos"], cutout["source_ypos"]
    model.source_type = "POINT"
    model.meta.target.source_type = "POINT"
    model.meta.wcsinfo.siaf_xref_sci = cutout["source_xpos"] + 1
    model.meta.wcsinfo.siaf_yref_sci = cutout["source_ypos"]
    model.meta.wcsinfo.spectral_order = cutout["order"]
    model.meta.wcsinfo.dispersion_direction = 1
    model.meta.wcsinfo.specsys = "BARYCENT"
    model.source_name = rateints.meta.target.catalog_name
    model.source_alias = rateints.meta.target.proposer_name
    for key, value in (photometry or {}).items():
        if value is not None:
            setattr(model.meta.photometry, key, float(value))
    unit = "MJy/sr" if (cal_steps or {}).get("photom") == "COMPLETE" else "DN/s"
    model.meta.bunit_data = model.meta.bunit_err = unit
    _set_steps_and_refs(model, cal_steps, ref_files, provenance)
    try:
        return _save(model, path)
    finally:
        model.close()


def tso_spec(source, columns, *, order, flux_unit, extraction):
    """One segment's extracted spectra as a TSOSpecModel (one EXTRACT1D table, a row per integration).

    Parameters
    ----------
    source : CubeModel or SlitModel
        The segment the spectra come from (INT_TIMES, INTSTART, EXSEGNUM, target and aperture metadata).
    columns : dict
        From :func:`webbflow.steps.extract_1d.box_extract`: name -> (nints, ncols).
    order : int
        Spectral order (SPORDER).
    flux_unit : str
        ``"Jy"`` after photom, ``"DN/s"`` when it was skipped.
    extraction : dict
        ``xstart, xstop, ystart, ystop`` of the aperture (0-based; written 1-based as EXTRXSTR …, as jwst
        does), ``source_xpos, source_ypos`` (SRCXPOS, SRCYPOS) and ``slit_ra, slit_dec``.

    Returns
    -------
    stdatamodels TSOSpecModel
    """
    from stdatamodels.jwst import datamodels

    nints, ncols = columns["FLUX"].shape
    dtype = [("INT_NUM", "i4")]
    dtype += [(c, "u4" if c == "DQ" else "f8", (ncols,)) for c in X1D_VECTOR_COLUMNS]
    dtype += [("N_ALONGDISP", "i4"), ("SEGMENT", "i4")] + [(c, "f8") for c in _TIME_COLUMNS]
    table = np.zeros(nints, dtype)
    for c in X1D_VECTOR_COLUMNS:
        table[c] = columns[c]
    table["N_ALONGDISP"] = ncols
    table["SEGMENT"] = source.meta.exposure.segment_number or 1
    # row k <- INT_TIMES row k + offset (jwst populate_time_keywords)
    times = source.int_times
    start = (source.meta.exposure.integration_start or 1) - 1
    offset = start - (int(times["integration_number"][0]) - 1)
    rows = np.arange(nints) + offset
    table["INT_NUM"] = np.asarray(times["integration_number"])[rows]
    for col, src in zip(_TIME_COLUMNS, _INT_TIME_COLUMNS):
        table[col] = np.asarray(times[src], float)[rows]

    spec = datamodels.TSOSpecModel()
    spec.spec_table = table
    sb = "MJy/sr" if flux_unit == "Jy" else flux_unit
    units = {"WAVELENGTH": "um", "FLUX": flux_unit, "FLUX_ERROR": flux_unit, "SURF_BRIGHT": sb, "SB_ERROR": sb,
             "BACKGROUND": sb, "BKGD_ERROR": sb}
    sq = {"Jy": "Jy^2", "DN/s": "DN^2 / s^2", "MJy/sr": "MJy^2 / sr^2"}
    for c in ("FLUX_VAR_POISSON", "FLUX_VAR_RNOISE", "FLUX_VAR_FLAT"):
        units[c] = sq[flux_unit]
    for c in ("SB_VAR_POISSON", "SB_VAR_RNOISE", "SB_VAR_FLAT", "BKGD_VAR_POISSON", "BKGD_VAR_RNOISE",
              "BKGD_VAR_FLAT"):
        units[c] = sq[sb]
    for c in _TIME_COLUMNS:
        units[c] = "d"
    for c, unit in units.items():
        spec.spec_table.columns[c].unit = unit
    spec.time_scale = "UTC"
    spec.spectral_order = order
    spec.dispersion_direction = 1
    spec.source_id = 1
    spec.name = source.meta.exposure.type  # jwst names a TSO spectrum after its EXP_TYPE
    spec.source_type = "POINT"
    spec.source_xpos, spec.source_ypos = extraction.get("source_xpos"), extraction.get("source_ypos")
    spec.source_name = source.meta.target.catalog_name
    spec.source_alias = source.meta.target.proposer_name
    spec.slit_ra, spec.slit_dec = extraction.get("slit_ra"), extraction.get("slit_dec")
    spec.detector = source.meta.instrument.detector
    spec.position_angle = source.meta.aperture.position_angle
    spec.extraction_xstart = extraction.get("xstart") + 1 if extraction.get("xstart") is not None else None
    spec.extraction_xstop = extraction.get("xstop") + 1 if extraction.get("xstop") is not None else None
    spec.extraction_ystart = extraction.get("ystart") + 1 if extraction.get("ystart") is not None else None
    spec.extraction_ystop = extraction.get("ystop") + 1 if extraction.get("ystop") is not None else None
    return spec


def write_x1dints(path, primary, specs, *, int_times=None, cal_steps=None, ref_files=None, provenance=None,
                  skipped=None):
    """Write spectra as jwst's ``_x1dints`` (TSOMultiSpecModel: INT_TIMES, one EXTRACT1D per segment).

    Parameters
    ----------
    path : path-like
    primary : JWST datamodel
        Its primary-header metadata is carried over (the rateints in stage 2, the first member in stage 3).
    specs : list of TSOSpecModel
        From :func:`tso_spec`, in segment order (EXTVER 1, 2, …).
    int_times : ndarray, optional
        The INT_TIMES table (default: ``primary``'s).
    cal_steps, ref_files, provenance : dict, optional
    skipped : tuple of str, optional
        jwst steps to record as SKIPPED (default: those of spec2).

    Returns
    -------
    pathlib.Path
    """
    from stdatamodels.jwst import datamodels

    model = datamodels.TSOMultiSpecModel()
    model.update(primary, only="PRIMARY")
    model.int_times = primary.int_times.copy() if int_times is None else int_times
    for spec in specs:
        model.spec.append(spec)
    _set_steps_and_refs(model, cal_steps, ref_files, provenance,
                        _SKIPPED_SPEC2 + _SKIPPED_AFTER_CALINTS if skipped is None else skipped)
    try:
        return _save(model, path)
    finally:
        model.close()
