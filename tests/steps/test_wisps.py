"""Wisp template fit and subtraction (webbflow.steps.wisps) on synthetic calibrated images.

A 320 x 320 NRCA3 corner cut of the simulator's wisp shape, a 1.0 MJy/sr sky, stars, white
noise and 1/f row stripes larger than the wisp; the fitted scale is compared with the injected
one and the stars' fluxes with those of the same image without any wisp.
"""

import numpy as np
import pytest

from webbflow import dqflags
from webbflow.simulate.detectors import subarray_geometry
from webbflow.simulate.wisps import wisp_cut, wisp_template
from webbflow.steps import wisps

SKY, WISP = 1.0, 0.05  # MJy/sr: the wisp's peak is 5 % of the sky
NOISE, STRIPES = 0.03, 0.05  # white noise and row-stripe rms, MJy/sr
GEOMETRY = subarray_geometry("NRCA3", "SUB320", size=320, corner=(1, 1729))


def _scene(seed, wisp=WISP, noise=NOISE, stripes=STRIPES):
    rng = np.random.default_rng(seed)
    template = wisp_cut("NRCA3", "F200W", GEOMETRY)
    ny, nx = template.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    stars = np.column_stack([rng.uniform(20, nx - 20, 40), rng.uniform(20, ny - 20, 40),
                             10 ** rng.uniform(1.0, 2.5, 40)])  # x, y, flux (MJy/sr x pixels)
    sources = np.zeros((ny, nx))
    for x, y, flux in stars:
        sources += flux / (2 * np.pi * 1.2 ** 2) * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / 1.2 ** 2)
    background = SKY + rng.normal(0, noise, (ny, nx)) + rng.normal(0, stripes, (ny, 1))
    dq = np.zeros((ny, nx), np.uint32)
    dq[:, :4] = dqflags.REFERENCE_PIXEL | dqflags.DO_NOT_USE
    dq[rng.integers(0, ny, 200), rng.integers(0, nx, 200)] |= dqflags.DO_NOT_USE
    clean = (background + sources).astype(np.float32)
    clean[dq & dqflags.DO_NOT_USE > 0] = np.nan
    return clean + (wisp * template).astype(np.float32), clean, template, dq, stars


def _aperture_fluxes(image, stars, r=5.0):
    """Sums of ``image`` less the true sky in a radius-``r`` aperture, one per star (no local
    background: what the wisp fit leaves under a star counts)."""
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    return np.array([np.nansum(image[np.hypot(xx - x, yy - y) <= r] - SKY) for x, y, _ in stars])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fit_recovers_the_injected_scale_under_stripes(seed):
    data, _, template, dq, _ = _scene(seed)
    fit = wisps.fit_wisp(data, template, dq, stripe_axis=1)
    # sigma of the scale ~ 0.03 / sqrt(sum t'^2) ~ 5e-4 = 1 % of the wisp: 10 % is 10 sigma
    assert fit.scale == pytest.approx(WISP, rel=0.10)
    assert fit.constant == pytest.approx(SKY, abs=3 * STRIPES / np.sqrt(data.shape[0]))
    assert fit.npix > 0.6 * data.size


def test_per_line_constants_beat_one_constant_under_stripes():
    """One constant cannot absorb stripes as large as the wisp: the per-line fit is what makes it work."""
    template, dq = _scene(0)[2:4]
    single = [abs(wisps.fit_wisp(_scene(s)[0], template, dq).scale / WISP - 1) for s in range(10, 20)]
    per_line = [abs(wisps.fit_wisp(_scene(s)[0], template, dq, stripe_axis=1).scale / WISP - 1) for s in range(10, 20)]
    assert np.sqrt(np.mean(np.square(per_line))) < 0.5 * np.sqrt(np.mean(np.square(single)))


def test_noiseless_wisp_brighter_than_noise_is_not_masked_as_a_source():
    data, _, template, dq, _ = _scene(4, wisp=0.3, noise=0.0, stripes=0.0)
    fit = wisps.fit_wisp(data, template, dq)
    assert fit.scale == pytest.approx(0.3, rel=1e-3) and fit.constant == pytest.approx(SKY, abs=1e-3)


