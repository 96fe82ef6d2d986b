"""Synthetic NIRCam-like cal images with known truth, for the image3 tests.

Stars are Gaussian PSFs integrated over pixels (erf), injected with the *true*
WCS of each exposure; the WCS written into the cal file carries a known
pointing error, like an uncorrected guide-star solution.  Everything is in
MJy/sr with PIXAR_SR set, so a star of flux F (Jy) sums to
``F / (PIXAR_SR * 1e6)`` over its pixels.

The module also tests the builder itself (the injected fluxes really sum to
the truth), so the other image3 tests can trust it.
"""

from dataclasses import dataclass

import numpy as np
from astropy.coordinates import SkyCoord
from scipy.special import erf
from stdatamodels.jwst import datamodels

from webbflow import dqflags
from webbflow.steps.resample import make_tan_wcs

RA0, DEC0 = 53.16, -27.78
SW_SCALE, LW_SCALE = 0.031, 0.063  # arcsec / pixel


@dataclass
class Truth:
    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray  # Jy


def make_sky(n=60, seed=1, radius_arcsec=3.6, fmin=2e-6, fmax=2e-4):
    """Random stars (log-uniform fluxes in Jy) within ``radius_arcsec`` of (RA0, DEC0), well separated."""
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:
        p = rng.uniform(-radius_arcsec, radius_arcsec, 2)
        if all(np.hypot(*(p - q)) > 0.45 for q in pts):
            pts.append(p)
    pts = np.array(pts)
    dec = DEC0 + pts[:, 1] / 3600
    ra = RA0 + pts[:, 0] / 3600 / np.cos(np.deg2rad(DEC0))
    flux = np.exp(rng.uniform(np.log(fmin), np.log(fmax), n))
    return Truth(ra, dec, flux)


def pixel_area_sr(scale):
    return (scale / 206264.806) ** 2


def _cd(scale, pa_deg=0.0):
    t = np.deg2rad(pa_deg)
    return scale / 3600 * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])


