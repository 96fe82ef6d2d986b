"""Resample (drizzle) calibrated images onto one output grid.

The algorithm follows jwst's ``resample`` step (stcal ``resample``): an output
tangent-plane WCS that covers every input, a pixel map per input through the
inputs' (gwcs) WCS, drizzle with an inverse-read-noise-variance weight
(``weight_type='ivm'``) or the exposure time, and variances propagated as
``sum(w**2 var) / (sum w)**2`` with each variance array drizzled as its square
root first, as jwst does.  Inputs are plain arrays plus a WCS; nothing here
reads or writes files.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from astropy import coordinates as coord
from astropy import units as u
from astropy.modeling import models
from drizzle.resample import Drizzle
from gwcs import coordinate_frames as cf
from gwcs import wcs as gwcs_wcs

from webbflow import dqflags
from webbflow.dqflags import good_pixel_mask  # noqa: F401 (re-exported: it lived here)

__all__ = [
    "ImageInput",
    "compute_scale",
    "footprint_fiducial",
    "rotation_matrix",
    "ResampleResult",
    "build_weight",
    "drizzle_images",
    "good_pixel_mask",
    "make_output_wcs",
    "make_tan_wcs",
    "native_pixel_scale",
    "image_pixmap",
    "interpolated_pixmap",
    "pixmap",
]

log = logging.getLogger(__name__)

VARIANCES = ("var_rnoise", "var_poisson", "var_flat")


@dataclass
class ImageInput:
    """One calibrated image as resample (and the other image3 steps) see it.

    Attributes
    ----------
    data, err, dq : ndarray
        SCI (MJy/sr), ERR and DQ (uint32).
    wcs : gwcs.wcs.WCS
        Detector (0-based pixels) -> ICRS degrees.
    var_rnoise, var_poisson, var_flat : ndarray or None
        Variance arrays, (MJy/sr)**2.
    exptime : float
        Exposure time (s), used by ``weight_type='exptime'``.
    sky : float
        Sky level (MJy/sr) measured by skymatch and not yet subtracted.
    name : str
        Used in log messages and the i2d provenance.
    group : str
        Exposure id: images of one exposure (several detectors) are drizzled
        together in outlier detection.
    """

    data: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    wcs: object
    var_rnoise: np.ndarray = None
    var_poisson: np.ndarray = None
    var_flat: np.ndarray = None
    exptime: float = 1.0
    sky: float = 0.0
    name: str = ""
    group: str = ""
    meta: dict = field(default_factory=dict)
    pixmaps: dict = field(default_factory=dict, repr=False, compare=False)
    scans: dict = field(default_factory=dict, repr=False, compare=False)

    def drop_pixmaps(self):
        """Free the pixel maps kept by :func:`image_pixmap` (and drizzle's counts for them)."""
        self.pixmaps.clear()
        self.scans.clear()


@dataclass
class ResampleResult:
    """Drizzled product arrays on ``wcs`` (shape ``data.shape``)."""

    data: np.ndarray
    wht: np.ndarray
    con: np.ndarray
    err: np.ndarray
    variances: dict
    wcs: object
    pixel_scale: float  # arcsec
    exptime: float
    ninputs: int


def make_tan_wcs(crval, crpix, cd, shape=None):
    """A gwcs gnomonic (TAN) imaging WCS.

    Parameters
    ----------
    crval : (float, float)
        RA, Dec (deg) of the reference pixel.
    crpix : (float, float)
        Reference pixel, 0-based (x, y).
    cd : array_like, shape (2, 2)
        CD matrix, deg/pixel (FITS convention: first row is RA---TAN).
    shape : (int, int), optional
        Array shape (ny, nx); sets the bounding box and ``array_shape``.

    Returns
    -------
    gwcs.wcs.WCS
    """
    cd = np.asarray(cd, float)
    transform = (
        (models.Shift(-crpix[0]) & models.Shift(-crpix[1]))
        | models.AffineTransformation2D(matrix=cd, translation=[0, 0])
        | models.Pix2Sky_TAN()
        | models.RotateNative2Celestial(crval[0], crval[1], 180.0)
    )
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    sky = cf.CelestialFrame(reference_frame=coord.ICRS(), name="world", unit=(u.deg, u.deg))
    wcs = gwcs_wcs.WCS([(detector, transform), (sky, None)])
    if shape is not None:
        wcs.bounding_box = ((-0.5, shape[1] - 0.5), (-0.5, shape[0] - 0.5))
        wcs.array_shape = tuple(shape)
    return wcs


def native_pixel_scale(wcs, shape):
    """Pixel scale (arcsec) at the image centre: sqrt of the projected pixel area."""
    y0, x0 = (np.asarray(shape) - 1) / 2.0
    ra, dec = wcs(np.array([x0, x0 + 1, x0]), np.array([y0, y0, y0 + 1]), with_bounding_box=False)
    c = coord.SkyCoord(ra, dec, unit="deg")
    dx = c[0].spherical_offsets_to(c[1])
    dy = c[0].spherical_offsets_to(c[2])
    area = abs(dx[0].arcsec * dy[1].arcsec - dx[1].arcsec * dy[0].arcsec)
    return float(np.sqrt(area))


def _position_angle_of_y(wcs, shape):
    """Angle (deg, east of north) of the detector +y axis at the image centre."""
    y0, x0 = (np.asarray(shape) - 1) / 2.0
    ra, dec = wcs(np.array([x0, x0]), np.array([y0, y0 + 1]), with_bounding_box=False)
    c = coord.SkyCoord(ra, dec, unit="deg")
    return float(c[0].position_angle(c[1]).deg)


def _corners(wcs, shape):
    ny, nx = shape
    x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    return wcs(x, y, with_bounding_box=False)


def _unit_vectors(ra, dec):
    lon, lat = np.deg2rad(ra), np.deg2rad(dec)
    return np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)


