"""tso_photometry for imaging time series (NRC_TSIMAGE), as jwst 3.0's TSOPhotometryStep.

Pure functions on a calints' arrays (``data``, ``dq``, ``err`` of shape (nints, ny, nx)) and a small
:class:`PhotContext` of the keywords jwst reads (tso-algorithms.md §3.3):

* units (:func:`convert_units`): MJy/sr × 1e6·PIXAR_SR → Jy; DN/s × EFFINTTM × GAIN → electrons;
* centroid (:func:`source_centroid`): from (XREF_SCI − 1, YREF_SCI − 1), per integration the
  nanmedian of the pixels outside ``radius_inner`` is subtracted and photutils' ``centroid_sources``
  (centre of mass) runs in a ``search_box_width`` box (DO_NOT_USE or NaN masked; off-frame → NaN);
  a second pass at the nanmedian centroid in a ``fit_box_width`` box adds a ``GaussianPRF`` fit
  (position fixed) → psf_width (σ) and psf_flux;
* photometry (:func:`aperture_photometry`): ``ApertureStats`` sums in a circle of ``radius`` and an
  annulus ``radius_inner``…``radius_outer`` at the nanmedian centroid (or per integration with
  ``moving_centroid``); SUB64P + WLP8 is the whole-subarray nansum with no background;
* :func:`phot_table` the ``_phot.ecsv`` table, columns, units and meta as jwst writes them.

Beyond jwst (off unless configured; :data:`BEYOND_DEFAULTS`, issue #14 part 3):

* ``centroid_method: template`` (:func:`template_centroid`): each integration's position is the shift
  of the segment's median image (the template) that fits it best, the template's own position its
  centre of point symmetry within ``centroid_radius``.  jwst's centre of mass in an 11-px box sees a part of
  a 40-px weak-lens donut and wanders (2.3 px rms from the injected track on the demo); the template fit follows the star to a few millipixels on both
  the donut and an in-focus PSF.  With ``moving_centroid`` the apertures follow it;
* ``background_method: sigma_clip``: the annulus' background is its sigma-clipped mean
  (``background_sigma``), so a cosmic ray or a neighbour in the annulus does not bias it;
* ``radii``: more aperture radii measured side by side (``net_aperture_sum_r<R>`` columns; tso3 ranks
  them by the point-to-point scatter of their normalised light curves);
* ``whole_subarray: false``: SUB64P + WLP8 measured in apertures too;
* ``roeba``: row-by-row per-amplifier 1/f (:mod:`webbflow.steps.roeba`) on the calints first.

photutils (the same 3.0 release jwst 3.0 runs on) does the aperture overlaps, centre of mass and
PRF fit, so the numbers are jwst's to rounding.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np

from webbflow import dqflags

__all__ = ["BEYOND_DEFAULTS", "PHOT_DEFAULTS", "PhotContext", "aperture_photometry", "calints_roeba",
           "convert_units", "int_mid_times", "phot_table", "radius_column", "radius_scan", "run",
           "source_centroid", "template_centroid", "whole_subarray"]

log = logging.getLogger(__name__)

PHOT_DEFAULTS = {"radius": 3.0, "radius_inner": 4.0, "radius_outer": 5.0, "centroid_source": True,
                 "search_box_width": 41, "fit_box_width": 11, "moving_centroid": False}
"""jwst 3.0's TSOPhotometryStep parameters (the TSOPHOT reference is gone since 1.20)."""

BEYOND_DEFAULTS = {"centroid_method": "jwst", "centroid_radius": 25.0, "background_method": "mean",
                   "background_sigma": 3.0, "radii": [], "whole_subarray": True, "roeba": False}
"""webbflow's options beyond jwst; these values reproduce jwst 3.0 (``step_defaults: jwst``)."""


