"""Wisp template subtraction (NIRCam known issue NC-103; not in jwst).

Wisps are scattered light from bright sources outside the field, reflected off the
NIRCam optics onto the SW detectors A3, B3 and B4 (A4 faintly): a smooth, diffuse arc
whose shape is fixed for a detector and filter and whose brightness changes from one
exposure to the next.  The NIRCam team distributes one template per detector and
filter (``WISP_<DET>_<FILTER>_<PUPIL>.fits``, full frame) and subtracts it scaled to
each exposure, the scale fitted on the background with the sources masked
(jwst-formats.md §3.8: Sunnquist's ``subtract_wisp.py``; CEERS' ``wispsub.py``).

This step fits ``data = scale × template + constant`` by least squares on the
source-masked background of a calibrated image and subtracts ``scale × template``
only: the constant is the sky, which stays for skymatch (as the survey teams keep
it).  The constant may be one per line along the fast-read direction: the 1/f
stripes, which Sunnquist's script removes from the image for the fit only, are
then free parameters of the fit, and nothing is destriped.  The least-squares scale is CEERS' ``--fit_scaling`` (the variance of
``image − scale·template`` minimised) with the sky as a free constant, rather than
a grid of scales by the MAD: the same minimum, found exactly.

The source mask is :func:`webbflow.steps.roeba.draft_mask` (pixels above the
median by ``nsigma`` robust σ, grown by ``grow`` pixels), found on the image less
the wisp and line offsets of the previous pass, so that a wisp brighter than the noise is not masked
as a source; pixels farther than ``nsigma`` σ below the fit (holes, residual
cosmic-ray wings) leave the fit too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["WispFit", "fit_wisp", "subtract_wisp", "template_name"]

log = logging.getLogger(__name__)


def template_name(detector, filter_name, pupil="CLEAR"):
    """File name of a wisp template as the NIRCam team names them: ``WISP_<DET>_<FILTER>_<PUPIL>.fits``."""
    return f"WISP_{detector.upper()}_{filter_name.upper()}_{(pupil or 'CLEAR').upper()}.fits"


@dataclass(frozen=True)
class WispFit:
    """Result of :func:`fit_wisp`.

    Attributes
    ----------
    scale : float
        Fitted template scale (the image's units per template unit).
    constant : float
        Fitted background level under the wisp (left in the image).
    npix : int
        Background pixels the final fit used.
    """

    scale: float
    constant: float
    npix: int


def _line_means(values, use, axis, segments=1):
    """Mean of ``values`` over ``use`` along ``axis``, per line and per each of ``segments`` equal
    parts of it (0 where none), broadcast back to the image's shape."""
    parts = []
    for v, u in zip(np.array_split(values, segments, axis=axis), np.array_split(use, segments, axis=axis)):
        n = u.sum(axis=axis, keepdims=True)
        mean = np.where(n > 0, np.where(u, v, 0.0).sum(axis=axis, keepdims=True) / np.maximum(n, 1), 0.0)
        parts.append(np.broadcast_to(mean, v.shape))
    return np.concatenate(parts, axis=axis)


def fit_wisp(data, template, dq=None, *, stripe_axis=None, amplifiers=1, nsigma=3.0, grow=3, passes=3,
             min_pixels=100):
    """Fit ``scale × template + constant`` to the source-masked background of ``data``.

    Parameters
    ----------
    data : ndarray (ny, nx)
        Calibrated image (NaN where unusable).
    template : ndarray (ny, nx)
        The wisp template cut to the image (NaN or non-finite where undefined).
    dq : ndarray of uint32 (ny, nx), optional
        DQ: DO_NOT_USE and reference pixels are never fitted.
    stripe_axis : {None, 0, 1}, optional
        The array axis along which the readout's 1/f stripes run (1: every row has its own
        offset, the fast-read direction along x; 0: every column).  Given, the fit has a free
        constant per line (the stripes) instead of one: the least-squares scale of the line-mean
        subtracted image on the line-mean subtracted template, so that 1/f stripes (often larger
        than a faint wisp) neither bias nor swamp it.  None: one constant.
    amplifiers : int
        Equal parts of each line read by their own output (4 for a full-width 4-output array),
        each with its own constant: the 1/f noise is partly independent per amplifier.
    nsigma : float
        Source mask and fit-clipping level, robust σ.
    grow : int
        Sources are grown by this many pixels.
    passes : int
        Mask-then-fit passes (each masks sources on the image less the last pass's wisp).
    min_pixels : int
        Fewest background pixels a fit needs.

    Returns
    -------
    WispFit or None
        None when fewer than ``min_pixels`` background pixels remain or the template is flat
        over them (no scale can be told from the sky); the caller leaves the image as it is.
        ``constant`` is the mean background under the fit (the mean of the line offsets).
    """
    # here, not at the top: the workflow's planning imports this module for template_name only, and
    # roeba's import takes numba's (~0.2 s of every snakemake's start)
    from webbflow.steps.roeba import draft_mask

    data = np.asarray(data, np.float32)
    template = np.asarray(template, np.float32)
    dq = np.zeros(data.shape, np.uint32) if dq is None else np.asarray(dq)
    valid = np.isfinite(data) & np.isfinite(template)
    image = np.where(valid, data, np.nan).astype(np.float64)
    shape = np.where(valid, template, 0.0).astype(np.float64)
    scale, offsets, npix = 0.0, 0.0, 0
    for _ in range(max(int(passes), 1)):
        # the image less the last pass's model (wisp and line offsets): sources stand out of it
        r = image - scale * shape - offsets
        use = draft_mask(r[None], dq, nsigma, grow) & valid
        if npix:
            # drop pixels far below the last fit (holes, wings of flagged cosmic rays)
            sigma = 1.4826 * np.median(np.abs(r[use] - np.median(r[use]))) if use.any() else 0.0
            use &= r > -nsigma * max(sigma, np.finfo(np.float32).tiny)
        if stripe_axis is None:
            d_mean, t_mean = np.mean(image[use]) if use.any() else 0.0, np.mean(shape[use]) if use.any() else 0.0
        else:
            d_mean = _line_means(image, use, stripe_axis, amplifiers)
            t_mean = _line_means(shape, use, stripe_axis, amplifiers)
        t = (shape - t_mean)[use]
        d = (image - d_mean)[use]
        if t.size < min_pixels or not np.any(t):
            log.warning("wisps: %d background pixels under a varying template (need %d): no fit",
                        t.size, min_pixels)
            return None
        scale = float(np.dot(t, d) / np.dot(t, t))
        offsets = d_mean - scale * t_mean  # the fitted constant of each line (or of the image)
        npix = int(t.size)
    constant = float(np.mean(np.broadcast_to(offsets, image.shape)[use]))
    return WispFit(scale, constant, npix)


def subtract_wisp(data, template, fit):
    """Subtract ``fit.scale × template`` from ``data`` in place (the constant, the sky, is kept).

    Pixels where the template is not finite are left as they are.
    """
    wisp = fit.scale * np.nan_to_num(np.asarray(template, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    data -= wisp.astype(data.dtype, copy=False)
    return data