def footprint_fiducial(ras, decs):
    """jwst's fiducial of a set of footprint vertices: the middle of their unit vectors' bounding box."""
    x, y, z = _unit_vectors(np.asarray(ras, float), np.asarray(decs, float))
    xm, ym, zm = [(v.max() + v.min()) / 2.0 for v in (x, y, z)]
    return float(np.rad2deg(np.arctan2(ym, xm)) % 360.0), float(np.rad2deg(np.arctan2(zm, np.hypot(xm, ym))))


def compute_scale(wcs, fiducial):
    """Pixel scale (deg) at the sky position ``fiducial``: geometric mean of the x and y steps' lengths."""
    x0, y0 = wcs.invert(*fiducial, with_bounding_box=False)
    ra, dec = wcs(np.array([x0, x0 + 1, x0]), np.array([y0, y0, y0 + 1]), with_bounding_box=False)
    c = coord.SkyCoord(ra, dec, unit="deg")
    return float(np.sqrt(abs(c[0].separation(c[1]).deg) * abs(c[0].separation(c[2]).deg)))


def rotation_matrix(roll_ref, v3yangle, vparity=-1):
    """PC matrix of an output frame at roll ``roll_ref`` (radians), as jwst's ``calc_rotation_matrix``."""
    rel = roll_ref - vparity * v3yangle
    return np.array([[vparity * np.cos(rel), np.sin(rel)], [-vparity * np.sin(rel), np.cos(rel)]])