@dataclass
class PhotContext:
    """The keywords of one calints that tso_photometry reads.

    Attributes
    ----------
    xref_sci, yref_sci : float
        XREF_SCI, YREF_SCI (1-based): where target acquisition put the star.
    bunit : str
        BUNIT of the data (``MJy/sr`` or ``DN/s``).
    pixar_sr : float or None
        PIXAR_SR (MJy/sr → Jy).
    integration_time : float or None
        EFFINTTM (DN/s → DN per integration).
    gain : ndarray or None
        The gain reference cut to the subarray (DN → electrons); without it DN/s data keep their unit.
    int_times : numpy structured array
        INT_TIMES (``integration_number``, ``int_mid_MJD_UTC``, ``int_mid_BJD_TDB``).
    integration_start : int or None
        INTSTART (1-based).
    pupil, subarray : str
    meta : dict
        instrument, detector, channel, subarray, filter, pupil, target_name (the table's meta).
    wcs : callable or None
        pixel (x, y) → (ra, dec) in degrees; None gives NaN sky positions.
    xstart, noutputs : int
        SUBSTRT1 and NOUTPUTS (the amplifiers of the ``roeba`` option).
    """

    xref_sci: float
    yref_sci: float
    bunit: str
    int_times: np.ndarray
    pixar_sr: float | None = None
    integration_time: float | None = None
    gain: np.ndarray | None = None
    integration_start: int | None = None
    pupil: str | None = None
    subarray: str | None = None
    meta: dict = field(default_factory=dict)
    wcs: object = None
    xstart: int = 1
    noutputs: int = 1

    @classmethod
    def from_model(cls, model, gain=None):
        """The context of an open calints (CubeModel) and the gain cut to it."""
        m = model.meta
        wcs = getattr(m, "wcs", None)
        meta = OrderedDict(instrument=m.instrument.name, detector=m.instrument.detector,
                           channel=m.instrument.channel, subarray=m.subarray.name, filter=m.instrument.filter,
                           pupil=m.instrument.pupil, target_name=m.target.catalog_name)
        return cls(xref_sci=m.wcsinfo.siaf_xref_sci, yref_sci=m.wcsinfo.siaf_yref_sci, bunit=m.bunit_data,
                   int_times=np.asarray(model.int_times), pixar_sr=m.photometry.pixelarea_steradians,
                   integration_time=m.exposure.integration_time, gain=gain,
                   integration_start=m.exposure.integration_start, pupil=m.instrument.pupil,
                   subarray=m.subarray.name, meta=meta, wcs=wcs, xstart=int(m.subarray.xstart or 1),
                   noutputs=int(m.exposure.noutputs or 1))


def whole_subarray(pupil, subarray):
    """True for SUB64P + WLP8: jwst sums the whole subarray (the weak-lens donut fills it)."""
    return pupil == "WLP8" and subarray == "SUB64P"


def convert_units(data, err, bunit, pixar_sr=None, integration_time=None, gain=None):
    """Data and error in jwst's photometry units (float32 as jwst's in-place products).

    Returns
    -------
    data, err : ndarray
        New arrays (the inputs are not changed).
    unit : str
        ``Jy``, ``electron``, or ``bunit`` unchanged (jwst warns and keeps the units).
    """
    data = np.array(data, np.float32)
    err = np.array(err, np.float32)
    if bunit == "MJy/sr":
        factor = 1e6 * pixar_sr
        data *= factor
        err *= factor
        return data, err, "Jy"
    if bunit == "DN/s" and gain is not None:
        factor = integration_time * gain
        data *= factor
        err *= factor
        return data, err, "electron"
    log.warning("Unexpected data units: %s. Photometry will be produced using the input units.", bunit)
    return data, err, bunit


