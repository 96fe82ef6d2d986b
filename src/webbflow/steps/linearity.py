"""Classic (group-by-group) linearity correction (stcal ``linearity``).

Each group value ``d`` becomes ``c0 + c1 d + c2 d^2 + ...`` evaluated by
Horner's rule in float32, as stcal does, except in groups already flagged
SATURATED.  Pixels whose coefficients cannot be trusted (NO_LIN_CORR in the
reference DQ, any NaN coefficient, or a zero linear term) get the identity
polynomial; the latter two are flagged NO_LIN_CORR in PIXELDQ.
"""

import logging

import numpy as np

from webbflow.steps._jit import njit, prange

from webbflow import dqflags
from webbflow.ramp import StepStatus

__all__ = ["run"]

log = logging.getLogger(__name__)


@njit(cache=True, parallel=True)
def _classify(coeffs, lin_dq, pixeldq, no_lin_corr, identity):
    """Mark (``identity``) the pixels whose polynomial is replaced; OR the DQ into ``pixeldq``.

    stcal's order: NO_LIN_CORR in the reference DQ, then any NaN coefficient,
    then a zero linear term (the latter two also flagged NO_LIN_CORR), decided
    pixel by pixel without copying the coefficient cube.
    """
    ncoeffs, ny, nx = coeffs.shape
    for y in prange(ny):
        for x in range(nx):
            ref = np.uint32(lin_dq[y, x])
            extra = np.uint32(0)
            if ref & no_lin_corr:
                identity[y, x] = 1
            else:
                bad = False
                for j in range(ncoeffs):
                    if np.isnan(coeffs[j, y, x]):
                        bad = True
                if bad or coeffs[1, y, x] == 0:
                    identity[y, x] = 1
                    extra = no_lin_corr
                else:
                    identity[y, x] = 0
            pixeldq[y, x] |= ref | extra


@njit(cache=True, parallel=True)
def _apply_horner(cube, gdq, coeffs, identity, saturated):
    """Correct ``cube`` (n, ngroups, ny, nx) in place, skipping SATURATED groups.

    Pixels marked in ``identity`` are evaluated with the identity polynomial
    (c1 = 1, the rest 0), as stcal evaluates its replaced coefficients.
    """
    nint, ngroups, ny, nx = cube.shape
    # Row by row: a row's coefficients (a few tens of kB) stay in cache for
    # all its groups, and the inner loop over x is branch-free.
    for y in prange(ny):
        for i in range(nint):
            for g in range(ngroups):
                for x in range(nx):
                    r = horner(cube[i, g, y, x], coeffs, identity, y, x)
                    if (gdq[i, g, y, x] & saturated) == 0:
                        cube[i, g, y, x] = r


@njit(cache=True, inline="always")
def horner(d, coeffs, identity, y, x):
    """The corrected value of ``d`` (float32) at pixel (y, x) of ``coeffs`` (ncoeffs, ny, nx).

    float32 throughout, the same roundings as stcal's vectorised Horner (multiply, then add, no
    fused ops); pixels marked in ``identity`` get the identity polynomial.
    """
    ncoeffs = coeffs.shape[0]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    ident = identity[y, x] != 0
    c = (one if ncoeffs == 2 else zero) if ident else coeffs[ncoeffs - 1, y, x]
    r = c * d
    for j in range(ncoeffs - 2, 0, -1):
        c = (one if j == 1 else zero) if ident else coeffs[j, y, x]
        r = r + c
        r = r * d
    c = zero if ident else coeffs[0, y, x]
    return r + c


def run(ramp, coeffs, lin_dq):
    """Apply the linearity correction to a ramp, in place.

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
        Ramp (superbias- and refpix-corrected) to linearise in place.
    coeffs : ndarray, (ncoeffs, ny, nx)
        LINEARITY COEFFS cut to the science subarray.
    lin_dq : ndarray, (ny, nx)
        LINEARITY DQ.

    Returns
    -------
    str
        ``"COMPLETE"``.

    Notes
    -----
    The ZEROFRAME is linearised with the same coefficients; its zeros
    (unusable values) stay zero.  The read-level correction that stcal
    applies when the reference carries inverse coefficients and NFRAMES > 1
    is not implemented.
    """
    coeffs, identity = prepare(ramp, coeffs, lin_dq)
    _apply_horner(ramp.data, ramp.groupdq, coeffs, identity, np.uint8(dqflags.SATURATED))
    finish(ramp, coeffs, identity)
    return StepStatus.COMPLETE


def prepare(ramp, coeffs, lin_dq):
    """:func:`run`'s set-up: the coefficients (float32, contiguous) and the identity-polynomial pixels
    (uint8, (ny, nx)); PIXELDQ gets the reference DQ and NO_LIN_CORR."""
    if coeffs.shape[1:] != ramp.data.shape[-2:]:
        raise ValueError(f"coefficients {coeffs.shape} do not match frame {ramp.data.shape[-2:]}")
    coeffs = np.ascontiguousarray(coeffs, dtype=np.float32)
    if coeffs.ndim != 3 or coeffs.shape[0] < 2:
        raise ValueError(f"linearity coefficients must be (ncoeffs>=2, ny, nx), got {coeffs.shape}")
    identity = np.empty(coeffs.shape[1:], np.uint8)
    _classify(coeffs, np.ascontiguousarray(lin_dq, dtype=np.uint32), ramp.pixeldq,
              np.uint32(dqflags.NO_LIN_CORR), identity)
    return coeffs, identity


def finish(ramp, coeffs, identity):
    """:func:`run` after the groups: the ZEROFRAME linearised (its zeros stay zero), and the log line."""
    if ramp.zeroframe is not None:
        zf = ramp.zeroframe[:, None]  # a view: (nints, 1, ny, nx)
        zdq = np.where(zf == 0.0, np.uint8(dqflags.SATURATED), np.uint8(0))
        _apply_horner(zf, zdq, coeffs, identity, np.uint8(dqflags.SATURATED))
    n_nolin = int(np.count_nonzero(ramp.pixeldq & dqflags.NO_LIN_CORR))
    log.info("linearity: %d pixels without correction (NO_LIN_CORR)", n_nolin)
