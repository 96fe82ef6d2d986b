"""resample: output grid, flux conservation, weights and variance propagation (hand-computed answers)."""

import numpy as np
from astropy.coordinates import SkyCoord
from test_image3_synth import RA0, DEC0, SW_SCALE, Truth, make_cal, make_dither_set, make_sky, pixel_area_sr

from webbflow import dqflags
from webbflow.io.image3 import image_input
from webbflow.steps import resample


def _inputs(models):
    return [image_input(m) for m in models]


def test_output_wcs_north_up_covers_inputs_at_native_scale():
    models, _, _ = make_dither_set(make_sky(5), 3, errors=np.zeros((3, 2)), shape=(64, 80), noise=False, pa_deg=30)
    wcs, shape, scale = resample.make_output_wcs([m.meta.wcs for m in models], [m.data.shape for m in models],
                                                 rotation=0.0)
    assert abs(scale - SW_SCALE) < 1e-6
    # North up: +y points to north, so one pixel up is +scale in Dec at fixed RA.
    ra0, dec0 = wcs(10.0, 10.0)
    ra1, dec1 = wcs(10.0, 11.0)
    assert abs((dec1 - dec0) * 3600 - SW_SCALE) < 1e-6 and abs(ra1 - ra0) < 1e-9
    # Every input corner lands inside the output grid.
    for m in models:
        # (jwst's grid ends at int(max + 0.5): a corner pixel's centre may sit just past the bounding box)
        x, y = wcs.invert(*m.meta.wcs([0, 79, 79, 0], [0, 0, 63, 63]), with_bounding_box=False)
        assert np.all((x > -1) & (x < shape[1]) & (y > -1) & (y < shape[0]))


def test_rotation_none_keeps_detector_orientation():
    model, _ = make_cal(make_sky(3), pa_deg=30, shape=(40, 40), noise=False)
    wcs, _, _ = resample.make_output_wcs([model.meta.wcs], [model.data.shape])
    a = SkyCoord(*wcs(5.0, 5.0), unit="deg")
    b = SkyCoord(*wcs(5.0, 6.0), unit="deg")
    assert abs(a.position_angle(b).deg - 30.0) < 1e-4


def test_drizzle_conserves_star_flux_and_surface_brightness():
    truth = Truth(np.array([RA0]), np.array([DEC0]), np.array([1e-4]))
    models, _, _ = make_dither_set(truth, 3, errors=np.zeros((3, 2)), shape=(64, 64), noise=False, sky=0.5)
    images = _inputs(models)
    wcs, shape, scale = resample.make_output_wcs([i.wcs for i in images], [i.data.shape for i in images])
    res = resample.drizzle_images(images, wcs, shape, scale)
    x, y = wcs.invert(RA0, DEC0)
    cut = res.data[int(y) - 12:int(y) + 13, int(x) - 12:int(x) + 13] - 0.5
    assert abs(cut.sum() * pixel_area_sr(scale) * 1e6 / 1e-4 - 1) < 2e-3
    # A flat sky stays flat (surface brightness, MJy/sr).
    assert abs(np.nanmedian(res.data[5:15, 5:15]) - 0.5) < 1e-5


def test_ivm_weights_and_variance_of_n_images():
    models, _, _ = make_dither_set(make_sky(3), 4, errors=np.zeros((4, 2)), shape=(64, 64), noise=False,
                                   rnoise=0.1)
    images = _inputs(models)
    wcs, shape, scale = resample.make_output_wcs([i.wcs for i in images], [i.data.shape for i in images])
    res = resample.drizzle_images(images, wcs, shape, scale)
    inner = res.con[0] == 0b1111  # output pixels every input reaches
    assert inner.sum() > 1000
    # Each input contributes its full area x 1/var_rnoise = 100 at the native scale.
    assert np.allclose(np.median(res.wht[inner]), 4 / 0.01, rtol=1e-3)
    # sum(w^2 v) / (sum w)^2 with equal weights: v / 4.
    assert np.allclose(np.median(res.variances["var_rnoise"][inner]), 0.01 / 4, rtol=1e-3)
    err2 = res.err[inner] ** 2
    total = (res.variances["var_rnoise"] + res.variances["var_poisson"] + res.variances["var_flat"])[inner]
    assert np.allclose(err2, total, rtol=1e-5)


def test_do_not_use_pixels_are_left_out():
    models, _, _ = make_dither_set(make_sky(3), 2, errors=np.zeros((2, 2)), shape=(48, 48), noise=False, sky=1.0)
    models[0].dq[20, 20] |= dqflags.DO_NOT_USE
    images = _inputs(models)
    wcs, shape, scale = resample.make_output_wcs([i.wcs for i in images], [i.data.shape for i in images])
    clean = resample.drizzle_images(images, wcs, shape, scale)
    images[0].data[20, 20] = 1e6  # a flagged pixel's value must not matter
    hot = resample.drizzle_images(images, wcs, shape, scale)
    assert np.nanmax(hot.data) < 10
    np.testing.assert_array_equal(hot.data, clean.data)
