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

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import webbflow
from webbflow.io.cal import CalArrays, _exposure, _provenance, open_product, write_model
from webbflow.io.errors import ReferenceFileError

__all__ = ["CalintsStream", "CubeReader", "cube_stream", "GrismDispersion", "load_specwcs", "load_wavelengthrange", "read_rateints", "tso_spec", "write_calints",
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


def read_rateints(path, cubes=True):
    """Open a grism time-series ``rateints`` (CubeModel in DN/s).

    ``cubes=False``: the model's cubes are zero-stride placeholders of their shapes (nothing read;
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

    with datamodels.TSOMultiSpecModel() as model:
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
    model.add_schema_entry("hdrtab", schema)
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
    from stdatamodels.jwst import datamodels

    model = datamodels.TSOMultiSpecModel()
    model.update(primary, only="PRIMARY")
    model.int_times = primary.int_times.copy() if int_times is None else int_times
    for spec in specs:
        model.spec.append(spec)
    _set_steps_and_refs(model, cal_steps, ref_files, provenance,
                        _SKIPPED_SPEC2 + _SKIPPED_AFTER_CALINTS if skipped is None else skipped)
    if members:
        header_table(model, members)
    try:
        return write_model(model, path)
    finally:
        model.close()
