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
    for stat in ("median", "midpt", "mean"):
        assert abs(skymatch.sky_statistic(v, stat) - 1.0) < 0.01
    # imagestats' mode is the peak of a histogram of 0.1-sigma bins: ~80 counts a bin here, so
    # it scatters by a good fraction of a bin width around the true peak.
    assert abs(skymatch.sky_statistic(v, "mode") - 1.0) < 0.04


def test_imagestats_by_hand():
    # No clipping; values 0..9 with 5 repeated: mean 4.5 -> 0.45 + ..., the histogram peak is the 5 bin.
    v = np.array([0, 1, 2, 3, 4, 5, 5, 5, 6, 7, 8, 9], np.float32)
    mean = v.mean()
    std = np.sqrt(((v - mean) ** 2).sum() / (v.size - 1))
    value, n = skymatch.imagestats(v, "mean", nclip=0)
    assert n == 12 and value == pytest.approx(mean, rel=1e-6)
    # binwidth 0.5 sigma: hwidth = 0.5 std, nbins = int(9 / hwidth) + 1, bin edges every 9 / (nbins - 1).
    mode, _ = skymatch.imagestats(v, "mode", nclip=0, binwidth=0.5)
    hw = 0.5 * std
    nbins = int(9 / hw) + 1
    dz = 9 / (nbins - 1)
    counts = np.bincount((np.float32(1 / np.float32(dz)) * v).astype(int), minlength=nbins)[:nbins]
    p = int(np.argmax(counts))
    d1, d2 = counts[p] - counts[p - 1], counts[p] - counts[p + 1]
    assert mode == pytest.approx(0 + (p + 1 + 0.5 * (d1 - d2) / (d1 + d2) - 0.5) * hw, rel=1e-5)
    # One clipping pass at 1 sigma keeps |v - 4.75| <= std.
    _, n1 = skymatch.imagestats(v, "mean", nclip=1, lsigma=1.0, usigma=1.0)
    assert n1 == int(np.sum(np.abs(v - mean) <= std))


def test_match_recovers_sky_differences(grid_and_images):
    images, wcs, shape = grid_and_images
    levels = skymatch.skymatch(images, wcs, shape, skymethod="match", skystat="median")
    # match_down: the lowest sky is 0, the others its offset from it.
    np.testing.assert_allclose(levels, np.array(SKIES) - min(SKIES), atol=0.005)
    assert [im.sky for im in images] == levels
    # The default (histogram) mode scatters by ~half the pixel noise (0.12 here).
    np.testing.assert_allclose(skymatch.skymatch(images, skymethod="match"), np.array(SKIES) - min(SKIES), atol=0.06)


def test_local_global_and_global_match(grid_and_images):
    images, wcs, shape = grid_and_images
    kw = dict(skystat="median")
    np.testing.assert_allclose(skymatch.skymatch(images, wcs, shape, skymethod="local", **kw), SKIES, atol=0.01)
    np.testing.assert_allclose(skymatch.skymatch(images, wcs, shape, skymethod="global", **kw), [min(SKIES)] * 4,
                               atol=0.005)
    np.testing.assert_allclose(skymatch.skymatch(images, wcs, shape, skymethod="global+match", **kw), SKIES,
                               atol=0.01)


def test_subtract_lowers_the_data(grid_and_images):
    images, wcs, shape = grid_and_images
    copies = [resample.ImageInput(im.data.copy(), im.err, im.dq, im.wcs, name=im.name) for im in images]
    skymatch.skymatch(copies, wcs, shape, skymethod="local", subtract=True, skystat="median")
    assert all(abs(np.median(c.data) - 0.0) < 0.01 and c.sky == 0.0 for c in copies)


def _random_polygon(rng, kind, ny, nx):
    k = int(rng.integers(3, 9))
    if kind == 0:  # convex, anywhere around (and beyond) the image
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        r, cx, cy = rng.uniform(3, 40), rng.uniform(-20, nx + 20), rng.uniform(-20, ny + 20)
        x, y = cx + r * np.cos(ang), cy + r * np.sin(ang)
    elif kind == 1:  # concave or self-intersecting
        x, y = rng.uniform(-30, nx + 30, k), rng.uniform(-30, ny + 30, k)
    elif kind == 2:  # vertices on integers and half-integers (rounding ties, horizontal edges)
        x = rng.integers(-10, nx + 10, k) + rng.choice([0, 0.5, -0.5], k)
        y = rng.integers(-10, ny + 10, k) + rng.choice([0, 0.5], k)
    else:  # thin: one or two scan lines
        x, y = rng.uniform(-5, nx + 5, k), np.full(k, rng.uniform(0, ny)) + rng.uniform(0, 1.2, k)
    return [*zip(x, y), (x[0], y[0])]


def test_scan_polygon_sets_the_pixels_gwcs_sets():
    # skymatch's polygon fill must set exactly gwcs' pixels (jwst's overlap masks), quirks included
    from gwcs import region

    rng = np.random.default_rng(1)
    for trial in range(1500):
        ny, nx = (int(n) for n in rng.integers(5, 60, 2))
        vertices = _random_polygon(rng, trial % 4, ny, nx)
        start = rng.random((ny, nx)) < 0.1 if trial % 3 == 0 else np.zeros((ny, nx), bool)
        want = region.Polygon(True, vertices).scan(start.copy())
        got = skymatch.scan_polygon(start.copy(), vertices, region.Polygon)
        assert np.array_equal(got, want), (trial, vertices, ny, nx)


def test_overlap_is_shared_by_both_images_of_a_pair(grid_and_images):
    # one intersection per pair, the other side takes it; the sky values as with each side its own
    images, _, _ = grid_and_images
    good = [np.isfinite(im.data) for im in images]
    feet = [skymatch._Footprint(im, g) for im, g in zip(images, good)]
    stat = dict(skystat="mode", nclip=5, lsigma=4.0, usigma=4.0, lower=None, upper=None, binwidth=0.1)
    shared = {}
    a, b = feet[0], feet[1]
    got = (a.overlap_sky([b], stat, shared), b.overlap_sky([a], stat, shared))
    assert len(shared) == 1 and shared[(id(a), id(b))][1] > 0
    want = (a.overlap_sky([b], stat), b.overlap_sky([a], stat))
    assert [g[:2] for g in got] == [w[:2] for w in want]
    assert got[0][1] > 1000
