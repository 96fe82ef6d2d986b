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

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import webbflow
from webbflow.io import unvalidated
from webbflow.io.cal import CalArrays, _exposure, _provenance, open_product, write_model
from webbflow.io.errors import ReferenceFileError

__all__ = ["CalintsStream", "CubeReader", "cube_stream", "GrismDispersion", "load_specwcs", "load_wavelengthrange", "read_rateints", "tso_spec", "write_calints",
           "write_x1dints", "x1d_rows", "X1dintsStream", "X1dRowSpool", "SPEC2_CAL_STEPS", "X1D_VECTOR_COLUMNS"]

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


def read_rateints(path, cubes=True):
    """Open a grism time-series ``rateints`` (CubeModel in DN/s).

    ``cubes=False``: the model's cubes are placeholders of their shapes that take no memory (nothing read;
    read integrations with :class:`CubeReader`), and ``arrays`` is None.

    Returns
    -------
    model : stdatamodels CubeModel
        The product (caller closes it).
    arrays : CalArrays
        Its 3-D arrays, float32 (``dq`` uint32): the model's own, not copies (one copy of the segment
        in memory); the caller takes only metadata from the model once it changes them.

    Raises
    ------
    InputError
        Missing file, not a 3-D CubeModel in DN/s, not NRC_TSGRISM, or no INT_TIMES.
    """
    from stdatamodels.jwst import datamodels

    def check(model):
        if not isinstance(model, datamodels.CubeModel) or model.data.ndim != 3:
            return (f"is a {type(model).__name__}, not a 3-D CubeModel rateints", "give the *_rateints.fits product")
        if model.meta.exposure.type != "NRC_TSGRISM":
            return (f"EXP_TYPE is {model.meta.exposure.type!r}, not NRC_TSGRISM",
                    "give a grism time-series rateints (imaging ones go to image2)")
        if model.meta.bunit_data not in (None, "DN/s"):
            return (f"BUNIT is {model.meta.bunit_data!r}, expected 'DN/s'", "give an uncalibrated rateints")
        if model.int_times is None or len(model.int_times) < model.data.shape[0]:
            return ("has no INT_TIMES row for every integration", "reduce the uncal again with detector1")
        return None

    model = open_product(path, "rateints", "detector1", check, native=True if cubes else "lazy")
    return model, (CalArrays.from_model(model, share=True) if cubes else None)


_CAL_CUBES = (("SCI", "data"), ("ERR", "err"), ("DQ", "dq"), ("VAR_POISSON", "var_poisson"),
              ("VAR_RNOISE", "var_rnoise"), ("VAR_FLAT", "var_flat"))
"""Extension -> CalArrays attribute of a time series' cubes (rateints have no VAR_FLAT)."""


class CubeReader:
    """Integrations of a product's cubes read from the file, a chunk at a time (bounded memory).

    Parameters
    ----------
    path : path-like
        A rateints or calints (cubes SCI, ERR, DQ, VAR_POISSON, VAR_RNOISE, and VAR_FLAT if present).
    """

    def __init__(self, path):
        from astropy.io import fits

        self.path = Path(path)
        self._layout = {}
        with fits.open(self.path, memmap=False) as hdul:
            for ext, name in _CAL_CUBES:
                if ext not in hdul:
                    continue
                h = hdul[ext].header
                if h.get("NAXIS") != 3 or h.get("BITPIX") not in (-32, 32):
                    raise ValueError(f"{ext} is not a 3-D 32-bit cube")
                shape = (h["NAXIS3"], h["NAXIS2"], h["NAXIS1"])
                dtype = ">f4" if h["BITPIX"] == -32 else ">u4"
                flip = h["BITPIX"] == 32 and h.get("BZERO") == 2**31  # uint32 stored as int32 + 2**31
                self._layout[name] = (hdul.fileinfo(hdul.index_of(ext))["datLoc"], shape, dtype, flip)
        self.shape = self._layout["data"][1]

    def read(self, i0, i1, names=None):
        """Integrations ``i0 .. i1-1`` as :class:`CalArrays` (native float32, ``dq`` uint32; only the
        cubes ``names`` if given, the others None)."""
        return self._read(names, lambda ny, nx: ((i1 - i0, ny, nx), [(i0 * ny * nx * 4, slice(None))]))

    def read_rows(self, r0, r1, names=None):
        """Rows ``r0 .. r1-1`` of every integration as :class:`CalArrays` ((nints, r1 - r0, nx))."""
        nints = self.shape[0]
        return self._read(names, lambda ny, nx: ((nints, r1 - r0, nx),
                                                 [((i * ny + r0) * nx * 4, i) for i in range(nints)]))

    def _read(self, names, where):
        from webbflow.io.files import read_at

        out = dict.fromkeys(("data", "dq", "err", "var_poisson", "var_rnoise", "var_flat"))
        with open(self.path, "rb") as f:
            for name, (offset, (_, ny, nx), dtype, flip) in self._layout.items():
                if names is not None and name not in names:
                    continue
                shape, parts = where(ny, nx)
                raw = np.empty(shape, dtype)
                for _ in read_at(f, [(offset + at, raw[part]) for at, part in parts]):
                    pass
                if flip:
                    raw ^= np.uint32(0x80000000)
                out[name] = raw.astype(np.uint32 if name == "dq" else np.float32)
                del raw
        return CalArrays(**out)


