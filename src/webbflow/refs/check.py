"""Check a reference file against the exposure it is used for, before anything is read from it.

Every loader (detector1's :mod:`webbflow.refs.load`, image2's :mod:`webbflow.io.cal`) calls
:func:`check_reference` on the open file, whether the file came from ``overrides``, a
``references.dir`` folder or the CRDS cache.  It uses only the headers and the file size, so
the loaders' fast paths (only the rows and planes needed, the dark read lazily) stay as they
are, and it checks:

- ``REFTYPE`` is the type the file is used as (case-insensitive), ``INSTRUME`` is NIRCAM and
  ``DETECTOR`` is the exposure's (or ``ANY``/``MULTIPLE``/``N/A``, or a ``P_DETECT`` pattern
  naming it, as CRDS writes shared references);
- the file is complete: every extension's data lies inside the file (astropy only warns about
  a truncated file and drops what it cannot read), and nothing is left after the last
  extension it can read (a file cut inside a header);
- each extension the loader reads is present, is an image of the expected dimensions
  (2-D ``(ny, nx)``; dark SCI 2-D or 3-D planes; linearity COEFFS ``(n, ny, nx)``) with a
  numeric type (DQ an integer one), and all share one 2-D shape that agrees with SUBSIZE1/2;
- the reference's region (SUBSTRT1/2 and its shape) contains the exposure's subarray: a
  subarray reference at another position is an error, never cut from the wrong corner.

A failure is one :class:`~webbflow.io.errors.ReferenceFileError`: the file, what is wrong,
and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from webbflow.io.errors import InputError, ReferenceFileError

__all__ = ["Exposure", "LAYOUTS", "check_exposure_geometry", "check_reference", "check_reference_meta"]

_WILDCARD_DETECTORS = {"ANY", "MULTIPLE", "N/A", "GENERIC"}
_DETECTOR_ALIASES = {"NRCA5": "NRCALONG", "NRCB5": "NRCBLONG"}
_IMAGE_BITPIX = {8, 16, 32, 64, -32, -64}

# reftype -> ((EXTNAME, allowed ndims, must be integer), ...): the extensions each loader
# reads, all required (CRDS writes DQ and DQ_DEF into every NIRCam reference of these types,
# so a missing DQ means a damaged or foreign file, not "no bad pixels").
LAYOUTS = {
    "mask": (("DQ", (2,), True),),
    "saturation": (("SCI", (2,), False), ("DQ", (2,), True)),
    "superbias": (("SCI", (2,), False), ("DQ", (2,), True)),
    "linearity": (("COEFFS", (3,), False), ("DQ", (2,), True)),
    "dark": (("SCI", (2, 3), False), ("DQ", (2,), True)),
    "gain": (("SCI", (2,), False),),
    "readnoise": (("SCI", (2,), False),),
    "flat": (("SCI", (2,), False), ("DQ", (2,), True)),
    "area": (("SCI", (2,), False),),
    "photom": (),
    "distortion": (),
}
"""Image extensions each reference type must hold; optional ones (ERR) are checked when present."""

_OPTIONAL = {"flat": (("ERR", (2,), False),)}
_TABLES = {"photom": ("PHOTOM",)}


@dataclass(frozen=True)
class Exposure:
    """What a reference is checked against: the science detector and subarray region.

    Attributes
    ----------
    detector : str or None
        DETECTOR of the exposure (None skips the detector check).
    xstart, ystart : int
        1-indexed SUBSTRT1/SUBSTRT2 of the science array in the full frame.
    ny, nx : int or None
        Shape of the science array (None: no pixel geometry to check, e.g. photom).
    instrument : str
    """

    detector: str | None
    xstart: int = 1
    ystart: int = 1
    ny: int | None = None
    nx: int | None = None
    instrument: str = "NIRCAM"


def _fail(path, problem, reftype, fix=None):
    return ReferenceFileError(path, problem, fix or f"replace it or name another with overrides.{reftype}")


def _norm(value):
    text = str(value).strip().upper() if value is not None else ""
    return _DETECTOR_ALIASES.get(text, text)


def check_reference_meta(path, header, reftype, exposure=None):
    """Check REFTYPE, INSTRUME and DETECTOR of a reference's primary header (or ASDF summary).

    Parameters
    ----------
    path : str or os.PathLike
    header : Mapping
        Primary header, or the header-like dict of :func:`webbflow.refs.select.reference_header`.
    reftype : str
        The type the file is used as (``gain``, ``flat`` ...).
    exposure : Exposure, optional
        Without it (or with ``detector`` None) the detector is not checked.

    Raises
    ------
    ReferenceFileError
    """
    have = str(header.get("REFTYPE") or "").strip()
    if have.lower() != reftype.lower():
        raise _fail(path, f"is a {have or 'REFTYPE-less'} reference (REFTYPE={have!r}), used as {reftype}",
                    reftype, f"name a {reftype.upper()} reference with overrides.{reftype}")
    instrument = _norm(header.get("INSTRUME"))
    want_instrument = _norm(exposure.instrument if exposure is not None else "NIRCAM")
    if instrument != want_instrument:
        raise _fail(path, f"{reftype} reference is for INSTRUME={instrument or 'missing'!r}, "
                    f"not {want_instrument}", reftype,
                    f"name a {want_instrument} {reftype} reference with overrides.{reftype}")
    if exposure is None or not exposure.detector:
        return
    want = _norm(exposure.detector)
    detector = _norm(header.get("DETECTOR"))
    patterns = {_norm(p) for p in str(header.get("P_DETECT") or "").split("|") if p.strip()}
    if detector == want or detector in _WILDCARD_DETECTORS or want in patterns:
        return
    raise _fail(path, f"{reftype} reference is for DETECTOR={detector or 'missing'!r}, "
                f"the exposure is {want}", reftype,
                f"name the {want} {reftype} reference with overrides.{reftype}")


def _data_bytes(header):
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    count = 1
    for k in range(1, naxis + 1):
        count *= int(header[f"NAXIS{k}"])
    return abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + count)


def _data_offset(hdul, index, hdu):
    # HDU._data_offset is what HDUList.fileinfo reports as datLoc; fileinfo itself re-renders
    # every header to see whether it was resized (milliseconds per file), so it is the fallback.
    offset = getattr(hdu, "_data_offset", None)
    if offset is None:
        info = hdul.fileinfo(index)
        offset = None if info is None else info["datLoc"]
    return offset


def _check_complete(path, hdul, reftype):
    size = os.path.getsize(path)
    end = 0
    for index, hdu in enumerate(hdul):
        offset = _data_offset(hdul, index, hdu)
        if offset is None:  # an HDU not read from this file
            continue
        nbytes = _data_bytes(hdu.header)
        if offset + nbytes > size:
            raise _fail(path, f"{reftype} reference is truncated: its {hdu.name or f'HDU {index}'} data "
                        f"needs {offset + nbytes} bytes but the file has {size}", reftype)
        end = max(end, offset + -(-nbytes // 2880) * 2880)
    if size > end:
        raise _fail(path, f"{reftype} reference is truncated or damaged after byte {end} "
                    f"(an extension header cannot be read; the file has {size} bytes)", reftype)


def _shape(header):
    return tuple(int(header[f"NAXIS{k}"]) for k in range(int(header.get("NAXIS", 0)), 0, -1))


def check_reference(path, hdul, reftype, exposure):
    """Check an open FITS reference against ``exposure``; return where the science array lies in it.

    Parameters
    ----------
    path : str or os.PathLike
        The file (named in errors; its size tells a truncated file).
    hdul : astropy.io.fits.HDUList
        The open file; only headers are used (open it with ``lazy_load_hdus=False``, or this
        reads every header).
    reftype : str
    exposure : Exposure

    Returns
    -------
    tuple of int or None
        ``(y0, x0)``: offset of the science array in the reference's arrays; None for a
        type without pixel arrays (photom).

    Raises
    ------
    ReferenceFileError
        Naming the file, the problem and the fix (``overrides.<reftype>``).
    """
    path = os.fspath(path)
    hdul.readall()  # every header (a no-op when opened with lazy_load_hdus=False)
    header = hdul[0].header
    check_reference_meta(path, header, reftype, exposure)
    _check_complete(path, hdul, reftype)
    for name in _TABLES.get(reftype, ()):
        if name not in hdul or hdul[name].is_image:
            raise _fail(path, f"{reftype} reference has no {name} table (the file may be truncated)", reftype)
    layout = LAYOUTS.get(reftype, ())
    optional = tuple(e for e in _OPTIONAL.get(reftype, ()) if e[0] in hdul)
    shapes = {}
    for name, ndims, integer in layout + optional:
        if name not in hdul:
            raise _fail(path, f"{reftype} reference has no {name} extension (the file may be truncated)", reftype)
        hdu = hdul[name]
        hdr = hdu.header
        if not hdu.is_image or int(hdr.get("BITPIX", 0)) not in _IMAGE_BITPIX:
            raise _fail(path, f"{reftype} reference {name} is a {type(hdu).__name__}, not a numeric image array",
                        reftype)
        if integer and int(hdr["BITPIX"]) < 0:
            raise _fail(path, f"{reftype} reference {name} is floating point (BITPIX={hdr['BITPIX']}), "
                        "not integer flags", reftype)
        shape = _shape(hdr)
        if len(shape) not in ndims:
            want = " or ".join(f"{n}-D" for n in ndims)
            raise _fail(path, f"{reftype} reference {name} has shape {shape}, expected {want}", reftype)
        shapes[name] = shape
    if not shapes:
        return None
    planes = {shape[-2:] for shape in shapes.values()}
    if len(planes) > 1:
        listed = ", ".join(f"{n} {s}" for n, s in shapes.items())
        raise _fail(path, f"{reftype} reference extensions disagree in shape ({listed})", reftype)
    rny, rnx = planes.pop()
    sizes = header.get("SUBSIZE1"), header.get("SUBSIZE2")
    if all(s is not None for s in sizes) and (int(sizes[1]), int(sizes[0])) != (rny, rnx):
        raise _fail(path, f"{reftype} reference arrays are {(rny, rnx)} but SUBSIZE2, SUBSIZE1 say "
                    f"{(int(sizes[1]), int(sizes[0]))}", reftype)
    if exposure.ny is None:
        return 0, 0
    ny, nx = exposure.ny, exposure.nx
    starts = header.get("SUBSTRT1"), header.get("SUBSTRT2")
    if starts[0] is None and starts[1] is None and (rny, rnx) == (ny, nx):
        return 0, 0  # a reference without subarray keywords, the science array's size (as jwst)
    rx, ry = int(starts[0] or 1), int(starts[1] or 1)
    x0, y0 = exposure.xstart - rx, exposure.ystart - ry
    if x0 < 0 or y0 < 0 or y0 + ny > rny or x0 + nx > rnx:
        raise _fail(
            path,
            f"{reftype} reference covers {(rny, rnx)} pixels from SUBSTRT1={rx}, SUBSTRT2={ry} "
            f"(SUBARRAY={header.get('SUBARRAY')}), which does not contain the science array's "
            f"{(ny, nx)} at SUBSTRT1={exposure.xstart}, SUBSTRT2={exposure.ystart}",
            reftype, f"give a {reftype} reference for this subarray (or FULL) with overrides.{reftype}")
    return y0, x0


def check_exposure_geometry(path, header, shape):
    """The science array's shape must be the SUBSIZE2 x SUBSIZE1 its header places.

    A smaller SCI than SUBSIZE (a cut or damaged file) would have references cut from a
    corner the header does not describe.

    Raises
    ------
    InputError
        Naming the exposure, both shapes and the fix.
    """
    sizes = header.get("SUBSIZE1"), header.get("SUBSIZE2")
    if any(s is None for s in sizes):
        return
    try:
        want = (int(sizes[1]), int(sizes[0]))
    except (TypeError, ValueError):
        raise InputError(path, f"SUBSIZE1/SUBSIZE2 are not integers ({sizes[0]!r}, {sizes[1]!r})",
                         "the header is damaged; download the file again") from None
    if tuple(int(n) for n in shape[-2:]) != want:
        raise InputError(path, f"SCI is {tuple(shape[-2:])} pixels but SUBSIZE2, SUBSIZE1 say {want}, "
                         "so references cannot be placed on it",
                         "the file is cut or its header is wrong; download it again")
