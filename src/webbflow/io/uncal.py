"""Read and validate JWST ``*_uncal.fits`` exposures (Level1bModel layout).

astropy is used directly rather than stdatamodels: it is several times faster
on these files and lets us check the layout ourselves, so that every problem
becomes one :class:`~webbflow.io.errors.InputError` naming the file and the fix.
"""

import os
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from webbflow.io.errors import InputError
from webbflow.io.files import fits_truncation, read_at
from webbflow.ramp import Ramp, Readout

__all__ = ["CORON_SUBARRAYS", "HEADER_KEYWORDS", "SUPPORTED_EXP_TYPES", "TSO_EXP_TYPES", "Keyword", "UncalHeaders",
           "UncalStream", "is_tso", "read_uncal", "read_uncal_header_values", "read_uncal_headers",
           "readout_from_header", "validate_headers"]

TSO_EXP_TYPES = ("NRC_TSGRISM", "NRC_TSIMAGE")
"""NIRCam time-series EXP_TYPEs (jwst's ``TSO_EXP_TYPES``, NIRCam part)."""

SUPPORTED_EXP_TYPES = ("NRC_IMAGE", "NRC_CORON") + TSO_EXP_TYPES
"""EXP_TYPE values that detector1 reduces today."""

CORON_SUBARRAYS = {
    "SUB320A335R": "MASKA335R", "SUB320A430R": "MASKA430R", "SUB320ALWB": "MASKALWB",
    "SUB400X256ALWB": "MASKALWB", "SUB640A210R": "MASKA210R", "SUB640ASWB": "MASKASWB",
}
"""Coronagraphic subarray (SUBARRAY of an NRC_CORON exposure) -> the occulter it is centred on
(CORONMSK; coron-algorithms.md §1 and stdatamodels' subarray enum; SUB320ALWB is the obsolete
name, SUB400X256ALWB replaced it).  The coronagraphy mode reduces NRC_CORON exposures on these and on
``FULL`` (full-frame: imaging in stage 3, as jwst): a PSFMASK reference exists for them, their
association names carry them, and they have no reference pixels (pseudo reference rows apply)."""

_UNREADABLE = "the file is truncated or corrupt; download it again from MAST"
_READ_ERRORS = (OSError, ValueError, TypeError, IndexError, EOFError, Warning)
"""What astropy and the plane reader raise on a corrupt file (a warning: where the caller's own filters
make it an error)."""


def _unreadable(path, what, exc):
    """The InputError for ``what`` of ``path``, which could not be read (``exc``: why)."""
    return InputError(path, f"{what} ({exc.__class__.__name__}: {exc})", _UNREADABLE)


def is_tso(primary):
    """Whether jwst treats the exposure as a time series (``jwst.lib.pipe_utils.is_tso``).

    TSOVISIT true or a time-series EXP_TYPE, but never with fewer than two
    integrations (NINTS of the whole exposure).

    Parameters
    ----------
    primary : Mapping
        The uncal primary header.

    Returns
    -------
    bool
    """
    nints = primary.get("NINTS")
    if isinstance(nints, (int, np.integer)) and not isinstance(nints, bool) and nints < 2:
        return False
    tsovisit = primary.get("TSOVISIT")
    return tsovisit is True or str(primary.get("EXP_TYPE", "")).strip().upper() in TSO_EXP_TYPES

_UNCAL_MODELS = ("Level1bModel",)


@dataclass
class UncalHeaders:
    """Headers and tables of an uncal file that products carry over.

    Attributes
    ----------
    primary : astropy.io.fits.Header
        The primary header (all exposure-level keywords).
    sci : astropy.io.fits.Header
        The SCI extension header (times, pointing, WCS keywords).
    int_times : numpy.ndarray or None
        The INT_TIMES table as a structured array, when present.
    path : str
        The file read.
    extensions : dict
        EXTNAME -> header of every extension (for the ZEROFRAM check).
    """

    primary: fits.Header
    sci: fits.Header
    int_times: np.ndarray | None = None
    path: str = ""
    extensions: dict = field(default_factory=dict)


def _open(path):
    """Open a FITS file, turning every low-level failure into an InputError."""
    try:
        # astropy only *warns* about a truncated file (and returns garbage later): told before it opens
        # the file, with no warning filter (they are process-wide: detector1 opens references meanwhile)
        truncated = fits_truncation(path)
        hdul = None if truncated else fits.open(path, memmap=False, lazy_load_hdus=False)
    except FileNotFoundError:
        raise InputError(path, "file not found", "check inputs.uncal_dir and the file name") from None
    except _READ_ERRORS as exc:
        raise _unreadable(path, "not a readable FITS file", exc) from None
    if truncated:
        raise InputError(path, f"the file is {truncated}", _UNREADABLE)
    return hdul


