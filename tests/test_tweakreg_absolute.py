"""tweakreg beyond relative alignment: detectors of one exposure as one rigid group, and absolute
alignment to a Gaia-like catalog moved by its proper motions to the observation's epoch.

Synthetic cal images (test_image3_synth) whose WCSs carry known pointing errors; the alignment is
judged by the WCS error at every true star position (aligned WCS at the star's true pixel vs its
true RA/Dec), so the numbers are the astrometric error the mosaic would inherit.
"""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time
from test_image3_synth import DEC0, RA0, Truth, make_cal, make_sky

from webbflow.io.errors import InputError
from webbflow.io.image3 import image_input
from webbflow.simulate.sky import gaia_like_catalog
from webbflow.stages import image3
from webbflow.steps import tweakreg

TIGHT = dict(minobj=4, searchrad=0.5, separation=0.5, tolerance=0.2)
ABS_TIGHT = dict(abs_minobj=4, abs_searchrad=0.5, abs_separation=0.5, abs_tolerance=0.2)
ONLY_TWEAKREG = {"skymatch": {"skip": True}, "outlier_detection": {"skip": True}, "source_catalog": {"skip": True}}


def _wcs_errors_mas(wcs, true_wcs, truth, shape):
    """(dra*cos dec, ddec) in mas of ``wcs`` at the true pixel of every star that falls on the image."""
    x, y = true_wcs.invert(truth.ra, truth.dec)
    on = (x > 5) & (y > 5) & (x < shape[1] - 6) & (y < shape[0] - 6)
    ra, dec = wcs(x[on], y[on], with_bounding_box=False)
    true = SkyCoord(truth.ra[on], truth.dec[on], unit="deg")
    dra, ddec = true.spherical_offsets_to(SkyCoord(ra, dec, unit="deg"))
    return np.column_stack([dra.to_value("mas"), ddec.to_value("mas")])


def _two_detector_exposures(errors):
    """Exposures of two side-by-side SW detectors (NRCA1 | NRCA2, one pointing error per exposure).

    The stars crowd the left detector: the right one holds 3, too few (minobj 4) to be aligned on
    its own, as a sparse detector of a real exposure can be.
    """
    rng = np.random.default_rng(5)
    left = make_sky(40, seed=3, radius_arcsec=2.8)
    ra = np.concatenate([left.ra - 3.1 / 3600 / np.cos(np.deg2rad(DEC0)),
                         RA0 + np.array([2.2, 3.4, 4.1]) / 3600 / np.cos(np.deg2rad(DEC0))])
    dec = np.concatenate([left.dec, DEC0 + np.array([-1.5, 0.9, 2.0]) / 3600])
    truth = Truth(ra, dec, np.concatenate([left.flux, rng.uniform(5e-5, 1e-4, 3)]))
    models, infos = [], []
    for e, (dither, err) in enumerate(zip([(0.0, 0.0), (0.35, 0.22)], errors)):
        for d, (det, dx) in enumerate((("NRCA1", -3.1), ("NRCA2", 3.1))):
            m, info = make_cal(truth, (dither[0] + dx, dither[1]), err, exposure=e + 1, detector=det,
                               seed=10 * e + d)
            models.append(m)
            infos.append(info)
    return truth, models, infos