def make_output_wcs(wcslist, shapes, pixel_scale=None, pixel_scale_ratio=1.0, rotation=None,
                    crval=None, output_shape=None, crpix=None, ref_wcsinfo=None):
    """Output TAN WCS covering every input, built as jwst 3.0's ``resample`` builds it.

    The footprints are the inputs' pixel-corner quadrilaterals (as their
    S_REGION, 9 decimals); the tangent point is the middle of their unit
    vectors' bounding box; the pixel scale is the first input's at its
    reference point (``ra_ref``/``dec_ref``) times ``pixel_scale_ratio``; the
    orientation follows the first input's ``roll_ref``/``v3yangle``/``vparity``;
    the grid starts at the footprints' lower-left corner.

    Parameters
    ----------
    wcslist : list of gwcs.wcs.WCS
    shapes : list of (int, int)
    pixel_scale : float, optional
        Output pixel scale (arcsec); default: the first input's native scale
        times ``pixel_scale_ratio``.
    pixel_scale_ratio : float
        Output / input pixel scale when ``pixel_scale`` is not given.
    rotation : float, optional
        Position angle (deg, east of north) of the output +y axis; ``0`` is
        north up.  ``None`` keeps the first input's orientation (``roll_ref``).
    crval : (float, float), optional
        Tangent point; default the fiducial of the inputs' footprints.
    output_shape : (int, int), optional
        Output (ny, nx); default the bounding box of the inputs.
    crpix : (float, float), optional
        0-based pixel of ``crval``; default so that the footprints start at pixel 0.
    ref_wcsinfo : dict, optional
        The first input's ``ra_ref``, ``dec_ref``, ``roll_ref``, ``v3yangle``,
        ``vparity`` (``meta.wcsinfo``).  Without it (synthetic WCSs) the scale is
        taken at the first input's centre and the roll from its +y axis.

    Returns
    -------
    wcs : gwcs.wcs.WCS
    shape : (int, int)
    pixel_scale : float
        arcsec.
    """
    info = dict(ref_wcsinfo or {})
    ref_wcs, ref_shape = wcslist[0], shapes[0]
    if not all(info.get(k) is not None for k in ("ra_ref", "dec_ref", "roll_ref", "v3yangle", "vparity")):
        y0, x0 = (np.asarray(ref_shape) - 1) / 2.0
        ra0, dec0 = ref_wcs(x0, y0, with_bounding_box=False)
        info = {"ra_ref": float(ra0), "dec_ref": float(dec0), "v3yangle": 0.0, "vparity": -1,
                "roll_ref": _position_angle_of_y(ref_wcs, ref_shape)}
    if pixel_scale is None:
        scale = compute_scale(ref_wcs, (info["ra_ref"], info["dec_ref"])) * pixel_scale_ratio
    else:
        scale = pixel_scale / 3600.0
    vparity, v3yangle = int(info["vparity"]), np.deg2rad(info["v3yangle"])
    roll = np.deg2rad(info["roll_ref"]) if rotation is None else np.deg2rad(rotation) + vparity * v3yangle
    pc = rotation_matrix(roll, v3yangle, vparity)
    # S_REGION vertices (9 decimals, RA in [0, 360)) of every input.
    ras, decs = zip(*(_corners(w, s) for w, s in zip(wcslist, shapes)))
    ras = np.round(np.mod(np.concatenate(ras), 360.0), 9)
    decs = np.round(np.concatenate(decs), 9)
    if crval is None:
        crval = footprint_fiducial(ras, decs)
    crval = (float(crval[0]), float(crval[1]))
    trial = make_tan_wcs(crval, (0.0, 0.0), scale * pc)
    x, y = trial.invert(ras, decs, with_bounding_box=False)
    native = trial.invert(*crval, with_bounding_box=False)
    if crpix is None:
        offsets = (native[0] - x.min(), native[1] - y.min())
    else:
        offsets = (crpix[0] - native[0], crpix[1] - native[1])
    if output_shape is None:
        output_shape = (int(y.max() + offsets[1] + 0.5), int(x.max() + offsets[0] + 0.5))
    ny, nx = (int(v) for v in output_shape)
    return make_tan_wcs(crval, offsets, scale * pc, shape=(ny, nx)), (ny, nx), float(scale * 3600.0)


PIXMAP_ROWS = 256
"""Rows of the input grid taken through the WCSs at a time by :func:`pixmap`."""

PIXMAP_STEP = 64
"""Spacing (pixels) of the grid on which :func:`interpolated_pixmap` evaluates the WCSs."""

PIXMAP_TOL = 1e-5
"""Largest pixel-map error (output pixels) :func:`interpolated_pixmap` accepts at its check points."""

PIXMAP_MIN_SIDE = 512
"""Grids with a side shorter than this are mapped exactly (:func:`pixmap`): little to save there."""


def _bbox(wcs):
    """``wcs``'s bounding box in the form that restores it (as drizzle's ``calc_pixmap`` keeps it), or None."""
    box = getattr(wcs, "bounding_box", None)
    if box is None:
        return None
    try:
        return box.bounding_box(order="F")
    except AttributeError:
        return tuple(box)