def _check_identity(path, primary, exp_types):
    model = primary.get("DATAMODL")
    if model is not None and model not in _UNCAL_MODELS:
        raise InputError(
            path,
            f"DATAMODL is {model!r}, not an uncal file (expected one of {', '.join(_UNCAL_MODELS)})",
            "give the *_uncal.fits file of this exposure, not a later product",
        )
    instrument = str(primary.get("INSTRUME", "")).upper()
    if instrument != "NIRCAM":
        raise InputError(
            path,
            f"INSTRUME is {instrument or 'missing'!r}, webbflow reduces NIRCam only",
            "remove the file from inputs.uncal_dir",
        )
    if exp_types is not None:
        exp_type = primary.get("EXP_TYPE")
        if exp_type not in exp_types:
            raise InputError(
                path,
                f"EXP_TYPE {exp_type!r} is not supported (supported: {', '.join(exp_types)})",
                "remove the exposure from inputs.uncal_dir or reduce it with the jwst pipeline",
            )


def read_uncal_headers(path, validate=False):
    """Read the headers of an uncal file without reading its pixels.

    Parameters
    ----------
    path : str or os.PathLike
        An ``*_uncal.fits`` file.
    validate : bool
        Also check every keyword a step depends on against each other and the
        data shape (:func:`validate_headers`).

    Returns
    -------
    UncalHeaders
        Primary and SCI headers and the other extensions' headers
        (``int_times`` is left as None).

    Raises
    ------
    InputError
        If the file is not a readable FITS file, has no SCI extension, or
        (``validate``) a keyword is missing or wrong.
    """
    with _open(path) as hdul:
        primary = hdul[0].header.copy()
        if "SCI" not in hdul:
            raise InputError(path, "no SCI extension, not an uncal file", "give a *_uncal.fits file")
        sci = hdul["SCI"].header.copy()
        extensions = {hdu.name: hdu.header.copy() for hdu in hdul[1:] if hdu.name}
    if validate:
        validate_headers(primary, sci, path, extensions)
    return UncalHeaders(primary=primary, sci=sci, path=str(path), extensions=extensions)


def read_uncal_header_values(path, validate=False):
    """:func:`read_uncal_headers` with plain-dict headers, parsed from the file's raw header blocks.

    Planning reads thousands of headers and needs only their values: the cards are parsed here
    (strings, logicals, integers, reals, undefined; the first of a repeated keyword, as astropy's
    ``header[key]``), an order of magnitude faster than ``astropy.io.fits``.  Anything unusual (a
    CONTINUE or HIERARCH card, a complex value, a header or data that runs past the end of the
    file) is left to :func:`read_uncal_headers`, which reads it, or refuses it with its error.

    Parameters
    ----------
    path : str or os.PathLike
    validate : bool
        As for :func:`read_uncal_headers`.

    Returns
    -------
    UncalHeaders
        ``primary``, ``sci`` and ``extensions`` are dicts (keyword -> value).
    """
    hdus = _raw_headers(path)
    if hdus is None or "SCI" not in [h.get("EXTNAME") for h in hdus[1:]]:
        full = read_uncal_headers(path, validate=validate)
        return UncalHeaders(primary=dict(full.primary.items()), sci=dict(full.sci.items()), path=str(path),
                            extensions={k: dict(v.items()) for k, v in full.extensions.items()})
    primary = hdus[0]
    extensions = {}
    for header in hdus[1:]:
        name = str(header.get("EXTNAME", "")).strip().upper()
        if name:
            extensions.setdefault(name, header)
    sci = extensions["SCI"]
    if validate:
        validate_headers(primary, sci, path, extensions)
    return UncalHeaders(primary=primary, sci=sci, path=str(path), extensions=extensions)


_BLOCK = 2880


def _card_value(text):
    """The value of a FITS card's value field (after ``= ``); None when it is not a simple one."""
    text = text.lstrip()
    if text.startswith("'"):
        out, i = [], 1
        while i < len(text):
            if text[i] == "'":
                if text[i + 1:i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                return "".join(out).rstrip()
            out.append(text[i])
            i += 1
        return None
    token = text.split("/", 1)[0].strip()
    if not token:
        return fits.card.UNDEFINED
    if token in ("T", "F"):
        return token == "T"
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token.replace("D", "E").replace("d", "e"))
    except ValueError:
        return None


