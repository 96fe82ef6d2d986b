"""assign_wcs (NIRCam imaging): a gwcs from the DISTORTION model and the header pointing.

Same frames and transforms as jwst 3.0 ``assign_wcs/nircam.py::imaging``:
``detector`` -(subarray shift | distortion)-> ``v2v3`` -(DVA)-> ``v2v3vacorr``
-(V2_REF, V3_REF, ROLL_REF, RA_REF, DEC_REF rotation)-> ``world`` (ICRS), with
the bounding box of the array.  Then, as AssignWcsStep does for imaging, a
FITS TAN-SIP approximation (``to_fits_sip``, lowest degree reaching
``sip_max_pix_error``) for the SCI header, and S_REGION from the footprint.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy import coordinates as coord
from astropy.modeling import models as am
from gwcs import coordinate_frames as cf
from gwcs.wcs import WCS

from webbflow.ramp import StepStatus
from webbflow.wcs import dva_model, v23tosky_model

__all__ = ["POINTING_KEYS", "model_pointing", "build_wcs", "fits_sip_keywords", "s_region", "run", "tsgrism_wavelength", "tsgrism_wcs",
           "MAX_SIP_DEGREE"]

MAX_SIP_DEGREE = 6
"""Degrees 1..MAX_SIP_DEGREE-1 are tried, as jwst does (``range(1, 6)``)."""


POINTING_KEYS = ("v2_ref", "v3_ref", "roll_ref", "ra_ref", "dec_ref", "va_scale", "crpix1", "crpix2",
                 "vparity", "v3yangle")
"""``meta.wcsinfo`` entries a WCS is built from (``va_scale`` is ``meta.velocity_aberration.scale_factor``)."""


def model_pointing(model):
    """The pointing of a stdatamodels product as :func:`build_wcs` takes it."""
    pointing = {k: getattr(model.meta.wcsinfo, k, None) for k in POINTING_KEYS}
    pointing["va_scale"] = model.meta.velocity_aberration.scale_factor
    return pointing


def build_wcs(distortion, pointing, subarray, shape):
    """The imaging gwcs of one exposure.

    Parameters
    ----------
    distortion : astropy.modeling.Model
        Full-frame 0-based science pixel -> V2/V3 arcsec (DISTORTION reference ``model``).
    pointing : mapping
        ``v2_ref``, ``v3_ref`` (arcsec), ``roll_ref``, ``ra_ref``, ``dec_ref``
        (deg), optional ``va_scale``.
    subarray : (xstart, ystart)
        1-based SUBSTRT1/2 of the science array.
    shape : (ny, nx)
        Science array shape (bounding box).

    Returns
    -------
    gwcs.wcs.WCS
    """
    for key in ("v2_ref", "v3_ref", "roll_ref", "ra_ref", "dec_ref"):
        if pointing.get(key) is None:
            raise ValueError(f"pointing keyword {key.upper()} is missing")
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    v2v3 = cf.Frame2D(name="v2v3", axes_order=(0, 1), axes_names=("v2", "v3"),
                      unit=(u.arcsec, u.arcsec))
    v2v3vacorr = cf.Frame2D(name="v2v3vacorr", axes_order=(0, 1), axes_names=("v2", "v3"),
                            unit=(u.arcsec, u.arcsec))
    world = cf.CelestialFrame(reference_frame=coord.ICRS(), name="world")

    xstart, ystart = (int(v) if v is not None else 1 for v in subarray)
    transform = distortion.copy()
    if (xstart, ystart) != (1, 1):
        shift = ((am.Shift(xstart - 1) if xstart != 1 else am.Identity(1))
                 & (am.Shift(ystart - 1) if ystart != 1 else am.Identity(1)))
        transform = shift | transform
    ny, nx = shape
    transform.bounding_box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    va = dva_model(pointing.get("va_scale"), pointing["v2_ref"], pointing["v3_ref"])
    tel2sky = v23tosky_model(pointing["v2_ref"], pointing["v3_ref"], pointing["roll_ref"],
                             pointing["ra_ref"], pointing["dec_ref"])
    wcs = WCS([(detector, transform), (v2v3, va), (v2v3vacorr, tel2sky), (world, None)])
    wcs.bounding_box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    return wcs


def fits_sip_keywords(wcs, crpix=None, max_pix_error=0.01, degree=None, max_inv_pix_error=0.01,
                      inv_degree=None, npoints=12):
    """FITS WCS + SIP keywords approximating ``wcs`` (lower-case ``meta.wcsinfo`` names).

    Mirrors jwst ``update_fits_wcsinfo``: ``to_fits_sip`` with the lowest
    degree in 1..5 that reaches ``max_pix_error`` (unless ``degree`` is
    given); NAXIS, CDELT, PC and the ``*_ORDER`` cards are not kept (jwst
    drops them from wcsinfo; stdatamodels writes the orders itself).

    Returns
    -------
    dict
        e.g. ``ctype1``, ``crval1``, ``crpix1``, ``cd1_1``, ``a_2_0`` ...
    """
    degree = range(1, MAX_SIP_DEGREE) if degree is None else degree
    inv_degree = range(1, MAX_SIP_DEGREE) if inv_degree is None else inv_degree
    if crpix is not None and None in crpix:
        crpix = None
    hdr = wcs.to_fits_sip(max_pix_error=max_pix_error, degree=degree,
                          max_inv_pix_error=max_inv_pix_error, inv_degree=inv_degree,
                          npoints=npoints, crpix=crpix, projection="TAN")
    out = {}
    for key, value in hdr.items():
        k = key.lower()
        if k.startswith("naxis") or k in ("cdelt1", "cdelt2", "pc1_1", "pc1_2", "pc2_1", "pc2_2"):
            continue
        out[k] = value
    return out


def s_region(wcs, shape):
    """``POLYGON ICRS`` of the footprint corners (pixel centres of the corner pixels, as jwst)."""
    bbox = wcs.bounding_box
    if bbox is None:
        ny, nx = shape
        bbox = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    footprint = wcs.footprint(bbox, center=False, axis_type="spatial").T[:2]
    np.mod(footprint[0], 360, out=footprint[0])
    text = "POLYGON ICRS  " + " ".join(f"{v:.9f}" for v in footprint.T.flatten())
    return None if "nan" in text else text


def run(distortion, pointing, subarray, shape, *, sip_approx=True, sip_max_pix_error=0.01,
        sip_degree=None, sip_max_inv_pix_error=0.01, sip_inv_degree=None, sip_npoints=12):
    """assign_wcs for one imaging exposure.

    Parameters
    ----------
    distortion, pointing, subarray, shape
        See :func:`build_wcs`; ``pointing`` may carry ``crpix1``/``crpix2``
        (the header's, reused for the SIP fit as jwst does).
    sip_approx, sip_max_pix_error, sip_degree, sip_max_inv_pix_error, sip_inv_degree, sip_npoints
        The jwst AssignWcsStep parameters of the SIP approximation.

    Returns
    -------
    status : str
    wcs : gwcs.wcs.WCS
    wcsinfo : dict
        ``meta.wcsinfo`` updates (SIP keywords when ``sip_approx``, ``s_region``).
    """
    wcs = build_wcs(distortion, pointing, subarray, shape)
    wcsinfo = {}
    if sip_approx:
        wcsinfo.update(fits_sip_keywords(
            wcs, crpix=[pointing.get("crpix1"), pointing.get("crpix2")],
            max_pix_error=sip_max_pix_error, degree=sip_degree,
            max_inv_pix_error=sip_max_inv_pix_error, inv_degree=sip_inv_degree,
            npoints=sip_npoints))
    region = s_region(wcs, shape)
    if region is not None:
        wcsinfo["s_region"] = region
    return StepStatus.COMPLETE, wcs, wcsinfo


# --- NRC_TSGRISM (jwst 3.0 ``assign_wcs/nircam.py::tsgrism``) -------------------------------

_C_M_PER_S = 299792458.0  # astropy.constants.c, as jwst's velocity_correction uses it


def _guess_form(model, x0, y0, t):
    """jwst's ``_evaluate_transform_guess_form``: a model of t, or Σ C_i(x0, y0)·t^i."""
    if isinstance(model, (list, tuple)) and len(model) == 1:
        model = model[0]
    if isinstance(model, (list, tuple)):
        return sum(c(x0, y0) * t ** i for i, c in enumerate(model))
    return model(t)


def _trace_parameter(dispersion, iorder, x0, y0, dx, sampling=40):
    """t of along-dispersion offset ``dx`` (jwst ``_NIRCAMForwardGrismDispersion``: INVDISPX, else dispx)."""
    if dispersion.invdispx:
        return dispersion.invdispx[iorder](dx)
    model = dispersion.dispx[iorder]
    if isinstance(model, (list, tuple)) and len(model[0].inputs) == 2:
        t0 = np.linspace(0.0, 1.0, sampling)
        xr = np.atleast_1d(_guess_form(model, x0, y0, t0))
        so = np.argsort(xr)
        return np.interp(dx, xr[so], t0[so])
    first = model[0] if isinstance(model, (list, tuple)) else model
    return (dx - first.c0.value) / first.c1.value


def tsgrism_wavelength(dispersion, xref_sci, yref_sci, xstart, nx, order=1, velosys=None):
    """Wavelength (µm) of each column of a NRC_TSGRISM subarray, as jwst 3.0 computes it.

    For GRISMR the wavelength depends on the column only: ``dx = x + SUBSTRT1 − 1 − XREF_SCI``
    (x 0-based; XREF_SCI used as stored, 1-based, as jwst does), ``t`` from INVDISPX (or dispx),
    ``λ = displ(t)`` (coefficients at XREF_SCI, YREF_SCI when field-dependent), then the barycentric
    factor ``1 / (1 + VELOSYS/c)``.

    Parameters
    ----------
    dispersion : webbflow.io.spec.GrismDispersion
    xref_sci, yref_sci : float
        Source position in the direct image (XREF_SCI, YREF_SCI).
    xstart : int
        SUBSTRT1 (1-based) of the subarray.
    nx : int
        Columns of the subarray.
    order : int
    velosys : float or None
        Barycentric radial velocity (m/s); None: no correction (as jwst when VELOSYS is absent).

    Returns
    -------
    ndarray
        float64 (nx,).

    Raises
    ------
    ValueError
        When the reference has no model for ``order``.
    """
    try:
        iorder = list(dispersion.orders).index(order)
    except ValueError:
        raise ValueError(f"the SPECWCS reference has no order {order} (orders {list(dispersion.orders)})") from None
    x_full = np.arange(nx, dtype=np.float64) + (xstart - 1)
    t = _trace_parameter(dispersion, iorder, xref_sci, yref_sci, x_full - xref_sci)
    wave = np.asarray(_guess_form(dispersion.displ[iorder], xref_sci, yref_sci, t), np.float64)
    if velosys is not None:
        wave = wave * (1 / (1 + velosys / _C_M_PER_S))
    return wave


def tsgrism_wcs(dispersion, distortion, pointing, subarray, source, cutout, order=1, velosys=None):
    """The gwcs of a NRC_TSGRISM cutout, with jwst 3.0's frames (``assign_wcs/nircam.py::tsgrism``
    followed by extract_2d's ``_set_tso_subwcs_transform``).

    ``grism_detector`` (cutout pixel x, y) → ``direct_image`` (the source's full-frame position
    XREF_SCI, YREF_SCI as stored, λ, order) → ``v2v3`` → ``v2v3vacorr`` → ``world`` (RA, Dec, λ,
    order).  jwst's extract_1d evaluates it for SLIT_RA/SLIT_DEC, so a product carrying it is read
    by jwst's tso3 as its own.

    Parameters
    ----------
    dispersion : webbflow.io.spec.GrismDispersion
    distortion : astropy.modeling.Model
        Full-frame pixel → V2/V3 (DISTORTION reference).
    pointing : mapping
        As :func:`build_wcs` takes it.
    subarray : (xstart, ystart)
        1-based SUBSTRT1/2.
    source : (xref_sci, yref_sci)
    cutout : (ymin, shape)
        First row of the cutout in the subarray (0-based) and the cutout's (ny, nx).
    order : int
    velosys : float or None

    Returns
    -------
    gwcs.wcs.WCS
    """
    from stdatamodels.jwst.transforms.models import (NIRCAMBackwardGrismDispersion,
                                                     NIRCAMForwardRowGrismDispersion)

    for key in ("v2_ref", "v3_ref", "roll_ref", "ra_ref", "dec_ref"):
        if pointing.get(key) is None:
            raise ValueError(f"pointing keyword {key.upper()} is missing")
    spec = cf.SpectralFrame(name="spectral", axes_order=(2,), unit=(u.micron,), axes_names=("wavelength",))
    gdetector = cf.Frame2D(name="grism_detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    full = cf.Frame2D(name="full_detector", axes_order=(0, 1), axes_names=("dx", "dy"), unit=(u.pix, u.pix))
    v2v3 = cf.Frame2D(name="v2v3_spatial", axes_order=(0, 1), axes_names=("v2", "v3"), unit=(u.deg, u.deg))
    vacorr = cf.Frame2D(name="v2v3vacorr_spatial", axes_order=(0, 1), axes_names=("v2", "v3"),
                        unit=(u.arcsec, u.arcsec))
    sky = cf.CelestialFrame(reference_frame=coord.ICRS(), name="icrs")

    kwargs = dict(lmodels=dispersion.displ, xmodels=dispersion.dispx, ymodels=dispersion.dispy,
                  inv_xmodels=dispersion.invdispx)
    det2det = NIRCAMForwardRowGrismDispersion(list(dispersion.orders), **kwargs)
    det2det.inverse = NIRCAMBackwardGrismDispersion(list(dispersion.orders), **kwargs)
    if velosys is not None:
        corr = 1 / (1 + velosys / _C_M_PER_S)
        vel = am.Identity(1) * am.Const1D(corr, name="velocity_correction")
        vel.inverse = am.Identity(1) / am.Const1D(corr, name="inv_vel_correction")
        det2det = det2det | am.Mapping((0, 1, 2, 3)) | am.Identity(2) & vel & am.Identity(1)
    xc, yc = (float(v) for v in source)
    xcenter, ycenter = am.Const1D(xc), am.Const1D(yc)
    xcenter.inverse, ycenter.inverse = am.Const1D(xc), am.Const1D(yc)
    xstart, ystart = (int(v) if v is not None else 1 for v in subarray)
    sub2direct = am.Mapping((0, 1, 0, 1, 2)) | (am.Identity(2) & xcenter & ycenter & am.Identity(1)) | det2det
    if (xstart, ystart) != (1, 1):
        shift = ((am.Shift(xstart - 1) if xstart != 1 else am.Identity(1))
                 & (am.Shift(ystart - 1) if ystart != 1 else am.Identity(1)))
        sub2direct = shift & am.Identity(1) | sub2direct
    ymin, (ny, nx) = cutout
    order_model = am.Const1D(order)
    order_model.inverse = am.Const1D(order)
    grism2direct = am.Mapping((0, 1, 0)) | am.Shift(0) & am.Shift(ymin) & order_model | sub2direct
    dist = distortion.copy() & am.Identity(2)
    va = dva_model(pointing.get("va_scale"), pointing["v2_ref"], pointing["v3_ref"]) & am.Identity(2)
    tel2sky = v23tosky_model(pointing["v2_ref"], pointing["v3_ref"], pointing["roll_ref"], pointing["ra_ref"],
                             pointing["dec_ref"]) & am.Identity(2)
    wcs = WCS([(gdetector, grism2direct), (cf.CompositeFrame([full, spec], name="direct_image"), dist),
               (cf.CompositeFrame([v2v3, spec], name="v2v3"), va),
               (cf.CompositeFrame([vacorr, spec], name="v2v3vacorr"), tel2sky),
               (cf.CompositeFrame([sky, spec], name="world"), None)])
    wcs.bounding_box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    return wcs
