"""tso_photometry (jwst 3.0's TSOPhotometryStep) on analytic images: sums, centroids, units, times."""

import numpy as np
import pytest

from webbflow.steps import tso_photometry as tp


def _times(n, start=1):
    dt = np.dtype([("integration_number", "i4"), ("int_mid_MJD_UTC", "f8"), ("int_mid_BJD_TDB", "f8")])
    t = np.zeros(n, dt)
    t["integration_number"] = np.arange(start, start + n)
    t["int_mid_MJD_UTC"] = 60000.0 + 0.001 * np.arange(n)
    t["int_mid_BJD_TDB"] = t["int_mid_MJD_UTC"] + 0.0008
    return t


def _gaussian(shape, x0, y0, sigma, flux):
    """A Gaussian integrated over each pixel (what photutils' GaussianPRF models)."""
    from scipy.special import erf

    def edges(n, c):
        e = erf((np.arange(n + 1) - 0.5 - c) / (np.sqrt(2) * sigma)) / 2
        return np.diff(e)

    return flux * np.outer(edges(shape[0], y0), edges(shape[1], x0))


def test_flat_image_aperture_sum_is_area_times_value_and_background_cancels():
    value = 2.5
    data = np.full((3, 40, 40), value, np.float32)
    err = np.full_like(data, 0.1)
    s = tp.aperture_photometry(data, err, 19.3, 20.1, 3.0, 4.0, 5.0)
    np.testing.assert_allclose(s["aperture_sum"], np.pi * 9 * value, rtol=1e-6)
    np.testing.assert_allclose(s["annulus_sum"], np.pi * (25 - 16) * value, rtol=1e-6)
    np.testing.assert_allclose(s["annulus_mean"], value, rtol=1e-6)
    np.testing.assert_allclose(s["net_aperture_sum"], 0.0, atol=1e-4)
    # errors: sqrt(area) * err (exact overlap weights squared are <= the area)
    assert np.all(s["aperture_sum_err"] <= np.sqrt(np.pi * 9) * 0.1 + 1e-6)


def test_whole_subarray_is_the_nansum_without_background():
    data = np.ones((2, 8, 8), np.float32)
    data[0, 3, 3] = np.nan
    s = tp.aperture_photometry(data, data.copy(), 4, 4, 3, 4, 5, whole=True)
    np.testing.assert_array_equal(s["aperture_sum"], [63.0, 64.0])
    np.testing.assert_allclose(s["aperture_sum_err"], [np.sqrt(63.0), 8.0], rtol=1e-7)  # float32
    assert np.isnan(s["annulus_sum"]).all() and np.array_equal(s["net_aperture_sum"], s["aperture_sum"])


def test_gaussian_star_centroid_width_and_flux():
    # sigma 1 px: the 11-px box holds +-5 sigma, so the centre of mass is unbiased to 1e-3 px
    x0, y0, sigma, flux = 31.37, 30.81, 1.0, 5e4
    star = _gaussian((64, 64), x0, y0, sigma, flux) + 3.0
    data = np.repeat(star[None].astype(np.float32), 2, axis=0)
    dq = np.zeros(data.shape, np.uint32)
    # start 3 px off, as a target-acquisition offset
    cx, cy, wx, wy, f = tp.source_centroid(data, dq, x0 + 3, y0 - 2)
    np.testing.assert_allclose(cx, x0, atol=1e-3)
    np.testing.assert_allclose(cy, y0, atol=1e-3)
    np.testing.assert_allclose(wx, sigma, rtol=0.02)
    np.testing.assert_allclose(wy, sigma, rtol=0.02)
    np.testing.assert_allclose(f, flux, rtol=0.01)


def test_run_dn_to_electrons_times_and_table():
    nints, gain, tint = 3, 1.8, 10.0
    star = _gaussian((48, 48), 24.2, 23.6, 1.2, 1000.0) + 1.0
    data = np.repeat(star[None].astype(np.float32), nints, axis=0)
    err = np.full_like(data, 0.5)
    ctx = tp.PhotContext(xref_sci=25.0, yref_sci=24.5, bunit="DN/s", int_times=_times(6), integration_start=4,
                         integration_time=tint, gain=np.full((48, 48), gain, np.float32), pupil="CLEAR",
                         subarray="SUB64P", meta={"instrument": "NIRCAM"})
    tbl = tp.run(data, np.zeros(data.shape, np.uint32), err, ctx, {"radius": 8, "radius_inner": 10,
                                                                    "radius_outer": 14})
    assert str(tbl["aperture_sum"].unit) == "electron"
    np.testing.assert_array_equal(tbl["MJD"], _times(6)["int_mid_MJD_UTC"][3:6])
    # background 1 DN/s/pix removed by the annulus: the star's 1000 DN/s (>99.9 % within 8 px)
    np.testing.assert_allclose(tbl["net_aperture_sum"].value, 1000.0 * tint * gain, rtol=2e-3)
    np.testing.assert_allclose(tbl["centroid_x"].value, 24.2, atol=1e-3)
    assert tbl.meta["apertures"].startswith("Photometry measured in a circular aperture of r=8")
    assert list(tbl.columns)[:4] == ["MJD", "BJD_TDB", "aperture_sum", "aperture_sum_err"]
    assert np.isnan(tbl["aperture_ra_icrs"]).all()  # no WCS given


