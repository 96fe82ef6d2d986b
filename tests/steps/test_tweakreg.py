"""tweakreg: source finding, relative and absolute alignment against injected pointing errors."""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from test_image3_synth import LW_SCALE, make_cal, make_dither_set, make_sky, match_truth

from webbflow.steps import tweakreg

# The synthetic field is denser than a real one: matching radii scaled to it (arcsec).
DENSE = dict(searchrad=0.5, separation=0.1, tolerance=0.1, abs_searchrad=0.5, abs_separation=0.1,
             abs_tolerance=0.1)


def _rms_vs_truth(models, catalogs, truth):
    out = []
    for m, c in zip(models, catalogs):
        ra, dec = m.meta.wcs(np.asarray(c["x"]), np.asarray(c["y"]))
        _, sep = match_truth(ra, dec, truth)
        out.append(1000 * np.sqrt(np.mean(sep[sep < 0.3] ** 2)))
    return np.array(out)


@pytest.fixture(scope="module")
def sw_set():
    truth = make_sky(60)
    errors = np.array([[0.06, -0.04], [-0.05, 0.02], [0.03, 0.07], [-0.07, -0.05]])
    models, _, _ = make_dither_set(truth, 4, errors=errors)
    catalogs = [tweakreg.find_sources(m.data, m.dq) for m in models]
    return truth, errors, models, catalogs


def test_find_sources_centroids(sw_set):
    truth, errors, models, catalogs = sw_set
    assert all(len(c) >= 30 for c in catalogs)
    # Against the *true* WCS: IRAF-style centroids carry a pixel-phase error of ~0.1 pixel on
    # undersampled stars, but no net bias, which is what the alignment fit sees.
    model, info = make_cal(truth, noise=True, seed=3)
    cat = tweakreg.find_sources(model.data, model.dq)
    x, y = info["true_wcs"].invert(truth.ra, truth.dec, with_bounding_box=False)
    nearest = np.hypot(cat["x"][:, None] - x[None], cat["y"][:, None] - y[None]).argmin(axis=1)
    dx, dy = cat["x"] - x[nearest], cat["y"] - y[nearest]
    assert np.median(np.hypot(dx, dy)) < 0.15
    assert abs(np.mean(dx)) < 0.03 and abs(np.mean(dy)) < 0.03


def test_without_alignment_the_error_is_the_injected_one(sw_set):
    truth, errors, models, catalogs = sw_set
    rms = _rms_vs_truth(models, catalogs, truth)
    np.testing.assert_allclose(rms, 1000 * np.hypot(*errors.T), atol=5)


def test_relative_alignment_ties_images_to_the_reference(sw_set):
    truth, errors, _, catalogs = sw_set
    models, _, _ = make_dither_set(truth, 4, errors=errors)
    result = tweakreg.align([m.meta.wcs for m in models], catalogs, fitgeometry="rshift", **DENSE)
    ref = [i for i, r in enumerate(result) if r.status == "reference"][0]
    assert all(r.status in ("aligned", "reference") for r in result)
    rms = _rms_vs_truth(models, catalogs, truth)
    # Every image now carries the reference image's error (to a few mas), not its own.
    assert np.all(np.abs(rms - 1000 * np.hypot(*errors[ref])) < 5)
    fitted = [r.shift for r in result if r.status == "aligned"]
    assert len(fitted) == 3


@pytest.mark.parametrize("fitgeometry", [pytest.param("shift", marks=pytest.mark.slow), "rshift",
                                         pytest.param("rscale", marks=pytest.mark.slow), "general"])
def test_absolute_alignment_sw_within_5_mas(sw_set, fitgeometry):
    truth, errors, _, catalogs = sw_set
    models, _, _ = make_dither_set(truth, 4, errors=errors)
    refcat = Table({"ra": truth.ra, "dec": truth.dec})
    result = tweakreg.align([m.meta.wcs for m in models], catalogs, fitgeometry=fitgeometry,
                            abs_refcat=refcat, abs_fitgeometry=fitgeometry, **DENSE)
    assert result[-1].status == "aligned" and result[-1].nmatch >= 30
    assert np.all(_rms_vs_truth(models, catalogs, truth) <= 5.0)


def test_absolute_alignment_lw_within_10_mas():
    truth = make_sky(40, seed=4, radius_arcsec=5.0)
    errors = np.array([[0.08, 0.03], [-0.06, 0.05], [0.02, -0.09]])
    models, _, _ = make_dither_set(truth, 3, errors=errors, shape=(140, 140), scale=LW_SCALE, sigma_pix=1.0,
                                   detector="NRCALONG", filt="F444W")
    catalogs = [tweakreg.find_sources(m.data, m.dq) for m in models]
    before = _rms_vs_truth(models, catalogs, truth)
    assert np.all(before > 50)
    tweakreg.align([m.meta.wcs for m in models], catalogs, abs_refcat=Table({"ra": truth.ra, "dec": truth.dec}),
                   minobj=10, abs_minobj=10, **DENSE)
    assert np.all(_rms_vs_truth(models, catalogs, truth) <= 10.0)


