"""Saturation and A/D-floor flagging (stcal ``saturation`` as jwst calls it).

Per integration:

1. Forward pass: a pixel is SATURATED from the first group whose value reaches
   its threshold onwards; each group's SATURATED set is grown by a
   ``(2 n_pix_grow_sat + 1)`` square box (charge spilling).  Values <= 0 get
   AD_FLOOR | DO_NOT_USE in that group only.
2. Backward pass (``use_readpatt`` and NFRAMES > 1): a group whose average
   could hide a saturating last frame (value >= threshold * mean(frames) /
   last frame) and whose next group is SATURATED gets DO_NOT_USE (grown).
3. "Group 2" rule (``use_readpatt`` and ngroups > 2, bias-aware): group 1
   (0-based) gets DO_NOT_USE when group 2 is SATURATED, group 1 is not, the
   first group predicts no saturation by group 2, and the jump between
   groups 0 and 1 is large enough to have saturated within the last frame.
4. ZEROFRAME values that saturate (grown) or sit at the A/D floor become 0.

The forward pass is done without per-group dilations: a pixel is SATURATED in
group ``g`` exactly when the earliest crossing group within its box is
``<= g``, so one box-minimum of the first-crossing index replaces ngroups
dilations.
"""

import logging

import numpy as np

from webbflow.steps._jit import njit, prange

from webbflow import dqflags
from webbflow.ramp import StepStatus

__all__ = ["run", "read_pattern", "ATOD_LIMIT"]

log = logging.getLogger(__name__)

ATOD_LIMIT = 65535.0
"""Hard DN limit of the 16-bit A-to-D converter."""

_SAT = np.uint8(dqflags.SATURATED)
_DNU = np.uint8(dqflags.DO_NOT_USE)
_ADF = np.uint8(dqflags.AD_FLOOR | dqflags.DO_NOT_USE)


def read_pattern(ngroups, nframes):
    """1-based frame numbers in each group, as jwst builds them.

    jwst ignores GROUPGAP here; so do we, for parity.
    """
    return [[1 + g * nframes + k for k in range(nframes)] for g in range(ngroups)]


@njit(cache=True)
def _forward(data, thresh, gdq, sat, adf):
    """First threshold crossing per pixel; AD floor flags set in place.

    Returns the first crossing group (ngroups when never) and whether any
    group already carried a SATURATED flag on input.
    """
    ngroups, ny, nx = data.shape
    first = np.full((ny, nx), ngroups, np.int16)
    had_sat = False
    for g in range(ngroups):
        for y in range(ny):
            for x in range(nx):
                v = data[g, y, x]
                if v >= thresh[y, x] and first[y, x] == ngroups:
                    first[y, x] = g
                q = gdq[g, y, x]
                if q & sat:
                    had_sat = True
                if v <= 0:
                    gdq[g, y, x] = q | adf
    return first, had_sat


@njit(cache=True, parallel=True)
def _count_pixels(gdq, flag):
    """Pixels with ``flag`` in any group of any integration (no 4-D temporaries)."""
    nints, ngroups, ny, nx = gdq.shape
    n = 0
    for y in prange(ny):
        for x in range(nx):
            hit = 0
            for i in range(nints):
                for g in range(ngroups):
                    if gdq[i, g, y, x] & flag:
                        hit = 1
            n += hit
    return n


def _box_reduce(a, n, op):
    """Reduce ``a`` over a (2n+1)^2 box clipped at the edges (op: a binary ufunc)."""
    out = a.copy()
    for axis in (1, 0):
        src = out.copy() if axis == 0 else a
        for k in range(1, n + 1):
            if k >= a.shape[axis]:
                break
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(None, -k), slice(k, None)
            lo, hi = tuple(lo), tuple(hi)
            op(out[hi], src[lo], out=out[hi])
            op(out[lo], src[hi], out=out[lo])
    return out


@njit(cache=True)
def _flag_from(gdq, first, flag):
    """OR ``flag`` into every group ``g >= first[y, x]``."""
    ngroups, ny, nx = gdq.shape
    for y in range(ny):
        for x in range(nx):
            for g in range(first[y, x], ngroups):
                gdq[g, y, x] |= flag


@njit(cache=True)
def _partial_saturation(plane, dq, next_dq, thresh, no_check, dilution, sat, dnu):
    """Backward-pass candidates: value >= diluted threshold (in float64, as
    stcal's promotion does), group neither SATURATED nor DO_NOT_USE, next
    group SATURATED."""
    ny, nx = plane.shape
    out = np.zeros((ny, nx), np.bool_)
    found = False
    for y in range(ny):
        for x in range(nx):
            if not (next_dq[y, x] & sat) or (dq[y, x] & (sat | dnu)):
                continue
            t = np.float64(thresh[y, x])
            if not no_check[y, x]:
                t = t * dilution
            if np.float64(plane[y, x]) >= t:
                out[y, x] = True
                found = True
    return out, found


def _dilate(mask, n):
    """Grow a boolean mask by a (2n+1)^2 box (clipped at the edges)."""
    return _box_reduce(mask, n, np.logical_or) if n > 0 else mask