def pixmap(wcs_from, wcs_to, shape, rows=PIXMAP_ROWS):
    """Pixel map (ny, nx, 2) of the ``shape`` grid of ``wcs_from`` in ``wcs_to`` pixels.

    The numbers of drizzle's ``calc_pixmap(wcs_from, wcs_to, shape, disable_bbox="both")``,
    computed ``rows`` full rows at a time: every WCS transform is element-wise, and the
    temporaries of a gwcs evaluation (a dozen float64 arrays of the grid's size, ~0.5 GiB for a
    2048 x 2048 detector) shrink to those of one block.

    Parameters
    ----------
    wcs_from, wcs_to : gwcs.wcs.WCS
        Their bounding boxes are ignored (and restored afterwards).
    shape : (int, int)
        (ny, nx) of the ``wcs_from`` grid.
    rows : int
        Rows per block.

    Returns
    -------
    ndarray
        (ny, nx, 2) float64: x, y in ``wcs_to``'s 0-based pixels.
    """
    ny, nx = (int(n) for n in shape)
    out = np.empty((ny, nx, 2))
    for r0 in range(0, ny, rows):
        y, x = np.indices((min(rows, ny - r0), nx), dtype=np.float64)
        y += r0
        x, y = _no_bbox_eval(wcs_from, wcs_to, x, y)
        out[r0:r0 + rows, :, 0] = x
        out[r0:r0 + rows, :, 1] = y
    return out


def _no_bbox_eval(wcs_from, wcs_to, x, y):
    """``wcs_to`` pixels of ``wcs_from`` pixels (x, y), both bounding boxes ignored (and restored)."""
    boxes = [(w, _bbox(w)) for w in (wcs_from, wcs_to)]
    for w, box in boxes:
        if box is not None:
            w.bounding_box = None
    try:
        return wcs_to.world_to_pixel_values(*wcs_from.pixel_to_world_values(x, y))
    finally:
        for w, box in boxes:
            if box is not None:
                w.bounding_box = box


def interpolated_pixmap(wcs_from, wcs_to, shape, step=PIXMAP_STEP, tol=PIXMAP_TOL):
    """:func:`pixmap` from the WCSs evaluated every ``step`` pixels and a bicubic spline between.

    A detector's map onto a mosaic grid is a smooth function (a low-order distortion polynomial,
    rotations and a tangent projection), so a bicubic interpolating spline through the exact map
    on a coarse grid (its last row and column included) reproduces it far below drizzle's needs
    at ~1/20 of the cost of taking every pixel through the gwcs pipeline: on full-frame NIRCam
    SW detectors aligned by tweakreg, with ``step=64``, the largest difference from :func:`pixmap`
    is 1.5e-8 pixel.  Every call checks this: the WCSs are also evaluated at the centre of every coarse cell (where the
    spline's error is largest) and, if the spline is off by more than ``tol`` there, or any value
    is not finite (a WCS that does not cover the grid), the exact :func:`pixmap` is returned.

    Parameters
    ----------
    wcs_from, wcs_to : gwcs.wcs.WCS
        Their bounding boxes are ignored (and restored afterwards).
    shape : (int, int)
        (ny, nx) of the ``wcs_from`` grid.
    step : int
        Spacing of the exactly evaluated grid.
    tol : float
        Largest accepted difference (output pixels) at the check points.

    Returns
    -------
    ndarray
        (ny, nx, 2) float64: x, y in ``wcs_to``'s 0-based pixels.
    """
    from scipy.interpolate import RectBivariateSpline

    ny, nx = (int(n) for n in shape)
    if min(ny, nx) < max(PIXMAP_MIN_SIDE, 4 * step):
        return pixmap(wcs_from, wcs_to, shape)
    ys = np.unique(np.r_[np.arange(0, ny, step), ny - 1]).astype(np.float64)
    xs = np.unique(np.r_[np.arange(0, nx, step), nx - 1]).astype(np.float64)
    ym, xm = 0.5 * (ys[1:] + ys[:-1]), 0.5 * (xs[1:] + xs[:-1])
    knots = _no_bbox_eval(wcs_from, wcs_to, *np.meshgrid(xs, ys))
    checks = _no_bbox_eval(wcs_from, wcs_to, *np.meshgrid(xm, ym))
    if not all(np.isfinite(v).all() for v in (*knots, *checks)):
        log.info("pixel map: the WCS is not finite on the whole grid; mapped exactly")
        return pixmap(wcs_from, wcs_to, shape)
    splines = [RectBivariateSpline(ys, xs, k, kx=3, ky=3, s=0) for k in knots]
    err = max(float(np.abs(s(ym, xm) - c).max()) for s, c in zip(splines, checks))
    if err > tol:
        log.info("pixel map: interpolation off by %.2g pixel (> %.2g); mapped exactly", err, tol)
        return pixmap(wcs_from, wcs_to, shape)
    out = np.empty((ny, nx, 2))
    yy, xx = np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64)
    for k, spline in enumerate(splines):
        out[:, :, k] = spline(yy, xx)
    return out


