"""Charge-migration flagging (jwst 3.0 ``charge_migration``; off by default, as in jwst).

Charge from a pixel filled beyond ``signal_threshold`` spills into its
neighbours ("brighter-fatter" at high signal), so jwst stops trusting the ramp
there.  Per integration, every group whose value is above the threshold
(strictly, compared in float32) and whose GROUPDQ is not exactly DO_NOT_USE
flags CHARGELOSS | DO_NOT_USE on that group and every later group, of the pixel
and of its four edge neighbours (N, S, E, W; not the diagonals; clipped at the
frame's edges).  Exposures with fewer than 3 groups are skipped, as jwst does.

jwst loops over the crossing groups and ORs ``[group:]`` for each; the union of
those ranges is ``[first crossing:]``, and a neighbour's range starts at the
earliest crossing among the pixel and its four neighbours, so one "first
crossing" plane per integration and a cross-shaped minimum replace the loop.
The DO_NOT_USE exclusion is judged on the group DQ as it was before the step.

The ramp fit then treats the flagged groups as unusable, but stcal recomputes
the read-noise variance of such ramps as if they were not flagged (see
:mod:`webbflow.steps._ramp_numba`).
"""

import logging

import numpy as np

from webbflow.steps._jit import njit

from webbflow import dqflags
from webbflow.ramp import StepStatus

from .saturation import _flag_from

__all__ = ["run", "MIN_GROUPS"]

log = logging.getLogger(__name__)

MIN_GROUPS = 3
"""jwst skips the step for 1- and 2-group exposures."""

_CHLO_DNU = np.uint8(dqflags.CHARGELOSS | dqflags.DO_NOT_USE)


@njit(cache=True)
def _first_crossing(data, gdq, thresh, dnu):
    """First group (ngroups when none) above ``thresh`` whose DQ is not exactly ``dnu``."""
    ngroups, ny, nx = data.shape
    first = np.full((ny, nx), ngroups, np.int16)
    for g in range(ngroups):
        for y in range(ny):
            for x in range(nx):
                if first[y, x] == ngroups and data[g, y, x] > thresh and gdq[g, y, x] != dnu:
                    first[y, x] = g
    return first


def _cross_min(first):
    """Earliest crossing among each pixel and its four edge neighbours."""
    out = first.copy()
    np.minimum(out[1:], first[:-1], out=out[1:])
    np.minimum(out[:-1], first[1:], out=out[:-1])
    np.minimum(out[:, 1:], first[:, :-1], out=out[:, 1:])
    np.minimum(out[:, :-1], first[:, 1:], out=out[:, :-1])
    return out


def run(ramp, signal_threshold=25000.0):
    """Flag groups affected by charge migration, in place (jwst ``charge_migration``).

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
        Ramp after dark_current (DN); ``groupdq`` is updated in place.
    signal_threshold : float
        Group value (DN) above which the group and all later ones, in the pixel
        and its four neighbours, get CHARGELOSS | DO_NOT_USE (jwst default 25000).

    Returns
    -------
    str
        ``"COMPLETE"``, or ``"SKIPPED"`` for fewer than :data:`MIN_GROUPS` groups.
    """
    data, gdq = ramp.data, ramp.groupdq
    nints, ngroups = data.shape[:2]
    if ngroups < MIN_GROUPS:
        log.info("Too few groups per integration; skipping charge_migration")
        return StepStatus.SKIPPED
    # jwst compares the float32 data with a Python float: NEP 50 makes that a float32 comparison
    thresh = np.float32(signal_threshold)
    n_pix = 0
    for i in range(nints):
        first = _cross_min(_first_crossing(data[i], gdq[i], thresh, np.uint8(dqflags.DO_NOT_USE)))
        _flag_from(gdq[i], first, _CHLO_DNU)
        n_pix += int(np.count_nonzero(first < ngroups))
    log.info("charge_migration: signal_threshold %.2f DN, %d pixel ramps flagged", signal_threshold, n_pix)
    return StepStatus.COMPLETE