def cube_stream(model, path, shape):
    """A :class:`webbflow.io.products.CubeStream` that writes ``model`` to ``path`` with cubes of
    ``shape`` (nints, ny, nx) filled later: stdatamodels lays the product out (keywords, tables, the
    ASDF tree with the gwcs) for one integration, and each cube's HDU then takes the full shape.
    stdatamodels takes the cubes and keywords of such a file from its FITS HDUs (the tree's FITS
    hash no longer matches them), the rest (the gwcs) from the tree.  ``model``'s cubes are replaced.
    """
    import warnings

    from stdatamodels import fits_support

    from webbflow.io.products import CubeStream

    names = [(ext, name) for ext, name in _CAL_CUBES if getattr(model, name, None) is not None
             and np.ndim(getattr(model, name)) == 3]
    for _, name in names:  # an array each: stdatamodels links each to its own HDU
        setattr(model, name, np.zeros((1, *shape[1:]), np.uint32 if name == "dq" else np.float32))
    model.meta.filename = Path(path).name
    model.on_save(None)  # DATE, DATAMODL: what to_fits sets before writing
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Card is too long")
        warnings.filterwarnings("ignore", message=".*is not valid in keyword.*")
        hdulist = fits_support.to_fits(model._instance, model._schema)
    cubes = []
    for ext, name in names:
        dtype = ">u4" if name == "dq" else ">f4"
        hdulist[ext].data = np.broadcast_to(np.zeros((), dtype), tuple(shape))
        cubes.append((ext, name, dtype))
    others = [h.name for h in hdulist if h.name not in dict(names) and getattr(h, "data", None) is not None
              and h.header.get("NAXIS") == 3]
    if others:
        raise ValueError(f"cubes {others} cannot be streamed")
    return CubeStream(path, hdulist, shape, cubes)


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


def _calints_model(rateints, arrays, cutout, cal_steps, ref_files, photometry, provenance):
    """The calints SlitModel of :func:`write_calints` (its arrays those of ``arrays``)."""
    from stdatamodels.jwst import datamodels

    model = unvalidated.new_model(datamodels.SlitModel)
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
    return model


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
    model = _calints_model(rateints, arrays, cutout, cal_steps, ref_files, photometry, provenance)
    try:
        return write_model(model, path)
    finally:
        model.close()


class CalintsStream:
    """A ``calints`` written an integration chunk at a time: spec2 in bounded memory.

    The product is the one :func:`write_calints` writes (same keywords, same ASDF tree with the
    gwcs), laid out whole before any integration is calibrated: stdatamodels builds it for one
    integration, and each cube's HDU is then given the segment's shape, as zeros filled in place by
    :meth:`write_ints` (:class:`webbflow.io.products.CubeStream`).  stdatamodels takes the cubes and
    keywords of such a file from its FITS HDUs (the tree's FITS hash no longer matches them), the
    rest (the gwcs) from the tree.

    Parameters
    ----------
    path : path-like
    rateints : CubeModel
        The input product (metadata and INT_TIMES).
    shape : tuple
        (nints, ny, nx) of the cutout.
    var_flat : bool
        Whether the cubes include VAR_FLAT (flat_field ran).
    cutout, cal_steps, ref_files, photometry, provenance
        As for :func:`write_calints`.
    """

    def __init__(self, path, rateints, shape, var_flat, cutout, *, cal_steps=None, ref_files=None,
                 photometry=None, provenance=None):
        def one(dtype=np.float32):  # placeholders: cube_stream gives the cubes their shape
            return np.zeros((1, *shape[1:]), dtype)

        arrays = CalArrays(data=one(), dq=one(np.uint32), err=one(), var_poisson=one(), var_rnoise=one(),
                           var_flat=one() if var_flat else None)
        model = _calints_model(rateints, arrays, cutout, cal_steps, ref_files, photometry, provenance)
        try:
            self._stream = cube_stream(model, path, shape)
        finally:
            model.close()

    def __enter__(self):
        self._stream.__enter__()
        return self

    def write_ints(self, i0, arrays):
        """Write integrations ``i0 ..`` of every cube from ``arrays`` (CalArrays of (n, ny, nx))."""
        return self._stream.write_ints(i0, arrays)

    def __exit__(self, kind, value, tb):
        return self._stream.__exit__(kind, value, tb)


