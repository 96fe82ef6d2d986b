"""Read and validate JWST ``*_uncal.fits`` exposures (Level1bModel layout).

astropy is used directly rather than stdatamodels: it is several times faster
on these files and lets us check the layout ourselves, so that every problem
becomes one :class:`~webbflow.io.errors.InputError` naming the file and the fix.
"""

import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from webbflow.io.errors import InputError
from webbflow.ramp import Ramp, Readout

__all__ = ["SUPPORTED_EXP_TYPES", "UncalHeaders", "read_uncal", "read_uncal_headers", "readout_from_header"]

SUPPORTED_EXP_TYPES = ("NRC_IMAGE",)
"""EXP_TYPE values that detector1 reduces today."""

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
    """

    primary: fits.Header
    sci: fits.Header
    int_times: np.ndarray | None = None
    path: str = ""


def _open(path):
    """Open a FITS file, turning every low-level failure into an InputError."""
    try:
        with warnings.catch_warnings():
            # astropy only *warns* about a truncated file and returns garbage later.
            warnings.filterwarnings("error", message=".*truncated.*")
            # its header-verification chatter is replaced by our single error
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
    except FileNotFoundError:
        raise InputError(path, "file not found", "check inputs.uncal_dir and the file name") from None
    except (OSError, ValueError, TypeError, IndexError, EOFError, Warning) as exc:
        raise InputError(
            path,
            f"not a readable FITS file ({exc.__class__.__name__}: {exc})",
            "the file is truncated or corrupt; download it again from MAST",
        ) from None
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


def read_uncal_headers(path):
    """Read the headers of an uncal file without reading its pixels.

    Parameters
    ----------
    path : str or os.PathLike
        An ``*_uncal.fits`` file.

    Returns
    -------
    UncalHeaders
        Primary and SCI headers (``int_times`` is left as None).

    Raises
    ------
    InputError
        If the file is not a readable FITS file or has no SCI extension.
    """
    try:
        primary = fits.getheader(path, 0)
        sci = fits.getheader(path, "SCI")
    except FileNotFoundError:
        raise InputError(path, "file not found", "check inputs.uncal_dir and the file name") from None
    except KeyError:
        raise InputError(path, "no SCI extension, not an uncal file", "give a *_uncal.fits file") from None
    except (OSError, ValueError, TypeError, IndexError, EOFError) as exc:
        raise InputError(
            path,
            f"not a readable FITS file ({exc.__class__.__name__}: {exc})",
            "the file is truncated or corrupt; download it again from MAST",
        ) from None
    return UncalHeaders(primary=primary, sci=sci, path=str(path))


def readout_from_header(primary, nints=None, ngroups=None):
    """Build a :class:`~webbflow.ramp.Readout` from an uncal primary header.

    Parameters
    ----------
    primary : Mapping
        Primary header of the exposure.
    nints, ngroups : int, optional
        Shape of the SCI cube; default to NINTS/NGROUPS.  The SCI shape wins
        because segmented exposures hold only some of NINTS integrations.

    Returns
    -------
    Readout
    """
    return Readout(
        nints=int(nints if nints is not None else primary["NINTS"]),
        ngroups=int(ngroups if ngroups is not None else primary["NGROUPS"]),
        nframes=int(primary.get("NFRAMES", 1)),
        groupgap=int(primary.get("GROUPGAP", 0)),
        tframe=float(primary.get("TFRAME", 10.73677)),
        tgroup=float(primary.get("TGROUP", primary.get("TFRAME", 10.73677))),
        detector=str(primary.get("DETECTOR", "NRCA1")),
        fastaxis=int(primary.get("FASTAXIS", -1)),
        slowaxis=int(primary.get("SLOWAXIS", 2)),
        noutputs=int(primary.get("NOUTPUTS", 4)),
        substrt1=int(primary.get("SUBSTRT1", 1)),
        substrt2=int(primary.get("SUBSTRT2", 1)),
        subarray=str(primary.get("SUBARRAY", "FULL")),
        drop_frames1=int(primary.get("DRPFRMS1", 0) or 0),
    )


def _read_sci_float32(hdul, path):
    """The SCI ramps as float32, read one group at a time; None for a layout astropy must decode.

    Raw uncal ramps are uint16 stored as big-endian int16 with BZERO = 32768.
    Decoding them through astropy holds the int16, uint16 and float32 cubes at
    once; reading a group at a time holds the float32 cube and one group.
    """
    hdr = hdul["SCI"].header
    if (hdr.get("BITPIX") != 16 or hdr.get("NAXIS") != 4 or hdr.get("BZERO") != 32768
            or hdr.get("BSCALE", 1) != 1):
        return None
    nx, ny, ngroups, nints = (int(hdr[f"NAXIS{k}"]) for k in range(1, 5))
    offset = hdul.fileinfo(hdul.index_of("SCI"))["datLoc"]
    out = np.empty((nints, ngroups, ny, nx), np.float32)
    plane = np.empty((ny, nx), ">u2")  # one buffer for every group read
    with open(path, "rb") as f:
        f.seek(offset)
        for i in range(nints):
            for g in range(ngroups):
                if f.readinto(plane) != plane.nbytes:
                    raise EOFError(f"SCI is truncated at integration {i + 1}, group {g + 1}")
                # int16 + 32768 as uint16 is the int16's bit pattern with the sign bit flipped
                plane ^= np.uint16(0x8000)
                out[i, g] = plane
    return out


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
        or an unsupported EXP_TYPE; the message names the file and the fix.
    """
    with _open(path) as hdul:
        primary = hdul[0].header
        _check_identity(path, primary, exp_types)
        if "SCI" not in hdul:
            raise InputError(path, "no SCI extension, not an uncal file", "give a *_uncal.fits file")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("error", message=".*truncated.*")
                sci = _read_sci_float32(hdul, path)
                decoded = sci is not None  # 4-D uint16 ramps, already float32
                if not decoded:  # an unusual layout: let astropy decode it (and the checks below judge it)
                    sci = hdul["SCI"].data
                zeroframe = hdul["ZEROFRAME"].data if "ZEROFRAME" in hdul else None
                int_times = np.array(hdul["INT_TIMES"].data) if "INT_TIMES" in hdul else None
        except (OSError, ValueError, TypeError, IndexError, EOFError, Warning) as exc:
            raise InputError(
                path,
                f"pixel data cannot be read ({exc.__class__.__name__}: {exc})",
                "the file is truncated or corrupt; download it again from MAST",
            ) from None
        if not decoded and (sci is None or sci.ndim != 4 or sci.dtype != np.uint16):
            found = "no data" if sci is None else f"{sci.ndim}-D {sci.dtype.name}"
            raise InputError(
                path,
                f"SCI is {found}, an uncal file has 4-D uint16 (nints, ngroups, ny, nx) ramps",
                "give the *_uncal.fits file of this exposure",
            )
        ngroups_hdr = primary.get("NGROUPS")
        if ngroups_hdr is not None and int(ngroups_hdr) != sci.shape[1]:
            raise InputError(
                path,
                f"NGROUPS={ngroups_hdr} but SCI has {sci.shape[1]} groups",
                "the file is inconsistent; download it again from MAST",
            )
        headers = UncalHeaders(
            primary=primary.copy(), sci=hdul["SCI"].header.copy(), int_times=int_times, path=str(path)
        )
        ramp = Ramp.from_uncal(sci, zeroframe=zeroframe)
    readout = readout_from_header(primary, nints=sci.shape[0], ngroups=sci.shape[1])
    return ramp, readout, headers
