"""Read ``rate`` products and stage-2 references; write ``cal`` products (ImageModel).

The cal product is the rate's ImageModel (so every keyword and the ASDF tree
carry over) with the calibrated arrays, VAR_FLAT, AREA, the gwcs in
``meta.wcs``, the SIP approximation in ``meta.wcsinfo`` (SCI header),
S_REGION, PHOTMJSR/PHOTUJA2/PIXAR_SR/PIXAR_A2, ``BUNIT = 'MJy/sr'``,
S_WCS/S_FLAT/S_PHOTOM, R_DISTOR/R_FLAT/R_PHOTOM/R_AREA and webbflow
provenance (WF_VER, WF_CFGD, WF_PARS); with image2's wisps option, S_WISPS,
R_WISP, WISPSCL, WISPBKG and WISPNPIX.  Written atomically.
"""

from __future__ import annotations

import json
import mmap
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import webbflow
from webbflow.io import unvalidated
from webbflow.io.errors import InputError, ReferenceFileError
from webbflow.io.files import atomic_output
from webbflow.refs.load import map_dq, open_reference

__all__ = ["CalArrays", "fits_order", "open_product", "read_rate", "load_flat", "load_gain", "load_photom",
           "load_area", "load_distortion", "load_wisp_template", "write_cal", "write_model", "IMAGE2_CAL_STEPS"]

IMAGE2_CAL_STEPS = {"assign_wcs": "assign_wcs", "flat_field": "flat_field", "photom": "photom"}
"""webbflow step -> ``meta.cal_step`` attribute (S_WCS, S_FLAT, S_PHOTOM)."""


@dataclass
class CalArrays:
    """The 2-D arrays stage 2 works on (float32; ``dq`` uint32)."""

    data: np.ndarray
    dq: np.ndarray
    err: np.ndarray
    var_poisson: np.ndarray
    var_rnoise: np.ndarray
    var_flat: np.ndarray | None = None
    area: np.ndarray | None = None

    @classmethod
    def from_model(cls, model, var_flat=False, share=False):
        """Float32 copies (``dq`` uint32) of a product's arrays; ``var_flat`` too if asked and not empty.

        ``share``: no copies where the model's array already holds the right values -- a FITS
        array read big-endian is byte-swapped in place to native order and the model given the
        native view, so the model and these arrays are the same memory (a full-frame rate:
        ~80 MB less); calibrating them in place changes the model's arrays too.  A model opened by
        :func:`open_product` with ``native=True`` already holds native arrays: they are shared as
        they are, so the cubes are held once.
        """
        f32 = np.float32
        flat = model.var_flat if var_flat else None
        if not share:
            return cls(data=np.array(model.data, f32), dq=np.array(model.dq, np.uint32),
                       err=np.array(model.err, f32), var_poisson=np.array(model.var_poisson, f32),
                       var_rnoise=np.array(model.var_rnoise, f32),
                       var_flat=np.array(flat, f32) if flat is not None and flat.size else None)
        arrays = {}
        for name, dtype in (("data", f32), ("dq", np.uint32), ("err", f32), ("var_poisson", f32),
                            ("var_rnoise", f32)) + ((("var_flat", f32),) if var_flat else ()):
            value = getattr(model, name)
            if value is None or (name == "var_flat" and not value.size):
                continue
            native = _native(value, dtype)
            if native is not value:
                setattr(model, name, native)
            arrays[name] = native
        return cls(**arrays)


def _native(array, dtype):
    """``array`` as a native-order ``dtype`` array: itself, a view of it byte-swapped in place, or
    a copy when neither can be (another type, read-only, not contiguous)."""
    array = np.asarray(array)
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return array
    if array.dtype.newbyteorder("=") == dtype and array.flags.writeable and array.flags.c_contiguous \
            and not _mapped(array):
        array.byteswap(inplace=True)
        return array.view(dtype)
    return np.array(array, dtype)


