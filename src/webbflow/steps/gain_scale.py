"""Gain scaling of the rate products (jwst ``gain_scale``).

Exposures taken with a non-standard gain carry a GAINFACT keyword; the rates
and errors are multiplied by it and the variances by its square.  Without a
gain factor the step is skipped (the NIRCam norm).
"""

import logging

from webbflow.ramp import StepStatus

__all__ = ["run"]

log = logging.getLogger(__name__)


def _scale(images, factor):
    """Scale one ImageArrays-like object in place (None is ignored)."""
    if images is None:
        return
    images.data *= factor
    images.err *= factor
    # Only the variance arrays that exist and are non-empty, as jwst does.
    for name in ("var_poisson", "var_rnoise"):
        var = getattr(images, name, None)
        if var is not None and var.size > 0:
            var *= factor**2


def run(result, gain_factor=None):
    """Rescale a ramp-fit result by the gain factor, in place.

    Parameters
    ----------
    result : RampFitResult
        Object with ``.rate`` and ``.rateints`` (each may be None), each with
        ``data, err, var_poisson, var_rnoise`` arrays.
    gain_factor : float or None
        GAINFACT (from the exposure or the GAIN reference header).  None
        skips the step.

    Returns
    -------
    str
        ``"COMPLETE"`` or ``"SKIPPED"``.
    """
    if gain_factor is None:
        log.info("gain_scale: no gain factor (GAINFACT) available; step skipped")
        return StepStatus.SKIPPED
    # A Python float keeps the float32 arithmetic jwst gets from a header value.
    factor = float(gain_factor)
    log.info("gain_scale: rescaling by %s", factor)
    _scale(getattr(result, "rate", None), factor)
    _scale(getattr(result, "rateints", None), factor)
    return StepStatus.COMPLETE