def image_pixmap(image, out_wcs):
    """:func:`pixmap` of ``image`` onto ``out_wcs``, computed once per pair and kept on ``image``.

    Outlier detection's drizzle and blot and the final resample all map an input's pixels onto the
    same output grid; computing it through the gwcs pipeline is the most expensive part of image3,
    so it is kept (``image.pixmaps``) while ``image.wcs`` and ``out_wcs`` stay the same objects,
    and on grids of full-frame size it is interpolated from a coarse grid
    (:func:`interpolated_pixmap`, checked to 1e-5 pixel on every call; smaller grids are exact).
    Callers must not modify the returned array; :meth:`ImageInput.drop_pixmaps` frees it.
    """
    key = (id(image.wcs), id(out_wcs), tuple(image.data.shape))
    hit = image.pixmaps.get(key)
    if hit is not None and hit[0] is image.wcs and hit[1] is out_wcs:
        return hit[2]
    pmap = interpolated_pixmap(image.wcs, out_wcs, image.data.shape)
    pmap.flags.writeable = False
    image.drop_pixmaps()  # one grid at a time: a new WCS or grid makes the old map useless
    image.pixmaps[key] = (image.wcs, out_wcs, pmap)
    return pmap


def build_weight(image, weight_type="ivm", good_bits=None):
    """Drizzle weight map: 1/VAR_RNOISE (``ivm``) or exposure time, zero on bad pixels."""
    if (weight_type == "ivm" and image.var_rnoise is not None and image.data.ndim == 2
            and getattr(image.var_rnoise, "dtype", None) == np.float32 and image.data.dtype.kind == "f"
            and image.data.shape == image.var_rnoise.shape == image.dq.shape):  # a cal image's arrays
        from webbflow.steps._drizzle_square import ivm_input_weight

        bad = ~np.uint32(~np.uint32(dqflags.DO_NOT_USE | dqflags.NON_SCIENCE) if good_bits is None else good_bits)
        return ivm_input_weight(np.asarray(image.var_rnoise, np.float32), np.asarray(image.dq, np.uint32), bad,
                                image.data)
    good = good_pixel_mask(image.dq) if good_bits is None else good_pixel_mask(image.dq, good_bits)
    good &= np.isfinite(image.data)
    if weight_type == "ivm" and image.var_rnoise is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = 1.0 / np.asarray(image.var_rnoise, np.float64)
        weight[~np.isfinite(weight)] = 0.0
    elif weight_type in ("ivm", "exptime"):
        weight = np.full(image.data.shape, float(image.exptime if weight_type == "exptime" else 1.0))
    else:
        raise ValueError(f"weight_type must be 'ivm' or 'exptime', not {weight_type!r}")
    return (weight * good).astype(np.float32)


