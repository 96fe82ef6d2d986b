"""Beyond jwst: calibrated contrast curve and companion measurement on KLIP residuals.

Works on the north-up combination of :func:`webbflow.steps.klip.klip_sectors` residuals
(:func:`webbflow.steps.klip.combine_rolls`), with an unocculted PSF template ``psf`` (any
normalisation; used normalised to unit sum) and the unocculted star's total flux ``star_flux`` in
the images' units summed over pixels, so that contrast = companion flux / ``star_flux``.

* **Flux map**: the matched-filter estimate of a point source's total flux at every pixel,
  ``F(x) = sum(T_x I) / sum(T_x^2)`` (NaN pixels left out), so noise is measured directly in flux.
* **Contrast curve** (pyKLIP ``meas_contrast``, Mawet et al. 2014): in annuli of width ``fwhm``
  every ``fwhm / 2`` from ``iwa + fwhm / 2``: ``n = floor(N / (pi (fwhm / 2)^2))`` resolution
  elements, threshold ``t.ppf(1 - 2.8665e-7, n - 1) * std(ddof=1) * sqrt(1 + 1/n) + mean`` (the
  false-alarm probability of a Gaussian 5 sigma), divided by the throughput and ``star_flux``.
* **Throughput** (spaceKLIP's ``calibrate_contrast``, without its mis-configured re-reduction, #284):
  copies of the template are injected into the science integrations of every roll at their
  rotated positions, the *same* reduction callable is re-run, and the fixed-position template
  amplitude of the injected minus the plain reduction, over the injected flux, is the throughput
  (median over position angles).  Separations injected in one run are >= 3 FWHM apart.
* **Companions**: local maxima above ``snr_threshold`` in the SNR map (flux map minus the annulus
  mean over a robust annulus sigma), then a least-squares fit of the shifted template (x, y, flux,
  constant) on the combined image; flux divided by the throughput measured at the companion's
  separation (injections at other position angles).  Uncertainties: the fit covariance scaled by
  the annulus' pixel noise, the flux's also by the throughput spread.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage, optimize, stats

__all__ = ["contrast_curve", "find_companions", "fit_companion", "flux_map", "gaussian_psf", "inject",
           "measure_flux", "pixel_noise", "place_psf", "sky_offset", "snr_map", "throughput"]

log = logging.getLogger(__name__)

FAP_5SIGMA = 2.8665e-7
"""One-sided false-alarm probability of a Gaussian 5 sigma (pyKLIP's ``meas_contrast``)."""


def gaussian_psf(fwhm, size=None):
    """A unit-sum circular Gaussian template of ``fwhm`` pixels on an odd ``size`` grid."""
    size = int(size or 2 * int(np.ceil(2 * fwhm)) + 1) | 1
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    y, x = np.indices((size, size)) - size // 2
    g = np.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _unit(psf):
    psf = np.asarray(psf, np.float64)
    if psf.ndim != 2 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        raise ValueError(f"PSF template must be 2-D with odd sizes (centred on its middle pixel), not {psf.shape}")
    return psf / psf.sum()


def place_psf(shape, psf, x, y, flux=1.0):
    """An image of ``shape`` holding the template centred at (x, y) with total ``flux``.

    The template (centred on its middle pixel) is moved by the fractional part with a cubic
    spline and added at the integer part; what falls outside the image is lost.
    """
    psf = _unit(psf)
    my, mx = psf.shape
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    stamp = ndimage.shift(psf, (y - iy, x - ix), order=3, mode="constant") * flux
    out = np.zeros(shape)
    y0, x0 = iy - my // 2, ix - mx // 2
    ys, xs = slice(max(y0, 0), min(y0 + my, shape[0])), slice(max(x0, 0), min(x0 + mx, shape[1]))
    if ys.start < ys.stop and xs.start < xs.stop:
        out[ys, xs] = stamp[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return out


def sky_offset(separation, pa):
    """North-up offset (u west, v north; pixels) of a source at ``separation`` pixels, ``pa`` degrees east of north."""
    a = np.radians(pa)
    return -separation * np.sin(a), separation * np.cos(a)


def inject(rolls, angles, center, psf, separation, pa, flux):
    """Copies of the science cubes with point sources added at their rotated positions.

    Parameters
    ----------
    rolls : list of ndarray
        Per roll, (nints, ny, nx).
    angles : sequence of float
        Per roll, degrees from detector +y to north (counter-clockwise).
    center : (float, float)
        Star (x, y).
    psf : ndarray
        Template.
    separation, pa, flux : sequence of float
        Sources to add: pixels, degrees east of north, total flux.

    Returns
    -------
    list of ndarray
        float64 cubes.
    """
    out = []
    for cube, angle in zip(rolls, angles):
        cube = np.array(cube, np.float64)
        a = np.radians(angle)
        add = np.zeros(cube.shape[-2:])
        for sep, p, f in zip(np.atleast_1d(separation), np.atleast_1d(pa), np.atleast_1d(flux)):
            u, v = sky_offset(sep, p)
            add += place_psf(add.shape, psf, center[0] + np.cos(a) * u - np.sin(a) * v,
                             center[1] + np.sin(a) * u + np.cos(a) * v, f)
        out.append(cube + add)
    return out


_DENOMINATORS = {}
"""flux_map's denominators by (template, finite-pixel mask): the KL cut-offs' images of one reduction
share their NaNs, so each correlation of the mask (a quarter of a second at 320x320 with a 41x41
template) is computed once per job instead of once per cut-off."""


def _denominator(good, t):
    key = (t.shape, t.tobytes(), good.shape, np.packbits(good).tobytes())
    den = _DENOMINATORS.get(key)
    if den is None:
        if len(_DENOMINATORS) >= 4:  # the latest few masks come back; the rest are dropped
            del _DENOMINATORS[next(iter(_DENOMINATORS))]
        den = _DENOMINATORS[key] = ndimage.correlate(good.astype(np.float64), t * t, mode="constant")
        den.flags.writeable = False
    return den


def flux_map(image, psf):
    """Matched-filter total-flux estimate of a point source centred on every pixel (NaN-aware)."""
    t = _unit(psf)
    good = np.isfinite(image)
    if not good.any():  # a KL cut-off beyond the library's modes: NaN everywhere, as 0 / 0 would give
        return np.full(image.shape, np.nan)
    num = ndimage.correlate(np.where(good, image, 0.0), t, mode="constant")
    den = _denominator(good, t)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~good | (den < 0.5 * np.sum(t * t))] = np.nan
    return out


def measure_flux(image, psf, x, y):
    """Template amplitude (total flux) at a fixed position, least squares over the template's footprint."""
    model = place_psf(image.shape, psf, x, y)
    use = (model > 0) & np.isfinite(image)
    return float(np.sum(model[use] * image[use]) / np.sum(model[use] ** 2))


def _radius(shape, center):
    y, x = np.indices(shape)
    return np.hypot(x - center[0], y - center[1])


def _annulus_stats(fmap, r, sep, width, exclude, robust=False):
    sel = (np.abs(r - sep) <= width / 2) & np.isfinite(fmap) & ~exclude
    vals = fmap[sel]
    if robust and vals.size > 3:
        med = np.median(vals)
        return med, 1.4826 * np.median(np.abs(vals - med)), vals.size
    if vals.size < 2:
        return np.nan, np.nan, vals.size
    return float(np.mean(vals)), float(np.std(vals, ddof=1)), vals.size


def _exclusion(shape, positions, radius):
    y, x = np.indices(shape)
    out = np.zeros(shape, bool)
    for px, py in positions:
        out |= np.hypot(x - px, y - py) <= radius
    return out


def contrast_curve(image, center, psf, fwhm, star_flux=1.0, iwa=None, owa=None, separations=None, exclude=()):
    """5-sigma-equivalent flux and contrast versus separation with the small-sample correction.

    Parameters
    ----------
    image : ndarray
        (ny, nx) north-up KLIP residual image.
    center : (float, float)
        Star (x, y).
    psf : ndarray
        Template.
    fwhm : float
        Resolution element (pixels): annulus width and sample step ``fwhm / 2``.
    star_flux : float
        Unocculted star's total flux (image units summed over pixels).
    iwa, owa : float, optional
        Radii (pixels) of the first / last separation (defaults ``fwhm`` and the image edge).
    separations : sequence of float, optional
        Explicit separations (pixels) instead of the ``fwhm / 2`` grid.
    exclude : sequence of (x, y)
        Known sources masked (radius ``1.5 fwhm``) before measuring the noise.

    Returns
    -------
    dict
        ``separation`` (pixels), ``mean``, ``sigma`` (flux-map noise), ``n_res`` (resolution
        elements), ``tfactor`` (Student-t threshold in sigma, with ``sqrt(1 + 1/n)``), ``flux_5sigma``
        (``tfactor * sigma + mean``) and ``contrast_5sigma`` (over ``star_flux``, not throughput-corrected).
    """
    fmap = flux_map(image, psf)
    r = _radius(image.shape, center)
    if separations is None:
        iwa = fwhm if iwa is None else iwa
        rmax = float(np.nanmax(np.where(np.isfinite(fmap), r, np.nan))) if owa is None else owa
        separations = np.arange(iwa + fwhm / 2, rmax - fwhm / 2 + 1e-9, fwhm / 2)
    separations = np.asarray(separations, np.float64)
    mask = _exclusion(image.shape, exclude, 1.5 * fwhm)
    mean, sigma, nres = (np.empty(len(separations)) for _ in range(3))
    for i, sep in enumerate(separations):
        mean[i], sigma[i], npix = _annulus_stats(fmap, r, sep, fwhm, mask)
        nres[i] = np.floor(npix / (np.pi * (fwhm / 2) ** 2))
    with np.errstate(invalid="ignore"):
        tfactor = np.where(nres >= 2, stats.t.ppf(1 - FAP_5SIGMA, np.maximum(nres - 1, 1)) * np.sqrt(1 + 1 / nres),
                           np.nan)
    flux5 = tfactor * sigma + mean
    return {"separation": separations, "mean": mean, "sigma": sigma, "n_res": nres, "tfactor": tfactor,
            "flux_5sigma": flux5, "contrast_5sigma": flux5 / star_flux}


def throughput(reduce, rolls, angles, center, psf, separations, flux, pas=(0, 60, 120, 180, 240, 300), fwhm=3.0,
               base=None, measure=None, windowed=False, workers=1):
    """Algorithmic throughput by injection and recovery through the reduction itself.

    Parameters
    ----------
    reduce : callable
        ``reduce(rolls) -> (nkl, ny, nx)`` north-up combined residuals: the very reduction whose
        throughput is wanted (same sectors, references, cut-offs, centre).
    rolls, angles, center, psf
        As :func:`inject`.
    separations : sequence of float
        Pixels.
    flux : float or sequence of float
        Injected total flux per separation.
    pas : sequence of float
        Position angles (degrees east of north); each group of separations is injected at every
        PA, shifted by half the PA step for alternate groups.
    fwhm : float
        Pixels; separations injected together are >= 3 fwhm apart.
    base : ndarray, optional
        ``reduce(rolls)`` if already computed.
    measure : callable, optional
        ``measure(difference, x, y) -> flux`` on the injected-minus-plain image; default the
        fixed-position template amplitude (:func:`measure_flux`).  Pass the estimator the flux being
        corrected was measured with (e.g. :func:`fit_companion`'s) so both see the same bias.
    windowed : bool
        ``reduce`` accepts ``windows=[(y0, y1, x0, x1), ...]`` and then needs to return only those
        north-up boxes (e.g. :func:`webbflow.steps.klip.combine_rolls`' ``windows``): each injected
        reduction is combined only in boxes around its fakes, large enough for :func:`measure_flux`
        and :func:`fit_companion` (template half-size plus the fit's box), with the same values there.
    workers : int
        Threads that run the injected reductions (each injection's reduction and measurement is
        independent of the others': the same values whatever the count).

    Returns
    -------
    ndarray
        (nkl, nsep) median throughput over the PAs (recovered / injected).
    all : ndarray
        (nkl, nsep, npa) individual values.
    """
    separations = np.asarray(separations, np.float64)
    flux = np.broadcast_to(np.asarray(flux, np.float64), separations.shape)
    base = reduce(rolls) if base is None else base
    nkl = base.shape[0]
    values = np.full((nkl, len(separations), len(pas)), np.nan)
    ngroup = max(1, int(np.ceil(3 * fwhm / max(np.min(np.diff(np.sort(separations))), 1e-9)))
                 if len(separations) > 1 else 1)
    step = 360.0 / len(pas)
    # a box holding the template's footprint wherever the fit moves it (fit_companion's box, 1.5 fwhm, plus slack)
    half = max(np.shape(psf)) // 2 + max(3, int(np.ceil(1.5 * fwhm))) + 2

    def recover(g, j, pa):
        members = np.arange(g, len(separations), ngroup)
        pa_g = [pa + (step / 2 if g % 2 else 0.0)] * len(members)
        cubes = inject(rolls, angles, center, psf, separations[members], pa_g, flux[members])
        if windowed:
            boxes = []
            for m, p in zip(members, pa_g):
                u, v = sky_offset(separations[m], p)
                ix, iy = int(np.floor(center[0] + u + 0.5)), int(np.floor(center[1] + v + 0.5))
                boxes.append((iy - half, iy + half + 1, ix - half, ix + half + 1))
            injected = reduce(cubes, windows=boxes)
        else:
            injected = reduce(cubes)
        for m, p in zip(members, pa_g):
            u, v = sky_offset(separations[m], p)
            x, y = center[0] + u, center[1] + v
            for k in range(nkl):
                if np.isfinite(injected[k]).any():
                    diff = injected[k] - base[k]
                    values[k, m, j] = (measure(diff, x, y) if measure else measure_flux(diff, psf, x, y)) / flux[m]

    tasks = [(g, j, pa) for g in range(ngroup) for j, pa in enumerate(pas)]
    if max(1, int(workers)) == 1 or len(tasks) < 2:
        for task in tasks:
            recover(*task)
    else:  # each task writes its own values[:, members, j]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(int(workers), len(tasks)), thread_name_prefix="throughput") as pool:
            list(pool.map(lambda task: recover(*task), tasks))  # list(): a task's error is raised here
    return np.nanmedian(values, axis=2), values


def snr_map(image, center, psf, fwhm, exclude=()):
    """Flux map minus its annulus mean over the annulus' robust sigma (1-pixel radial steps)."""
    fmap = flux_map(image, psf)
    r = _radius(image.shape, center)
    mask = _exclusion(image.shape, exclude, 1.5 * fwhm)
    radii = np.arange(0, np.nanmax(r) + 1)
    prof = np.array([_annulus_stats(fmap, r, s, fwhm, mask, robust=True)[:2] for s in radii])
    mean = np.interp(r, radii, prof[:, 0])
    sigma = np.interp(r, radii, prof[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (fmap - mean) / sigma


def find_companions(image, center, psf, fwhm, snr_threshold=5.0, iwa=0.0, owa=None):
    """Local maxima of the SNR map above the small-sample threshold equivalent to ``snr_threshold``.

    A peak at radius ``r`` is kept when its S/N exceeds ``t.ppf(Phi(snr_threshold), n - 1) *
    sqrt(1 + 1/n)`` with ``n = 8 r / fwhm`` resolution elements in its annulus (the contrast curve's
    count), i.e. the false-alarm probability of a Gaussian ``snr_threshold`` (Mawet et al. 2014), so a
    detection is never below the 5-sigma curve drawn with the same threshold.

    Returns
    -------
    list of (x, y, snr)
        Integer pixel positions of the peaks, brightest first.
    """
    snr = snr_map(image, center, psf, fwhm)
    r = _radius(image.shape, center)
    ok = np.isfinite(snr) & (r >= iwa) & ((r <= owa) if owa is not None else True)
    filled = np.where(ok, snr, -np.inf)
    peaks = (filled == ndimage.maximum_filter(filled, size=2 * int(np.ceil(fwhm)) + 1)) & (filled > snr_threshold)
    ys, xs = np.nonzero(peaks)
    nres = np.maximum(np.floor(8 * r[ys, xs] / fwhm), 2)
    need = stats.t.ppf(stats.norm.cdf(snr_threshold), nres - 1) * np.sqrt(1 + 1 / nres)
    keep = snr[ys, xs] > need
    ys, xs = ys[keep], xs[keep]
    order = np.argsort(-snr[ys, xs])
    return [(int(xs[i]), int(ys[i]), float(snr[ys[i], xs[i]])) for i in order]


def fit_companion(image, psf, x0, y0, fwhm, noise):
    """Least-squares fit of the shifted template (x, y, flux, constant) in a box around (x0, y0).

    Parameters
    ----------
    image : ndarray
        North-up residual image.
    psf : ndarray
        Template.
    x0, y0 : float
        Start position.
    fwhm : float
        Pixels; the box half-size is ``1.5 fwhm`` (at least 3).
    noise : float
        Per-pixel noise (annulus sigma) scaling the covariance.

    Returns
    -------
    dict
        ``x``, ``y``, ``flux`` and ``x_err``, ``y_err``, ``flux_err``.
    """
    h = max(3, int(np.ceil(1.5 * fwhm)))
    ix, iy = int(round(x0)), int(round(y0))
    ys = slice(max(iy - h, 0), min(iy + h + 1, image.shape[0]))
    xs = slice(max(ix - h, 0), min(ix + h + 1, image.shape[1]))
    data = image[ys, xs]
    good = np.isfinite(data)

    def resid(p):
        model = place_psf(image.shape, psf, p[0], p[1], p[2])[ys, xs] + p[3]
        return (model - data)[good]

    f0 = measure_flux(image, psf, x0, y0)
    fit = optimize.least_squares(resid, [x0, y0, f0, 0.0], x_scale=[0.1, 0.1, max(abs(f0), 1e-30), 1.0])
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac) * noise ** 2
        err = np.sqrt(np.diag(cov))
    except np.linalg.LinAlgError:
        err = np.full(4, np.nan)
    return {"x": fit.x[0], "y": fit.x[1], "flux": fit.x[2], "x_err": err[0], "y_err": err[1], "flux_err": err[2]}


def pixel_noise(image, center, x, y, fwhm):
    """Robust per-pixel sigma of the annulus through (x, y), the source itself masked."""
    r = _radius(image.shape, center)
    sep = np.hypot(x - center[0], y - center[1])
    return _annulus_stats(image, r, sep, fwhm, _exclusion(image.shape, [(x, y)], 1.5 * fwhm), robust=True)[1]
