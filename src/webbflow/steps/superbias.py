"""Superbias subtraction (jwst ``superbias``)."""

import logging

import numpy as np

from webbflow.ramp import StepStatus

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(ramp, bias, bias_dq):
    """Subtract the superbias from every group, in place.

    NaN bias values count as 0 (jwst replaces them before subtracting); the
    bias DQ is OR-ed into PIXELDQ.  The ZEROFRAME is corrected too, except
    where it is 0, which marks an unusable value and must stay 0.

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
        Ramp to correct in place.
    bias : ndarray, float32, (ny, nx)
        SUPERBIAS SCI array cut to the science subarray (DN).
    bias_dq : ndarray, (ny, nx)
        SUPERBIAS DQ array.

    Returns
    -------
    str
        ``"COMPLETE"``.
    """
    bias = prepare(ramp, bias, bias_dq)
    ramp.data -= bias
    correct_zeroframe(ramp, bias)
    return StepStatus.COMPLETE


def prepare(ramp, bias, bias_dq):
    """:func:`run` but for the subtraction from the groups and the ZEROFRAME: OR the bias DQ into PIXELDQ
    and return the bias to subtract (float32, NaN as 0)."""
    bias = np.asarray(bias, dtype=np.float32)
    if bias.shape != ramp.data.shape[-2:]:
        raise ValueError(f"superbias shape {bias.shape} != science frame {ramp.data.shape[-2:]}")
    nan = np.isnan(bias)
    if nan.any():
        bias = np.where(nan, np.float32(0.0), bias)
    ramp.pixeldq |= np.asarray(bias_dq).astype(np.uint32, copy=False)
    return bias


def correct_zeroframe(ramp, bias):
    """Subtract ``bias`` (from :func:`prepare`) from ``ramp``'s ZEROFRAME, if any; its zeros (unusable) stay 0."""
    if ramp.zeroframe is not None:
        unusable = ramp.zeroframe == 0.0
        ramp.zeroframe -= bias
        ramp.zeroframe[unusable] = 0.0
