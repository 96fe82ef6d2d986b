"""Aperture corrections of the simulator's point source as an i2d shows it, for its APCORR reference.

CRDS's NIRCam APCORR files list, per filter and pupil, the aperture radius (i2d pixels) that encloses
each encircled-energy fraction of a point source and the correction to total flux (1 / fraction),
computed by STScI from WebbPSF models.  The simulator's stars are circular Gaussians of
:data:`webbflow.simulate.scene.PSF_FWHM_ARCSEC` integrated over each detector pixel; the i2d then
redistributes each detector pixel onto the output grid (drizzle, square kernel, pixfrac 1: on an
aligned grid of the same scale, the overlap areas are the bilinear weights of the fractional offset),
and the catalog sums the output pixels in exact circular apertures.  The encircled-energy curve here
is that chain's, averaged over random sub-pixel positions of the star and of the output grid, so that
the reference describes the demo's mosaics as CRDS's describe real ones.
"""

from functools import lru_cache

import numpy as np


__all__ = ["EEFRACTIONS", "apcorr_rows", "i2d_encircled_energy"]

EEFRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
"""The rows per filter (jwst's source_catalog uses 0.3/0.5/0.7 by default)."""

_LW_FILTER_MIN_MICRON = 2.4  # filters redder than this are observed by the LW channel


def _channel_sigma(filter_name):
    """PSF sigma (pixels of the channel's nominal scale) of ``filter_name``'s channel."""
    from webbflow.simulate import optics
    from webbflow.simulate.scene import psf_sigma_pixels

    # every SW detector has the same nominal scale, as every LW one
    return psf_sigma_pixels("NRCALONG" if optics.FILTERS[filter_name][0] > _LW_FILTER_MIN_MICRON else "NRCA1")


@lru_cache(maxsize=None)
def i2d_encircled_energy(sigma, rmax=12.0, nphase=32, oversample=8, seed=1):
    """Mean encircled energy of a pixel-integrated Gaussian point source after drizzling to an aligned
    output grid of the same scale, in circular apertures at its true position.

    Each output pixel's value is spread uniformly over the pixel (as exact-overlap apertures take it),
    sampled ``oversample`` x ``oversample`` times per pixel; the curve is the cumulative sum of the
    samples ordered by distance from the star.

    Parameters
    ----------
    sigma : float
        Gaussian sigma in pixels.
    rmax : float
        Largest radius (pixels).
    nphase : int
        Random sub-pixel positions of the star and output-grid offsets averaged over.
    oversample : int
    seed : int

    Returns
    -------
    radii, ee : ndarray
        EE at ``radii`` (0.01-pixel steps up to ``rmax``) as a fraction of the total flux.
    """
    from webbflow.simulate.scene import add_star

    rng = np.random.default_rng(seed)
    size = 2 * int(np.ceil(rmax + 6 * sigma)) + 5
    centre = size // 2
    radii = np.arange(0.0, rmax + 1e-9, 0.01)
    ee = np.zeros(radii.size)
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5  # sample offsets inside a pixel
    for _ in range(nphase):
        x0, y0 = centre + rng.uniform(-0.5, 0.5, 2)
        fx, fy = rng.uniform(0.0, 1.0, 2)  # output pixel j is centred at input coordinate j + 1 - f
        image = np.zeros((size, size))
        add_star(image, x0, y0, 1.0, sigma)
        # drizzle (square kernel, pixfrac 1) onto the grid shifted by (fx, fy): bilinear weights
        out = ((1 - fx) * (1 - fy) * image[1:, 1:] + fx * (1 - fy) * image[1:, :-1]
               + (1 - fx) * fy * image[:-1, 1:] + fx * fy * image[:-1, :-1])
        xo, yo = x0 - 1 + fx, y0 - 1 + fy  # the star's position on the output grid
        ny, nx = out.shape
        xs = (np.arange(nx)[:, None] + sub[None, :]).ravel()
        ys = (np.arange(ny)[:, None] + sub[None, :]).ravel()
        dist = np.hypot(xs[None, :] - xo, ys[:, None] - yo).ravel()
        weight = np.repeat(np.repeat(out, oversample, axis=0), oversample, axis=1).ravel() / oversample**2
        order = np.argsort(dist)
        cum = np.concatenate([[0.0], np.cumsum(weight[order])])
        ee += cum[np.searchsorted(dist[order], radii, side="right")]
    return radii, ee / nphase


def apcorr_rows(filter_name, pupil="CLEAR", eefractions=EEFRACTIONS):
    """APCORR rows ``(filter, pupil, eefraction, radius, apcorr, skyin, skyout)`` of ``filter_name``.

    The sky annulus is where the point source has left less than 1e-4 of its flux (beyond the radius
    of 99.99 % EE, at least 3 pixels wide), the same for every row as jwst requires.
    """
    radii, ee = i2d_encircled_energy(round(_channel_sigma(filter_name), 6))
    ee = np.maximum.accumulate(ee)  # monotonic for interpolation
    rows = []
    skyin = float(np.ceil(np.interp(0.9999, ee, radii)))
    skyout = skyin + max(3.0, np.ceil(0.5 * skyin))
    for frac in eefractions:
        radius = float(np.interp(frac, ee, radii))
        rows.append((filter_name, pupil, frac, radius, 1.0 / frac, skyin, skyout))
    return rows