def fits_order(array):
    """A native float ``array`` byte-swapped in place to big-endian (a view of it), as FITS stores it;
    anything else (integers, read-only, not contiguous, a mapped file, already big-endian, a
    big-endian machine's native order) as it is.

    For a writer that has no further use of the array: astropy then writes it without a swapped copy
    of its own (the product writers of image2, tso3 and image3).

    Parameters
    ----------
    array : object

    Returns
    -------
    object
        ``array`` itself, or a big-endian view of its swapped memory.
    """
    if (sys.byteorder == "little" and isinstance(array, np.ndarray) and array.dtype.kind == "f"
            and array.dtype.byteorder in "=<"
            and array.dtype.isnative and array.flags.writeable and array.flags.c_contiguous
            and not _mapped(array)):
        array.byteswap(inplace=True)
        return array.view(array.dtype.newbyteorder(">"))
    return array


def _mapped(array):
    """Whether ``array``'s memory is a mapped file (swapping it in place would write the file)."""
    while array is not None:
        if isinstance(array, (np.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None)
    return False


def open_product(path, kind, made_by, check, native=False, validate=True):
    """Open a stage's input product, or refuse it with one clear error.

    Parameters
    ----------
    path : str or os.PathLike
    kind : str
        Its suffix (``rate``, ``rateints``, ``calints``), for the messages.
    made_by : str
        The stage that writes it, for the fixes.
    check : callable
        ``check(model)`` returns None for a good product, else (problem, fix) for the error.
    native : bool or "lazy"
        Convert every image extension to native byte order before stdatamodels takes it, so that
        ``CalArrays.from_model(model, share=True)`` needs no second copy of the cubes (FITS stores
        them big-endian; the time-series stages hold a whole segment, and this halves it).
        ``"lazy"``: the 3-D cubes are not read at all (placeholders of their shape that take no
        memory), for a stage that reads them a chunk of integrations at a time.
    validate : bool
        With ``native``: False opens the model without stdatamodels' schema check of each keyword
        and array as it is read (``validate_on_assignment=False``, which then also holds for the
        model's later assignments; :func:`webbflow.io.unvalidated.open_model`): half of a warm open
        of a small product.

    Returns
    -------
    stdatamodels DataModel
        The product (caller closes it).

    Raises
    ------
    InputError
        When the file is missing, cannot be opened, or fails ``check`` (then it is closed).
    """
    from stdatamodels.jwst import datamodels

    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{kind} file not found", f"run {made_by} first (snakemake makes it)")
    try:
        model = _open_native(path, lazy=native == "lazy", validate=validate) if native \
            else datamodels.open(str(path))
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a deep traceback
        raise InputError(path, f"cannot be opened as a JWST product ({exc})",
                         f"give a *_{kind}.fits written by {made_by}") from None
    problem = check(model)
    if problem:
        model.close()
        raise InputError(path, *problem)
    return model


def _untouched_zeros(shape, dtype):
    """Zeros of ``shape`` that take no memory: an anonymous map, whose pages the kernel provides only
    when written.  C-contiguous, so stdatamodels' validation of a model being opened takes the array
    as it is (a zero-stride view it copies whole: 500 MB for a 1000-integration SUBGRISM64 cube,
    the peak of a stage that reads the cubes a chunk at a time)."""
    count = int(np.prod(shape))
    buffer = mmap.mmap(-1, max(1, count * np.dtype(dtype).itemsize))
    return np.frombuffer(buffer, dtype, count=count).reshape(shape)


def _open_native(path, lazy=False, validate=True):
    """``datamodels.open(path)`` with each image extension's data converted to native byte order
    first (one array at a time, so the file's big-endian copy of a cube is let go before the next);
    ``lazy``: the 3-D cubes are not read but stand as zeros of their shape that take no memory;
    ``validate``: stdatamodels' ``validate_on_assignment`` (:func:`open_product`)."""
    from astropy.io import fits
    from stdatamodels.jwst import datamodels

    with fits.open(path, memmap=False) as hdul:
        cls = getattr(datamodels, str(hdul[0].header.get("DATAMODL", "")), None)
        if not (isinstance(cls, type) and issubclass(cls, datamodels.JwstDataModel)):
            # stdatamodels' own guess of the model (and its errors)
            return datamodels.open(str(path), validate_on_assignment=validate)
        for hdu in hdul:
            if lazy and isinstance(hdu, fits.ImageHDU) and hdu.header.get("NAXIS", 0) == 3:
                h = hdu.header
                dtype = np.float32 if h["BITPIX"] == -32 else np.uint32 if h.get("BZERO") == 2**31 else np.int32
                hdu.data = _untouched_zeros((h["NAXIS3"], h["NAXIS2"], h["NAXIS1"]), dtype)
            elif isinstance(hdu, fits.ImageHDU) and hdu.header.get("NAXIS", 0) > 0:
                data = hdu.data
                if not data.dtype.isnative:
                    hdu.data = data.astype(data.dtype.newbyteorder("="))
                    del data
        model = cls(hdul, validate_on_assignment=True) if validate else unvalidated.open_model(cls, hdul)
        model.meta.filename = Path(path).name if model.meta.filename is None else model.meta.filename
        return model


def read_rate(path):
    """Open a rate product (or a time series' rateints).

    Returns
    -------
    model : stdatamodels ImageModel or CubeModel
        The rate, or the rateints (3-D, INT_TIMES kept) of a time series (caller closes it).
    arrays : CalArrays
        Its arrays in native float32 (``dq`` uint32), the same memory as the model's.

    Raises
    ------
    InputError
        When the file is missing, not a 2-D ImageModel or 3-D CubeModel, or not in DN/s.
    """
    from stdatamodels.jwst import datamodels

    def check(model):
        # a time series' rateints (CubeModel, one slope image per integration) goes through image2
        # as jwst's calwebb_image2 takes it for NRC_TSIMAGE: the same steps, broadcast over integrations
        cube = isinstance(model, datamodels.CubeModel) and model.data.ndim == 3
        if not cube and (not isinstance(model, datamodels.ImageModel) or model.data.ndim != 2):
            return (f"is a {type(model).__name__}, not a 2-D ImageModel rate or a CubeModel rateints",
                    "give the *_rate.fits (or a time series' *_rateints.fits) product")
        unit = model.meta.bunit_data
        if unit not in (None, "DN/s"):
            return (f"BUNIT is {unit!r}, expected 'DN/s'",
                    "give an uncalibrated rate product (stage 2 already ran on this file)")
        return None

    from webbflow.io.asdf_yaml import cache_schema_documents

    cache_schema_documents()  # opening, assigning and writing validate ~10 times: parse each schema once
    model = open_product(path, "rate", "detector1", check)
    # the arrays are calibrated in place and given back to the model by write_cal: no copies
    return model, CalArrays.from_model(model, share=True)


def _exposure(sci, pixels=True):
    """The :class:`~webbflow.refs.check.Exposure` of ``sci`` (dict: shape, xstart, ystart, detector)."""
    from webbflow.refs.check import Exposure

    if sci is None:
        return None
    ny, nx = sci["shape"] if pixels else (None, None)
    return Exposure(sci.get("detector"), int(sci.get("xstart", 1)), int(sci.get("ystart", 1)), ny, nx)


def _cut(array, window, sci):
    """Cut a reference array to the science subarray at ``window`` (y0, x0) from check_reference."""
    ny, nx = sci["shape"]
    y0, x0 = window
    if array.shape[-2:] == (ny, nx):
        return array
    # a copy of the window: the full-frame array it was cut from is then freed
    return np.ascontiguousarray(array[..., y0:y0 + ny, x0:x0 + nx])


def _open_fits(path, reftype, sci, pixels=True):
    """Open a FITS reference and check it against the exposure (webbflow.refs.check); -> (hdul, window)."""
    from webbflow.refs.check import check_reference

    hdul = open_reference(path, reftype, f"replace it or name another with overrides.{reftype}",
                          missing=(f"{reftype} reference not found", f"check references.dir or overrides.{reftype}"))
    try:
        window = check_reference(path, hdul, reftype, _exposure(sci, pixels))
    except BaseException:
        hdul.close()
        raise
    return hdul, window


def _data(path, reftype, hdul, name, dtype=np.float32, window=None, sci=None):
    """Extension ``name``'s array in native ``dtype`` (None: as stored); with ``window`` (from
    check_reference) and ``sci``, a 2-D reference larger than the science array is read only on the
    science pixels (``section``: a full-frame AREA or FLAT for a SUB160 exposure, 16 MB an array,
    gives 100 kB; the values are those of reading it whole and cutting it)."""
    try:
        hdu = hdul[name]
        ny, nx = sci["shape"] if sci is not None else (None, None)
        if window is not None and sci is not None and len(hdu.shape) == 2 and tuple(hdu.shape) != (ny, nx):
            y0, x0 = window
            array = hdu.section[y0:y0 + ny, x0:x0 + nx]
        else:
            array = hdu.data
        return array if dtype is None else _native(array, dtype)
    except (OSError, ValueError, TypeError, EOFError) as exc:
        raise ReferenceFileError(path, f"{reftype} reference {name} cannot be read ({exc})",
                                 f"replace it or name another with overrides.{reftype}") from None


def load_flat(path, sci):
    """FLAT reference -> (flat, dq, err) cut to ``sci`` (dict: shape, xstart, ystart, detector).

    The file is checked against the exposure first (:func:`webbflow.refs.check.check_reference`).
    """
    hdul, window = _open_fits(path, "flat", sci)
    with hdul:
        flat = _data(path, "flat", hdul, "SCI", window=window, sci=sci)
        dq = _data(path, "flat", hdul, "DQ", None, window, sci)
        err = _data(path, "flat", hdul, "ERR", window=window, sci=sci) if "ERR" in hdul else np.zeros_like(flat)
        dq_def = None
        if "DQ_DEF" in hdul:
            table = hdul["DQ_DEF"].data
            dq_def = {"VALUE": np.asarray(table["VALUE"], np.int64), "NAME": list(table["NAME"])}
        dq = map_dq(dq, dq_def)
        return tuple(_cut(a, window, sci) for a in (flat, dq, err))


def load_gain(path, sci):
    """GAIN reference -> the gain (e-/DN) cut to ``sci`` (tso_photometry's DN/s → electrons)."""
    hdul, window = _open_fits(path, "gain", sci)
    with hdul:
        return _cut(_data(path, "gain", hdul, "SCI"), window, sci)


def load_photom(path, sci=None):
    """PHOTOM reference -> (table, PIXAR_SR, PIXAR_A2); checked against ``sci``'s detector when given."""
    hdul, _ = _open_fits(path, "photom", sci, pixels=False)
    with hdul:
        h = hdul[0].header
        return np.array(hdul["PHOTOM"].data), h.get("PIXAR_SR"), h.get("PIXAR_A2")


def load_area(path, sci):
    """AREA reference -> (area cut as jwst does, PIXAR_SR, PIXAR_A2).

    jwst cuts the map with the science SUBSTRT (the area file is full frame);
    a subarray-sized file with its own SUBSTRT is cut relative to it.
    """
    hdul, window = _open_fits(path, "area", sci)
    with hdul:
        h = hdul[0].header
        area = _data(path, "area", hdul, "SCI", window=window, sci=sci)
        return _cut(area, window, sci), h.get("PIXAR_SR"), h.get("PIXAR_A2")


def load_distortion(path, sci=None):
    """DISTORTION reference (ASDF) -> the astropy model (pixel -> V2/V3).

    REFTYPE, INSTRUME and (with ``sci``) DETECTOR of its ``meta`` are checked first.
    """
    import asdf

    from webbflow.refs.check import check_reference_meta
    from webbflow.refs.select import asdf_summary

    try:
        with asdf.open(path, lazy_load=False, memmap=False) as af:
            summary = asdf_summary(af.tree)
            model = af.tree.get("model")
    except Exception as exc:  # noqa: BLE001
        raise ReferenceFileError(path, f"distortion reference cannot be read ({exc})",
                                 "give a NIRCam DISTORTION .asdf with overrides.distortion") from None
    check_reference_meta(path, summary, "distortion", _exposure(sci, pixels=False))
    if model is None:
        raise ReferenceFileError(path, "distortion reference has no model (the file may be truncated)",
                                 "replace it or name another with overrides.distortion")
    return model


def load_wisp_template(template_dir, detector, filter_name, pupil, sci):
    """The wisp template of an exposure, cut to its subarray, from the NIRCam team's folder.

    Parameters
    ----------
    template_dir : path-like
        Folder of ``WISP_<DET>_<FILTER>_<PUPIL>.fits`` files (the image in the first HDU that
        holds one, full frame or the science array's own size).
    detector, filter_name, pupil : str
        The exposure's DETECTOR, FILTER, PUPIL.
    sci : dict
        ``shape``, ``xstart``, ``ystart`` (1-based) of the science array.

    Returns
    -------
    (ndarray or None, pathlib.Path)
        The template (float32) on the science pixels, or None when the folder has none for
        this detector, filter and pupil (wisps appear on a few detectors only); and its path.

    Raises
    ------
    InputError
        For a missing folder, or a template that cannot be read or does not fit the array.
    """
    from astropy.io import fits

    from webbflow.steps.wisps import template_name

    folder = Path(template_dir)
    path = folder / template_name(detector, filter_name, pupil)
    fix = ("give steps.wisps.template_dir the folder of the NIRCam team's templates "
           "(WISP_<DET>_<FILTER>_<PUPIL>.fits, full frame)")
    if not folder.is_dir():
        raise InputError(folder, "wisp template folder not found", fix)
    if not path.exists():
        return None, path
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=fits.verify.VerifyWarning)
            data = fits.getdata(path)
    except (OSError, ValueError, TypeError, EOFError, IndexError) as exc:
        raise InputError(path, f"wisp template cannot be read ({exc})", f"replace it; {fix}") from None
    data = np.asarray(data, np.float32)
    ny, nx = sci["shape"]
    if data.shape == (ny, nx):
        return data, path
    y0, x0 = int(sci.get("ystart", 1)) - 1, int(sci.get("xstart", 1)) - 1
    if data.ndim != 2 or data.shape[0] < y0 + ny or data.shape[1] < x0 + nx:
        raise InputError(path, f"wisp template is {' x '.join(map(str, data.shape))}, which does not hold the "
                         f"{ny} x {nx} subarray at SUBSTRT ({x0 + 1}, {y0 + 1})", fix)
    return data[y0:y0 + ny, x0:x0 + nx], path