def _raw_headers(path):
    """Keyword -> value of every HDU's header, or None where :func:`read_uncal_header_values` defers."""
    try:
        size = os.path.getsize(path)
        hdus, offset = [], 0
        with open(path, "rb") as f:
            while offset < size:
                f.seek(offset)
                cards, blocks, end = {}, 0, False
                while not end:
                    block = f.read(_BLOCK)
                    if len(block) < _BLOCK:
                        return None
                    blocks += 1
                    text = block.decode("ascii")
                    for i in range(0, _BLOCK, 80):
                        key = text[i:i + 8].rstrip()
                        if key == "END":
                            end = True
                            break
                        if key in ("CONTINUE", "HIERARCH"):
                            return None
                        if text[i + 8:i + 10] != "= ":
                            continue  # COMMENT, HISTORY, blank: no value
                        value = _card_value(text[i + 10:i + 80])
                        if value is None:
                            return None
                        cards.setdefault(key, value)
                naxis = cards.get("NAXIS", 0)
                npix = 0
                if naxis:
                    npix = 1
                    for k in range(1, naxis + 1):
                        npix *= cards[f"NAXIS{k}"]
                data = abs(cards["BITPIX"]) // 8 * cards.get("GCOUNT", 1) * (cards.get("PCOUNT", 0) + npix)
                offset += blocks * _BLOCK + -(-data // _BLOCK) * _BLOCK
                if offset > size:
                    return None  # truncated: astropy's reader says so
                hdus.append(cards)
        return hdus
    except (OSError, UnicodeDecodeError, KeyError, TypeError):
        return None


_DETECTORS = tuple(f"NRC{m}{n}" for m in "AB" for n in ("1", "2", "3", "4", "LONG"))
_AXES = (-2, -1, 1, 2)
_FULL = 2048  # NIRCam detector pixels per side


@dataclass(frozen=True)
class Keyword:
    """A primary-header keyword that a step depends on, and what makes its value valid.

    Attributes
    ----------
    name : str
        The FITS keyword.
    kind : type
        ``int``, ``float``, ``str`` or ``bool``.
    used_by : str
        What depends on it (for the error message).
    default : object
        jwst's own value when the keyword is absent; ``REQUIRED`` when jwst has
        none (its schemas give no default and its steps fail or go wrong).
    low, high : number, optional
        Inclusive range of a number.
    choices : tuple, optional
        Allowed values of a string or number.
    """

    name: str
    kind: type
    used_by: str
    default: object = "REQUIRED"
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None

    @property
    def required(self):
        return isinstance(self.default, str) and self.default == "REQUIRED"


HEADER_KEYWORDS = (
    Keyword("NINTS", int, "the SCI shape and the exposure table", low=1),
    Keyword("NGROUPS", int, "the SCI shape, every ramp step", low=1),
    Keyword("NFRAMES", int, "saturation, dark_current, jump and ramp_fit", low=1),
    Keyword("GROUPGAP", int, "dark_current and the group time", low=0),
    Keyword("TFRAME", float, "ramp_fit", low=1e-6),
    Keyword("TGROUP", float, "ramp_fit and jump (the rates are DN per TGROUP)", low=1e-6),
    Keyword("DETECTOR", str, "the reference selection and the product names", choices=_DETECTORS),
    Keyword("FILTER", str, "the reference selection and the product folders"),
    Keyword("PUPIL", str, "the reference selection"),
    Keyword("EXP_TYPE", str, "the choice of mode"),
    Keyword("READPATT", str, "the reference selection"),
    Keyword("SUBARRAY", str, "the reference selection"),
    Keyword("SUBSTRT1", int, "the reference cut-outs and refpix", low=1, high=_FULL),
    Keyword("SUBSTRT2", int, "the reference cut-outs and refpix", low=1, high=_FULL),
    Keyword("SUBSIZE1", int, "the reference cut-outs (the SCI width)", low=1, high=_FULL),
    Keyword("SUBSIZE2", int, "the reference cut-outs (the SCI height)", low=1, high=_FULL),
    Keyword("NOUTPUTS", int, "refpix (amplifiers)", choices=(1, 4)),
    Keyword("FASTAXIS", int, "refpix (readout direction)", choices=_AXES),
    Keyword("SLOWAXIS", int, "refpix (readout direction)", choices=_AXES),
    Keyword("DATE-OBS", str, "the reference selection (USEAFTER)"),
    # jwst's stcal takes a missing DRPFRMS1 as 0 and uses it only for the pedestal, not the rates.
    Keyword("DRPFRMS1", int, "ramp_fit (pedestal only)", default=0, low=0),
    # absent: the gain reference's GAINFACT is used, as jwst's gain_scale does.
    Keyword("GAINFACT", float, "gain_scale", default=None, low=1e-6),
    # absent: no ZEROFRAME (checked against the extensions below).
    Keyword("ZEROFRAM", bool, "saturation, superbias, refpix, linearity and ramp_fit", default=None),
)
"""Every primary-header keyword that detector1 or the exposure table depends on."""

_GRISMS = ("GRISMR", "GRISMC")

_FIX = "the header is damaged or not from JWST; download the exposure again from MAST or remove it"


def _bad(path, key, value, problem, fix=_FIX):
    return InputError(path, f"header keyword {key}={value!r} {problem}", fix)


def _typed(path, kw, value):
    """The keyword's value as ``kw.kind``; an InputError if it is not one."""
    if kw.kind is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise _bad(path, kw.name, value, f"is not a FITS logical (T or F), needed by {kw.used_by}")
    if kw.kind is str:
        if not isinstance(value, str) or not value.strip():
            raise _bad(path, kw.name, value, f"is not a non-empty string, needed by {kw.used_by}")
        text = value.strip().upper()
        if kw.choices is not None and text not in kw.choices:
            raise _bad(path, kw.name, value, f"is not one of {', '.join(kw.choices)}, needed by {kw.used_by}")
        return value
    # numbers: FITS integers and reals, not strings, logicals or undefined values
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _bad(path, kw.name, value, f"is not a number, needed by {kw.used_by}")
    if not np.isfinite(value):
        raise _bad(path, kw.name, value, f"is not finite, needed by {kw.used_by}")
    if kw.kind is int:
        if float(value) != int(value):
            raise _bad(path, kw.name, value, f"is not an integer, needed by {kw.used_by}")
        value = int(value)
    else:
        value = float(value)
    if kw.choices is not None and value not in kw.choices:
        raise _bad(path, kw.name, value,
                   f"is not one of {', '.join(map(str, kw.choices))}, needed by {kw.used_by}")
    if kw.low is not None and value < kw.low:
        what = "positive" if kw.low > 0 and kw.low < 1 else f">= {kw.low}"
        raise _bad(path, kw.name, value, f"must be {what}, needed by {kw.used_by}")
    if kw.high is not None and value > kw.high:
        raise _bad(path, kw.name, value, f"must be <= {kw.high}, needed by {kw.used_by}")
    return value


def validate_headers(primary, sci=None, path="<header>", extensions=None):
    """Check every header value a step depends on; return them typed.

    Called when the exposure table is built and by :func:`read_uncal`, so the
    workflow, the CLI and the library refuse the same exposures, before any
    product is written.

    Parameters
    ----------
    primary : Mapping
        The uncal primary header.
    sci : Mapping, optional
        The SCI extension header: its NAXISn are checked against NINTS,
        NGROUPS and SUBSIZE1/2 (and INTSTART/INTEND of a segment).
    path : str
        The file, for the error message.
    extensions : Mapping, optional
        EXTNAME -> header of the file's other extensions: the file must end
        with its ASDF extension (a file cut at an HDU boundary is refused as
        truncated), and ZEROFRAM is checked against the ZEROFRAME extension
        and its shape.

    Returns
    -------
    dict
        keyword -> value (``int``/``float``/``str``/``bool``; jwst's default,
        possibly None, for an optional keyword that is absent).

    Raises
    ------
    InputError
        One line naming the file, the keyword, what is wrong and the fix.
    """
    values = {}
    for kw in HEADER_KEYWORDS:
        value = primary.get(kw.name)
        if value is None or isinstance(value, fits.card.Undefined):
            if kw.required:
                raise InputError(path, f"header keyword {kw.name} is missing (needed by {kw.used_by}; "
                                 "jwst has no default for it)", _FIX)
            values[kw.name] = kw.default
            continue
        values[kw.name] = _typed(path, kw, value)
    v = values
    # the group time is the frames of a group and its gap (verified on real STScI headers:
    # RAPID 1+0, BRIGHT2 2+0, SHALLOW4 4+1, DEEP8 8+12 frames)
    expected = (v["NFRAMES"] + v["GROUPGAP"]) * v["TFRAME"]
    if not np.isclose(v["TGROUP"], expected, rtol=1e-4, atol=1e-6):
        raise InputError(
            path, f"header keywords TGROUP={v['TGROUP']!r} and (NFRAMES + GROUPGAP) * TFRAME = "
            f"({v['NFRAMES']} + {v['GROUPGAP']}) * {v['TFRAME']!r} = {expected:.6g} disagree", _FIX)
    if abs(v["FASTAXIS"]) == abs(v["SLOWAXIS"]):
        raise InputError(path, f"header keywords FASTAXIS={v['FASTAXIS']} and SLOWAXIS={v['SLOWAXIS']} "
                         "name the same axis", _FIX)
    for axis in ("1", "2"):
        start, size = v[f"SUBSTRT{axis}"], v[f"SUBSIZE{axis}"]
        if start + size - 1 > _FULL:
            raise InputError(path, f"header keywords SUBSTRT{axis}={start} and SUBSIZE{axis}={size} reach "
                             f"beyond the {_FULL}-pixel detector", _FIX)
    _check_segment(path, primary, v["NINTS"])
    if str(v["EXP_TYPE"]).strip().upper() == "NRC_TSGRISM" and str(v["PUPIL"]).strip().upper() not in _GRISMS:
        raise InputError(path, f"header keyword PUPIL={v['PUPIL']!r} is not a grism ({', '.join(_GRISMS)}), but "
                         "EXP_TYPE is NRC_TSGRISM: there is no spectrum to extract",
                         "the header is damaged; download the exposure again from MAST")
    _check_coron_subarray(path, v)
    nints = v["NINTS"]
    if sci is not None:
        nints = _check_shape(path, v, primary, sci)
    if extensions is not None:
        _check_complete(path, extensions)
        _check_zeroframe(path, v, extensions, nints)
        if is_tso(primary) and "INT_TIMES" not in extensions:
            raise InputError(path, "a time series (EXP_TYPE/TSOVISIT) without its INT_TIMES table: the light "
                             "curve would have no times", "the file is truncated; download it again from MAST")
    return values


def _check_coron_subarray(path, v):
    """An NRC_CORON exposure's SUBARRAY is one the coronagraphy mode knows (:data:`CORON_SUBARRAYS` or FULL):
    on another, coron3 would find no PSFMASK after stages 1 and 2 had run, and pseudo reference rows would
    be taken from an aperture whose reference-pixel layout nobody checked."""
    subarray = str(v["SUBARRAY"]).strip().upper()
    if str(v["EXP_TYPE"]).strip().upper() != "NRC_CORON" or subarray == "FULL" or subarray in CORON_SUBARRAYS:
        return
    raise InputError(path, f"header keyword SUBARRAY={v['SUBARRAY']!r} is not a coronagraphic subarray the "
                     f"coronagraphy mode knows (EXP_TYPE NRC_CORON on FULL or {', '.join(CORON_SUBARRAYS)}): it "
                     "has no PSFMASK reference and no known reference-pixel layout",
                     "check SUBARRAY against APERNAME and download the exposure again from MAST if the header is "
                     "damaged; a new coronagraphic subarray needs its entry in webbflow.io.uncal.CORON_SUBARRAYS "
                     "and a PSFMASK reference; else remove the file from inputs.uncal_dir")


def _check_complete(path, extensions):
    """Refuse a file that ends before its ASDF extension, the last HDU stdatamodels writes.

    A download cut exactly at an HDU boundary reads as a valid FITS file with
    fewer extensions (no INT_TIMES, ZEROFRAME, ...), which would be reduced into
    products missing them.  INT_TIMES alone is not required: real STScI uncal
    files without it exist (NINTS=1) and jwst copies whatever it finds; but
    every file the pipeline writes ends with ASDF, and jwst 3.0 itself cannot
    start on a FITS file without one (``read_metadata``: ``hdulist["ASDF"]``).
    """
    if "ASDF" not in extensions:
        found = ", ".join(["PRIMARY", *extensions])
        raise InputError(path, f"no ASDF extension (the file holds only {found}), which every JWST file ends "
                         "with", "the file is truncated: download it again from MAST")


def _check_segment(path, primary, nints):
    """EXSEGNUM/EXSEGTOT of a segment: both or neither, 1 <= EXSEGNUM <= EXSEGTOT <= NINTS."""
    num, total = primary.get("EXSEGNUM"), primary.get("EXSEGTOT")
    if num is None and total is None:
        return
    if num is None or total is None:
        missing = "EXSEGNUM" if num is None else "EXSEGTOT"
        raise InputError(path, f"header keyword {missing} is missing (the other of EXSEGNUM/EXSEGTOT is set)", _FIX)
    total = _typed(path, Keyword("EXSEGTOT", int, "the segment names", low=1, high=nints), total)
    _typed(path, Keyword("EXSEGNUM", int, "the segment names", low=1, high=total), num)


def _check_int_times(path, int_times, first, nints):
    """INT_TIMES of a time series must time every integration of the file, in increasing order.

    ``first`` is the file's first integration number (INTSTART, 1 without segments).
    """
    names = int_times.dtype.names or ()
    for column in ("integration_number", "int_mid_MJD_UTC"):
        if column not in names:
            raise InputError(path, f"INT_TIMES has no {column} column",
                             "the file is damaged; download it again from MAST")
    numbers = np.asarray(int_times["integration_number"])
    wanted = np.arange(first, first + nints)
    rows = [np.flatnonzero(numbers == n) for n in wanted]
    missing = [int(n) for n, r in zip(wanted, rows) if r.size == 0]
    if missing:
        raise InputError(path, f"INT_TIMES has no row for integration(s) {missing[:5]} of this file "
                         f"(integrations {first}..{first + nints - 1})",
                         "the file is damaged; download it again from MAST")
    mid = np.asarray(int_times["int_mid_MJD_UTC"], dtype=np.float64)[[r[0] for r in rows]]
    if not np.all(np.isfinite(mid)) or np.any(np.diff(mid) <= 0):
        bad = int(wanted[1:][np.diff(mid) <= 0][0]) if np.any(np.diff(mid) <= 0) else None
        where = f" (integration {bad} is not later than the one before)" if bad else " (not finite)"
        raise InputError(path, f"INT_TIMES mid-integration times are not strictly increasing{where}",
                         "the file is damaged; download it again from MAST")


def _check_shape(path, v, primary, sci):
    """SCI (NAXIS4..1) against (NINTS or the segment's INTEND-INTSTART+1, NGROUPS, SUBSIZE2, SUBSIZE1)."""
    if sci.get("NAXIS") != 4:
        raise InputError(path, f"SCI is {sci.get('NAXIS')}-D {_dtype_name(sci)}, an uncal file has 4-D uint16 "
                         "(nints, ngroups, ny, nx) ramps", "give the *_uncal.fits file of this exposure")
    shape = tuple(int(sci[f"NAXIS{k}"]) for k in (4, 3, 2, 1))
    nints = v["NINTS"]
    start, end = primary.get("INTSTART"), primary.get("INTEND")
    if start is not None or end is not None:  # one segment of a segmented exposure
        kw_start = Keyword("INTSTART", int, "segmented exposures", low=1, high=v["NINTS"])
        kw_end = Keyword("INTEND", int, "segmented exposures", low=1, high=v["NINTS"])
        if start is None or end is None:
            missing = "INTSTART" if start is None else "INTEND"
            raise InputError(path, f"header keyword {missing} is missing (the other of INTSTART/INTEND is set)",
                             _FIX)
        start, end = _typed(path, kw_start, start), _typed(path, kw_end, end)
        if end < start:
            raise InputError(path, f"header keywords INTSTART={start} and INTEND={end} are reversed", _FIX)
        nints, nints_text = end - start + 1, f"INTEND - INTSTART + 1 = {end - start + 1}"
    else:
        nints_text = f"NINTS={nints}"
    expected = (nints, v["NGROUPS"], v["SUBSIZE2"], v["SUBSIZE1"])
    if shape != expected:
        names = ("integrations", "groups", "rows", "columns")
        keys = (nints_text, f"NGROUPS={v['NGROUPS']}", f"SUBSIZE2={v['SUBSIZE2']}", f"SUBSIZE1={v['SUBSIZE1']}")
        bad = [f"{key} but SCI has {n} {name}" for key, n, want, name in zip(keys, shape, expected, names)
               if n != want]
        raise InputError(path, f"header keywords disagree with the data: {'; '.join(bad)}",
                         "the file is truncated or inconsistent; download it again from MAST")
    return nints


def _dtype_name(header):
    bitpix = header.get("BITPIX")
    if bitpix == 16 and header.get("BZERO") == 32768:
        return "uint16"
    return {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "float32", -64: "float64"}.get(bitpix, "data")


def _check_zeroframe(path, v, extensions, nints):
    zf = extensions.get("ZEROFRAME")
    if v["ZEROFRAM"] is True and zf is None:
        raise InputError(path, "header keyword ZEROFRAM=True but the file has no ZEROFRAME extension",
                         "the file is truncated; download it again from MAST")
    if zf is not None and v["ZEROFRAM"] is not True:
        raise InputError(path, f"header keyword ZEROFRAM={v['ZEROFRAM']!r} but the file has a ZEROFRAME "
                         "extension", "the header is damaged; download the exposure again from MAST")
    if zf is not None:
        shape = tuple(int(zf.get(f"NAXIS{k}", 0)) for k in range(int(zf.get("NAXIS", 0)), 0, -1))
        expected = (nints, v["SUBSIZE2"], v["SUBSIZE1"])
        if shape != expected:
            raise InputError(path, f"ZEROFRAME is {shape}, not (integrations, SUBSIZE2, SUBSIZE1) = {expected}",
                             "the file is truncated or inconsistent; download it again from MAST")


def readout_from_header(primary, nints=None, ngroups=None, path="<header>"):
    """Build a :class:`~webbflow.ramp.Readout` from an uncal primary header.

    Parameters
    ----------
    primary : Mapping
        Primary header of the exposure; validated by :func:`validate_headers`.
    nints, ngroups : int, optional
        Shape of the SCI cube; default to NINTS/NGROUPS.  The SCI shape wins
        because segmented exposures hold only some of NINTS integrations.
    path : str
        The file, for error messages.

    Returns
    -------
    Readout

    Raises
    ------
    InputError
        If a keyword the steps use is missing or invalid.
    """
    v = validate_headers(primary, path=path)
    return Readout(
        nints=int(nints if nints is not None else v["NINTS"]),
        ngroups=int(ngroups if ngroups is not None else v["NGROUPS"]),
        nframes=v["NFRAMES"],
        groupgap=v["GROUPGAP"],
        tframe=v["TFRAME"],
        tgroup=v["TGROUP"],
        detector=str(v["DETECTOR"]),
        fastaxis=v["FASTAXIS"],
        slowaxis=v["SLOWAXIS"],
        noutputs=v["NOUTPUTS"],
        substrt1=v["SUBSTRT1"],
        substrt2=v["SUBSTRT2"],
        subarray=str(v["SUBARRAY"]),
        drop_frames1=v["DRPFRMS1"],
    )


def _standard_sci(hdr):
    """True for raw uint16 ramps stored as big-endian int16 with BZERO = 32768 (every real uncal)."""
    return (hdr.get("BITPIX") == 16 and hdr.get("NAXIS") == 4 and hdr.get("BZERO") == 32768
            and hdr.get("BSCALE", 1) == 1)


def _read_sci_planes(path, offset, shape, ints, groups=None):
    """Integrations ``ints`` (a range) of standard SCI ramps as float32, one group at a time.

    ``groups`` (a sequence of group indices) reads only those groups.
    """
    nints, ngroups, ny, nx = shape
    groups = range(ngroups) if groups is None else list(groups)
    out = np.empty((len(ints), len(groups), ny, nx), np.float32)
    plane = np.empty((ny, nx), ">u2")  # one buffer for every group read
    reads = ((offset + (i * ngroups + g) * plane.nbytes, plane) for i in ints for g in groups)
    from webbflow.io import _decode

    with open(path, "rb") as f:
        for k, raw in enumerate(read_at(f, reads)):
            dest = out[k // len(groups), k % len(groups)]
            if _decode.NATIVE_LITTLE:  # swap, flip and convert in one pass (three numpy passes)
                _decode.uint16_be_to_float32(raw.view(np.uint16), dest)
                continue
            # int16 + 32768 as uint16 is the int16's bit pattern with the sign bit flipped
            raw ^= np.uint16(0x8000)
            dest[...] = raw
    return out


def _read_sci_float32(hdul, path):
    """The SCI ramps as float32, read one group at a time; None for a layout astropy must decode.

    Raw uncal ramps are uint16 stored as big-endian int16 with BZERO = 32768.
    Decoding them through astropy holds the int16, uint16 and float32 cubes at
    once; reading a group at a time holds the float32 cube and one group.
    """
    hdr = hdul["SCI"].header
    if not _standard_sci(hdr):
        return None
    shape = tuple(int(hdr[f"NAXIS{k}"]) for k in range(4, 0, -1))
    offset = hdul.fileinfo(hdul.index_of("SCI"))["datLoc"]
    return _read_sci_planes(path, offset, shape, range(shape[0]))


def _checked_headers(path, hdul, exp_types):
    """Identity and keyword checks of an open uncal file; returns (primary, extensions)."""
    primary = hdul[0].header
    _check_identity(path, primary, exp_types)
    if "SCI" not in hdul:
        raise InputError(path, "no SCI extension, not an uncal file", "give a *_uncal.fits file")
    extensions = {hdu.name: hdu.header for hdu in hdul[1:] if hdu.name}
    validate_headers(primary, hdul["SCI"].header, path, extensions)
    return primary, extensions


class UncalStream:
    """An uncal exposure read a few integrations at a time (detector1 on exposures too big for memory).

    Opening it runs every check :func:`read_uncal` runs that does not need the
    pixels (identity, keywords, SCI shape, ZEROFRAME, INT_TIMES); the pixels
    are read by :meth:`ramp`, integration by integration and group by group.

    Parameters
    ----------
    path : str or os.PathLike
        An ``*_uncal.fits`` exposure whose SCI holds raw uint16 ramps.
    exp_types : sequence of str or None
        EXP_TYPE values accepted.

    Attributes
    ----------
    readout : Readout
    headers : UncalHeaders
    shape : tuple
        (nints, ngroups, ny, nx) of the whole exposure.
    """

    def __init__(self, path, exp_types=SUPPORTED_EXP_TYPES):
        self.path = str(path)
        with _open(path) as hdul:
            primary, extensions = _checked_headers(path, hdul, exp_types)
            sci = hdul["SCI"].header
            if not _standard_sci(sci):
                raise InputError(path, f"SCI is {_dtype_name(sci)} with NAXIS={sci.get('NAXIS')}, not the raw 4-D "
                                 "uint16 ramps an uncal file holds", "give the *_uncal.fits file of this exposure")
            self.shape = tuple(int(sci[f"NAXIS{k}"]) for k in range(4, 0, -1))
            self._offset = hdul.fileinfo(hdul.index_of("SCI"))["datLoc"]
            end = self._offset + int(np.prod(self.shape)) * 2
            if os.path.getsize(path) < end:
                raise InputError(path, "pixel data cannot be read (SCI ends past the end of the file)",
                                 _UNREADABLE)
            self._zf = None
            if "ZEROFRAME" in hdul:
                self._zf = (hdul.fileinfo(hdul.index_of("ZEROFRAME"))["datLoc"], dict(hdul["ZEROFRAME"].header))
            try:
                int_times = np.array(hdul["INT_TIMES"].data) if "INT_TIMES" in hdul else None
            except _READ_ERRORS as exc:
                raise _unreadable(path, "INT_TIMES cannot be read", exc) from None
            self.headers = UncalHeaders(
                primary=primary.copy(), sci=sci.copy(), int_times=int_times, path=str(path),
                extensions={name: header.copy() for name, header in extensions.items()},
            )
        if is_tso(primary):
            _check_int_times(path, int_times, int(primary.get("INTSTART", 1)), self.shape[0])
        self.readout = readout_from_header(primary, nints=self.shape[0], ngroups=self.shape[1], path=path)

    @property
    def has_zeroframe(self):
        """True when the exposure has a ZEROFRAME extension."""
        return self._zf is not None

    def _zeroframe(self, i0, i1):
        if self._zf is None:
            return None
        offset, hdr = self._zf
        ny, nx = self.shape[2:]
        with fits.open(self.path, memmap=False) as hdul:
            # a section reads only these integrations; astropy applies BZERO/BSCALE
            section = hdul["ZEROFRAME"].section[i0:i1]
        return np.asarray(section, dtype=np.float32).reshape(i1 - i0, ny, nx)

    def ramp(self, i0, i1, groups=None):
        """Integrations ``i0 .. i1-1`` as a :class:`~webbflow.ramp.Ramp` with empty DQ.

        ``groups`` (group indices) reads only those groups (and no ZEROFRAME).
        """
        try:
            sci = _read_sci_planes(self.path, self._offset, self.shape, range(i0, i1), groups)
            zeroframe = self._zeroframe(i0, i1) if groups is None else None
        except _READ_ERRORS as exc:
            raise _unreadable(self.path, "pixel data cannot be read", exc) from None
        return Ramp.from_uncal(sci, zeroframe=zeroframe)


def read_uncal(path, exp_types=SUPPORTED_EXP_TYPES):
    """Read an uncal exposure into a ramp ready for detector1.

    Parameters
    ----------
    path : str or os.PathLike
        An ``*_uncal.fits`` file (Level1bModel layout: SCI uint16
        (nints, ngroups, ny, nx), optional ZEROFRAME and INT_TIMES).
    exp_types : sequence of str or None
        EXP_TYPE values accepted; None accepts any.

    Returns
    -------
    ramp : Ramp
        float32 data, empty PIXELDQ/GROUPDQ, the zero frame when downlinked.
    readout : Readout
        Readout description from the primary header.
    headers : UncalHeaders
        Headers and INT_TIMES to carry over to the products.

    Raises
    ------
    InputError
        For a truncated/corrupt file, a file that is not an uncal exposure,
        an unsupported EXP_TYPE, or a header keyword a step depends on that is
        missing, invalid or inconsistent with the data (:func:`validate_headers`);
        the message names the file, the keyword and the fix.
    """
    with _open(path) as hdul:
        primary, extensions = _checked_headers(path, hdul, exp_types)
        try:  # a complete file (_open): every HDU's data is there
            sci = _read_sci_float32(hdul, path)
            decoded = sci is not None  # 4-D uint16 ramps, already float32
            if not decoded:  # an unusual layout: let astropy decode it (and the checks below judge it)
                sci = hdul["SCI"].data
            zeroframe = hdul["ZEROFRAME"].data if "ZEROFRAME" in hdul else None
            int_times = np.array(hdul["INT_TIMES"].data) if "INT_TIMES" in hdul else None
        except _READ_ERRORS as exc:
            raise _unreadable(path, "pixel data cannot be read", exc) from None
        if not decoded and (sci is None or sci.ndim != 4 or sci.dtype != np.uint16):
            found = "no data" if sci is None else f"{sci.ndim}-D {sci.dtype.name}"
            raise InputError(
                path,
                f"SCI is {found}, an uncal file has 4-D uint16 (nints, ngroups, ny, nx) ramps",
                "give the *_uncal.fits file of this exposure",
            )
        headers = UncalHeaders(
            primary=primary.copy(), sci=hdul["SCI"].header.copy(), int_times=int_times, path=str(path),
            extensions={name: header.copy() for name, header in extensions.items()},
        )
        if is_tso(primary):
            _check_int_times(path, int_times, int(primary.get("INTSTART", 1)), sci.shape[0])
        ramp = Ramp.from_uncal(sci, zeroframe=zeroframe)
    readout = readout_from_header(primary, nints=sci.shape[0], ngroups=sci.shape[1], path=path)
    return ramp, readout, headers
