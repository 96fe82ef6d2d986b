"""World coordinate helpers shared by the simulator and the assign_wcs step.

NIRCam imaging geometry as jwst models it (``assign_wcs/nircam.py``,
``assign_wcs/pointing.py``):

* ``detector -> v2v3``: the DISTORTION reference model, which takes 0-based
  *full-frame* science pixels; a subarray is shifted by ``SUBSTRT - 1`` first.
* ``v2v3 -> v2v3vacorr``: differential velocity aberration (identity when
  ``VA_SCALE`` is 1 or absent).
* ``v2v3vacorr -> world``: a rotation sequence ``zyxyz`` with angles
  ``(V2_REF, -V3_REF, ROLL_REF, DEC_REF, -RA_REF)`` applied to unit vectors.

The functions here build those astropy models (all ASDF-serialisable) and a
polynomial distortion of the kind the NIRCam DISTORTION references hold
(science pixel -> SIAF ideal plane -> V2/V3).
"""

from __future__ import annotations

from functools import reduce

import numpy as np
from astropy.modeling import fitting
from astropy.modeling import models as am
from gwcs.geometry import CartesianToSpherical, SphericalToCartesian

__all__ = [
    "ARCSEC2_TO_SR",
    "compute_roll_ref",
    "distortion_jacobian_det",
    "polynomial_distortion",
    "rotation_matrix",
    "sky_to_v23",
    "v23_to_sky",
    "v23tosky_model",
    "dva_model",
]

ARCSEC2_TO_SR = (np.pi / 180.0 / 3600.0) ** 2
"""Steradians per square arcsecond."""


def rotation_matrix(angle_deg, axis):
    """3x3 frame rotation about ``axis`` ('x', 'y' or 'z') by ``angle_deg``.

    Same convention as astropy's ``RotationSequence3D`` (a rotation of the
    coordinate frame, i.e. vectors turn by ``-angle``).
    """
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, s], [0, -s, c]])
    if axis == "y":
        return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])


def _attitude(v2_ref, v3_ref, roll_ref, ra_ref, dec_ref):
    """Matrix taking V-frame unit vectors to ICRS unit vectors (angles: arcsec for V2/V3, deg else)."""
    angles = [v2_ref / 3600.0, -v3_ref / 3600.0, roll_ref, dec_ref, -ra_ref]
    mats = [rotation_matrix(a, ax) for a, ax in zip(angles, "zyxyz", strict=True)]
    return reduce(np.matmul, mats[::-1])


def _unit(lon_deg, lat_deg):
    lon, lat = np.deg2rad(lon_deg), np.deg2rad(lat_deg)
    return np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def _angles(vec):
    lon = np.rad2deg(np.arctan2(vec[1], vec[0]))
    lat = np.rad2deg(np.arctan2(vec[2], np.hypot(vec[0], vec[1])))
    return lon, lat


def v23_to_sky(v2, v3, pointing):
    """(RA, Dec) in degrees of V2/V3 (arcsec) for ``pointing``.

    Parameters
    ----------
    v2, v3 : float or ndarray
        Telescope frame coordinates, arcsec.
    pointing : mapping
        ``v2_ref``, ``v3_ref`` (arcsec), ``roll_ref``, ``ra_ref``, ``dec_ref`` (deg).

    Returns
    -------
    ra, dec : ndarray
        Degrees, RA in [0, 360).
    """
    m = _attitude(pointing["v2_ref"], pointing["v3_ref"], pointing["roll_ref"],
                  pointing["ra_ref"], pointing["dec_ref"])
    ra, dec = _angles(m @ _unit(np.asarray(v2) / 3600.0, np.asarray(v3) / 3600.0))
    return np.mod(ra, 360.0), dec


def sky_to_v23(ra, dec, pointing):
    """Inverse of :func:`v23_to_sky`: V2, V3 in arcsec (V2 wrapped to (-180°, 180°])."""
    m = _attitude(pointing["v2_ref"], pointing["v3_ref"], pointing["roll_ref"],
                  pointing["ra_ref"], pointing["dec_ref"])
    v2, v3 = _angles(m.T @ _unit(np.asarray(ra), np.asarray(dec)))
    return v2 * 3600.0, v3 * 3600.0