def write_cal(path, model, arrays, *, wcs=None, wcsinfo=None, photometry=None, cal_steps=None,
              ref_files=None, provenance=None, keywords=None):
    """Write the cal product atomically from the rate ``model`` and calibrated ``arrays``.

    Parameters
    ----------
    path : path-like
        ``…_cal.fits``.
    model : ImageModel
        The rate model (modified in place, then saved).
    arrays : CalArrays
        Given up: its float arrays are byte-swapped in place to FITS (big-endian) order.
    wcs : gwcs.wcs.WCS, optional
    wcsinfo : dict, optional
        ``meta.wcsinfo`` entries (SIP keywords, ``s_region``).
    photometry : dict, optional
        ``conversion_megajanskys``, ``conversion_microjanskys``,
        ``pixelarea_steradians``, ``pixelarea_arcsecsq``.
    cal_steps : dict
        step -> status (S_WCS, S_FLAT, S_PHOTOM).
    ref_files : dict
        reftype -> path (R_DISTOR, R_FLAT, R_PHOTOM, R_AREA; ``N/A`` if None).
    keywords : list of (key, value, comment), optional
        Primary-header cards stdatamodels has no attribute for (the wisps step's).
    provenance : dict, optional
        ``step_parameters``, ``config_digest`` -> WF_PARS, WF_CFGD.

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    with unvalidated.assignments(model):
        for name in ("data", "dq", "err", "var_poisson", "var_rnoise", "var_flat", "area"):
            value = getattr(arrays, name)
            if value is not None or name not in ("var_flat", "area"):
                # big-endian already: astropy then neither swaps each array for its DATASUM and its
                # write nor swaps it back (the values, and so the file, are the same)
                setattr(model, name, fits_order(value))
        if wcs is not None:
            model.meta.wcs = wcs
        if wcsinfo:
            _update_wcsinfo(model, wcsinfo)
        for key, value in (photometry or {}).items():
            if value is not None:
                setattr(model.meta.photometry, key, float(value))
        if (cal_steps or {}).get("photom") == "COMPLETE":
            model.meta.bunit_data = "MJy/sr"
            model.meta.bunit_err = "MJy/sr"
        for step, attr in IMAGE2_CAL_STEPS.items():
            if (cal_steps or {}).get(step):
                setattr(model.meta.cal_step, attr, cal_steps[step])
        for reftype, ref in (ref_files or {}).items():
            getattr(model.meta.ref_file, reftype).name = Path(ref).name if ref else "N/A"
        model.meta.calibration_software_version = webbflow.__version__
    _provenance(model, provenance or {})
    _primary_cards(model, keywords or [])
    return write_model(model, path, validate_asdf=False)


def write_model(model, path, validate_asdf=True):
    """Write a datamodel to ``path`` atomically, its FILENAME set to the file's name.

    Every HDU gets fresh DATASUM/CHECKSUM cards (stale ones that stdatamodels carried over from the
    file the model was read from, in ``extra_fits``, are recomputed).

    Parameters
    ----------
    model : stdatamodels DataModel
    path : path-like
    validate_asdf : bool
        False: asdf does not validate the ASDF extension's tagged tree against the ASDF schemas
        before writing it (for a cal with its gwcs ~0.017 s of CPU, a tenth of a warm SUB160 image2
        job), for a caller whose tree is valid by construction.  The tree and every other HDU are
        the same; where a schema orders its keys (``propertyOrder``, e.g. ``asdf_library`` and
        ``history`` first), only validation applies that order, so the ASDF extension's YAML may list
        the same lines in another order (``benchmarks/compare_products.py`` compares the trees).

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    model.meta.filename = path.name
    with atomic_output(path) as tmp, warnings.catch_warnings(), _asdf_write_validation(validate_asdf):
        warnings.filterwarnings("ignore", message=".*is not valid in keyword.*")
        model.to_fits(tmp, overwrite=True, checksum=True)
    return path


