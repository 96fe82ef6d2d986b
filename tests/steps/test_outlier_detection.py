"""outlier_detection: cosmic rays flagged, star cores kept; the stcal flagging rule by hand."""

import numpy as np
from test_image3_synth import make_dither_set, make_sky

from webbflow import dqflags
from webbflow.io.image3 import image_input
from webbflow.steps import outlier_detection, resample


def test_abs_deriv_by_hand():
    a = np.array([[0.0, 1.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 0.0]])
    d = outlier_detection.abs_deriv(a)
    assert d[1, 1] == 5.0 and d[0, 1] == 4.0 and d[1, 0] == 5.0 and d[2, 2] == 0.0


def test_flag_rule_needs_both_thresholds():
    blot = np.zeros((7, 7))
    err = np.ones((7, 7))
    data = np.zeros((7, 7))
    data[3, 3] = 5.5   # > snr1 = 5: flagged
    data[3, 4] = 4.5   # > snr2 = 4 and next to a snr1 pixel: flagged
    data[0, 0] = 4.5   # > snr2 only, alone: kept
    mask = outlier_detection.flag_resampled_crs(data, err, blot, 5.0, 4.0, 1.2, 0.7, 0.0)
    assert mask[3, 3] and mask[3, 4] and not mask[0, 0] and mask.sum() == 2


def test_grown_mask_is_the_convolution():
    """The 3 x 3 growth of the first mask is stcal's ``convolve(mask, ones((3, 3)), mode="nearest") > 0``,
    edges, corners and one-pixel-wide images included."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for shape in ((1, 1), (1, 9), (9, 1), (2, 2), (7, 5), (64, 48)):
        for density in (0.0, 0.02, 0.3, 1.0):
            mask = rng.random(shape) < density
            mask[0, 0] = mask[0, 0] or density > 0.25
            want = ndimage.convolve(mask.astype(int), np.ones((3, 3), int), mode="nearest") > 0
            got = outlier_detection._grow3x3(mask)
            assert got.dtype == bool and np.array_equal(got, want), (shape, density)
            assert density == 0.0 or got.sum() > 0 or not mask.any()


def test_cosmic_rays_flagged_and_star_cores_kept():
    truth = make_sky(60)
    models, infos, _ = make_dither_set(truth, 4, errors=np.zeros((4, 2)), n_cosmic=25)
    images = [image_input(m) for m in models]
    wcs, shape, _ = resample.make_output_wcs([i.wcs for i in images], [i.data.shape for i in images])
    _, counts = outlier_detection.outlier_detection(images, wcs, shape)
    flagged = sum(bool(im.dq[y, x] & dqflags.OUTLIER) for im, info in zip(images, infos)
                  for y, x in info["cosmic_rays"])
    assert flagged >= 0.95 * 4 * 25
    for im, info in zip(images, infos):
        assert np.all(im.dq[im.dq & dqflags.OUTLIER > 0] & dqflags.DO_NOT_USE)
        # (Almost) no flag where the noise-free star light is > 20 sigma above the sky (star cores):
        # on jwst's output grid (pixel centres half a pixel off the inputs') the blotted median of
        # a sharp core is smoothed enough to flip the odd core pixel, as in jwst.
        core = (info["clean"] - 0.3) > 20 * im.err
        assert core.sum() > 100
        cr_pixels = np.zeros(im.data.shape, bool)
        for y, x in info["cosmic_rays"]:
            cr_pixels[y, x:x + 2] = True
        assert np.sum((im.dq & dqflags.OUTLIER > 0) & core & ~cr_pixels) <= 0.005 * core.sum()
    assert sum(counts) < 4 * 25 * 2 * 1.3  # few false positives beyond the 2-pixel tracks


def test_weight_threshold_is_astropys_sigma_clip():
    """compute_weight_threshold's float32 path (radix-selected medians) against astropy's sigma_clip,
    and its median against np.median bit for bit (ties, signed zeros, huge values, odd and even counts)."""
    from astropy.stats import sigma_clip

    from webbflow.steps.outlier_detection import _median_f32, compute_weight_threshold

    rng = np.random.default_rng(3)
    weights = rng.gamma(4.0, 1000.0, (300, 257)).astype(np.float32)
    weights[:20] = 0.0  # off the exposure
    weights[50:60, 40:90] = 7.0  # a low-weight patch the clipping removes
    weights[100, 100] = np.nan
    cases = [weights, rng.integers(-3, 4, 5000).astype(np.float32), np.float32([3.0, 1.0]), np.float32([2.5]),
             np.r_[rng.normal(0, 1, 1000), [-0.0, 0.0, 1e30, -1e30]].astype(np.float32)]
    for case in cases:
        w = case[np.isfinite(case) & (case != 0)]
        want = float(np.mean(sigma_clip(w, sigma=3, maxiters=5, masked=False, copy=False), dtype="f8") * 0.7)
        assert compute_weight_threshold(case, 0.7) == want
        assert _median_f32(w).tobytes() == np.median(w).tobytes()