def test_mjysr_to_jy():
    data, err, unit = tp.convert_units(np.ones((1, 2, 2)), np.ones((1, 2, 2)), "MJy/sr", pixar_sr=2e-13)
    assert unit == "Jy" and data.dtype == np.float32
    np.testing.assert_allclose(data, 2e-7, rtol=1e-6)


def test_missing_int_times_is_an_error():
    with pytest.raises(ValueError, match="INT_TIMES"):
        tp.int_mid_times(_times(0), 1, 2)


def _photutils_psf_fit(image, mask, box, xc, yc):
    """jwst 3.0's GaussianPRF fit through photutils' PSFPhotometry (what tso_photometry._psf_fit makes
    directly): σ_x, σ_y, flux."""
    from astropy.stats import gaussian_fwhm_to_sigma
    from astropy.table import QTable
    from photutils.psf import GaussianPRF, PSFPhotometry
    from photutils.utils import CutoutImage

    cutout, cutout_mask = CutoutImage(image, [yc, xc], (box, box)), CutoutImage(mask, [yc, xc], (box, box))
    flux = np.sum(cutout.data[~cutout_mask.data])
    init = QTable()
    init["x"], init["y"], init["flux"] = [xc], [yc], [flux]
    init["x_fwhm"], init["y_fwhm"] = [box / 2], [box / 2]
    model = GaussianPRF(flux=flux, x_0=xc, y_0=yc, x_fwhm=box / 2, y_fwhm=box / 2)
    model.flux.fixed, model.flux.min, model.flux.max = False, 0.0, np.inf
    model.x_0.fixed = model.y_0.fixed = True
    for p in (model.x_fwhm, model.y_fwhm):
        p.min, p.max, p.fixed = 0.0, box, False
    result = PSFPhotometry(model, (box, box))(image, mask=mask, init_params=init)
    return (gaussian_fwhm_to_sigma * result["x_fwhm_fit"][0], gaussian_fwhm_to_sigma * result["y_fwhm_fit"][0],
            result["flux_fit"][0])


@pytest.mark.parametrize("case", ["clean", "masked", "nan", "unmasked_nan", "edge"])
def test_psf_fit_is_photutils_psfphotometry_bit_for_bit(case):
    # the direct fit replaces PSFPhotometry's per-call machinery: the same pixels, fitter and start,
    # so the same float64 numbers on noisy float32 images with masked and NaN pixels and a trimmed box
    rng = np.random.default_rng(7)
    x0, y0 = (61.6, 2.3) if case == "edge" else (30.4, 31.7)
    image = (_gaussian((64, 64), x0, y0, 1.6, 2e4) + rng.normal(0, 3.0, (64, 64))).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    if case == "masked":
        mask[30:33, 29] = True
    if case in ("nan", "unmasked_nan"):
        image[31, 31] = np.nan
        mask[31, 31] = case == "nan"  # source_centroid masks NaN pixels; unmasked, the start flux is NaN
    ours = tp._psf_fit(image, mask, 11, x0 + 0.05, y0 - 0.04)
    theirs = _photutils_psf_fit(image, mask, 11, x0 + 0.05, y0 - 0.04)
    assert np.isfinite(ours).all() == (case != "unmasked_nan")
    np.testing.assert_array_equal(ours, theirs)
    # a model kept from earlier fits (source_centroid's integrations) and started again: the same
    reuse = {}
    other = (_gaussian((64, 64), 20.3, 40.8, 1.1, 5e3) + rng.normal(0, 3.0, (64, 64))).astype(np.float32)
    tp._psf_fit(other, np.zeros(other.shape, bool), 11, 20.2, 40.9, reuse)
    np.testing.assert_array_equal(tp._psf_fit(image, mask, 11, x0 + 0.05, y0 - 0.04, reuse), theirs)