def test_subtraction_removes_the_wisp_and_keeps_star_fluxes():
    data, clean, template, dq, stars = _scene(5)
    fit = wisps.fit_wisp(data, template, dq, stripe_axis=1)
    before = data.copy()
    wisps.subtract_wisp(data, template, fit)
    good = np.isfinite(clean)
    # residual wisp: what is left of it, against what was injected
    left = np.polyfit(template[good], (data - clean)[good], 1)[0]
    injected = np.polyfit(template[good], (before - clean)[good], 1)[0]
    assert abs(left) <= 0.10 * injected and injected == pytest.approx(WISP, rel=1e-3)
    bright = stars[:, 2] > 30
    ratio = _aperture_fluxes(data, stars[bright]) / _aperture_fluxes(clean, stars[bright])
    assert np.all(np.abs(ratio - 1) < 0.005), ratio


def test_no_fit_without_background_or_structure():
    data, _, template, dq, _ = _scene(6)
    assert wisps.fit_wisp(data, np.ones_like(template), dq) is None  # a flat template: no scale
    assert wisps.fit_wisp(np.full_like(data, np.nan), template, dq) is None
    assert wisps.template_name("nrca3", "f200w", None) == "WISP_NRCA3_F200W_CLEAR.fits"


def test_template_folder_errors_name_the_file_and_the_fix(tmp_path):
    from astropy.io import fits

    from webbflow.io.cal import load_wisp_template
    from webbflow.io.errors import InputError

    sci = {"shape": (320, 320), "xstart": 1, "ystart": 1729}
    with pytest.raises(InputError, match="wisp template folder not found.*template_dir"):
        load_wisp_template(tmp_path / "missing", "NRCA3", "F200W", "CLEAR", sci)
    # no template for this detector: left alone, not an error (wisps appear on a few detectors)
    assert load_wisp_template(tmp_path, "NRCA1", "F200W", "CLEAR", sci)[0] is None
    full = np.arange(2048 * 2048, dtype=np.float32).reshape(2048, 2048)
    fits.PrimaryHDU(full).writeto(tmp_path / "WISP_NRCA3_F200W_CLEAR.fits")
    cut, path = load_wisp_template(tmp_path, "NRCA3", "F200W", "CLEAR", sci)
    assert path.name == "WISP_NRCA3_F200W_CLEAR.fits" and np.array_equal(cut, full[1728:, :320])
    fits.PrimaryHDU(full[:100, :100]).writeto(tmp_path / "WISP_NRCB3_F200W_CLEAR.fits")
    with pytest.raises(InputError, match="WISP_NRCB3_F200W_CLEAR.fits.*100 x 100.*does not hold"):
        load_wisp_template(tmp_path, "NRCB3", "F200W", "CLEAR", sci)
    (tmp_path / "WISP_NRCB4_F200W_CLEAR.fits").write_bytes(b"not a FITS file")
    with pytest.raises(InputError, match="WISP_NRCB4_F200W_CLEAR.fits.*cannot be read"):
        load_wisp_template(tmp_path, "NRCB4", "F200W", "CLEAR", sci)


def test_amplifier_constants_under_independent_amplifier_stripes():
    """A 4-output strip (160 x 1280 of NRCA3's full-frame wisp): each quarter of a line has its own 1/f
    offset; a constant per line and amplifier keeps the scale where one per line does not."""
    template = np.array(wisp_template("NRCA3", "F200W")[1800:1960, :1280])
    errors = {1: [], 4: []}
    for seed in range(10):
        rng = np.random.default_rng(seed)
        ny, nx = template.shape
        stripes = rng.normal(0, STRIPES, (ny, 4)).repeat(nx // 4, axis=1)
        data = (SKY + WISP * template + stripes + rng.normal(0, NOISE, (ny, nx))).astype(np.float32)
        for amplifiers in errors:
            errors[amplifiers].append(wisps.fit_wisp(data, template, stripe_axis=1, amplifiers=amplifiers).scale / WISP - 1)
    rms = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in errors.items()}
    assert rms[4] < 0.05 and rms[4] < 0.3 * rms[1], rms  # measured: 0.014 and 0.13