def render_stars(shape, wcs, truth, scale, sigma_pix):
    """Noise-free star image (MJy/sr) on ``wcs``."""
    ny, nx = shape
    image = np.zeros(shape)
    x, y = wcs.invert(truth.ra, truth.dec, with_bounding_box=False)
    to_mjysr = 1.0 / (pixel_area_sr(scale) * 1e6)
    half = int(np.ceil(6 * sigma_pix))
    for xi, yi, f in zip(x, y, truth.flux):
        if not (-half < xi < nx + half and -half < yi < ny + half):
            continue
        x0, x1 = max(int(xi) - half, 0), min(int(xi) + half + 1, nx)
        y0, y1 = max(int(yi) - half, 0), min(int(yi) + half + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        gx = np.arange(x0, x1)
        gy = np.arange(y0, y1)
        s = sigma_pix * np.sqrt(2)
        px = 0.5 * (erf((gx + 0.5 - xi) / s) - erf((gx - 0.5 - xi) / s))
        py = 0.5 * (erf((gy + 0.5 - yi) / s) - erf((gy - 0.5 - yi) / s))
        image[y0:y1, x0:x1] += f * to_mjysr * np.outer(py, px)
    return image


def make_cal(truth, offset_arcsec=(0.0, 0.0), pointing_error_arcsec=(0.0, 0.0), *, shape=(200, 200),
             scale=SW_SCALE, sigma_pix=1.0, pa_deg=0.0, sky=0.3, rnoise=0.02, gain=20.0, seed=0,
             n_cosmic=0, exposure=1, detector="NRCA1", filt="F200W", pupil="CLEAR", noise=True):
    """A cal ImageModel: stars at their true positions, a WCS off by ``pointing_error_arcsec``.

    ``offset_arcsec`` is the dither (true pointing of the image centre
    relative to RA0, DEC0).  Returns ``(model, info)`` where ``info`` holds the
    true WCS, the noise-free image and the cosmic-ray pixels.
    """
    rng = np.random.default_rng(seed)
    cosd = np.cos(np.deg2rad(DEC0))
    centre = (RA0 + offset_arcsec[0] / 3600 / cosd, DEC0 + offset_arcsec[1] / 3600)
    crpix = ((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    true_wcs = make_tan_wcs(centre, crpix, _cd(scale, pa_deg), shape)
    err_centre = (centre[0] + pointing_error_arcsec[0] / 3600 / cosd, centre[1] + pointing_error_arcsec[1] / 3600)
    wcs = make_tan_wcs(err_centre, crpix, _cd(scale, pa_deg), shape)
    clean = render_stars(shape, true_wcs, truth, scale, sigma_pix) + sky
    # Poisson variance ~ signal / gain (MJy/sr units), constant read noise.
    var_poisson = np.clip(clean, 0, None) / gain
    var_rnoise = np.full(shape, rnoise**2)
    data = clean + (rng.normal(size=shape) * np.sqrt(var_poisson + var_rnoise) if noise else 0)
    cr = []
    for _ in range(n_cosmic):
        yx = rng.integers(5, np.array(shape) - 5)
        amp = rng.uniform(20, 200)
        data[yx[0], yx[1]] += amp
        data[yx[0], yx[1] + 1] += 0.3 * amp  # a 2-pixel track, as many surviving hits are
        cr.append((int(yx[0]), int(yx[1])))
    model = datamodels.ImageModel(data.astype(np.float32))
    model.err = np.sqrt(var_poisson + var_rnoise).astype(np.float32)
    model.dq = np.zeros(shape, np.uint32)
    model.dq[0, :] = dqflags.DO_NOT_USE | dqflags.NON_SCIENCE  # one unusable row, as real edges have
    model.var_poisson = var_poisson.astype(np.float32)
    model.var_rnoise = var_rnoise.astype(np.float32)
    model.var_flat = np.zeros(shape, np.float32)
    model.meta.wcs = wcs
    m = model.meta
    m.telescope = "JWST"
    m.instrument.name = "NIRCAM"
    m.instrument.detector = detector
    m.instrument.filter = filt
    m.instrument.pupil = pupil
    m.instrument.channel = "SHORT" if "LONG" not in detector else "LONG"
    m.instrument.module = "A"
    m.exposure.type = "NRC_IMAGE"
    m.exposure.exposure_time = 100.0
    m.exposure.measurement_time = 100.0
    m.exposure.start_time = 60000.0 + exposure * 0.01
    m.exposure.mid_time = 60000.0 + exposure * 0.01 + 0.0005
    m.exposure.end_time = 60000.0 + exposure * 0.01 + 0.001
    m.observation.program_number = "01234"
    m.observation.observation_number = "001"
    m.observation.visit_number = "001"
    m.observation.visit_group = "02"
    m.observation.sequence_id = "1"
    m.observation.activity_id = "01"
    m.observation.exposure_number = f"{exposure:05d}"
    m.observation.date = "2024-01-01"
    m.observation.time = "00:00:00.000"
    m.subarray.name = "FULL"
    m.target.catalog_name = "SYNTH"
    m.bunit_data = "MJy/sr"
    m.bunit_err = "MJy/sr"
    m.photometry.pixelarea_steradians = pixel_area_sr(scale)
    m.photometry.pixelarea_arcsecsq = scale**2
    m.photometry.conversion_megajanskys = 1.0
    m.cal_step.flat_field = "COMPLETE"
    m.cal_step.photom = "COMPLETE"
    m.filename = f"jw01234001001_02101_{exposure:05d}_{detector.lower()}_cal.fits"
    info = {"true_wcs": true_wcs, "clean": clean, "cosmic_rays": cr, "scale": scale}
    return model, info


def make_dither_set(truth, n=4, errors=None, seed=10, **kwargs):
    """``n`` dithered cal models with pointing errors (arcsec) ``errors`` (default random 60 mas)."""
    rng = np.random.default_rng(seed)
    if errors is None:
        errors = rng.normal(0, 0.06, (n, 2))
    dithers = [(0.0, 0.0), (0.35, 0.22), (-0.27, 0.41), (0.18, -0.33), (-0.4, -0.12), (0.5, 0.5)][:n]
    out = [make_cal(truth, d, e, exposure=i + 1, seed=seed + i, **kwargs) for i, (d, e) in enumerate(zip(dithers, errors))]
    return [m for m, _ in out], [i for _, i in out], np.asarray(errors)


def match_truth(ra, dec, truth, radius_arcsec=0.1):
    """Index into truth of the nearest true star and the separations (arcsec)."""
    c = SkyCoord(ra, dec, unit="deg")
    t = SkyCoord(truth.ra, truth.dec, unit="deg")
    idx, sep, _ = c.match_to_catalog_sky(t)
    return idx, sep.arcsec


def test_injected_star_sums_to_its_flux():
    truth = Truth(np.array([RA0]), np.array([DEC0]), np.array([1e-4]))
    model, info = make_cal(truth, sky=0.0, noise=False)
    total_jy = info["clean"].sum() * pixel_area_sr(SW_SCALE) * 1e6
    assert abs(total_jy / 1e-4 - 1) < 1e-6


def test_wcs_error_is_the_injected_offset():
    truth = make_sky(5)
    model, info = make_cal(truth, pointing_error_arcsec=(0.05, -0.03), noise=False)
    ra_t, dec_t = info["true_wcs"](100.0, 100.0)
    ra_w, dec_w = model.meta.wcs(100.0, 100.0)
    d = SkyCoord(ra_t, dec_t, unit="deg").spherical_offsets_to(SkyCoord(ra_w, dec_w, unit="deg"))
    assert abs(d[0].arcsec - 0.05) < 1e-6 and abs(d[1].arcsec + 0.03) < 1e-6