def drizzle_images(images, out_wcs, out_shape, pixel_scale, *, pixfrac=1.0, kernel="square",
                   fillval=np.nan, weight_type="ivm", good_bits=None, subtract_sky=True,
                   with_variance=True, release_pixmaps=True):
    """Drizzle images onto ``out_wcs`` (the i2d algorithm).

    Parameters
    ----------
    images : list of ImageInput
    out_wcs : gwcs.wcs.WCS
    out_shape : (int, int)
    pixel_scale : float
        Output pixel scale, arcsec (recorded in the result).
    pixfrac : float
        Drop size as a fraction of the input pixel.
    kernel : str
        ``square``, ``point``, ``turbo``, ``gaussian``, ``lanczos2``, ``lanczos3``.
    fillval : float
        Value of output pixels that no input reaches.
    weight_type : {'ivm', 'exptime'}
    good_bits : int, optional
        DQ bits that do not exclude a pixel (default all but DO_NOT_USE, NON_SCIENCE).
    subtract_sky : bool
        Subtract each image's ``sky`` (skymatch level) before drizzling.
    with_variance : bool
        Propagate VAR_* and ERR (skip for outlier detection's single images).
    release_pixmaps : bool
        Free each image's pixel map (:func:`image_pixmap`) once it is drizzled; False keeps it for
        a later use on the same grid (outlier detection's drizzle, before its blot and the resample).

    Returns
    -------
    ResampleResult
    """
    fused = None
    if with_variance and kernel == "square" and np.isnan(fillval):
        fused = _fused_drizzle(images, out_wcs, out_shape, pixfrac, weight_type, good_bits, subtract_sky)
    if fused is not None:
        out_img, out_wht, out_ctx, wsum, wtot = fused
        exptime = 0.0
        for image in images:
            exptime += image.exptime
            if release_pixmaps:
                image.drop_pixmaps()
    else:
        out_img, out_wht, out_ctx, wsum, wtot, exptime = _c_drizzle(
            images, out_wcs, out_shape, pixfrac, kernel, fillval, weight_type, good_bits, subtract_sky,
            with_variance, release_pixmaps)
    variances = {}
    if with_variance:
        with np.errstate(divide="ignore", invalid="ignore"):
            for name in VARIANCES:
                v = wsum[name] / wtot[name] ** 2
                v[wtot[name] == 0] = np.nan
                variances[name] = v.astype(np.float32)
        err = np.sqrt(np.nansum([variances[n] for n in VARIANCES], axis=0)).astype(np.float32)
        err[~np.isfinite(out_img) | (out_wht == 0)] = np.nan
    else:
        err = np.full(out_shape, np.nan, np.float32)
    return ResampleResult(
        data=out_img.astype(np.float32), wht=out_wht.astype(np.float32),
        con=out_ctx.astype(np.int32), err=err, variances=variances, wcs=out_wcs,
        pixel_scale=pixel_scale, exptime=exptime, ninputs=len(images),
    )


def _c_drizzle(images, out_wcs, out_shape, pixfrac, kernel, fillval, weight_type, good_bits, subtract_sky,
               with_variance, release_pixmaps):
    """:func:`drizzle_images`' sums through drizzle's ``Drizzle`` (its C kernels), each image's
    (nmiss, nskip) kept with its pixel map (``image.scans``) for a later :func:`_fused_drizzle`."""
    driz = Drizzle(kernel=kernel, fillval=fillval, out_shape=out_shape, max_ctx_id=len(images))
    # float64 sums of w**2 var and w per variance (jwst's accumulation), only when propagated
    wsum = {name: np.zeros(out_shape) for name in VARIANCES} if with_variance else {}
    wtot = {name: np.zeros(out_shape) for name in VARIANCES} if with_variance else {}
    exptime = 0.0
    for image in images:
        pmap = image_pixmap(image, out_wcs)
        weight = build_weight(image, weight_type, good_bits)
        data = _sky_subtracted(image, subtract_sky)
        scanned = driz.add_image(data, exptime=image.exptime, pixmap=pmap, weight_map=weight,
                                 pixfrac=pixfrac, in_units="cps")
        del data
        # drizzle's counts depend on the pixel map, the grid, the kernel and pixfrac only
        image.scans[(tuple(out_shape), kernel, float(pixfrac))] = (pmap, scanned)
        exptime += image.exptime
        if with_variance:
            _add_variances(image, pmap, weight, wsum, wtot, out_shape, kernel, pixfrac, weight_type, scanned)
        if release_pixmaps:
            del pmap
            image.drop_pixmaps()
    return driz.out_img, driz.out_wht, driz.out_ctx, wsum, wtot, exptime


def _sky_subtracted(image, subtract_sky):
    data = np.asarray(image.data, np.float32)
    if subtract_sky and image.sky:
        data = data - np.float32(image.sky)
    return data