def _grow_first(first, n):
    """Earliest crossing within each pixel's box: SATURATED from that group on."""
    return _box_reduce(first, n, np.minimum) if n > 0 else first


def run(ramp, readout, sat_thresh, sat_dq, bias=None, n_pix_grow_sat=1, use_readpatt=True):
    """Flag saturated and A/D-floor groups of a ramp, in place.

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
        Ramp in raw DN (before superbias); ``groupdq``, ``pixeldq`` and the
        ZEROFRAME are updated in place.
    readout : webbflow.ramp.Readout
        Provides ``nframes`` for the read pattern.
    sat_thresh : ndarray, (ny, nx)
        SATURATION SCI thresholds (raw DN, bias included); NaN means "do not
        check".  Not modified.
    sat_dq : ndarray, (ny, nx)
        SATURATION DQ; NO_SAT_CHECK pixels are never flagged saturated.
    bias : ndarray, (ny, nx), optional
        SUPERBIAS SCI (raw, NaNs as in the file) for the group-2 rule; None
        means 0.
    n_pix_grow_sat : int
        Box half-width for growing saturation to neighbours.
    use_readpatt : bool
        Use the frame-averaging read pattern (backward pass, group-2 rule).

    Returns
    -------
    str
        ``"COMPLETE"``.
    """
    data, gdq = ramp.data, ramp.groupdq
    nints, ngroups, ny, nx = data.shape
    n_grow = int(n_pix_grow_sat)

    thresh = np.array(sat_thresh, dtype=np.float32, copy=True)
    sdq = np.array(sat_dq, dtype=np.uint32, copy=True)
    if thresh.shape != (ny, nx) or sdq.shape != (ny, nx):
        raise ValueError(f"saturation reference {thresh.shape} does not match frame {(ny, nx)}")
    nan = np.isnan(thresh)
    sdq[nan] |= dqflags.NO_SAT_CHECK
    no_check = ((sdq & dqflags.NO_SAT_CHECK) != 0) | nan
    thresh[no_check] = ATOD_LIMIT + 1

    rp = read_pattern(ngroups, readout.nframes) if use_readpatt else None
    # Dilution of a saturating last frame by the group average, per group.
    dilution = [] if rp is None else [float(np.mean(r) / r[-1]) for r in rp]
    if bias is None:
        bias = 0.0
    else:
        bias = np.asarray(bias, dtype=np.float32)

    for i in range(nints):
        d_i, q_i = data[i], gdq[i]
        first, had_sat = _forward(d_i, thresh, q_i, _SAT, _ADF)
        if had_sat and n_grow > 0:
            # Flags already present on input are grown per group as well.
            for g in range(ngroups):
                pre = (q_i[g] & _SAT) != 0
                if pre.any():
                    q_i[g][_dilate(pre, n_grow)] |= _SAT
        _flag_from(q_i, _grow_first(first, n_grow), _SAT)

        for g in range(ngroups - 2, -1, -1):
            if rp is None or dilution[g] == 1:
                continue
            partial, found = _partial_saturation(
                d_i[g], q_i[g], q_i[g + 1], thresh, no_check, dilution[g], _SAT, _DNU)
            if found:
                q_i[g][_dilate(partial, n_grow)] |= _DNU

        if rp is not None and ngroups > 2:
            _group2_rule(d_i, q_i, thresh, bias, rp)

        if ramp.zeroframe is not None:
            zf = ramp.zeroframe[i]
            bad = _dilate(zf >= thresh, n_grow) | (zf <= 0)
            zf[bad] = 0.0

    ramp.pixeldq |= sdq
    if log.isEnabledFor(logging.INFO):
        log.info("saturation: %d saturated pixels, %d A/D floor pixels",
                 _count_pixels(gdq, _SAT), _count_pixels(gdq, np.uint8(dqflags.AD_FLOOR)))
    return StepStatus.COMPLETE


@njit(cache=True)
def _group2_kernel(d0, d1, q1, q2, thresh, bias, mean0, last2, nread1, sat, dnu):
    ny, nx = d0.shape
    for y in range(ny):
        for x in range(nx):
            if not (q2[y, x] & sat) or (q1[y, x] & sat):
                continue
            t = thresh[y, x]
            b = bias[y, x]
            # stcal's dtypes: the prediction in float64 (a numpy-scalar mean
            # promotes it), the jump test in float32.
            scigp1 = d0[y, x] - b
            if not (np.float64(scigp1) / mean0 * last2 + np.float64(b) < np.float64(t)):
                continue
            if d1[y, x] - d0[y, x] > (t - d0[y, x]) / nread1:
                q1[y, x] |= dnu


def _group2_rule(d_i, q_i, thresh, bias, rp):
    """Flag group 1 DO_NOT_USE where a saturating event hid in its last frame."""
    if np.ndim(bias) == 0:
        bias = np.zeros_like(thresh)
    _group2_kernel(d_i[0], d_i[1], q_i[1], q_i[2], thresh, bias, float(np.mean(rp[0])),
                   float(rp[2][-1]), np.float32(len(rp[1])), _SAT, _DNU)
