"""The simulated telescope + NIRCam optics: distortion, pointing, photometry, flat.

Our own small "SIAF": per detector a reference point (V2/V3), V3IdlYAngle,
parity and a cubic distortion of a few pixels at the corners.  The same
numbers give the DISTORTION reference model (what assign_wcs uses), the
pixel-area map (AREA reference), and the true placement of sky sources.

Pointing: the attitude is fixed by the sky position of the module's V2/V3
reference point ``POINTING_V2V3`` and the V3 position angle there (the
spec's ``roll``).  Header keywords (V2_REF, V3_REF, RA_REF, DEC_REF, ROLL_REF)
are computed for each exposure's own aperture, from the *commanded*
attitude; the *true* attitude differs by the spec's ``pointing_error`` and
``roll_error``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from webbflow.simulate.detectors import DETECTORS, FULL_SIZE
from webbflow.wcs import (ARCSEC2_TO_SR, compute_roll_ref, distortion_jacobian_det,
                          polynomial_distortion, v23_to_sky)

__all__ = ["SIAF", "POINTING_V2V3", "FILTERS", "WEAK_LENS_THROUGHPUT", "LYOT_THROUGHPUT", "photmjsr", "pixar_a2", "distortion_model",
           "pixel_area_map", "aperture_pointing", "commanded_attitude", "true_attitude",
           "pixel_to_v23", "v23_to_pixel", "abvega_offset"]

XREF = YREF = (FULL_SIZE - 1) / 2.0
"""0-based full-frame reference pixel of every detector (1024.5 1-based)."""

# name: (V2Ref, V3Ref arcsec, V3IdlYAngle deg, X/Y scale arcsec/pix).  NRCA1 is moved
# a little towards the module centre so that the SW SUB160 corner falls inside the
# LW SUB160 field (the demo images one patch of sky in both channels).
SIAF = {
    "NRCA1": (118.0, -525.0, -0.55, 0.03113, 0.03132),
    "NRCA2": (120.7, -459.7, -0.32, 0.03073, 0.03083),
    "NRCA3": (51.5, -527.4, -0.20, 0.03128, 0.03145),
    "NRCA4": (52.5, -459.6, -0.41, 0.03087, 0.03096),
    "NRCALONG": (86.1, -493.2, -0.12, 0.06275, 0.06306),
    "NRCB1": (-120.9, -527.3, 0.35, 0.03070, 0.03079),
    "NRCB2": (-120.4, -459.6, 0.21, 0.03111, 0.03129),
    "NRCB3": (-51.8, -527.4, 0.44, 0.03083, 0.03092),
    "NRCB4": (-51.5, -459.8, 0.18, 0.03124, 0.03142),
    "NRCBLONG": (-89.1, -493.3, 0.27, 0.06285, 0.06315),
}
VPARITY = -1

POINTING_V2V3 = {"A": (86.1, -493.2), "B": (-89.1, -493.3)}
"""V2/V3 (arcsec) whose sky position is the commanded pointing (module centre)."""

# Pivot wavelengths (micron) and PHOTMJSR ((MJy/sr) / (DN/s)) of the simulated photometry.
FILTERS = {
    "F070W": (0.704, 0.60), "F090W": (0.902, 0.52), "F115W": (1.154, 0.50),
    "F140M": (1.404, 1.50), "F150W": (1.501, 0.45), "F162M": (1.626, 1.45),
    "F164N": (1.644, 12.0), "F150W2": (1.659, 0.18), "F182M": (1.845, 1.35),
    "F187N": (1.874, 11.0), "F200W": (1.989, 0.40), "F210M": (2.093, 1.30),
    "F212N": (2.120, 10.0), "F250M": (2.503, 0.30), "F277W": (2.762, 0.11),
    "F300M": (2.989, 0.28), "F322W2": (3.232, 0.05), "F335M": (3.362, 0.27),
    "F356W": (3.568, 0.09), "F360M": (3.624, 0.26), "F405N": (4.052, 2.4),
    "F410M": (4.082, 0.25), "F430M": (4.281, 0.45), "F444W": (4.421, 0.10),
    "F460M": (4.630, 0.50), "F466N": (4.654, 2.6), "F470N": (4.708, 2.7),
    "F480M": (4.817, 0.55),
}
"""FILTER -> (pivot micron, PHOTMJSR for PUPIL CLEAR)."""


WEAK_LENS_THROUGHPUT = {"WLP8": 0.90}
"""PUPIL -> throughput relative to CLEAR of the SW weak lenses (an assumed value: the lens glass
costs some light, so a DN/s is worth more MJy/sr)."""


LYOT_THROUGHPUT = {"MASKRND": 0.75, "MASKBAR": 0.75}
"""PUPIL -> throughput relative to CLEAR of the coronagraphic Lyot stops (an assumed value: the stop
is undersized, so a DN/s through it is worth more MJy/sr)."""


# Vega's flux density (Jy) at broad-band effective wavelengths (micron), Bessell, Castelli & Plez
# (1998) zero points (R, I, J, H, K, L, M): enough for the simulator's AB-Vega offsets.
_VEGA_FNU = ((0.641, 3064.0), (0.798, 2416.0), (1.22, 1594.0), (1.63, 1024.0), (2.19, 667.0),
             (3.45, 288.0), (4.8, 170.0))


def abvega_offset(filter_name):
    """m_AB - m_Vega of a filter: Vega's flux density interpolated (log-log) at its pivot wavelength.

    Approximate (within ~0.1 mag of the published NIRCam values, e.g. 1.69 here for F200W, 3.18 for
    F444W), and what the simulator's ABVEGAOFFSET reference lists.
    """
    wave, fnu = np.log(np.array(_VEGA_FNU)).T
    pivot = np.log(FILTERS[filter_name][0])
    return float(-2.5 * np.log10(np.exp(np.interp(pivot, wave, fnu)) / 3631.0))


def photmjsr(filter_name, pupil="CLEAR"):
    """PHOTMJSR of a filter ((MJy/sr) per DN/s); unknown filters get a channel-typical value.

    A weak lens or a Lyot stop in the pupil (:data:`WEAK_LENS_THROUGHPUT`, :data:`LYOT_THROUGHPUT`)
    divides the CLEAR value by its throughput.
    """
    value = FILTERS[filter_name][1] if filter_name in FILTERS else 0.4
    throughput = {**WEAK_LENS_THROUGHPUT, **LYOT_THROUGHPUT}.get(pupil)
    return value / throughput if throughput else value


def _coeffs(detector):
    """Ideal-plane polynomial coefficients (arcsec) of ``detector``: a few pixels at the corners."""
    _, _, _, sx, sy = SIAF[detector]
    rng = np.random.default_rng(DETECTORS[detector].sca)
    # Terms in units of "pixels at the array edge" (r = 1024), scaled to arcsec.
    e = 1024.0
    q = rng.uniform(-1.5, 1.5, 6)
    k3 = rng.uniform(2.0, 4.0)  # pincushion: pixels at the corner-ish radius
    xc = {(1, 0): sx, (0, 1): sx * 2e-4,
          (2, 0): sx * q[0] / e**2, (1, 1): sx * q[1] / e**2, (0, 2): sx * q[2] / e**2,
          (3, 0): sx * k3 / e**3, (1, 2): sx * k3 / e**3}
    yc = {(0, 1): sy, (1, 0): 0.0,
          (2, 0): sy * q[3] / e**2, (1, 1): sy * q[4] / e**2, (0, 2): sy * q[5] / e**2,
          (0, 3): sy * k3 / e**3, (2, 1): sy * k3 / e**3}
    return xc, yc


@lru_cache(maxsize=16)
def distortion_model(detector):
    """Full-frame 0-based science pixel -> V2/V3 (arcsec) model of ``detector`` (with inverse)."""
    v2, v3, yang, _, _ = SIAF[detector]
    xc, yc = _coeffs(detector)
    return polynomial_distortion(XREF, YREF, xc, yc, v2, v3, yang, VPARITY)


def pixar_a2(detector):
    """Nominal pixel area (arcsec²) at the reference pixel: PIXAR_A2."""
    xc, yc = _coeffs(detector)
    return float(distortion_jacobian_det(XREF, YREF, XREF, YREF, xc, yc))


def pixar_sr(detector):
    """PIXAR_SR (steradian)."""
    return pixar_a2(detector) * ARCSEC2_TO_SR


def pixel_area_map(detector, geometry=None):
    """Relative pixel area (1 at the reference pixel), float32, full frame or ``geometry``."""
    xc, yc = _coeffs(detector)
    ys, xs = (slice(0, FULL_SIZE), slice(0, FULL_SIZE)) if geometry is None else geometry.slices
    x = np.arange(xs.start, xs.stop, dtype=float)
    y = np.arange(ys.start, ys.stop, dtype=float)
    area = distortion_jacobian_det(x, y, XREF, YREF, xc, yc) / pixar_a2(detector)
    return area.astype(np.float32)


def pixel_to_v23(detector, geometry, x, y):
    """V2/V3 (arcsec) of 0-based pixels of ``geometry`` on ``detector``."""
    return distortion_model(detector)(np.asarray(x, float) + geometry.xstart - 1,
                                      np.asarray(y, float) + geometry.ystart - 1)


def v23_to_pixel(detector, geometry, v2, v3, iterations=3):
    """0-based pixels of ``geometry`` at V2/V3, exact to < 1e-8 pix (inverse + Newton steps)."""
    model = distortion_model(detector)
    v2, v3 = np.asarray(v2, float), np.asarray(v3, float)
    x, y = model.inverse(v2, v3)
    h = 0.01
    for _ in range(iterations):
        f2, f3 = model(x, y)
        a2, a3 = model(x + h, y)
        b2, b3 = model(x, y + h)
        j11, j21 = (a2 - f2) / h, (a3 - f3) / h
        j12, j22 = (b2 - f2) / h, (b3 - f3) / h
        r2, r3 = v2 - f2, v3 - f3
        det = j11 * j22 - j12 * j21
        x = x + (j22 * r2 - j12 * r3) / det
        y = y + (-j21 * r2 + j11 * r3) / det
    return x - (geometry.xstart - 1), y - (geometry.ystart - 1)


def commanded_attitude(spec):
    """The commanded attitude of ``spec`` (dither included) as a pointing dict.

    The target sits at the module's pointing reference (:data:`POINTING_V2V3`), except for a
    coronagraphic exposure (``scene="coron"``), where target acquisition puts it on the occulter:
    the aperture's reference pixel (XREF_SCI/YREF_SCI).
    """
    v2, v3 = POINTING_V2V3[DETECTORS[spec.detector].module]
    if getattr(spec, "scene", None) == "coron":
        geom = spec.geometry
        xref = (geom.xsize + 1) / 2.0 if spec.xref_sci is None else float(spec.xref_sci)
        yref = (geom.ysize + 1) / 2.0 if spec.yref_sci is None else float(spec.yref_sci)
        v2, v3 = (float(v) for v in pixel_to_v23(spec.detector, geom, xref - 1, yref - 1))
    dx, dy = spec.dither_offset
    dec = spec.dec + dy / 3600.0
    ra = spec.ra + dx / 3600.0 / np.cos(np.radians(spec.dec))
    return {"v2_ref": v2, "v3_ref": v3, "roll_ref": float(spec.roll), "ra_ref": ra, "dec_ref": dec}


def true_attitude(spec):
    """The attitude the telescope really had: commanded + ``spec.pointing_error`` (arcsec) and
    ``spec.roll_error`` (deg, about the pointing reference)."""
    att = commanded_attitude(spec)
    ex, ey = getattr(spec, "pointing_error", (0.0, 0.0))
    att["roll_ref"] = att["roll_ref"] + float(getattr(spec, "roll_error", 0.0))
    att["dec_ref"] = att["dec_ref"] + ey / 3600.0
    att["ra_ref"] = att["ra_ref"] + ex / 3600.0 / np.cos(np.radians(att["dec_ref"]))
    return att


def aperture_pointing(spec, attitude=None):
    """Header pointing of the exposure's aperture (reference pixel = subarray centre, or ``spec.xref_sci/yref_sci``).

    Returns
    -------
    dict
        v2_ref, v3_ref (arcsec), roll_ref, ra_ref, dec_ref (deg), xref_sci,
        yref_sci (1-based), v3i_yang, vparity, plus ra_v1, dec_v1, pa_v3.
    """
    attitude = commanded_attitude(spec) if attitude is None else attitude
    geom = spec.geometry
    xref_sci, yref_sci = (geom.xsize + 1) / 2.0, (geom.ysize + 1) / 2.0
    # a grism time series points the source at the SIAF reference (it fixes λ(x)), not the centre
    if getattr(spec, "xref_sci", None) is not None:
        xref_sci = float(spec.xref_sci)
    if getattr(spec, "yref_sci", None) is not None:
        yref_sci = float(spec.yref_sci)
    v2, v3 = pixel_to_v23(spec.detector, geom, xref_sci - 1, yref_sci - 1)
    v2, v3 = float(v2), float(v3)
    ra, dec = v23_to_sky(v2, v3, attitude)
    ra_v1, dec_v1 = v23_to_sky(0.0, 0.0, attitude)
    return {
        "v2_ref": v2, "v3_ref": v3, "roll_ref": compute_roll_ref(attitude, v2, v3),
        "ra_ref": float(ra), "dec_ref": float(dec), "xref_sci": xref_sci, "yref_sci": yref_sci,
        "v3i_yang": SIAF[spec.detector][2], "vparity": VPARITY,
        "ra_v1": float(ra_v1), "dec_v1": float(dec_v1),
        "pa_v3": compute_roll_ref(attitude, 0.0, 0.0),
    }