def _fused_drizzle(images, out_wcs, out_shape, pixfrac, weight_type, good_bits, subtract_sky):
    """:func:`drizzle_images`' sums (square kernel, NaN fill) with each image's data and variances
    drizzled in one pass (:func:`webbflow.steps._drizzle_square.drizzle_square_planes`), or None.

    The pass must visit the pixels drizzle's C kernel visits: it is used only where every image's
    pixel map was drizzled by ``Drizzle`` before on this grid with this pixfrac (outlier detection's
    single drizzles, :func:`_c_drizzle`), drizzle's scan of it is modelled
    (:func:`webbflow.steps._drizzle_scan.scan_rows`, whose counts must then be drizzle's) and the pass's
    count of pixels reaching no output pixel completes drizzle's ``nmiss``; otherwise (checked before
    anything is drizzled, or, for the last count, after each image, dropping the sums) None, and the
    caller drizzles through ``Drizzle``.

    Returns
    -------
    tuple or None
        ``out_img``, ``out_wht`` (float32), ``out_ctx`` (int32, ``Drizzle``'s planes), ``wsum``,
        ``wtot`` (name -> float64).
    """
    from webbflow.steps._drizzle_scan import scan_rows
    from webbflow.steps._drizzle_square import drizzle_square_planes

    key = (tuple(out_shape), "square", float(pixfrac))
    plans = []
    for image in images:
        known = image.scans.get(key)
        if known is None or known[0] is not image_pixmap(image, out_wcs):
            return None
        pmap, (nmiss_c, nskip_c) = known
        rows, nmiss, nskip = scan_rows(pmap, out_shape)
        if rows is None or nskip != nskip_c or nmiss > nmiss_c:
            log.debug("resample: drizzle's scan of %s not modelled; drizzled by drizzle", image.name)
            return None
        plans.append((pmap, rows, nmiss_c - nmiss))
    out_img = np.full(out_shape, np.nan, np.float32)
    out_wht = np.zeros(out_shape, np.float32)
    out_ctx = np.zeros((len(images) // 32 + 1,) + tuple(out_shape), np.int32)  # Drizzle's context planes
    wsum = {name: np.zeros(out_shape) for name in VARIANCES}
    wtot = {name: np.zeros(out_shape) for name in VARIANCES}
    for k, (image, (pmap, rows, misses)) in enumerate(zip(images, plans)):
        weight = build_weight(image, weight_type, good_bits)
        names = [n for n in VARIANCES if getattr(image, n) is not None]
        # the data and the variances' square roots written straight into the kernel's stack
        stack = np.empty((1 + len(names),) + image.data.shape, np.float32)
        stack[0] = _sky_subtracted(image, subtract_sky)
        for plane, name in zip(stack[1:], names):
            np.clip(np.asarray(getattr(image, name), np.float32), 0, None, out=plane)
            np.sqrt(plane, out=plane)
        bit = np.array([1 << (k % 32)], np.uint32).view(np.int32)[0]
        out, nomiss = drizzle_square_planes(stack, weight, pmap, out_shape, pixfrac, rows=rows,
                                            accumulate=(None, out_img, out_wht, out_ctx[k // 32], bit))
        del stack
        if nomiss != misses:
            log.debug("resample: drizzle's counts for %s differ from the pass's; drizzled by drizzle", image.name)
            return None
        out_img[out_wht == 0] = np.nan  # drizzle's fill after each image
        _sum_planes(dict(zip(names, out)), image, weight_type, out_shape, wsum, wtot)
    return out_img, out_wht, out_ctx, wsum, wtot


def _sum_planes(planes, image, weight_type, out_shape, wsum, wtot):
    """Add one image's drizzled variances (name -> the square root's float32 plane) to jwst's sums:
    its weight 1 / var_rnoise (``ivm``) or its exposure time, then ``w**2 var`` and ``w``."""
    from webbflow.steps._drizzle_square import accumulate_variance, ivm_weight

    if weight_type == "ivm" and planes.get("var_rnoise") is not None:
        w = ivm_weight(planes["var_rnoise"])
    else:
        w = np.full(out_shape, float(image.exptime))
    for name in VARIANCES:
        plane = planes.pop(name, None)
        if plane is not None:
            accumulate_variance(plane, w, wsum[name], wtot[name])


def _drizzled_variance(image, name, pmap, weight, out_shape, kernel, pixfrac):
    """One VAR_* array of ``image`` on the output grid (float64), drizzled as its square root as
    jwst does; None when the image has none."""
    var = getattr(image, name)
    if var is None:
        return None
    one = Drizzle(kernel=kernel, fillval=np.nan, out_shape=out_shape, disable_ctx=True)
    one.add_image(np.sqrt(np.clip(np.asarray(var, np.float32), 0, None)), exptime=image.exptime,
                  pixmap=pmap, weight_map=weight, pixfrac=pixfrac, in_units="cps")
    out = one.out_img.astype(np.float64)
    del one
    return np.square(out, out=out)


def _variances_one_pass(image, pmap, weight, out_shape, kernel, pixfrac, scanned):
    """``image``'s VAR_* arrays drizzled in one pass (:mod:`webbflow.steps._drizzle_square`): name ->
    float32 plane (the square root's drizzle, as :func:`_drizzled_variance` before its squaring), or
    None where that pass would not be the C kernel's numbers.

    ``scanned``: ``(nmiss, nskip)`` of the data's ``add_image`` with the same ``pmap`` (drizzle's
    counts of input pixels its polygon scanner skipped or that reached no output pixel).  The pass
    takes the input pixels drizzle's scanner takes (:func:`webbflow.steps._drizzle_scan.scan_rows`,
    its computation repeated) and is used only when its counts are drizzle's (then every plane is,
    bit for bit, its own ``add_image``'s), else the planes go through ``Drizzle`` one by one.
    """
    names = [n for n in VARIANCES if getattr(image, n) is not None]
    if kernel != "square" or not names or scanned is None:
        return None
    from webbflow.steps._drizzle_scan import scan_rows
    from webbflow.steps._drizzle_square import drizzle_square_planes

    rows, nmiss, nskip = scan_rows(pmap, out_shape)
    nmiss_c, nskip_c = scanned
    if rows is None or nskip != nskip_c or nmiss > nmiss_c:  # not drizzle's scan: no pass to waste
        log.debug("variances: drizzle's scan of %s not modelled; drizzled plane by plane", image.name)
        return None
    planes = [np.sqrt(np.clip(np.asarray(getattr(image, n), np.float32), 0, None)) for n in names]
    out, nomiss = drizzle_square_planes(planes, weight, pmap, out_shape, pixfrac, rows=rows)
    del planes
    if nmiss + nomiss != nmiss_c:
        log.debug("variances: drizzle's counts for %s differ from the pass's; drizzled plane by plane", image.name)
        return None
    return dict(zip(names, out))


def _add_variances(image, pmap, weight, wsum, wtot, out_shape, kernel, pixfrac, weight_type, scanned=None):
    """Add ``image``'s drizzled variances to ``wsum`` (w**2 var) and ``wtot`` (w), one array at a time
    (drizzled in one pass where :func:`_variances_one_pass` can)."""
    planes = _variances_one_pass(image, pmap, weight, out_shape, kernel, pixfrac, scanned)
    if planes is not None:  # the same sums, compiled: no float64 temporaries of the grid's size
        _sum_planes(planes, image, weight_type, out_shape, wsum, wtot)
        return

    def drizzled(name):
        if planes is None:
            return _drizzled_variance(image, name, pmap, weight, out_shape, kernel, pixfrac)
        plane = planes.pop(name, None)
        if plane is None:
            return None
        out = plane.astype(np.float64)
        return np.square(out, out=out)

    rnoise = drizzled("var_rnoise")
    # jwst: the image's weight on the output grid is 1 / its resampled read-noise variance.
    if weight_type == "ivm" and rnoise is not None:
        w = np.zeros(out_shape)
        ok = np.isfinite(rnoise) & (rnoise > 0)
        w[ok] = 1.0 / rnoise[ok]
    else:
        w = np.full(out_shape, float(image.exptime))
    w2 = np.square(w)
    for name in VARIANCES:
        var = rnoise if name == "var_rnoise" else drizzled(name)
        if var is None:
            continue
        ok = np.isfinite(var) & (var >= 0) & (w > 0)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf outside ``ok`` are not added
            np.multiply(var, w2, out=var)
        np.add(wsum[name], var, out=wsum[name], where=ok)
        np.add(wtot[name], w, out=wtot[name], where=ok)
        del var
        rnoise = None