def _psf_fit(image, mask, box, xc, yc, reuse=None):
    """jwst's GaussianPRF fit (position fixed, flux ≥ 0, FWHM in 0…box): σ_x, σ_y, flux.

    jwst calls photutils' ``PSFPhotometry(model, (box, box))`` on the image with the one source in
    ``init_params``; this makes the same single fit without its per-call machinery (source table,
    grouping, result table and quality metrics: ~15 ms an integration, most of tso3's compute):
    the pixels of the box about the rounded position that are neither masked nor non-finite, in
    row-major order (``overlap_slices``, ``mode="trim"``), fitted by ``TRFLSQFitter`` with at most
    100 iterations, no weights and no local background, as ``PSFPhotometry`` fits one unblended
    source; the same numbers (``tests/steps/test_tso_photometry.py`` compares them with
    ``PSFPhotometry``).  ``reuse``: a dict kept across the calls of one box size, where the fitted
    model is kept and started again from this call's values (with astropy >= 7, whose fitter fits
    in place: building a GaussianPRF is ~0.3 ms, a sixth of a fit's CPU); the same numbers.
    """
    import warnings

    import astropy
    from astropy.modeling.fitting import TRFLSQFitter
    from astropy.nddata import NoOverlapError, overlap_slices
    from astropy.stats import gaussian_fwhm_to_sigma
    from astropy.utils import minversion
    from astropy.utils.exceptions import AstropyUserWarning

    from webbflow.steps._photutils import import_photutils

    import_photutils()  # first: without its distribution scan
    from photutils.psf import GaussianPRF
    from photutils.utils import CutoutImage

    shape = (box, box)
    cutout = CutoutImage(image, [yc, xc], shape)
    cutout_mask = CutoutImage(mask, [yc, xc], shape)
    flux = np.sum(cutout.data[~cutout_mask.data])
    failed = np.nan, np.nan, np.nan
    if not (np.isfinite(xc) and np.isfinite(yc) and np.isfinite(flux)):
        return failed  # PSFPhotometry skips such a source: NaN parameters
    try:
        box_slices = overlap_slices(image.shape, shape, (yc, xc), mode="trim")[0]
    except NoOverlapError:
        return failed
    yy, xx = np.mgrid[box_slices]
    usable = ~(mask[box_slices] | ~np.isfinite(image[box_slices]))
    if np.count_nonzero(usable) < 3:  # fewer pixels than fitted parameters (flux, x_fwhm, y_fwhm)
        return failed
    xi, yi = xx[usable], yy[usable]
    inplace = minversion(astropy, "7.0")
    model = reuse.get(box) if reuse is not None and inplace else None
    if model is None:
        model = GaussianPRF(flux=flux, x_0=xc, y_0=yc, x_fwhm=box / 2, y_fwhm=box / 2)
        model.flux.fixed, model.flux.min, model.flux.max = False, 0.0, np.inf
        model.x_0.fixed = model.y_0.fixed = True
        for p in (model.x_fwhm, model.y_fwhm):
            p.min, p.max, p.fixed = 0.0, box, False
        if reuse is not None and inplace:
            reuse[box] = model
    else:  # the bounds and fixed flags stay; the starting values are this call's
        model.flux, model.x_0, model.y_0, model.x_fwhm, model.y_fwhm = flux, xc, yc, box / 2, box / 2
    kwargs = {"inplace": True} if inplace else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            fit = TRFLSQFitter()(model, xi, yi, image[yi, xi], weights=None, maxiter=100, **kwargs)
    except ValueError as exc:
        log.debug("PSF fit failure: %s", exc)
        return failed
    return (gaussian_fwhm_to_sigma * fit.x_fwhm.value, gaussian_fwhm_to_sigma * fit.y_fwhm.value,
            fit.flux.value)


def _fit_source(data, mask, source_mask, xc, yc, box, fit_psf=False):
    from webbflow.steps._photutils import import_photutils

    import_photutils()  # first: without its distribution scan
    from photutils.centroids import centroid_sources

    nimg, ny, nx = data.shape
    cx, cy = np.full(nimg, np.nan), np.full(nimg, np.nan)
    wx, wy, flux = np.full(nimg, np.nan), np.full(nimg, np.nan), np.full(nimg, np.nan)
    reuse = {}
    for i in range(nimg):
        image = data[i] - np.nanmedian(data[i][~source_mask])
        try:
            c = centroid_sources(image, xc, yc, mask=mask[i], box_size=box)
            cx[i], cy[i] = c[0][0], c[1][0]
        except ValueError as exc:
            log.debug("Centroid failure in image %d: %s", i, exc)
        if not (0 <= cx[i] < nx and 0 <= cy[i] < ny):  # NaN fails too
            cx[i] = cy[i] = np.nan
            continue
        if fit_psf:
            wx[i], wy[i], flux[i] = _psf_fit(image, mask[i], box, cx[i], cy[i], reuse)
    return cx, cy, wx, wy, flux


def source_centroid(data, dq, xcenter, ycenter, search_box_width=41, fit_box_width=11, source_radius=4.0):
    """jwst's two-pass centroid and Gaussian PSF fit per integration.

    Parameters
    ----------
    data : ndarray, shape (nints, ny, nx)
        In photometry units (:func:`convert_units`).
    dq : ndarray
        DO_NOT_USE pixels (and NaN ones) are masked.
    xcenter, ycenter : float
        Start (0-based): XREF_SCI − 1, YREF_SCI − 1.
    search_box_width, fit_box_width : int
        Odd box widths of the first and second pass.
    source_radius : float
        Pixels within it of the centre are left out of the background median.

    Returns
    -------
    centroid_x, centroid_y : ndarray
        0-based, NaN where the centroid failed or left the frame.
    psf_width_x, psf_width_y, psf_flux : ndarray or None
        None when no integration could be centroided in the first pass.
    """
    nimg, ny, nx = data.shape
    yidx, xidx = np.mgrid[:ny, :nx]
    mask = ((dq & dqflags.DO_NOT_USE) != 0) | np.isnan(data)
    source_mask = ((xidx - xcenter) ** 2 + (yidx - ycenter) ** 2) < source_radius**2
    cx, cy, *_ = _fit_source(data, mask, source_mask, xcenter, ycenter, search_box_width)
    if not np.isfinite(cx).any() or not np.isfinite(cy).any():
        log.warning("Source could not be centroided.")
        return cx, cy, None, None, None
    xcenter, ycenter = np.nanmedian(cx), np.nanmedian(cy)
    source_mask = ((xidx - xcenter) ** 2 + (yidx - ycenter) ** 2) < source_radius**2
    return _fit_source(data, mask, source_mask, xcenter, ycenter, fit_box_width, fit_psf=True)


