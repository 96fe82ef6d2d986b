"""extract_1d's optimal extraction (Horne 1986), on a synthetic time-series cutout of known truth.

A pixel-integrated Gaussian trace (sigma 1.2 rows, slightly tilted) with a known flux per column,
a flat background, Poisson and read noise (seeded), and the calints-like variances of that model:

* the optimal FLUX is unbiased (mean pull within +-0.1 over 16000 column-integrations) and its
  scatter matches its FLUX_ERROR within 10 %;
* (the flux in the aperture, as the box sum's)
* its scatter is below the box sum's by the factor the profile and variances predict
  (sqrt(sum V / (1 / sum P^2/V)) with the background's share), within 5 %;
* an injected cosmic ray is rejected (flux within 3 sigma of truth, the box sum far off);
* NaN pixels on the trace's peak row do not bias it (the box sum loses their share).
"""

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.special import erf

from webbflow.steps.extract_1d import aperture_from_reference, box_extract, optimal_extract, spatial_profile

NY, NX, NINTS = 32, 400, 40
CENTRE, SIGMA, RN, BKG = 16.0, 1.2, 20.0, 4.0
REF = {"apertures": [{"id": "ANY", "region_type": "target", "dispaxis": 1, "xstart": 0, "xstop": NX - 1,
                      "ystart": CENTRE - 3, "ystop": CENTRE + 3,
                      "bkg_coeff": [[-0.5], [9.5], [22.5], [31.5]], "bkg_fit": "median", "smoothing_length": 0}]}


def _truth():
    x = np.arange(NX)
    flux = 1500.0 + 800.0 * np.sin(x / 37.0)  # per column, DN (gain 1, unit time)
    edges = np.arange(NY + 1)[:, None] - 0.5
    centre = CENTRE + 0.002 * (x - NX / 2)  # a slight tilt the per-row smoothing must follow
    c = erf((edges - centre[None]) / (np.sqrt(2) * SIGMA))
    profile = np.diff(c, axis=0) / 2.0
    return flux, profile


def _cube(seed=7):
    flux, profile = _truth()
    rate = flux[None] * profile + BKG  # (NY, NX)
    rng = np.random.default_rng(seed)
    data = rng.poisson(rate, (NINTS, NY, NX)) + rng.normal(0.0, RN, (NINTS, NY, NX))
    ones = np.ones((NINTS, 1, 1))
    cube = SimpleNamespace(data=data.astype(np.float32), var_poisson=(rate * ones).astype(np.float32),
                           var_rnoise=np.full(data.shape, RN ** 2, np.float32))
    wave = np.broadcast_to(2.4 + 0.001 * np.arange(NX), (NY, NX)).astype(np.float32)
    return cube, wave, flux, profile


def _extract(cube, wave, method):
    aperture = aperture_from_reference(REF, cube.data.shape)
    fn = optimal_extract if method == "optimal" else box_extract
    return fn(cube, wave, aperture)[0]


