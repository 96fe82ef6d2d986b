"""The astrophysical scene: true count rate (DN/s) seen by each pixel.

For now sources live on a local tangent plane in arcsec around the pointing
(``scene_seed`` fixes them, so dithers of one channel see the same sky moved by
their offsets).  A later issue replaces :func:`source_list` / the pixel mapping
with a real sky catalogue and WCS; :func:`render_rate` is the hook.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from webbflow.simulate.detectors import DETECTORS, frame_time

__all__ = ["PSF_FWHM_ARCSEC", "add_galaxy", "add_star", "source_list", "render_rate", "saturating_rate"]

PSF_FWHM_ARCSEC = {"SHORT": 0.066, "LONG": 0.145}
"""Approximate PSF FWHM per channel (F200W, F444W)."""


def psf_sigma_pixels(detector):
    """Gaussian sigma of the PSF in pixels of ``detector``."""
    info = DETECTORS[detector]
    return PSF_FWHM_ARCSEC[info.channel] / info.pixel_scale / 2.3548


def saturating_rate(model_well_dn, spec, sigma):
    """Total star rate (DN/s) whose peak pixel fills ``model_well_dn`` near group 3.

    The pixel-integrated peak fraction of a centred Gaussian is
    ``erf(0.5/(sqrt(2) sigma))**2``.
    """
    per = spec.nframes + spec.groupgap
    g = min(2.5, max(spec.ngroups - 1.5, 0.5))
    t = (g * per + (spec.nframes + 1) / 2) * frame_time(spec.geometry)
    peak = erf(0.5 / (np.sqrt(2) * sigma)) ** 2
    return model_well_dn / t / peak


def source_list(spec, well_dn=43000.0):
    """Sources of the scene as structured arrays in this detector's pixels.

    Returns
    -------
    stars : ndarray (n, 3)
        x, y (science-frame pixels, 0-based) and total rate (DN/s).
    galaxies : ndarray (m, 6)
        x, y, total rate, half-light radius (pix), axis ratio, angle (rad).
    """
    info = DETECTORS[spec.detector]
    ny, nx = spec.geometry.shape
    scale = info.pixel_scale
    rng = np.random.default_rng([spec.scene_seed, 0 if info.channel == "SHORT" else 1])
    half = 0.5 * max(nx, ny) * scale + 1.0  # arcsec, field plus a margin
    colour = 1.0 if info.channel == "SHORT" else 1.6  # LW sees redder sources brighter

    def to_pix(u, v):
        x = (nx - 1) / 2 + (u - spec.dither_offset[0]) / scale
        y = (ny - 1) / 2 + (v - spec.dither_offset[1]) / scale
        return x, y

    lo, hi = np.log10(spec.star_rate_range)
    u, v = rng.uniform(-half, half, (2, spec.n_stars))
    rate = 10 ** rng.uniform(lo, hi, spec.n_stars) * colour
    x, y = to_pix(u, v)
    stars = [np.column_stack([x, y, rate])]

    sigma = psf_sigma_pixels(spec.detector)
    u, v = rng.uniform(-0.7 * half, 0.7 * half, (2, spec.n_saturating_stars))
    x, y = to_pix(u, v)
    # Snap to pixel centres so the peak fraction (and saturation group) is as planned.
    rate = saturating_rate(well_dn, spec, sigma) * rng.uniform(0.8, 1.5, spec.n_saturating_stars)
    stars.append(np.column_stack([np.round(x), np.round(y), rate]))
    if spec.stars:
        stars.append(np.array([[s.x, s.y, s.rate] for s in spec.stars], float))

    u, v = rng.uniform(-half, half, (2, spec.n_galaxies))
    x, y = to_pix(u, v)
    gal = np.column_stack([
        x, y,
        10 ** rng.uniform(1.5, 3.0, spec.n_galaxies) * colour,
        rng.uniform(0.15, 0.4, spec.n_galaxies) / scale,
        rng.uniform(0.3, 1.0, spec.n_galaxies),
        rng.uniform(0, np.pi, spec.n_galaxies),
    ])
    return np.concatenate(stars), gal


def add_star(image, x0, y0, rate, sigma):
    """Add a Gaussian star of total ``rate`` at (x0, y0), integrated over each pixel, in place."""
    ny, nx = image.shape
    r = int(np.ceil(6 * sigma)) + 1
    xa, xb = max(int(np.floor(x0)) - r, 0), min(int(np.floor(x0)) + r + 1, nx)
    ya, yb = max(int(np.floor(y0)) - r, 0), min(int(np.floor(y0)) + r + 1, ny)
    if xa >= xb or ya >= yb:
        return
    s = np.sqrt(2) * sigma
    ex = erf((np.arange(xa, xb + 1) - 0.5 - x0) / s)
    ey = erf((np.arange(ya, yb + 1) - 0.5 - y0) / s)
    image[ya:yb, xa:xb] += rate * 0.25 * np.outer(np.diff(ey), np.diff(ex))


def add_galaxy(image, x0, y0, rate, rhalf, q, theta):
    """Add an exponential disk of total ``rate`` (half-light radius ``rhalf``, axis ratio ``q``), in place."""
    ny, nx = image.shape
    r = int(np.ceil(8 * rhalf)) + 1
    xa, xb = max(int(x0) - r, 0), min(int(x0) + r + 1, nx)
    ya, yb = max(int(y0) - r, 0), min(int(y0) + r + 1, ny)
    if xa >= xb or ya >= yb:
        return
    yy, xx = np.mgrid[ya:yb, xa:xb]
    dx, dy = xx - x0, yy - y0
    c, s = np.cos(theta), np.sin(theta)
    a = dx * c + dy * s
    b = (-dx * s + dy * c) / q
    # Exponential disk: half-light radius = 1.678 scale lengths.
    prof = np.exp(-1.678 * np.hypot(a, b) / rhalf)
    # Normalise to the analytic total so that flux falling off the array is lost, not moved.
    total = 2 * np.pi * q * (rhalf / 1.678) ** 2
    image[ya:yb, xa:xb] += rate * prof / total


def render_rate(spec, qe):
    """True count-rate image (DN/s) of ``spec`` on its array, dark excluded.

    Parameters
    ----------
    spec : ExposureSpec
    qe : ndarray (ny, nx)
        Relative response (0 on dead and reference pixels).

    Returns
    -------
    ndarray float32 (ny, nx)
    """
    image = np.full(spec.geometry.shape, float(spec.sky))
    stars, galaxies = source_list(spec)
    sigma = psf_sigma_pixels(spec.detector)
    for x, y, rate in stars:
        add_star(image, x, y, rate, sigma)
    for x, y, rate, rh, q, th in galaxies:
        add_galaxy(image, x, y, rate, rh, q, th)
    return (image * qe).astype(np.float32)