class _NoTreeValidation:
    """``asdf.schema`` as asdf's YAML writer sees it, with ``validate`` a no-op."""

    def __init__(self, schema):
        self._schema = schema

    @staticmethod
    def validate(*args, **kwargs):
        return None

    def __getattr__(self, name):
        return getattr(self._schema, name)


@contextmanager
def _asdf_write_validation(on):
    """Within: asdf's ``dump_tree`` validates the tree it writes (``on``) or not (nothing else changes:
    reading, stdatamodels' validation, other writers' calls go to ``asdf.schema`` itself); a no-op
    for an asdf whose writer no longer calls ``schema.validate`` through ``asdf.yamlutil``."""
    from asdf import schema, yamlutil

    if on or getattr(yamlutil, "schema", None) is not schema:
        yield
        return
    yamlutil.schema = _NoTreeValidation(schema)
    try:
        yield
    finally:
        yamlutil.schema = schema


_DROP_WCSINFO = {"cdelt1", "cdelt2", "pc1_1", "pc1_2", "pc2_1", "pc2_2"}


def _update_wcsinfo(model, wcsinfo):
    """Replace the linear header WCS by the SIP one (jwst ``update_fits_wcsinfo``)."""
    inst = model.meta.wcsinfo.instance
    for key in list(inst):
        if key in _DROP_WCSINFO or key.split("_")[0] in ("a", "b", "ap", "bp") and key[-1].isdigit():
            del inst[key]
    inst.update(wcsinfo)