def test_detectors_of_one_exposure_are_aligned_as_one_group():
    errors = np.array([[0.04, -0.03], [-0.07, 0.06]])  # arcsec
    truth, models, infos = _two_detector_exposures(errors)
    groups = [image_input(m).group for m in models]
    assert groups[0] == groups[1] != groups[2] == groups[3]  # jwst's group_id: one per exposure

    # Grouped (the stage's default): the sparse NRCA2 of exposure 2 moves with its NRCA1.
    grouped = image3.run_models([m.copy() for m in models], {"tweakreg": TIGHT, **ONLY_TWEAKREG})
    status = [a.status for a in grouped["alignment"]]
    assert status == ["reference", "reference", "aligned", "aligned"]
    a2, a3 = grouped["alignment"][2:]
    assert np.array_equal(a2.shift, a3.shift) and np.array_equal(a2.matrix, a3.matrix)
    # The reference exposure's pointing error is what every image inherits (relative alignment):
    # each image's error relative to it is what the group fit removes.
    ref_err = 1000 * errors[0] * [1, 1]
    for i, im in enumerate(grouped["images"]):
        err = _wcs_errors_mas(im.wcs, infos[i]["true_wcs"], truth, models[i].data.shape)
        assert len(err) >= 3
        rel = np.sqrt(np.mean(np.sum((err - ref_err) ** 2, axis=1)))
        assert rel < 5.0, f"image {i}: {rel:.1f} mas from the reference exposure's frame"

    # One image per group (what jwst does for images without a shared group_id): the sparse detector
    # cannot be matched and keeps its pointing error relative to the reference.
    wcss = [m.copy().meta.wcs for m in models]
    cats = [tweakreg.find_sources(m.data, m.dq) for m in models]
    alone = tweakreg.align(wcss, cats, **TIGHT)
    assert alone[3].status.startswith("skipped")
    err = _wcs_errors_mas(wcss[3], infos[3]["true_wcs"], truth, models[3].data.shape)
    rel = np.sqrt(np.mean(np.sum((err - ref_err) ** 2, axis=1)))
    injected = 1000 * np.hypot(*(errors[1] - errors[0]))
    assert abs(rel - injected) < 5.0, f"{rel:.1f} mas vs {injected:.1f} injected"


def _sky_table(truth):
    n = len(truth.ra)
    return Table({"id": np.arange(1, n + 1), "ra": truth.ra, "dec": truth.dec, "type": np.full(n, "star"),
                  "alpha": np.full(n, -1.0), "flux_f200w": truth.flux})


@pytest.fixture(scope="module")
def gaia_run(tmp_path_factory):
    """Four dithers, each with its own pointing error, aligned to a Gaia-like catalog with and
    without its proper motions (the catalog is at 2016.0; the data at MJD 60000, 2023.2)."""
    tmp = tmp_path_factory.mktemp("gaia")
    truth = make_sky(60, seed=7, radius_arcsec=3.6)
    errors = np.array([[0.09, -0.05], [-0.04, 0.08], [0.06, 0.07], [-0.08, -0.03]])
    dithers = [(0.0, 0.0), (0.35, 0.22), (-0.27, 0.41), (0.18, -0.33)]
    models, infos = zip(*[make_cal(truth, d, e, exposure=i + 1, seed=20 + i)
                          for i, (d, e) in enumerate(zip(dithers, errors))])
    epoch = image3.observation_epoch(models)
    assert abs(epoch - Time(60000.0, format="mjd").jyear) < 0.01
    gaia = gaia_like_catalog(_sky_table(truth), epoch, seed=11, g_limit=21.0)
    path = tmp / "gaia.ecsv"
    gaia.write(path)
    out = {}
    for name, pm in (("pm", True), ("no_pm", False)):
        params = {"tweakreg": {**TIGHT, **ABS_TIGHT, "abs_refcat": str(path), "abs_proper_motion": pm},
                  **ONLY_TWEAKREG}
        result = image3.run_models([m.copy() for m in models], params)
        out[name] = np.vstack([_wcs_errors_mas(im.wcs, info["true_wcs"], truth, m.data.shape)
                               for im, info, m in zip(result["images"], infos, models)])
        out[name + "_fit"] = result["alignment"][-1]
    return truth, gaia, epoch, errors, out


def test_absolute_alignment_with_proper_motions_lands_on_truth(gaia_run):
    truth, gaia, epoch, errors, out = gaia_run
    assert len(gaia) >= 15 and out["pm_fit"].status == "aligned" and out["pm_fit"].nmatch >= 10
    rms = np.sqrt(np.mean(np.sum(out["pm"] ** 2, axis=1)))
    # Gaia-like errors propagated over 7 yr are a few mas per star, averaged over tens of stars.
    assert rms < 5.0, f"absolute rms {rms:.1f} mas"
    # Relative alignment alone would leave the first exposure's pointing error (~100 mas).
    assert 1000 * np.hypot(*errors[0]) > 10 * rms


def test_without_proper_motions_the_fit_lands_on_the_2016_positions(gaia_run):
    """jwst's behaviour for a catalog file: the mosaic moves by the stars' mean motion since 2016."""
    truth, gaia, epoch, errors, out = gaia_run
    dt = epoch - 2016.0
    expected = -dt * np.array([np.mean(gaia["pmra_true"]), np.mean(gaia["pmdec_true"])])  # mas
    mean = out["no_pm"].mean(axis=0)
    assert np.hypot(*expected) > 10  # the test can tell the two apart
    assert np.hypot(*(mean - expected)) < 0.3 * np.hypot(*expected), f"{mean} vs {expected} mas"
    assert np.hypot(*out["pm"].mean(axis=0)) < 0.3 * np.hypot(*expected)