def _fill_bad(image):
    """``image`` with its non-finite pixels replaced by the mean of their finite 3×3 neighbours (0
    where none is): a masked pixel left at zero would pull a flux-weighted centroid toward itself."""
    from scipy import ndimage

    bad = ~np.isfinite(image)
    if not bad.any():
        return image
    good = (~bad).astype(float)
    num = ndimage.uniform_filter(np.where(bad, 0.0, image), 3, mode="nearest")
    den = ndimage.uniform_filter(good, 3, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        fill = np.where(den > 0, num / den, 0.0)
    return np.where(bad, fill, image)


def _clipped_median(values, sigma=3.0):
    from astropy.stats import sigma_clipped_stats

    values = values[np.isfinite(values)]
    return float(sigma_clipped_stats(values, sigma=sigma)[1]) if values.size else 0.0


def _fit_shift(image, template, use, iterations):
    """(dx, dy, a, c) with ``image ≈ a·template(x − dx, y − dy) + c`` over the pixels ``use``: linear
    least squares in the shift (the template's gradients), re-centred with a cubic-spline shift
    until the step is below 1e-4 px (at most ``iterations`` times; central differences understate
    the gradient of a sharp PSF, so a large shift takes a few); None with fewer than 10 pixels or
    a non-positive scale."""
    from scipy import ndimage

    if use.sum() < 10:
        return None
    target = image[use]
    dx = dy = 0.0
    for _ in range(max(1, int(iterations))):
        shifted = ndimage.shift(template, (dy, dx), order=3, mode="nearest") if (dx or dy) else template
        gy, gx = np.gradient(shifted)
        design = np.column_stack([shifted[use], gx[use], gy[use], np.ones(target.size)])
        coef = np.linalg.lstsq(design, target, rcond=None)[0]
        if not coef[0] > 0:
            return None
        step_x, step_y = -coef[1] / coef[0], -coef[2] / coef[0]
        dx, dy = dx + step_x, dy + step_y
        if abs(step_x) < 1e-4 and abs(step_y) < 1e-4:
            break
    return dx, dy, coef[0], coef[3]


def template_centroid(data, mask, xcenter, ycenter, radius=25.0, iterations=10):
    """Per-integration position of the star by fitting the shifted median image (webbflow, not jwst).

    The template is the median over the integrations of the background-subtracted images (masked
    pixels filled from their neighbours); its position is its centre of point symmetry (the shift
    between it and its 180° rotation, from its flux-weighted centroid within ``radius``, iterated
    from ``xcenter, ycenter``): a symmetric PSF is assumed, as the donut and the in-focus PSF are.  Each integration is then fitted,
    by linear least squares over the unmasked pixels within ``radius``, as
    ``a·T(x − dx, y − dy) + c`` (``T`` linearised in the shift, re-centred ``iterations`` times with a
    cubic-spline shift), so every pixel of the PSF's edges measures the shift: for a defocused donut
    the edges carry all of the position information, which a centre of mass in a small box misses.

    Parameters
    ----------
    data : ndarray, shape (nints, ny, nx)
    mask : ndarray of bool, same shape
        Pixels not to use (DO_NOT_USE, reference, NaN).
    xcenter, ycenter : float
        Start (0-based), XREF_SCI − 1, YREF_SCI − 1.
    radius : float
        Pixels within it of the star are fitted; beyond it is the background.
    iterations : int
        Most shift refinements per fit.

    Returns
    -------
    centroid_x, centroid_y : ndarray
        0-based positions, NaN where the fit failed.
    psf_width_x, psf_width_y : ndarray
        Flux-weighted rms extent (pixels) of the background-subtracted image about the centroid,
        within ``radius`` (for a donut a size, not a Gaussian σ).
    psf_flux : ndarray
        ``a`` × the template's sum within ``radius``.
    """
    nimg, ny, nx = data.shape
    yy, xx = np.mgrid[:ny, :nx]
    cube = np.where(mask, np.nan, data).astype(np.float64)
    far = (xx - xcenter) ** 2 + (yy - ycenter) ** 2 >= radius ** 2
    bkg = np.array([_clipped_median(cube[i][far]) if far.any() else 0.0 for i in range(nimg)])
    with warnings.catch_warnings():  # all-NaN pixels (always masked) stay NaN and are filled
        warnings.simplefilter("ignore", RuntimeWarning)
        template = _fill_bad(np.nanmedian(cube - bkg[:, None, None], axis=0))
    # the template's own position: a flux-weighted centroid to start, then the centre of point
    # symmetry (the shift between the template and its 180° rotation), which row stripes and a
    # residual background leave alone since only the PSF's gradients carry weight in the fit
    x0, y0 = float(xcenter), float(ycenter)
    for _ in range(20):
        w = np.where((xx - x0) ** 2 + (yy - y0) ** 2 < radius ** 2, template, 0.0)
        total = w.sum()
        if not total > 0:
            nan = np.full(nimg, np.nan)
            return nan, nan.copy(), nan.copy(), nan.copy(), nan.copy()
        x1, y1 = (w * xx).sum() / total, (w * yy).sum() / total
        done = abs(x1 - x0) < 1e-4 and abs(y1 - y0) < 1e-4
        x0, y0 = x1, y1
        if done:
            break
    region = (xx - x0) ** 2 + (yy - y0) ** 2 < radius ** 2
    rotated = template[::-1, ::-1]
    sym = _fit_shift(template, rotated, region & region[::-1, ::-1], iterations + 2)
    if sym is not None:
        x0, y0 = (nx - 1 + sym[0]) / 2, (ny - 1 + sym[1]) / 2
        region = (xx - x0) ** 2 + (yy - y0) ** 2 < radius ** 2
    tsum = float(template[region].sum())
    cx, cy = np.full(nimg, np.nan), np.full(nimg, np.nan)
    wx, wy, flux = np.full(nimg, np.nan), np.full(nimg, np.nan), np.full(nimg, np.nan)
    for i in range(nimg):
        use = region & np.isfinite(cube[i])
        fit = _fit_shift(cube[i], template, use, iterations)
        if fit is None:
            continue
        dx, dy, scale, level = fit
        cx[i], cy[i], flux[i] = x0 + dx, y0 + dy, scale * tsum
        sub = np.where(use, cube[i] - level, 0.0)
        s = sub.sum()
        if s > 0:
            wx[i] = np.sqrt(max((sub * (xx - cx[i]) ** 2).sum() / s, 0.0))
            wy[i] = np.sqrt(max((sub * (yy - cy[i]) ** 2).sum() / s, 0.0))
    off = ~((cx >= 0) & (cx < nx) & (cy >= 0) & (cy < ny))
    cx[off] = cy[off] = np.nan
    return cx, cy, wx, wy, flux


def calints_roeba(data, dq, xstart=1, noutputs=1, min_pixels=16):
    """Row-by-row, per-amplifier 1/f on calints (in place): :mod:`webbflow.steps.roeba` per integration.

    Background pixels are those of a draft (the median of the first integrations) not on a source,
    nor DO_NOT_USE, nor reference pixels; each integration's row medians of them are removed, the
    amplifier's level kept.  With one output the flips between the detector and science frames only
    reorder rows, and full-width four-output subarrays keep their amplifier edges under the x flip,
    so the science frame is used as it is.

    Parameters
    ----------
    data : ndarray float32, shape (nints, ny, nx)
        Changed in place.
    dq : ndarray, shape (nints, ny, nx) or (ny, nx)
    xstart : int
        SUBSTRT1 (1-based first detector column).
    noutputs : int
    min_pixels : int

    Returns
    -------
    skipped : int
        Amplifier rows, summed over integrations, too short of background pixels to be corrected.
    """
    from webbflow.steps import roeba

    nimg, nx = data.shape[0], data.shape[-1]
    pixeldq = np.bitwise_or.reduce(dq, axis=0) if dq.ndim == 3 else dq
    mask = roeba.draft_mask(data[:roeba.DRAFT_INTS], pixeldq)
    edges = roeba.amplifier_edges(nx, int(xstart) - 1, int(noutputs) == 4)
    skipped = 0
    for i in range(nimg):
        frame = data[i:i + 1]
        skipped += roeba.correct_frames(frame, mask & np.isfinite(frame[0]), edges, min_pixels=min_pixels)[1]
    return skipped


def radius_scan(table, radii):
    """The point-to-point scatter of each scanned radius' normalised light curve (ppm).

    Point-to-point differences leave out the transit's slow shape, so the numbers rank the radii by
    their noise without knowing where the transit is.

    Parameters
    ----------
    table : astropy Table
        The stacked ``_phot`` table with ``net_aperture_sum_r<R>`` columns.
    radii : sequence of float

    Returns
    -------
    list of dict
        ``radius`` and ``rms_ppm`` per radius, in the order given.
    """
    from webbflow.report.figures import point_to_point_rms

    rows = []
    for r in radii:
        flux = np.asarray(getattr(table[radius_column(r)], "value", table[radius_column(r)]), float)
        norm = np.nanmedian(flux)
        rms = point_to_point_rms(flux / norm) if np.isfinite(norm) and norm != 0 else float("nan")
        rows.append({"radius": float(r), "rms_ppm": round(1e6 * rms, 3)})
    return rows


def radius_column(radius):
    """The ``_phot`` column of a scanned radius' net aperture sum, e.g. ``net_aperture_sum_r3.5``."""
    return f"net_aperture_sum_r{float(radius):g}"


def aperture_photometry(data, err, xcenter, ycenter, radius, radius_inner, radius_outer, whole=False,
                        background="mean", background_sigma=3.0, radii=()):
    """Aperture and annulus sums per integration (jwst's ``tso_aperture_photometry`` numbers).

    Parameters
    ----------
    data, err : ndarray, shape (nints, ny, nx)
    xcenter, ycenter : float or ndarray
        Aperture centre (0-based), one value or one per integration.
    radius, radius_inner, radius_outer : float
    whole : bool
        SUB64P + WLP8: the nansum of the whole subarray, no background (NaN columns).
    background : {"mean", "sigma_clip"}
        The annulus' mean (jwst) or its sigma-clipped mean (``background_sigma``, 5 iterations);
        ``annulus_sum`` is then that mean × the annulus' unmasked area.
    background_sigma : float
    radii : sequence of float
        More aperture radii (same centre and background): ``radii`` → {radius: (net, net_err)}.

    Returns
    -------
    dict
        ``aperture_sum(_err)``, ``annulus_sum(_err)``, ``annulus_mean(_err)``, ``aperture_bkg(_err)``,
        ``net_aperture_sum(_err)`` (ndarrays, one value per integration), ``radii``.
    """
    nimg = data.shape[0]
    if whole:
        asum = np.array([np.nansum(data[i]) for i in range(nimg)])
        aerr = np.array([np.sqrt(np.nansum(err[i] ** 2)) for i in range(nimg)])
        nan = np.full(nimg, np.nan)
        return {"aperture_sum": asum, "aperture_sum_err": aerr, "annulus_sum": nan, "annulus_sum_err": nan,
                "annulus_mean": nan, "annulus_mean_err": nan, "aperture_bkg": nan, "aperture_bkg_err": nan,
                "net_aperture_sum": asum, "net_aperture_sum_err": aerr, "whole": True, "radii": {}}
    from astropy.stats import SigmaClip

    from webbflow.steps._photutils import import_photutils

    import_photutils()  # first: without its distribution scan
    from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture

    if background not in ("mean", "sigma_clip"):
        raise ValueError(f"background {background!r}: choose mean or sigma_clip")
    clip = SigmaClip(sigma=float(background_sigma), maxiters=5) if background == "sigma_clip" else None
    radii = [float(r) for r in radii]
    extra = {r: ([], [], []) for r in radii}  # sum, sum_err, area

    xcenter = np.full(nimg, xcenter) if np.isscalar(xcenter) else xcenter
    ycenter = np.full(nimg, ycenter) if np.isscalar(ycenter) else ycenter
    cols = {k: [] for k in ("aperture_sum", "aperture_sum_err", "aperture_area", "annulus_sum",
                            "annulus_sum_err", "annulus_area")}
    for i in range(nimg):
        ap = ApertureStats(data[i], CircularAperture((xcenter[i], ycenter[i]), r=radius), error=err[i])
        an = ApertureStats(data[i], CircularAnnulus((xcenter[i], ycenter[i]), r_in=radius_inner,
                                                    r_out=radius_outer), error=err[i])
        for key, stats in (("aperture", ap), ("annulus", an)):
            cols[f"{key}_sum"].append(stats.sum)
            cols[f"{key}_sum_err"].append(stats.sum_err)
            cols[f"{key}_area"].append(stats.sum_aper_area.value)  # unmasked pixels only
        if clip is not None:
            clipped = ApertureStats(data[i], CircularAnnulus((xcenter[i], ycenter[i]), r_in=radius_inner,
                                                             r_out=radius_outer), sigma_clip=clip)
            cols["annulus_sum"][-1] = clipped.mean * cols["annulus_area"][-1]
        for r in radii:
            st = ApertureStats(data[i], CircularAperture((xcenter[i], ycenter[i]), r=r), error=err[i])
            for lst, value in zip(extra[r], (st.sum, st.sum_err, st.sum_aper_area.value)):
                lst.append(value)
    c = {k: np.array(v) for k, v in cols.items()}
    out = {k: c[k] for k in ("aperture_sum", "aperture_sum_err", "annulus_sum", "annulus_sum_err")}
    out["annulus_mean"] = c["annulus_sum"] / c["annulus_area"]
    out["annulus_mean_err"] = c["annulus_sum_err"] / c["annulus_area"]
    out["aperture_bkg"] = out["annulus_mean"] * c["aperture_area"]
    out["aperture_bkg_err"] = out["annulus_mean_err"] * c["aperture_area"]
    out["net_aperture_sum"] = c["aperture_sum"] - out["aperture_bkg"]
    out["net_aperture_sum_err"] = np.sqrt(c["aperture_sum_err"] ** 2 + out["aperture_bkg_err"] ** 2)
    out["whole"] = False
    out["radii"] = {}
    for r, (rsum, rerr, rarea) in extra.items():
        rarea = np.array(rarea)
        out["radii"][r] = (np.array(rsum) - out["annulus_mean"] * rarea,
                           np.sqrt(np.array(rerr) ** 2 + (out["annulus_mean_err"] * rarea) ** 2))
    return out


def int_mid_times(int_times, integration_start, nints):
    """MJD UTC and BJD TDB mid-times of the cube's integrations (INT_TIMES rows from INTSTART).

    Raises
    ------
    ValueError
        No INT_TIMES rows.
    """
    if int_times is None or len(int_times) == 0:
        raise ValueError("the calints has no INT_TIMES table")
    start = integration_start if integration_start is not None else 1
    offset = start - int(int_times["integration_number"][0])
    rows = slice(offset, offset + nints)
    return (np.asarray(int_times["int_mid_MJD_UTC"][rows], np.float64),
            np.asarray(int_times["int_mid_BJD_TDB"][rows], np.float64))


def phot_table(sums, times, unit, xcenter, ycenter, params, meta, wcs=None, centroid=None):
    """jwst's ``_phot.ecsv`` table of one segment (a QTable; tso3 stacks the segments).

    Parameters
    ----------
    sums : dict
        :func:`aperture_photometry`'s result.
    times : tuple of ndarray
        (MJD UTC, BJD TDB) mid-times.
    unit : str
        Photometry unit.
    xcenter, ycenter : float or ndarray
        Aperture centre (0-based).
    params : dict
        radius, radius_inner, radius_outer (for the ``apertures`` meta line).
    meta : dict
        instrument, detector, channel, subarray, filter, pupil, target_name.
    wcs : callable, optional
        (x, y) → (ra, dec) degrees.
    centroid : tuple, optional
        (centroid_x, centroid_y, psf_width_x, psf_width_y, psf_flux); members may be None.
    """
    from astropy.table import QTable
    from astropy.time import Time

    nimg = len(sums["aperture_sum"])
    meta = OrderedDict(meta)
    if sums["whole"]:
        meta["apertures"] = ("Photometry measured as the sum of all values in the subarray.  "
                             "No background subtraction was performed.")
    else:
        mean = ("the mean" if params.get("background_method", "mean") == "mean"
                else f"the {params['background_sigma']:g}-sigma clipped mean")
        meta["apertures"] = (f"Photometry measured in a circular aperture of r={params['radius']} pixels.  "
                             f"Background calculated as {mean} in a circular annulus with "
                             f"r_inner={params['radius_inner']} pixels and r_outer={params['radius_outer']} pixels.")
    tbl = QTable(meta=meta)
    unit = u.Unit(unit)
    # through astropy Time as jwst (the same float64 values)
    tbl["MJD"] = Time(times[0], format="mjd", scale="utc").mjd
    tbl["BJD_TDB"] = Time(times[1], format="mjd", scale="tdb").mjd
    tbl["aperture_sum"] = sums["aperture_sum"] << unit
    tbl["aperture_sum_err"] = sums["aperture_sum_err"] << unit
    bkg_cols = ("annulus_sum", "annulus_sum_err", "annulus_mean", "annulus_mean_err", "aperture_bkg",
                "aperture_bkg_err")
    for col in bkg_cols:
        tbl[col] = sums[col] if sums["whole"] else sums[col] << unit  # jwst: NaN columns have no unit
    tbl["net_aperture_sum"] = sums["net_aperture_sum"] << unit
    tbl["net_aperture_sum_err"] = sums["net_aperture_sum_err"] << unit
    xcenter = np.full(nimg, xcenter) if np.isscalar(xcenter) else np.asarray(xcenter)
    ycenter = np.full(nimg, ycenter) if np.isscalar(ycenter) else np.asarray(ycenter)
    tbl["aperture_x"] = xcenter << u.pix
    tbl["aperture_y"] = ycenter << u.pix
    if wcs is not None:
        ra, dec = wcs(xcenter, ycenter)[:2]
    else:
        ra = dec = np.full(nimg, np.nan)
    tbl["aperture_ra_icrs"] = np.asarray(ra) << u.deg
    tbl["aperture_dec_icrs"] = np.asarray(dec) << u.deg
    if centroid is not None:
        cx, cy, wx, wy, flux = centroid
        if cx is not None and cy is not None:
            tbl["centroid_x"] = cx << u.pix
            tbl["centroid_y"] = cy << u.pix
        if wx is not None and wy is not None:
            tbl["psf_width_x"] = wx << u.pix
            tbl["psf_width_y"] = wy << u.pix
        if flux is not None:
            tbl["psf_flux"] = flux << unit
    for r, (net, net_err) in sums.get("radii", {}).items():  # webbflow's radius scan, after jwst's columns
        tbl[radius_column(r)] = net << unit
        tbl[radius_column(r) + "_err"] = net_err << unit
    return tbl


def run(data, dq, err, context, params=None):
    """tso_photometry on one calints: the segment's ``_phot`` table.

    Parameters
    ----------
    data, dq, err : ndarray, shape (nints, ny, nx)
    context : PhotContext
    params : dict, optional
        Overrides of :data:`PHOT_DEFAULTS` and :data:`BEYOND_DEFAULTS`.

    Returns
    -------
    astropy.table.QTable

    Raises
    ------
    ValueError
        Missing XREF_SCI/YREF_SCI or BUNIT, no INT_TIMES, or an unknown ``centroid_method``.
    """
    p = {**PHOT_DEFAULTS, **BEYOND_DEFAULTS,
         **{k: v for k, v in (params or {}).items() if k in PHOT_DEFAULTS or k in BEYOND_DEFAULTS}}
    if context.xref_sci is None or context.yref_sci is None:
        raise ValueError("XREF_SCI/YREF_SCI is missing")
    if context.bunit is None:
        raise ValueError("BUNIT for data array is missing")
    if p["centroid_method"] not in ("jwst", "template"):
        raise ValueError(f"centroid_method {p['centroid_method']!r}: choose jwst or template")
    xcenter, ycenter = context.xref_sci - 1, context.yref_sci - 1
    data, err, unit = convert_units(data, err, context.bunit, context.pixar_sr, context.integration_time,
                                    context.gain)
    if p["roeba"]:
        skipped = calints_roeba(data, dq, context.xstart, context.noutputs)
        log.info("roeba on calints: %d amplifier rows without enough background pixels", skipped)
    centroid = None
    xc, yc = xcenter, ycenter
    if p["centroid_source"]:
        if p["centroid_method"] == "template":
            mask = ((dq & (dqflags.DO_NOT_USE | dqflags.REFERENCE_PIXEL)) != 0) | ~np.isfinite(data)
            centroid = template_centroid(data, mask, xcenter, ycenter, float(p["centroid_radius"]))
        else:
            boxes = {b: int(p[b]) - (int(p[b]) % 2 == 0) for b in ("search_box_width", "fit_box_width")}
            centroid = source_centroid(data, dq, xcenter, ycenter, boxes["search_box_width"],
                                       boxes["fit_box_width"], source_radius=p["radius_inner"])
        cx, cy = centroid[:2]
        if np.all(np.isnan(cx)) or np.all(np.isnan(cy)):
            log.warning("Centroid fit failed. Using initial estimate for source location.")
        elif not p["moving_centroid"]:
            xc, yc = np.nanmedian(cx), np.nanmedian(cy)
        else:
            # an integration whose fit failed keeps the median position rather than a NaN aperture
            xc = np.where(np.isfinite(cx), cx, np.nanmedian(cx))
            yc = np.where(np.isfinite(cy), cy, np.nanmedian(cy))
            if p["centroid_method"] == "jwst":
                xc, yc = cx, cy  # jwst's own behaviour, NaN included
    whole = whole_subarray(context.pupil, context.subarray) and p["whole_subarray"]
    sums = aperture_photometry(data, err, xc, yc, p["radius"], p["radius_inner"], p["radius_outer"], whole=whole,
                               background=p["background_method"], background_sigma=p["background_sigma"],
                               radii=() if whole else p["radii"])
    times = int_mid_times(context.int_times, context.integration_start, data.shape[0])
    return phot_table(sums, times, unit, xc, yc, p, context.meta, wcs=context.wcs, centroid=centroid)