def _provenance(model, provenance):
    from webbflow.config import config_digest

    params = dict(provenance.get("step_parameters", {}))
    extra = model.extra_fits.instance if hasattr(model, "extra_fits") else None
    if extra is not None:
        # Keep the stage-1 parameters recorded in the rate: WF_PARS covers the whole chain.
        for card in extra.get("PRIMARY", {}).get("header", []):
            if card[0] == "WF_PARS":
                try:
                    params = {**json.loads(card[1]), **params}
                except (TypeError, ValueError):
                    pass
    digest = provenance.get("config_digest") or config_digest({"steps": params})
    cards = [("WF_VER", webbflow.__version__, "webbflow version"),
             ("WF_CFGD", digest, "sha256 of the product's config (canonical JSON)"),
             ("WF_PARS", json.dumps(params, sort_keys=True, separators=(",", ":")),
              "webbflow step parameters (JSON)")]
    _primary_cards(model, cards)


def _primary_cards(model, cards):
    """Set primary-header ``cards`` (key, value, comment) through the model's extra_fits."""
    extra = model.extra_fits.instance if hasattr(model, "extra_fits") else None
    if extra is None or not cards:
        return
    primary = extra.setdefault("PRIMARY", {}).setdefault("header", [])
    keep = [c for c in primary if c[0] not in {k for k, _, _ in cards}]
    primary[:] = keep + [list(c) for c in cards]
