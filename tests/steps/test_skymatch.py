"""skymatch: sky statistics and matched sky levels of overlapping images with known offsets."""

import numpy as np
import pytest
from test_image3_synth import make_dither_set, make_sky

from webbflow.io.image3 import image_input
from webbflow.steps import resample, skymatch

SKIES = (0.30, 0.52, 0.41, 0.80)


@pytest.fixture(scope="module")
def grid_and_images():
    truth = make_sky(30)
    models = []
    for i, sky in enumerate(SKIES):
        m, _, _ = make_dither_set(truth, 4, errors=np.zeros((4, 2)), shape=(120, 120), sky=sky, seed=20 + i)
        models.append(m[i])
    images = [image_input(m) for m in models]
    wcs, shape, _ = resample.make_output_wcs([i.wcs for i in images], [i.data.shape for i in images])
    return images, wcs, shape


def test_sky_statistic_of_a_gaussian_with_outliers():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(1.0, 0.1, 20000), rng.uniform(5, 50, 300)])
    for stat in ("mode", "median", "mean"):
        assert abs(skymatch.sky_statistic(v, stat) - 1.0) < 0.01


def test_match_recovers_sky_differences(grid_and_images):
    images, wcs, shape = grid_and_images
    levels = skymatch.skymatch(images, wcs, shape, skymethod="match")
    # match_down: the lowest sky is 0, the others its offset from it.
    np.testing.assert_allclose(levels, np.array(SKIES) - min(SKIES), atol=0.005)
    assert [im.sky for im in images] == levels


def test_local_global_and_global_match(grid_and_images):
    images, wcs, shape = grid_and_images
    np.testing.assert_allclose(skymatch.skymatch(images, wcs, shape, skymethod="local"), SKIES, atol=0.01)
    np.testing.assert_allclose(skymatch.skymatch(images, wcs, shape, skymethod="global"), [min(SKIES)] * 4,
                               atol=0.005)
    np.testing.assert_allclose(skymatch.skymatch(images, wcs, shape, skymethod="global+match"), SKIES, atol=0.01)


def test_subtract_lowers_the_data(grid_and_images):
    images, wcs, shape = grid_and_images
    copies = [resample.ImageInput(im.data.copy(), im.err, im.dq, im.wcs, name=im.name) for im in images]
    skymatch.skymatch(copies, wcs, shape, skymethod="local", subtract=True)
    assert all(abs(np.median(c.data) - 0.0) < 0.01 and c.sky == 0.0 for c in copies)