def compute_roll_ref(pointing, new_v2_ref, new_v3_ref):
    """Position angle (deg, N through E) of the +V3 direction at another V2/V3 point.

    ROLL_REF of an aperture whose reference point is ``(new_v2_ref,
    new_v3_ref)`` (arcsec) under the attitude ``pointing`` -- the value jwst
    writes with V2_REF/V3_REF (``pointing.compute_roll_ref``), computed here
    geometrically from a small step along +V3.
    """
    step = 1.0  # arcsec: small enough for a local direction, large for float64
    ra0, dec0 = v23_to_sky(new_v2_ref, new_v3_ref, pointing)
    ra1, dec1 = v23_to_sky(new_v2_ref, new_v3_ref + step, pointing)
    ra0, dec0, ra1, dec1 = map(np.deg2rad, (ra0, dec0, ra1, dec1))
    y = np.sin(ra1 - ra0) * np.cos(dec1)
    x = np.cos(dec0) * np.sin(dec1) - np.sin(dec0) * np.cos(dec1) * np.cos(ra1 - ra0)
    return float(np.mod(np.rad2deg(np.arctan2(y, x)), 360.0))


def v23tosky_model(v2_ref, v3_ref, roll_ref, ra_ref, dec_ref):
    """Astropy model (v2, v3 arcsec) -> (ra, dec deg): jwst's ``v23tosky``."""
    rot = am.RotationSequence3D([v2_ref / 3600.0, -v3_ref / 3600.0, roll_ref, dec_ref, -ra_ref],
                                axes_order="zyxyz")
    m = ((am.Scale(1 / 3600) & am.Scale(1 / 3600)) | SphericalToCartesian(wrap_lon_at=180)
         | rot | CartesianToSpherical(wrap_lon_at=360))
    m.name = "v23tosky"
    return m


def dva_model(va_scale, v2_ref, v3_ref):
    """Differential velocity aberration on V2/V3 (identity for ``va_scale`` None or 1)."""
    if va_scale is None or va_scale == 1:
        return am.Identity(2)
    if va_scale <= 0:
        raise ValueError("VA_SCALE must be positive")
    corr = am.Scale(va_scale, name="dva_scale_v2") & am.Scale(va_scale, name="dva_scale_v3")
    v2_ref, v3_ref = v2_ref or 0.0, v3_ref or 0.0
    if v2_ref == 0 and v3_ref == 0:
        return corr
    corr = corr | (am.Shift((1 - va_scale) * v2_ref, name="dva_v2_shift")
                   & am.Shift((1 - va_scale) * v3_ref, name="dva_v3_shift"))
    corr.name = "DVA_Correction"
    return corr


def _poly(degree, coeffs, name):
    """Polynomial2D from a {(i, j): c} dict (term x**i y**j)."""
    p = am.Polynomial2D(degree, name=name)
    for (i, j), c in coeffs.items():
        setattr(p, f"c{i}_{j}", c)
    return p