def test_apply_correction_shifts_the_sky_by_the_fit():
    model, _ = make_cal(make_sky(3), shape=(32, 32), noise=False)
    wcs = model.meta.wcs
    before = SkyCoord(*wcs(16.0, 16.0), unit="deg")
    tweakreg.apply_correction(wcs, np.eye(2), [0.1, 0.0], [0.0, 0.0], (before.ra.deg, before.dec.deg))
    after = SkyCoord(*wcs(16.0, 16.0), unit="deg")
    # Tangent-plane x runs opposite to RA (east left): +0.1" in x is 0.1" west.
    dra, ddec = before.spherical_offsets_to(after)
    assert abs(abs(dra.arcsec) - 0.1) < 1e-6 and abs(ddec.arcsec) < 1e-6
    # The inverse goes along.
    x, y = wcs.invert(after.ra.deg, after.dec.deg)
    assert abs(x - 16) < 1e-6 and abs(y - 16) < 1e-6


def test_too_few_matches_leave_the_wcs_unchanged(sw_set):
    truth, errors, _, catalogs = sw_set
    models, _, _ = make_dither_set(truth, 2, errors=errors[:2])
    before = models[1].meta.wcs(50.0, 50.0)
    result = tweakreg.align([m.meta.wcs for m in models], catalogs[:2], minobj=1000, **DENSE)
    assert any(r.status.startswith("skipped") for r in result)
    assert np.allclose(models[1].meta.wcs(50.0, 50.0), before) and np.allclose(models[0].meta.wcs(50.0, 50.0),
                                                                                 make_dither_set(truth, 2, errors=errors[:2])[0][0].meta.wcs(50.0, 50.0))


def test_abs_fallback_aligns_untied_exposures_to_the_catalog_on_their_own(sw_set):
    """NC-102: two exposures guided on another star, ~1" off (beyond searchrad): relative matching
    cannot tie them and the joint absolute fit leaves them there; ``abs_fallback`` fits them alone."""
    truth = sw_set[0]
    errors = np.array([[0.06, -0.04], [-0.05, 0.02], [0.8, 0.55], [0.76, 0.6]])
    models, _, _ = make_dither_set(truth, 4, errors=errors)
    catalogs = [tweakreg.find_sources(m.data, m.dq) for m in models]
    refcat = Table({"ra": truth.ra, "dec": truth.dec})
    rms = {}
    for fallback in (False, True):
        models, _, _ = make_dither_set(truth, 4, errors=errors)
        result = tweakreg.align([m.meta.wcs for m in models], catalogs, abs_refcat=refcat, abs_fallback=fallback,
                                **DENSE)
        rms[fallback] = _rms_vs_truth(models, catalogs, truth)
        print(f"abs_fallback {fallback}: rms vs truth {np.round(rms[fallback], 1)} mas;",
              [r.status[:40] for r in result])
    # without: the joint fit cannot serve both pairs (here it matched neither well)
    assert np.sum(rms[False] > 100.0) >= 2
    assert np.all(rms[True] < 5.0)
    assert sum(r.status.startswith("aligned to abs_refcat alone") for r in result[:-1]) == 2


@pytest.mark.parametrize("nan", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("radius", [2.5, 3.0, 4.2, 6.0])
def test_compiled_ring_verification_finds_photutils_peaks(dtype, radius, nan):
    """find_peaks' circular local maxima with the compiled box filters and candidate check
    (fast_ring_verification) against photutils' own: the same mask, edges (cval 0), negative images,
    ties and NaN (left to photutils' box filters) included."""
    from photutils.detection import peakfinder

    from webbflow.steps._peaks import fast_ring_verification

    rng = np.random.default_rng(7)
    data = rng.normal(0.0, 1.0, (90, 70)).astype(dtype)
    data[10:14, 20:24] = 5.0  # a plateau: ties
    data[0, 5] = data[89, 69] = 9.0  # peaks on the border
    data[40:50, 40:50] -= 10.0  # a negative patch, whose maxima near cval 0 matter
    data[-8:, :] -= 20.0  # negative along an edge
    data[5:9, 0:3] = 0.0  # zeros at the edge: equal to cval
    data[70, 10] = -0.0
    if nan:
        data[60, 30] = np.nan
    want = peakfinder._fast_circular_peaks(data, radius)
    with fast_ring_verification():
        got = peakfinder._fast_circular_peaks(data, radius)
    assert peakfinder._verify_ring_candidates is not None
    assert want.sum() > 50
    np.testing.assert_array_equal(got, want)
    # restored on leaving
    assert peakfinder._verify_ring_candidates.__module__ == "photutils.detection.peakfinder"
    assert peakfinder._fast_circular_peaks.__module__ == "photutils.detection.peakfinder"