def test_gaia_like_catalog_positions_and_errors_follow_its_epoch():
    truth = make_sky(200, seed=9, radius_arcsec=20, fmin=1e-6, fmax=1e-3)
    sky = _sky_table(truth)
    gaia = gaia_like_catalog(sky, 2025.0, seed=1)
    g = gaia["phot_g_mean_mag"]
    assert g.max() <= 20.7 and len(gaia) < len(sky)  # the G limit drops the faint stars
    moved = image3.read_refcat(gaia, 2025.0)
    idx = gaia["truth_id"] - 1
    sep = SkyCoord(moved["ra"], moved["dec"], unit="deg").separation(
        SkyCoord(sky["ra"][idx], sky["dec"][idx], unit="deg")).to_value("mas")
    # residual = position error + 9 yr x proper-motion error, per star; chi^2 of 2 dof
    sigma = np.hypot(gaia["ra_error"], 9.0 * gaia["pmra_error"])
    assert 1.5 < np.mean((sep / sigma) ** 2) < 2.5
    assert np.all(np.diff(np.asarray(gaia["ra_error"])[np.argsort(g)]) >= 0)  # fainter, larger errors


def test_refcat_with_proper_motions_needs_columns_and_epoch(tmp_path):
    t = Table({"ra": [RA0], "dec": [DEC0]})
    t.write(tmp_path / "plain.ecsv")
    assert len(image3.read_refcat(tmp_path / "plain.ecsv")) == 1
    with pytest.raises(InputError, match="pmra/pmdec"):
        image3.read_refcat(tmp_path / "plain.ecsv", 2025.0)
    t["pmra"], t["pmdec"] = [100.0], [-50.0]
    t.write(tmp_path / "noepoch.ecsv")
    with pytest.raises(InputError, match="ref_epoch"):
        image3.read_refcat(tmp_path / "noepoch.ecsv", 2025.0)
    t.meta["ref_epoch"] = 2015.0
    t.write(tmp_path / "pm.ecsv")
    moved = image3.read_refcat(tmp_path / "pm.ecsv", 2025.0)
    d = SkyCoord(RA0, DEC0, unit="deg").spherical_offsets_to(SkyCoord(moved["ra"][0], moved["dec"][0], unit="deg"))
    assert abs(d[0].to_value("mas") - 1000.0) < 1.0 and abs(d[1].to_value("mas") + 500.0) < 1.0


def test_merge_detections_averages_each_stars_dithered_detections():
    """abs_merge_sources: one position per star, the mean of its detections in the aligned images;
    a set with two detections from one image (a close pair) is not merged."""
    rng = np.random.default_rng(2)
    stars = rng.uniform(-5, 5, (30, 2))  # arcsec, at least ~0.1" apart in practice
    noisy = [stars + rng.normal(0, 0.004, stars.shape) for _ in range(4)]  # 4 mas centroid noise
    noisy[2] = noisy[2][5:]  # a star missing from one image is merged from the other three
    pair = np.array([[7.0, 7.0], [7.01, 7.0], [7.005, 7.001]])  # two in image 0, one in image 1
    merged = tweakreg.merge_detections([np.vstack([noisy[0], pair[:2]]), np.vstack([noisy[1], pair[2:]]),
                                        noisy[2], noisy[3]], radius=0.03)
    assert len(merged) == 30 + 3
    expected = np.vstack([np.mean([noisy[0][:5], noisy[1][:5], noisy[3][:5]], axis=0),
                          np.mean([n[-25:] for n in noisy], axis=0)])
    order = np.lexsort(merged[:30].T[::-1])
    np.testing.assert_allclose(merged[:30][order], expected[np.lexsort(expected.T[::-1])], atol=1e-12)
    assert {tuple(p) for p in np.round(merged[30:], 6)} == {tuple(p) for p in pair}
    # the mean of three or four detections: about half the single-detection scatter about the truth
    err = merged[:30][order] - stars[np.lexsort(stars.T[::-1])]
    assert np.std(err) < 0.7 * 0.004
