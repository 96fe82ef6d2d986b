"""Data-quality initialisation (jwst ``dq_init``).

The bad-pixel mask is OR-ed into PIXELDQ, and its DO_NOT_USE bit into every
group of GROUPDQ so that no ramp is ever fit to a pixel the mask condemns.
"""

import logging

import numpy as np

from webbflow import dqflags
from webbflow.ramp import StepStatus

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(ramp, mask_dq):
    """Apply the MASK reference DQ to a ramp, in place.

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
        Ramp to flag; ``pixeldq`` and ``groupdq`` are updated in place.
    mask_dq : ndarray, (ny, nx)
        MASK reference DQ, cut to the science subarray, JWST bit values.

    Returns
    -------
    str
        ``"COMPLETE"``.
    """
    mask = np.asarray(mask_dq).astype(np.uint32, copy=False)
    if mask.shape != ramp.pixeldq.shape:
        raise ValueError(
            f"mask DQ has shape {mask.shape} but the science pixeldq is {ramp.pixeldq.shape}"
        )
    ramp.pixeldq |= mask
    dnu = (mask & dqflags.DO_NOT_USE).astype(ramp.groupdq.dtype)
    # Broadcasting over (nints, ngroups) writes the 4-D array once, no copy.
    ramp.groupdq |= dnu
    log.info("dq_init: %d pixels flagged DO_NOT_USE by the mask", int(np.count_nonzero(dnu)))
    return StepStatus.COMPLETE
