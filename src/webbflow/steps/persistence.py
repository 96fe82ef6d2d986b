"""Persistence from earlier exposures (beyond jwst): flag pixels that were bright shortly before.

A pixel filled close to (or past) saturation releases trapped charge for
minutes to hours afterwards, an afterglow that adds a decaying excess current
to the ramps of the next exposures of the same detector.  jwst 3.0 has a
``persistence`` step, but for NIRCam it has no trap reference and does
nothing; this step does the part that needs no reference: it remembers, per
exposure, which pixels were high (reached a level, e.g. a fraction of their
saturation reference), and flags PERSISTENCE (jwst's PIXELDQ bit 5) in a later exposure
of the same detector that started less than ``window`` seconds after the
bright one ended.  The flag is informative, as in jwst: ramp_fit still uses
the pixel's groups, and the DQ of the rate products carries the bit.

Coordinates are kept on the detector's full-frame science grid (0-based), so
a full-frame exposure followed by a subarray one (or two different subarrays)
map onto each other through SUBSTRT1/SUBSTRT2.

The functions are pure: :func:`high_pixels` summarises one exposure's ramp,
:func:`earlier_within` picks the summaries that matter for a later exposure,
:func:`flag` ORs the bit into its PIXELDQ.  Storing a summary as a small ECSV
coordinate list is I/O and lives in :mod:`webbflow.io.persistence`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from webbflow import dqflags

__all__ = [
    "DEFAULT_WINDOW_S",
    "HighPixels",
    "earlier_within",
    "flag",
    "high_pixels",
]

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 3600.0
"""How long (s) after a bright exposure ends its pixels are flagged in later ones."""

_SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class HighPixels:
    """The pixels of one exposure that were high enough to persist.

    Attributes
    ----------
    detector : str
        DETECTOR.
    expstart, expend : float
        EXPSTART and EXPEND (MJD).
    x, y : ndarray of int
        0-based full-frame science-grid coordinates of the high pixels.
    """

    detector: str
    expstart: float
    expend: float
    x: np.ndarray
    y: np.ndarray

    def __len__(self):
        return int(np.size(self.x))


def high_pixels(data, limit, detector, expstart, expend, substrt1=1, substrt2=1):
    """Summarise one exposure's ramp: the pixels whose highest group reaches ``limit``.

    Parameters
    ----------
    data : ndarray (nints, ngroups, ny, nx)
        Ramp values (DN), on the same scale as ``limit``: e.g. the raw ramp with
        the saturation reference's levels (bias included) times a fraction.
        Saturation's SATURATED group flags are not used, because jwst's
        saturation step grows them onto the neighbours (``n_pix_grow_sat``),
        which did not fill.
    limit : float or ndarray (ny, nx)
        DN level (scalar or per pixel) a pixel must reach in any group.
    detector : str
    expstart, expend : float
        The exposure's EXPSTART and EXPEND (MJD).
    substrt1, substrt2 : int
        SUBSTRT1 and SUBSTRT2 (1-based corner of the array on the full frame).

    Returns
    -------
    HighPixels
    """
    high = data.max(axis=(0, 1)) >= limit
    y, x = np.nonzero(high)
    return HighPixels(str(detector), float(expstart), float(expend),
                      (x + int(substrt1) - 1).astype(np.int32), (y + int(substrt2) - 1).astype(np.int32))


def earlier_within(records, detector, expstart, window=DEFAULT_WINDOW_S):
    """The summaries of ``detector`` that ended less than ``window`` s before ``expstart``.

    Parameters
    ----------
    records : iterable of HighPixels
        Summaries of any exposures (other detectors, later ones and the
        exposure itself are left out).
    detector : str
    expstart : float
        EXPSTART (MJD) of the exposure to flag.
    window : float
        Seconds.

    Returns
    -------
    list of HighPixels
    """
    out = []
    for rec in records:
        gap = (expstart - rec.expend) * _SECONDS_PER_DAY
        if rec.detector == detector and 0.0 <= gap < window:
            out.append(rec)
    return out


def flag(pixeldq, detector, expstart, records, substrt1=1, substrt2=1, window=DEFAULT_WINDOW_S):
    """OR PERSISTENCE into ``pixeldq`` (in place) where an earlier exposure was high.

    Parameters
    ----------
    pixeldq : ndarray uint32 (ny, nx)
        The exposure's PIXELDQ.
    detector : str
    expstart : float
        The exposure's EXPSTART (MJD).
    records : iterable of HighPixels
        Summaries of earlier exposures; those of other detectors or outside
        the window are ignored (:func:`earlier_within`).
    substrt1, substrt2 : int
        The exposure's SUBSTRT1, SUBSTRT2.
    window : float
        Seconds after an exposure's end during which its high pixels are flagged.

    Returns
    -------
    int
        Pixels newly flagged.
    """
    ny, nx = pixeldq.shape
    hit = np.zeros((ny, nx), bool)
    for rec in earlier_within(records, detector, expstart, window):
        xs, ys = rec.x - (int(substrt1) - 1), rec.y - (int(substrt2) - 1)
        inside = (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
        hit[ys[inside], xs[inside]] = True
    new = hit & ((pixeldq & dqflags.PERSISTENCE) == 0)
    pixeldq[hit] |= np.uint32(dqflags.PERSISTENCE)
    n = int(np.count_nonzero(new))
    log.info("persistence: %d pixels flagged from earlier exposures within %.0f s", n, window)
    return n
