"""flat_field (imaging): divide by the flat, propagate variances and DQ as jwst 3.0 does.

jwst ``flatfield/flat_field.py::apply_flat_field`` (non-NIRSpec branch):
NaN or zero flat values and NO_FLAT_FIELD pixels get DO_NOT_USE|NO_FLAT_FIELD
and a flat of 1; then ``data /= flat``, ``VAR_FLAT = data_new² / flat² ·
flat_err²``, ``VAR_POISSON, VAR_RNOISE /= flat²``, ``ERR = sqrt(sum of the
three)``, DQ |= flat DQ, and finally NaNs and DO_NOT_USE are made to agree
in every array (``match_nans_and_flags``).
"""

import numpy as np

from webbflow import dqflags
from webbflow.ramp import StepStatus

__all__ = ["run", "match_nans_and_flags"]

_BAD = np.uint32(dqflags.DO_NOT_USE | dqflags.PIXEL["NO_FLAT_FIELD"])


def match_nans_and_flags(arrays):
    """Make NaN and DO_NOT_USE agree across ``data, err, var_*`` and ``dq`` (in place).

    A pixel NaN in any float array, or flagged DO_NOT_USE, becomes NaN in all
    of them and DO_NOT_USE in ``dq`` (jwst ``lib/pipe_utils.match_nans_and_flags``).
    """
    names = [n for n in ("data", "err", "var_rnoise", "var_poisson", "var_flat")
             if getattr(arrays, n, None) is not None]
    invalid = np.zeros(arrays.data.shape, bool)
    for n in names:
        invalid |= np.isnan(getattr(arrays, n))
    invalid |= (arrays.dq & dqflags.DO_NOT_USE) != 0
    # masked writes (copyto/where) rather than boolean indexing: no gathered copies
    np.bitwise_or(arrays.dq, np.uint32(dqflags.DO_NOT_USE), out=arrays.dq, where=invalid)
    for n in names:
        np.copyto(getattr(arrays, n), np.nan, where=invalid)


def run(arrays, flat, flat_dq, flat_err, copy=True):
    """Flat-field ``arrays`` in place.

    Parameters
    ----------
    arrays : object
        Attributes ``data, err, var_poisson, var_rnoise`` (float32 2-D),
        ``dq`` (uint32); ``var_flat`` is (re)set.
    flat, flat_dq, flat_err : ndarray
        Flat SCI, DQ (JWST flag values) and ERR already cut to the science array.
    copy : bool
        False: ``flat``, ``flat_dq`` and ``flat_err`` (float32, uint32, float32) are the caller's
        to lose -- they are used as work space (bad values flagged, squared) -- instead of copied.

    Returns
    -------
    str
        ``COMPLETE``.
    """
    # bad pixels are set to 1 below: a copy unless the caller gives the arrays up
    flat = _own(flat, np.float32, copy)
    fdq = _own(flat_dq, np.uint32, copy)
    ferr = _own(flat_err, np.float32, copy)
    bad = np.isnan(flat)
    bad |= flat == 0.0
    np.bitwise_or(fdq, _BAD, out=fdq, where=bad)
    np.bitwise_or(fdq, np.uint32(dqflags.DO_NOT_USE), out=fdq,
                  where=(fdq & np.uint32(dqflags.PIXEL["NO_FLAT_FIELD"])) != 0)
    np.copyto(flat, np.float32(1.0), where=(fdq & np.uint32(dqflags.DO_NOT_USE)) != 0)

    # jwst's expressions, evaluated in the same order and precision, in place (no full-size
    # temporaries): VAR_FLAT = data_new**2 / flat**2 * flat_err**2, ERR = sqrt(VP + VR + VF)
    arrays.data /= flat
    flat2 = np.multiply(flat, flat, out=flat)  # the flat is ours and not needed any more
    var_flat = np.square(arrays.data)
    var_flat /= flat2
    var_flat *= np.square(ferr, out=ferr)
    arrays.var_flat = var_flat
    arrays.var_poisson /= flat2
    arrays.var_rnoise /= flat2
    err = arrays.err if _writable_like(arrays.err, var_flat) else None
    err = np.add(arrays.var_poisson, arrays.var_rnoise, out=err)
    err += var_flat
    arrays.err = np.sqrt(err, out=err)
    if _writable_like(arrays.dq, np.broadcast_to(fdq, np.broadcast_shapes(arrays.dq.shape, fdq.shape))):
        arrays.dq |= fdq
    else:
        arrays.dq = arrays.dq | fdq
    match_nans_and_flags(arrays)
    return StepStatus.COMPLETE


def _own(array, dtype, copy):
    """``array`` as ``dtype``, a copy when asked or when it cannot be written in place."""
    out = np.asarray(array, dtype=dtype)
    if (copy or not out.flags.writeable) and np.may_share_memory(out, array):
        out = out.copy()
    return out


def _writable_like(array, like):
    """Whether ``array`` can take a result of ``like``'s shape and type in place."""
    return (isinstance(array, np.ndarray) and array.shape == like.shape and array.dtype == like.dtype
            and array.flags.writeable)
