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
    arrays.dq[invalid] |= np.uint32(dqflags.DO_NOT_USE)
    for n in names:
        getattr(arrays, n)[invalid] = np.nan


def run(arrays, flat, flat_dq, flat_err):
    """Flat-field ``arrays`` in place.

    Parameters
    ----------
    arrays : object
        Attributes ``data, err, var_poisson, var_rnoise`` (float32 2-D),
        ``dq`` (uint32); ``var_flat`` is (re)set.
    flat, flat_dq, flat_err : ndarray
        Flat SCI, DQ (JWST flag values) and ERR already cut to the science array.

    Returns
    -------
    str
        ``COMPLETE``.
    """
    flat = np.array(flat, dtype=np.float32)  # a copy: bad pixels are set to 1 below
    fdq = np.array(flat_dq, dtype=np.uint32)
    ferr = np.asarray(flat_err, dtype=np.float32)
    fdq[np.isnan(flat) | (flat == 0.0)] |= _BAD
    fdq[(fdq & np.uint32(dqflags.PIXEL["NO_FLAT_FIELD"])) != 0] |= np.uint32(dqflags.DO_NOT_USE)
    flat[(fdq & np.uint32(dqflags.DO_NOT_USE)) != 0] = 1.0

    flat2 = flat * flat
    arrays.data /= flat
    arrays.var_flat = arrays.data**2 / flat2 * ferr**2
    arrays.var_poisson /= flat2
    arrays.var_rnoise /= flat2
    arrays.err = np.sqrt(arrays.var_poisson + arrays.var_rnoise + arrays.var_flat)
    arrays.dq = arrays.dq | fdq
    match_nans_and_flags(arrays)
    return StepStatus.COMPLETE