def x1d_rows(source, columns, first=0):
    """Rows of an EXTRACT1D table: integrations ``first .. first+n-1`` of a segment, from its spectra.

    Parameters
    ----------
    source : CubeModel or SlitModel
        The segment (INT_TIMES, INTSTART, EXSEGNUM).
    columns : dict
        name -> (n, ncols), from :func:`webbflow.steps.extract_1d.box_extract` for those integrations.
    first : int
        Index of the first of them in the segment (a chunk's first integration).

    Returns
    -------
    ndarray
        Structured, a row per integration: INT_NUM, the vector columns, N_ALONGDISP, SEGMENT and the
        MJD/TDB times, as jwst's ``make_tso_specmodel`` and ``populate_time_keywords`` fill them.
    """
    n, ncols = columns["FLUX"].shape
    dtype = [("INT_NUM", "i4")]
    dtype += [(c, "u4" if c == "DQ" else "f8", (ncols,)) for c in X1D_VECTOR_COLUMNS]
    dtype += [("N_ALONGDISP", "i4"), ("SEGMENT", "i4")] + [(c, "f8") for c in _TIME_COLUMNS]
    table = np.zeros(n, dtype)
    for c in X1D_VECTOR_COLUMNS:
        table[c] = columns[c]
    table["N_ALONGDISP"] = ncols
    table["SEGMENT"] = source.meta.exposure.segment_number or 1
    # row k <- INT_TIMES row k + offset (jwst populate_time_keywords)
    times = source.int_times
    start = (source.meta.exposure.integration_start or 1) - 1
    offset = start - (int(times["integration_number"][0]) - 1)
    rows = np.arange(first, first + n) + offset
    table["INT_NUM"] = np.asarray(times["integration_number"])[rows]
    for col, src in zip(_TIME_COLUMNS, _INT_TIME_COLUMNS):
        table[col] = np.asarray(times[src], float)[rows]
    return table


