"""In-memory containers that the stage-1 steps share.

A step is a function of a :class:`Ramp` (modified in place, to avoid copies of
the 4-D cube), a :class:`Readout` describing how the ramp was read, reference
arrays already cut to the science subarray, and keyword parameters.  Steps know
nothing of files, headers or Snakemake.
"""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Ramp", "Readout", "StepStatus"]


class StepStatus:
    """Values of the JWST ``S_<STEP>`` keywords."""

    COMPLETE = "COMPLETE"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"


@dataclass
class Readout:
    """How an exposure was read out (from the uncal primary header).

    Attributes
    ----------
    nints, ngroups : int
        Integrations and groups per integration.
    nframes, groupgap : int
        Frames averaged per group and frames dropped between groups.
    tframe, tgroup : float
        Frame and group times in seconds.
    detector : str
        ``NRCA1`` ... ``NRCBLONG``.
    fastaxis, slowaxis : int
        Readout directions of amplifier 1 in the science frame (FASTAXIS/SLOWAXIS).
    noutputs : int
        Number of amplifiers used (1 or 4).
    substrt1, substrt2 : int
        1-indexed science-frame start of the subarray (1, 1 for FULL).
    subarray : str
        SUBARRAY keyword (``FULL``, ``SUB160`` ...).
    drop_frames1 : int
        Frames dropped before the first group (NRSTSTRT-related; 0 for NIRCam).
    """

    nints: int
    ngroups: int
    nframes: int = 1
    groupgap: int = 0
    tframe: float = 10.73677
    tgroup: float = 10.73677
    detector: str = "NRCA1"
    fastaxis: int = -1
    slowaxis: int = 2
    noutputs: int = 4
    substrt1: int = 1
    substrt2: int = 1
    subarray: str = "FULL"
    drop_frames1: int = 0


@dataclass
class Ramp:
    """A ramp being calibrated.

    Attributes
    ----------
    data : ndarray, float32, (nints, ngroups, ny, nx)
        Ramp values in DN.
    pixeldq : ndarray, uint32, (ny, nx)
    groupdq : ndarray, uint8, (nints, ngroups, ny, nx)
    zeroframe : ndarray, float32, (nints, ny, nx) or None
        The zero frame when it was downlinked; 0 marks an unusable value.
    average_dark_current : ndarray, float32, (ny, nx) or None
        Dark current in DN/s, set by the dark step and used by ramp_fit's
        Poisson variance.
    """

    data: np.ndarray
    pixeldq: np.ndarray
    groupdq: np.ndarray
    zeroframe: np.ndarray | None = None
    average_dark_current: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_uncal(cls, sci, zeroframe=None):
        """Build a ramp from the uncal SCI array (uint16) with empty DQ."""
        data = np.asarray(sci, dtype=np.float32)
        nints, ngroups, ny, nx = data.shape
        zf = None if zeroframe is None else np.asarray(zeroframe, dtype=np.float32)
        return cls(
            data=data,
            pixeldq=np.zeros((ny, nx), np.uint32),
            groupdq=np.zeros((nints, ngroups, ny, nx), np.uint8),
            zeroframe=zf,
        )

    @property
    def shape(self):
        return self.data.shape