def test_optimal_flux_is_unbiased_with_the_predicted_error_and_beats_the_box():
    cube, wave, flux, profile = _cube()
    opt = _extract(cube, wave, "optimal")
    box = _extract(cube, wave, "box")
    ap = slice(int(CENTRE) - 3, int(CENTRE) + 4)
    in_ap = profile[ap].sum(axis=0)  # the aperture holds 98.8 % of the flux; P is normalised within it
    pull = (opt["FLUX"] - (flux * in_ap)[None]) / opt["FLUX_ERROR"]
    scatter = np.std(opt["FLUX"] - (flux * in_ap)[None], axis=0, ddof=0)
    predicted = np.sqrt(np.mean(opt["FLUX_ERROR"] ** 2, axis=0))
    # predicted improvement: box variance sum(V) + npix^2 var_b against 1/sum(P^2/V) + (sum w)^2 var_b,
    # var_b that of the median of the 20 background pixels (jwst's 1.2^2 x the mean's)
    p = profile[ap] / in_ap
    v = flux[None] * profile[ap] + BKG + RN ** 2
    var_b = 1.2 ** 2 * (BKG + RN ** 2) / 20
    var_opt = 1 / np.sum(p ** 2 / v, axis=0)
    sum_w = np.sum(p / v, axis=0) * var_opt
    expected = np.sqrt((v.sum(axis=0) + 49 * var_b) / (var_opt + sum_w ** 2 * var_b))
    box_scatter = np.std(box["FLUX"] - (flux * in_ap)[None], axis=0)
    ratio = np.sqrt(np.mean(box_scatter ** 2) / np.mean(scatter ** 2))
    print(f"\noptimal: mean pull {pull.mean():+.3f}, pull std {pull.std():.3f}, scatter / FLUX_ERROR "
          f"{np.sqrt(np.mean(scatter ** 2) / np.mean(predicted ** 2)):.3f}; box / optimal scatter {ratio:.3f} "
          f"(expected {np.sqrt(np.mean(expected ** 2)):.3f})")
    assert abs(pull.mean()) < 0.1
    assert abs(np.sqrt(np.mean(scatter ** 2) / np.mean(predicted ** 2)) - 1) < 0.10
    assert abs(ratio / np.sqrt(np.mean(expected ** 2)) - 1) < 0.05
    assert ratio > 1.15  # read noise over 7 rows: the profile weighting is worth it
    # the columns' layout is the box's: NPIXELS the aperture's, SURF_BRIGHT = FLUX / NPIXELS
    assert set(opt) == set(box)
    np.testing.assert_allclose(opt["NPIXELS"], box["NPIXELS"])
    np.testing.assert_allclose(opt["SURF_BRIGHT"], opt["FLUX"] / opt["NPIXELS"])
    np.testing.assert_allclose(opt["WAVELENGTH"], box["WAVELENGTH"])


def test_profile_from_the_median_frame_follows_the_truth():
    cube, _, flux, profile = _cube()
    frames = cube.data[:, 13:20] - BKG
    inside = np.ones((7, NX), bool)
    p = spatial_profile(frames, inside)
    want = profile[13:20] / profile[13:20].sum(axis=0)
    np.testing.assert_allclose(p.sum(axis=0), 1.0)
    assert np.max(np.abs(p - want)) < 0.02, np.max(np.abs(p - want))


def test_a_cosmic_ray_is_rejected():
    cube, wave, flux, profile = _cube(seed=11)
    cube.data[5, 16, 123] += 3000.0  # on the trace's peak row
    cube.data[9, 18, 300] += 800.0  # in the wing
    opt = _extract(cube, wave, "optimal")
    box = _extract(cube, wave, "box")
    for i, x in ((5, 123), (9, 300)):
        truth = flux[x] * profile[13:20, x].sum()
        pull = (opt["FLUX"][i, x] - truth) / opt["FLUX_ERROR"][i, x]
        box_pull = (box["FLUX"][i, x] - truth) / box["FLUX_ERROR"][i, x]
        print(f"\ncosmic ray at integration {i}, column {x}: optimal pull {pull:+.2f}, box pull {box_pull:+.1f}")
        assert abs(pull) < 3
        assert box_pull > 5


@pytest.mark.parametrize("row", [16, 14])
def test_nan_pixels_do_not_bias_the_flux(row):
    cube, wave, flux, profile = _cube(seed=3)
    rng = np.random.default_rng(5)
    lost = rng.random((NINTS, NX)) < 0.1  # 10 % of the column-integrations lose a pixel of this row
    cube.data[:, row][lost] = np.nan
    opt = _extract(cube, wave, "optimal")
    box = _extract(cube, wave, "box")
    truth = (flux * profile[13:20].sum(axis=0))[None]
    pull = ((opt["FLUX"] - truth) / opt["FLUX_ERROR"])[lost]
    box_pull = ((box["FLUX"] - truth) / box["FLUX_ERROR"])[lost]
    print(f"\nNaN on row {row} in {lost.sum()} column-integrations: optimal mean pull {pull.mean():+.3f}, "
          f"box {box_pull.mean():+.2f}")
    assert np.isfinite(opt["FLUX"]).all()
    assert abs(pull.mean()) < 4 / np.sqrt(lost.sum()) and 0.8 < pull.std() < 1.2
    assert box_pull.mean() < -1  # the box sum loses the pixel's share