def tso_spec(source, columns, *, order, flux_unit, extraction):
    """One segment's extracted spectra as a TSOSpecModel (one EXTRACT1D table, a row per integration).

    Parameters
    ----------
    source : CubeModel or SlitModel
        The segment the spectra come from (INT_TIMES, INTSTART, EXSEGNUM, target and aperture metadata).
    columns : dict
        From :func:`webbflow.steps.extract_1d.box_extract`: name -> (nints, ncols); or those of the
        segment's first integrations only, for the layout of an :class:`X1dintsStream`.
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

    table = x1d_rows(source, columns)
    spec = unvalidated.new_model(datamodels.TSOSpecModel)
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


def _blend_table_columns(schema):
    """Metadata attribute -> HDRTAB column of a datamodel schema: the entries marked ``blend_table``,
    in the schema's order (jwst's ``model_blender._schemautil.parse_schema``)."""
    from stdatamodels import schema as dm_schema

    columns = {}

    def callback(subschema, path, _combiner, _ctx, _recurse):
        if len(path) <= 1 or path[0] != "meta" or "items" in path or subschema.get("properties"):
            return
        for combiner in ("anyOf", "oneOf"):
            if combiner in path:
                path = path[:path.index(combiner)]
                break
        if subschema.get("type") != "array" and subschema.get("blend_table"):
            columns[".".join(path)] = subschema.get("fits_keyword", ".".join(path))

    dm_schema.walk_schema(schema, callback, None)
    return columns


def member_header(member, *, filename=None, cal_steps=None, ref_files=None, provenance=None, skipped=None,
                  asn=None):
    """The metadata one member contributes to a level-3 product's HDRTAB (a row of :func:`header_table`).

    As jwst's tso3 sees it: the member's primary metadata in the product's model
    (TSOMultiSpecModel), with the steps and references of stage 3 recorded, as in the product itself.

    Parameters
    ----------
    member : JWST datamodel
        The member (calints or crfints) as read.
    filename : str, optional
        FILENAME of the row (default ``member.meta.filename``): jwst keeps the calints' name even
        after outlier_detection made the crfints of it.
    cal_steps, ref_files, provenance, skipped
        As for :func:`write_x1dints`.
    asn : dict, optional
        ``asn_pool``, ``asn_table``.

    Returns
    -------
    dict
        The flat metadata (``meta.*`` attribute -> value).
    """
    from stdatamodels.jwst import datamodels

    with unvalidated.new_model(datamodels.TSOMultiSpecModel) as model:
        model.update(member, only="PRIMARY")
        model.meta.filename = filename or member.meta.filename
        _set_steps_and_refs(model, cal_steps, ref_files, provenance,
                            _SKIPPED_SPEC2 + _SKIPPED_AFTER_CALINTS if skipped is None else skipped)
        if asn:
            model.meta.asn.pool_name = asn.get("asn_pool")
            model.meta.asn.table_name = asn.get("asn_table")
        return {k: v for k, v in model.to_flat_dict(include_arrays=False).items() if k.startswith("meta.")}


def header_table(model, headers):
    """Attach jwst's HDRTAB to a level-3 ``model``: one row per member, the schema's ``blend_table``
    keywords that any member has (jwst's ``ModelBlender``; a keyword a member lacks is NaN there).

    Parameters
    ----------
    model : JWST datamodel
        The product (its schema names the columns); gains ``hdrtab``.
    headers : list of dict
        :func:`member_header` of each member, in order.
    """
    from astropy.io import fits
    from stdatamodels import fits_support
    from stdatamodels import schema as dm_schema

    missing = object()
    arrays, dtype = [], []
    for attr, column in _blend_table_columns(model.schema).items():
        items = [h.get(attr, missing) for h in headers]
        if all(i is missing for i in items):
            continue
        arrays.append(np.array([np.nan if i is missing else i for i in items]))
        dtype.append((column, arrays[-1].dtype))
    table = np.rec.fromarrays(arrays, dtype=dtype)

    def datatype(kind):
        if "U" in kind:
            return ["ascii", int(kind[kind.find("U") + 1:])]
        return "int8" if kind == "bool" else kind  # astropy mangles booleans on write, as jwst notes

    schema = {"title": "Combined header table", "fits_hdu": "HDRTAB",
              "datatype": [{"name": n, "datatype": datatype(str(table.dtype[n]))} for n in table.dtype.fields]}
    # model.add_schema_entry("hdrtab", schema) less its validation of the whole model against the
    # extended schema (every EXTRACT1D table: ~0.02 s CPU of a grism tso3 job), which only warns
    # and changes nothing: the product's own tables and the new entry's table, valid by construction
    model._schema = dm_schema.merge_property_trees(
        {"allOf": [model._schema, {"type": "object", "properties": {"hdrtab": schema}}]})
    model.hdrtab = fits_support.from_fits_hdu(fits.BinTableHDU.from_columns(table), schema)


def write_x1dints(path, primary, specs, *, int_times=None, cal_steps=None, ref_files=None, provenance=None,
                  skipped=None, members=None):
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
    members : list of dict, optional
        :func:`member_header` of each member: an HDRTAB with a row each, as jwst's tso3 writes.

    Returns
    -------
    pathlib.Path
    """
    model = _x1dints_model(primary, specs, int_times, cal_steps, ref_files, provenance, skipped, members)
    try:
        return write_model(model, path)
    finally:
        model.close()


def _x1dints_model(primary, specs, int_times, cal_steps, ref_files, provenance, skipped, members):
    """The TSOMultiSpecModel of :func:`write_x1dints`."""
    from stdatamodels.jwst import datamodels

    model = unvalidated.new_model(datamodels.TSOMultiSpecModel)
    model.update(primary, only="PRIMARY")
    model.int_times = primary.int_times.copy() if int_times is None else int_times
    for spec in specs:
        model.spec.append(spec)
    _set_steps_and_refs(model, cal_steps, ref_files, provenance,
                        _SKIPPED_SPEC2 + _SKIPPED_AFTER_CALINTS if skipped is None else skipped)
    if members:
        header_table(model, members)
    return model


def _hdulist_with_rows(model, filename, extname, nrows):
    """``model`` as stdatamodels writes it (``model.to_fits``), its ``extname`` tables (EXTVER 1, 2, …,
    each holding a row or a few) declared at ``nrows`` rows each: in their headers and in the ASDF
    tree's links to them, and so in the FITS hash of the headers that the tree records.

    stdatamodels' own steps of ``to_fits``, with the row counts set between building the HDUs and
    hashing their headers; a product whose tables are then filled in place (:class:`X1dintsStream`)
    is the one ``to_fits`` writes for the whole tables.
    """
    import warnings

    from asdf import treeutil
    from astropy.io import fits
    from stdatamodels import fits_support as fs

    model.meta.filename = filename
    model.on_save(None)
    hdulist = fits.HDUList([fits.PrimaryHDU()])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Card is too long")
        warnings.filterwarnings("ignore", message=".*is not valid in keyword.*")
        tree = fs._normalize_arrays(model._instance)
        tree = fs._save_from_schema(hdulist, tree, model._schema)
        tree = fs._save_extra_fits(hdulist, tree)
        fs._save_history(hdulist, tree)
    rows = {f"{fs._FITS_SOURCE_PREFIX}{extname},{k + 1}": n for k, n in enumerate(nrows)}
    for k, n in enumerate(nrows):
        index = hdulist.index_of((extname, k + 1))
        hdulist[index] = _big_endian_layout(hdulist[index])
        hdulist[index].header["NAXIS2"] = n

    def lengthen(node):
        if isinstance(node, dict) and node.get("source") in rows:
            node["shape"] = [rows[node["source"]], *node["shape"][1:]]
        return node

    tree = treeutil.walk_and_modify(tree, lengthen)
    tree[fs.FITS_HASH_KEY] = fs.fits_hash(hdulist)
    if "ASDF" in hdulist:
        del hdulist["ASDF"]
    hdulist.append(fs._create_asdf_hdu(tree))
    return hdulist


def _big_endian_layout(hdu):
    """Binary table ``hdu`` with the same header and its rows zeros in FITS order (big-endian), as
    astropy reads a table: for a layout whose rows are filled in place later, only the header
    counts, and astropy computes a native table's checksum and writes it through a byte-order
    permutation built element by element (~20 ms for each pass over a 2,040-column EXTRACT1D row,
    two passes a table)."""
    from astropy.io import fits

    size = hdu.header["NAXIS1"] * hdu.header["NAXIS2"]
    return fits.BinTableHDU.fromstring(hdu.header.tostring().encode("ascii") + bytes(size + (-size % 2880)))


_TFORM_DTYPES = {"B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


def _fits_rows(table, header):
    """The bytes a FITS binary table with ``header`` stores for the structured rows ``table``: each
    column in its TFORM, big-endian, and less its TZERO (astropy keeps unsigned 32-bit columns as
    signed ones with TZERO = 2**31, as it does the schema's uint32 columns that were int32 here)."""
    import re

    names = table.dtype.names
    dtype, zeros = [], {}
    for i, name in enumerate(names, 1):
        if header.get(f"TTYPE{i}") != name:
            raise ValueError(f"column {i} is {header.get(f'TTYPE{i}')!r} in the table laid out, {name!r} here")
        repeat, code = re.fullmatch(r"(\d*)([A-Z])", header[f"TFORM{i}"].strip()).groups()
        repeat = int(repeat or 1)
        if code not in _TFORM_DTYPES or repeat != max(1, int(np.prod(table.dtype[name].shape))):
            raise ValueError(f"column {name} is {header[f'TFORM{i}']} in the table laid out, "
                             f"{table.dtype[name]} here")
        dtype.append((name, _TFORM_DTYPES[code], table.dtype[name].shape))
        zeros[name] = header.get(f"TZERO{i}", 0)
    out = np.empty(len(table), dtype)
    if out.dtype.itemsize != header["NAXIS1"]:
        raise ValueError(f"rows of {out.dtype.itemsize} bytes for a table of {header['NAXIS1']}")
    for name in names:
        column = table[name]
        if zeros[name]:
            column = column.astype(np.int64) - int(zeros[name])
        out[name] = column
    return out


class X1dintsStream:
    """An ``x1dints`` written a chunk of integrations at a time: its EXTRACT1D rows filled in place.

    The product is the one :func:`write_x1dints` writes for the whole spectra (same keywords,
    column formats and units, ASDF tree, checksums), laid out before the rows are known: each
    EXTRACT1D table's header and the tree's link to it at the segment's number of rows, the rows a
    hole in the file, filled by :meth:`write_rows` (:class:`webbflow.io.products.TableStream`).
    So the table, 18 float64 vectors an integration, is never held whole (bounded memory).

    Parameters
    ----------
    path : path-like
    primary : JWST datamodel
        As for :func:`write_x1dints`.
    specs : list of TSOSpecModel
        :func:`tso_spec` of each segment from its first integrations' spectra (a row or a few; its
        columns and metadata are the layout, its rows are not written).
    nrows : list of int
        Integrations (rows) of each segment.
    int_times, cal_steps, ref_files, provenance, skipped, members
        As for :func:`write_x1dints`.

    Examples
    --------
    >>> with X1dintsStream(path, model, [spec], [nints], cal_steps=statuses) as x1d:  # doctest: +SKIP
    ...     for i0, columns in chunks:
    ...         x1d.write_rows(0, i0, x1d_rows(model, columns, i0))
    """

    def __init__(self, path, primary, specs, nrows, *, int_times=None, cal_steps=None, ref_files=None,
                 provenance=None, skipped=None, members=None):
        from webbflow.io.products import TableStream

        self.nrows = [int(n) for n in nrows]
        if len(self.nrows) != len(specs):
            raise ValueError("one row count per spectrum table is needed")
        model = _x1dints_model(primary, specs, int_times, cal_steps, ref_files, provenance, skipped, members)
        try:
            hdulist = _hdulist_with_rows(model, Path(path).name, "EXTRACT1D", self.nrows)
        finally:
            model.close()
        tables = [hdulist.index_of(("EXTRACT1D", k + 1)) for k in range(len(specs))]
        self._headers = [hdulist[i].header.copy() for i in tables]
        self._stream = TableStream(path, hdulist, list(zip(tables, self.nrows)))
        self.written = [0] * len(specs)

    def __enter__(self):
        self._stream.__enter__()
        return self

    def write_rows(self, spec, row0, table):
        """Write rows ``row0 ..`` of EXTRACT1D table number ``spec`` (0-based) from the structured
        rows ``table`` (:func:`x1d_rows`)."""
        n = self._stream.write_rows(spec, row0, _fits_rows(table, self._headers[spec]))
        self.written[spec] += n
        return n

    def __exit__(self, kind, value, tb):
        if kind is None and self.written != self.nrows:
            try:
                raise ValueError(f"x1dints rows written {self.written}, laid out {self.nrows}")
            except ValueError:
                self._stream.__exit__(*sys.exc_info())
                raise
        return self._stream.__exit__(kind, value, tb)


class X1dRowSpool:
    """EXTRACT1D rows kept on disk, a chunk at a time, until their ``x1dints`` can be laid out.

    tso3 knows an exposure's product (the blended primary keywords, INT_TIMES, every member's
    HDRTAB row) only once every member is extracted: the rows wait in a file per table (next to
    the product, in a :func:`webbflow.io.files.part_folder`, removed on exit) and are then copied
    into an :class:`X1dintsStream` a block at a time, so the tables are never held whole.

    Parameters
    ----------
    path : path-like
        The ``x1dints`` the rows are for.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.nrows, self._dtypes, self.folder = [], [], None

    def __enter__(self):
        from webbflow.io.files import part_folder

        self.folder = part_folder(self.path.with_name(self.path.name + ".rows"), self.path.parent)
        return self

    def append(self, spec, table):
        """Append the structured rows ``table`` (:func:`x1d_rows`) to table number ``spec`` (0-based;
        a new table is the next number)."""
        if spec == len(self.nrows):
            self.nrows.append(0)
            self._dtypes.append(table.dtype)
        elif table.dtype != self._dtypes[spec]:
            raise ValueError(f"rows of {table.dtype} for a table of {self._dtypes[spec]}")
        with open(self.folder / f"{spec}.rows", "ab") as f:
            np.ascontiguousarray(table).tofile(f)
        self.nrows[spec] += len(table)

    def write_into(self, stream, block_mb=16):
        """Copy every table's rows into ``stream`` (an :class:`X1dintsStream` laid out for
        :attr:`nrows`), ``block_mb`` at a time."""
        for spec, (n, dtype) in enumerate(zip(self.nrows, self._dtypes)):
            step = max(1, int(block_mb * 2**20 // dtype.itemsize))
            with open(self.folder / f"{spec}.rows", "rb") as f:
                for row0 in range(0, n, step):
                    stream.write_rows(spec, row0, np.fromfile(f, dtype, count=min(step, n - row0)))

    def __exit__(self, kind, value, tb):
        import shutil

        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