def polynomial_distortion(xref, yref, x_coeffs, y_coeffs, v2_ref, v3_ref, v3_idl_yang, vparity,
                          inverse_degree=5, fit_size=2048):
    """A NIRCam-style distortion model: full-frame science pixel (0-based) -> V2/V3 arcsec.

    ``(x - xref, y - yref)`` -> ideal plane (polynomials, arcsec) -> V2/V3 by the
    SIAF rotation ``V3IdlYAngle`` and parity, plus ``(V2Ref, V3Ref)``.  The
    inverse (attached as ``model.inverse``, as in the CRDS files) is an exact
    affine ideal-plane step followed by a least-squares polynomial fit.

    Parameters
    ----------
    xref, yref : float
        0-based pixel of the reference point.
    x_coeffs, y_coeffs : dict
        ``{(i, j): c}`` coefficients (arcsec) of ideal X and Y in powers of
        ``dx**i dy**j``; degree = largest ``i + j``.
    v2_ref, v3_ref : float
        V2/V3 (arcsec) of the reference point.
    v3_idl_yang : float
        V3IdlYAngle, deg.
    vparity : int
        VIdlParity (-1 for NIRCam).
    inverse_degree : int
        Degree of the fitted inverse polynomials.
    fit_size : int
        Side of the pixel area (from 0) the inverse is fitted over.

    Returns
    -------
    astropy.modeling.CompoundModel
        Inputs (x, y), outputs (v2, v3), with ``.inverse`` set.
    """
    degree = max(i + j for i, j in list(x_coeffs) + list(y_coeffs))
    th = np.deg2rad(v3_idl_yang)
    c, s = np.cos(th), np.sin(th)
    idl2v = np.array([[vparity * c, s], [-vparity * s, c]])
    sci2idl = ((am.Shift(-xref, name="xref") & am.Shift(-yref, name="yref"))
               | am.Mapping((0, 1, 0, 1))
               | (_poly(degree, x_coeffs, "sci2idl_x") & _poly(degree, y_coeffs, "sci2idl_y")))
    idl2v2v3 = am.AffineTransformation2D(matrix=idl2v, translation=[v2_ref, v3_ref], name="idl2v2v3")
    forward = sci2idl | idl2v2v3

    # Inverse: V2V3 -> ideal exactly, ideal -> pixel offsets by a polynomial fit.
    yy, xx = np.mgrid[-8:fit_size + 8:96j, -8:fit_size + 8:96j]
    ix, iy = sci2idl(xx.ravel(), yy.ravel())
    fitter = fitting.LinearLSQFitter()
    px = fitter(am.Polynomial2D(inverse_degree), ix, iy, xx.ravel() - xref)
    py = fitter(am.Polynomial2D(inverse_degree), ix, iy, yy.ravel() - yref)
    px.name, py.name = "idl2sci_x", "idl2sci_y"
    v2idl = am.AffineTransformation2D(matrix=np.linalg.inv(idl2v),
                                      translation=-np.linalg.inv(idl2v) @ [v2_ref, v3_ref],
                                      name="v2v32idl")
    inverse = (v2idl | am.Mapping((0, 1, 0, 1)) | (px & py)
               | (am.Shift(xref) & am.Shift(yref)))
    forward.inverse = inverse
    forward.name = "nircam_distortion"
    return forward


def _poly_derivs(coeffs, dx, dy):
    """d/dx and d/dy of sum c_ij dx**i dy**j on the grid ``dy[:, None] x dx[None, :]`` (1-D inputs)."""
    fx = np.zeros((dy.size, dx.size))
    fy = np.zeros((dy.size, dx.size))
    for (i, j), c in coeffs.items():
        if i:
            fx += np.outer(dy**j, c * i * dx ** (i - 1))
        if j:
            fy += np.outer(j * c * dy ** (j - 1), dx**i)
    return fx, fy


def distortion_jacobian_det(x, y, xref, yref, x_coeffs, y_coeffs):
    """|det d(ideal)/d(pixel)| (arcsec² per pixel) of :func:`polynomial_distortion`.

    Evaluated on the grid of 1-D pixel coordinates ``y[:, None]``, ``x[None, :]``
    (0-based full-frame; scalars give a scalar).  The ideal -> V2/V3 step is a
    rotation (|det| = 1), so this is the pixel solid angle in arcsec².
    """
    scalar = np.ndim(x) == 0 and np.ndim(y) == 0
    dx = np.atleast_1d(np.asarray(x, float)) - xref
    dy = np.atleast_1d(np.asarray(y, float)) - yref
    xx, xy = _poly_derivs(x_coeffs, dx, dy)
    yx, yy = _poly_derivs(y_coeffs, dx, dy)
    det = np.abs(xx * yy - xy * yx)
    return float(det[0, 0]) if scalar else det
