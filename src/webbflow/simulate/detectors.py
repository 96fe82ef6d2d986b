"""NIRCam detector, subarray and readout facts used by the simulator.

Numbers come from ``/work/shared/reference/jwst-formats.md`` §3 and Appendix C
(SIAF PRDOPSSOC-073, JDox).  Everything is in the DMS science frame unless a
name says ``det`` (detector/readout frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DETECTORS",
    "DetectorInfo",
    "Geometry",
    "READ_PATTERNS",
    "FULL_SIZE",
    "REF_BORDER",
    "frame_time",
    "subarray_geometry",
    "to_detector_frame",
]

FULL_SIZE = 2048
"""Pixels on a side of a full NIRCam detector (reference border included)."""

REF_BORDER = 4
"""Width of the reference-pixel border of a full-frame detector."""

AMP_WIDTH = 512
"""Columns per amplifier in 4-output (full-width) readout."""

PIXEL_TIME = 10e-6
"""Seconds per pixel sample."""

ROW_OVERHEAD = 12
"""Extra pixel times at the end of each row of each output."""


@dataclass(frozen=True)
class DetectorInfo:
    """Static facts of one NIRCam detector (SCA)."""

    name: str
    sca: int
    module: str
    channel: str  # SHORT or LONG
    fastaxis: int
    slowaxis: int
    gain: float  # e-/DN, flight value (pynrc)
    pixel_scale: float  # arcsec/pixel, nominal

    @property
    def is_long(self):
        return self.channel == "LONG"


def _det(name, sca, fast, slow, gain):
    module = name[3]
    long = name.endswith("LONG")
    return DetectorInfo(name, sca, module, "LONG" if long else "SHORT", fast, slow, gain,
                        0.063 if long else 0.031)


DETECTORS = {d.name: d for d in (
    _det("NRCA1", 481, -1, 2, 2.13),
    _det("NRCA2", 482, 1, -2, 2.17),
    _det("NRCA3", 483, -1, 2, 2.25),
    _det("NRCA4", 484, 1, -2, 2.08),
    _det("NRCALONG", 485, -1, 2, 1.88),
    _det("NRCB1", 486, 1, -2, 2.00),
    _det("NRCB2", 487, -1, 2, 2.24),
    _det("NRCB3", 488, 1, -2, 2.09),
    _det("NRCB4", 489, -1, 2, 2.18),
    _det("NRCBLONG", 490, 1, -2, 1.90),
)}
"""DetectorInfo by DETECTOR keyword value."""

READ_PATTERNS = {
    "RAPID": (1, 0),
    "BRIGHT1": (1, 1),
    "BRIGHT2": (2, 0),
    "SHALLOW2": (2, 3),
    "SHALLOW4": (4, 1),
    "MEDIUM2": (2, 8),
    "MEDIUM8": (8, 2),
    "DEEP2": (2, 18),
    "DEEP8": (8, 12),
}
"""READPATT -> (NFRAMES, GROUPGAP)."""


@dataclass(frozen=True)
class Geometry:
    """Where a (sub)array sits on its detector and how it is read.

    Attributes
    ----------
    name : str
        SUBARRAY keyword (must be a value the stdatamodels schema accepts).
    xstart, ystart : int
        SUBSTRT1, SUBSTRT2: 1-indexed science-frame corner.
    xsize, ysize : int
        SUBSIZE1, SUBSIZE2.
    noutputs : int
        1 or 4 amplifiers (4 only for full-width arrays).
    """

    name: str
    xstart: int
    ystart: int
    xsize: int
    ysize: int
    noutputs: int = 1

    def __post_init__(self):
        if self.noutputs not in (1, 4):
            raise ValueError("noutputs must be 1 or 4")
        if self.noutputs == 4 and (self.xsize != FULL_SIZE or self.xstart != 1):
            raise ValueError("4-output readout needs the full detector width")
        if (self.xstart < 1 or self.ystart < 1 or self.xstart + self.xsize - 1 > FULL_SIZE
                or self.ystart + self.ysize - 1 > FULL_SIZE):
            raise ValueError(f"subarray {self} does not fit on the detector")

    @property
    def shape(self):
        """(ny, nx) of the array."""
        return (self.ysize, self.xsize)

    @property
    def slices(self):
        """(rows, cols) slices of this array within the science-frame full frame."""
        return (slice(self.ystart - 1, self.ystart - 1 + self.ysize),
                slice(self.xstart - 1, self.xstart - 1 + self.xsize))

    def reference_pixels(self):
        """Boolean (ny, nx) map of the full-frame reference border inside this array."""
        y = np.arange(self.ystart - 1, self.ystart - 1 + self.ysize)
        x = np.arange(self.xstart - 1, self.xstart - 1 + self.xsize)
        ry = (y < REF_BORDER) | (y >= FULL_SIZE - REF_BORDER)
        rx = (x < REF_BORDER) | (x >= FULL_SIZE - REF_BORDER)
        return ry[:, None] | rx[None, :]


# SIAF-derived corners (jwst-formats.md Appendix C); SW = NRCA1-like, LW = NRCA5.
_SUBARRAYS = {
    ("SHORT", "SUB640"): (1409, 1409, 640),
    ("SHORT", "SUB320"): (1729, 1729, 320),
    ("SHORT", "SUB160"): (1889, 1889, 160),
    ("LONG", "SUB640"): (705, 705, 640),
    ("LONG", "SUB320"): (865, 865, 320),
    ("LONG", "SUB160"): (945, 945, 160),
    ("SHORT", "SUB64P"): (1851, 1817, 64),
    ("LONG", "SUB64P"): (1935, 1911, 64),
}

# Time-series imaging apertures that sit elsewhere on their own detector (jwst-formats.md Appendix C,
# tso-algorithms.md §1.3): NRCA3's SUB64P touches the left reference columns, its SUB160P/SUB400P the
# bottom reference rows (SW imaging time series are taken with NRCA3).
_DETECTOR_SUBARRAYS = {
    ("NRCA3", "SUB64P"): (1, 101, 64),
    ("NRCA3", "SUB160P"): (1889, 1, 160),
    ("NRCA3", "SUB400P"): (1649, 1, 400),
    # coronagraphic apertures (coron-algorithms.md §1, PSFMASK SUBSTRT): interior, no reference pixels
    ("NRCALONG", "SUB320A335R"): (492, 1502, 320),
    ("NRCALONG", "SUB320A430R"): (814, 1502, 320),
    ("NRCALONG", "SUB320ALWB"): (1455, 1508, 320),
    ("NRCA2", "SUB640A210R"): (392, 1186, 640),
}

# Grism time-series strips (jwst-formats.md Appendix C, tso-algorithms.md §1.3): full width,
# (ystart, rows); 4 outputs by default (the recommended mode), 1 output on request.  The LW
# strips start at row 1 (bottom reference rows); the SW GRISMTS64/128 (NRCA1) sit above them
# and have side reference columns only.
_GRISM_STRIPS = {
    ("LONG", "SUBGRISM64"): (1, 64), ("LONG", "SUBGRISM128"): (1, 128), ("LONG", "SUBGRISM256"): (1, 256),
    ("SHORT", "SUBGRISM64"): (125, 64), ("SHORT", "SUBGRISM128"): (95, 128), ("SHORT", "SUBGRISM256"): (1, 256),
}


def subarray_geometry(detector, name, *, size=None, corner=None, noutputs=None):
    """Geometry of a named NIRCam subarray on ``detector``.

    Parameters
    ----------
    detector : str
        DETECTOR value, e.g. ``"NRCA1"``.
    name : str
        ``FULL``, ``SUB640``, ``SUB320``, ``SUB160``, ``SUB64P`` use the SIAF
        corners (NRCA3's ``SUB64P``/``SUB160P``/``SUB400P``: its own, the SW
        time-series imaging apertures; NRCALONG's ``SUB320A335R``/``SUB320A430R`` and NRCA2's
        ``SUB640A210R``: the coronagraphic ones); any other schema-valid name (e.g. ``SUB64``, ``SUB256``) needs
        ``size`` and is placed by ``corner``.
    size : int, optional
        Side of a custom square subarray.
    corner : {"refpix", "interior"} or (xstart, ystart), optional
        Custom placement: ``"refpix"`` puts it in the top-right science corner
        (reference pixels on two sides, like the SW corner subarrays);
        ``"interior"`` centres it (no reference pixels).  Default ``"refpix"``.
    noutputs : {1, 4}, optional
        Amplifiers of a full-width array (``SUBGRISM*``: default 4).

    Returns
    -------
    Geometry
    """
    info = DETECTORS[detector]
    if name == "FULL":
        return Geometry("FULL", 1, 1, FULL_SIZE, FULL_SIZE, noutputs=4)
    key = (info.channel, name)
    if key in _GRISM_STRIPS and size is None and corner is None:
        y0, ny = _GRISM_STRIPS[key]
        return Geometry(name, 1, y0, FULL_SIZE, ny, 4 if noutputs is None else int(noutputs))
    if noutputs not in (None, 1):
        raise ValueError(f"subarray {name!r} is read by one output: noutputs=4 needs a full-width array")
    siaf = _DETECTOR_SUBARRAYS.get((detector, name), _SUBARRAYS.get(key))
    if siaf is not None and size is None and corner is None:
        x0, y0, n = siaf
        return Geometry(name, x0, y0, n, n, 1)
    if size is None:
        raise ValueError(f"unknown subarray {name!r} for {detector}: give size=")
    corner = "refpix" if corner is None else corner
    if corner == "refpix":
        x0 = y0 = FULL_SIZE - size + 1
    elif corner == "interior":
        x0 = y0 = (FULL_SIZE - size) // 2 + 1
    else:
        x0, y0 = corner
    return Geometry(name, int(x0), int(y0), int(size), int(size), 1)


def frame_time(geometry):
    """TFRAME in seconds (JDox formula, 10 µs per pixel).

    4 outputs: ``((ncols/4 + 12) * (nrows + 1) + 1) * 10 µs``;
    1 output: ``(ncols + 12) * (nrows + 2) * 10 µs``.
    """
    nx, ny = geometry.xsize, geometry.ysize
    if geometry.noutputs == 4:
        return ((nx // 4 + ROW_OVERHEAD) * (ny + 1) + 1) * PIXEL_TIME
    return (nx + ROW_OVERHEAD) * (ny + 2) * PIXEL_TIME


def to_detector_frame(array, detector):
    """Flip the last two axes between science and detector frames.

    NIRCam needs only flips (never a transpose), so the same call converts in
    both directions.  Returns a view.
    """
    info = DETECTORS[detector]
    return array[..., :: int(np.sign(info.slowaxis)), :: int(np.sign(info.fastaxis))]
