"""image3 stage end to end on synthetic cal files with known truth, and on the real NIRCam cal cutout."""

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from stdatamodels.jwst import datamodels
from test_image3_synth import make_dither_set, make_sky, match_truth

from webbflow import dqflags
from webbflow.io.errors import InputError
from webbflow.stages import image3

REAL_CAL = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "nircam" / "cal_cutout" / "image.fits"
PRODUCT = "jw01234-o001_t001_nircam_clear-f200w"
ERRORS = np.array([[0.06, -0.04], [-0.05, 0.02], [0.03, 0.07], [-0.07, -0.05]])  # arcsec, per exposure
DENSE = dict(searchrad=0.5, separation=0.1, tolerance=0.1, abs_searchrad=0.5, abs_separation=0.1,
             abs_tolerance=0.1)


def _write_set(folder, truth, n_cosmic):
    folder.mkdir(parents=True, exist_ok=True)
    models, infos, _ = make_dither_set(truth, 4, errors=ERRORS, n_cosmic=n_cosmic)
    paths = []
    for m in models:
        path = folder / m.meta.filename
        m.save(path)
        paths.append(str(path))
    return paths, infos


def _run(tmp, paths, name, params):
    out = tmp / name
    return image3.run(paths, i2d=out / f"{PRODUCT}_i2d.fits", cat=out / f"{PRODUCT}_cat.ecsv",
                      segm=out / f"{PRODUCT}_segm.fits", crf_dir=out, asn_id="o001", product=PRODUCT,
                      params=params, provenance={"step_parameters": params, "config_digest": "abc"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image3")
    truth = make_sky(60)
    refcat = tmp / "refcat.ecsv"
    Table({"ra": truth.ra, "dec": truth.dec}).write(refcat)
    paths, infos = _write_set(tmp / "cal", truth, n_cosmic=25)
    clean_paths, _ = _write_set(tmp / "cal_clean", truth, n_cosmic=0)
    aligned = {"tweakreg": dict(abs_refcat=str(refcat), **DENSE)}
    return {
        "truth": truth, "infos": infos, "paths": paths,
        "aligned": _run(tmp, paths, "aligned", aligned),
        "clean": _run(tmp, clean_paths, "clean", {**aligned, "source_catalog": {"skip": True}}),
        "unaligned": _run(tmp, paths, "unaligned", {"tweakreg": {"skip": True}, "outlier_detection": {"skip": True}}),
    }


def _bright_offsets(catalog_path, truth):
    cat = Table.read(catalog_path)
    idx, sep = match_truth(cat["sky_centroid"].ra.deg, cat["sky_centroid"].dec.deg, truth, 0.3)
    snr = cat["aper_total_flux"] / cat["aper_total_flux_err"]
    bright = (sep < 0.3) & (snr > 100)
    return cat, idx, sep, bright


def test_products_open_as_the_right_models(runs):
    out = runs["aligned"]
    with datamodels.open(out["i2d"]) as i2d:
        assert isinstance(i2d, datamodels.ImageModel)
        assert i2d.meta.bunit_data == "MJy/sr" and i2d.meta.bunit_err == "MJy/sr"
        assert i2d.con.shape[0] == 1 and i2d.wht.shape == i2d.data.shape and i2d.var_rnoise.shape == i2d.data.shape
        assert np.all(i2d.con[0][i2d.wht > 0] > 0)
        steps = i2d.meta.cal_step
        assert (steps.tweakreg, steps.skymatch, steps.outlier_detection, steps.resample, steps.source_catalog) \
            == ("COMPLETE",) * 5
        assert i2d.meta.resample.pixfrac == 1.0 and i2d.meta.resample.weight_type == "ivm"
    header = fits.getheader(out["i2d"])
    assert header["WF_CFGD"] == "abc" and json.loads(header["WF_PARS"])["tweakreg"]["abs_refcat"]
    assert fits.getheader(out["i2d"], "SCI")["CTYPE1"].startswith("RA---TAN")
    with datamodels.open(out["segm"]) as segm:
        assert isinstance(segm, datamodels.SegmentationMapModel)
        assert segm.data.max() == len(Table.read(out["cat"]))
    names = sorted(Path(p).name for p in out["crf"])
    assert names == [f"jw01234001001_02101_0000{i}_nrca1_o001_crf.fits" for i in range(1, 5)]


def test_astrometry_tweakreg_does_the_work(runs):
    truth = runs["truth"]
    _, _, sep, bright = _bright_offsets(runs["aligned"]["cat"], truth)
    assert bright.sum() >= 20
    rms_aligned = 1000 * np.sqrt(np.mean(sep[bright] ** 2))
    assert rms_aligned <= 5.0
    # Without tweakreg the stack carries the injected pointing errors (blurred together).
    _, _, sep_u, bright_u = _bright_offsets(runs["unaligned"]["cat"], truth)
    rms_unaligned = 1000 * np.sqrt(np.mean(sep_u[bright_u] ** 2))
    injected_mean = 1000 * np.hypot(*ERRORS.mean(axis=0))
    assert rms_unaligned > 5 * rms_aligned and rms_unaligned > injected_mean - 5


def test_i2d_wcs_maps_a_known_star_within_5_mas(runs):
    truth = runs["truth"]
    with datamodels.open(runs["aligned"]["i2d"]) as i2d:
        from webbflow.steps.tweakreg import find_sources

        from photutils.centroids import centroid_2dg

        found = find_sources(i2d.data, snr_threshold=50)
        brightest = int(np.argmax(found["flux"]))
        x0, y0 = int(round(found["x"][brightest])), int(round(found["y"][brightest]))
        box = i2d.data[y0 - 4:y0 + 5, x0 - 4:x0 + 5] - 0.3
        cx, cy = centroid_2dg(box)  # a Gaussian fit: the star's position, not the finder's estimate
        x, y = x0 - 4 + cx, y0 - 4 + cy
        ra, dec = i2d.meta.wcs(x, y)
    _, sep = match_truth(np.atleast_1d(ra), np.atleast_1d(dec), truth)
    assert sep[0] < 0.005
    # The FITS (SIP/TAN) header in SCI gives the same sky as the gwcs.
    from astropy.wcs import WCS

    w = WCS(fits.getheader(runs["aligned"]["i2d"], "SCI"))
    sky = w.pixel_to_world(x, y)
    assert sky.separation(SkyCoord(ra, dec, unit="deg")).arcsec < 0.001


def test_photometry_of_bright_isolated_stars_within_one_percent(runs):
    truth = runs["truth"]
    cat, idx, sep, bright = _bright_offsets(runs["aligned"]["cat"], truth)
    isolated = bright & (cat["nn_dist"] > 12) & (sep < 0.02)
    assert isolated.sum() >= 10
    ratio = cat["aper_total_flux"][isolated] / truth.flux[idx[isolated]]
    assert abs(np.median(ratio) - 1) < 0.01
    assert str(cat["aper_total_flux"].unit) == "Jy"
    np.testing.assert_allclose(cat["aper_total_abmag"], -2.5 * np.log10(cat["aper_total_flux"] / 3631.0),
                               rtol=1e-10)


def _double_hits(runs, out_wcs, shape, radius=3):
    """Output pixels near hits of two different exposures (a median of four cannot outvote two)."""
    hits = []
    for k, (path, info) in enumerate(zip(sorted(runs["aligned"]["crf"]), runs["infos"])):
        with datamodels.open(path) as crf:  # the aligned WCS
            for y, x in info["cosmic_rays"]:
                ox, oy = out_wcs.invert(*crf.meta.wcs(x + 0.5, y))
                hits.append((k, ox, oy))
    mask = np.zeros(shape, bool)
    for k, ox, oy in hits:
        if any(j != k and np.hypot(ox - x2, oy - y2) < radius for j, x2, y2 in hits):
            mask[max(int(oy) - radius, 0):int(oy) + radius + 1, max(int(ox) - radius, 0):int(ox) + radius + 1] = True
    return mask


def test_outliers_removed_and_flagged_in_crf(runs):
    with datamodels.open(runs["aligned"]["i2d"]) as cr_run, datamodels.open(runs["clean"]["i2d"]) as clean:
        # jwst's rule (|data - blot| > 1.2 |d blot| + 5 err) cannot see a hit on a bright star's core,
        # where the blot's derivative is large: compare off star cores (star light < 20 sigma).
        # A median needs three exposures to outvote a hit: edges seen by one or two are left out.
        off_core = (clean.data - 0.3) < 20 * clean.err
        depth = sum((cr_run.con[0] >> k) & 1 for k in range(4))
        ok = (cr_run.wht > 0) & (clean.wht > 0) & off_core & (depth >= 3) & ~_double_hits(runs, cr_run.meta.wcs,
                                                                                         cr_run.data.shape)
        excess = (cr_run.data - clean.data)[ok] / cr_run.err[ok]
        assert ok.sum() > 0.7 * ok.size
    # On jwst's output grid one hit at the edge of a star's wing survives jwst's rule (7 sigma, next 1.2).
    assert np.sum(excess > 5.0) <= 1 and np.nanmax(excess) < 10.0
    flagged = 0
    for path, info in zip(sorted(runs["aligned"]["crf"]), runs["infos"]):
        with datamodels.open(path) as crf:
            assert isinstance(crf, datamodels.ImageModel)
            assert crf.meta.cal_step.outlier_detection == "COMPLETE"
            flagged += sum(bool(crf.dq[y, x] & dqflags.OUTLIER) and bool(crf.dq[y, x] & dqflags.DO_NOT_USE)
                           for y, x in info["cosmic_rays"])
            core = (info["clean"] - 0.3) > 20 * crf.err
            cr_pix = np.zeros(crf.data.shape, bool)
            for y, x in info["cosmic_rays"]:
                cr_pix[y, x:x + 2] = True
            assert not np.any((crf.dq & dqflags.OUTLIER > 0) & core & ~cr_pix)
    assert flagged >= 0.95 * 100


@pytest.mark.skipif(not REAL_CAL.exists(), reason="real NIRCam cal cutout not available")
def test_real_cal_cutout_single_member(tmp_path):
    product = "jw01227-o002_t001_nircam_clear-f444w"
    out = image3.run([REAL_CAL], i2d=tmp_path / f"{product}_i2d.fits", cat=tmp_path / f"{product}_cat.ecsv",
                     segm=tmp_path / f"{product}_segm.fits", crf_dir=tmp_path, asn_id="o002", product=product)
    with datamodels.open(REAL_CAL) as cal, datamodels.open(out["i2d"]) as i2d:
        assert i2d.meta.bunit_data == "MJy/sr" and i2d.meta.instrument.filter == "F444W"
        assert i2d.meta.cal_step.tweakreg == "SKIPPED" and i2d.meta.cal_step.resample == "COMPLETE"
        # The same sky position through both WCSs: the i2d pixel holds the cal pixel's surface brightness.
        ra, dec = cal.meta.wcs(50.0, 50.0)
        x, y = i2d.meta.wcs.invert(ra, dec)
        ra2, dec2 = i2d.meta.wcs(x, y)
        assert SkyCoord(ra, dec, unit="deg").separation(SkyCoord(ra2, dec2, unit="deg")).arcsec < 0.005
        # Median sky level preserved by drizzling (MJy/sr, surface brightness).
        assert abs(np.nanmedian(i2d.data) / np.nanmedian(cal.data) - 1) < 0.02
    cat = Table.read(out["cat"])
    assert len(cat) >= 5 and np.all(np.isfinite(cat["sky_centroid"].ra.deg))


def test_job_with_schema_cache_writes_the_same_products(runs, tmp_path, make, monkeypatch):
    """The image3 job installs asdf's schema-document cache (``jobs._fast_asdf``); its products are
    those of the same job without it (every array and header card, the catalog's text)."""
    from asdf import schema

    from webbflow import jobs
    from webbflow.associations import associations_from_cals, write_asn
    from webbflow.io import asdf_yaml

    loader = schema._make_schema_loader
    original = getattr(loader, "_webbflow_original", loader)
    asn = associations_from_cals([Path(p) for p in runs["paths"]])[0]
    asn_path = write_asn(asn, Path(runs["paths"][0]).parent / f"{asn.product}_asn.json")
    steps = {"tweakreg": {"skip": True}}

    def job(name):
        out = tmp_path / name
        jobs.image3(asn_path, out / "x_i2d.fits", out / "x_cat.ecsv", out / "x_segm.fits", out / "crf", steps)
        return out

    monkeypatch.setattr(schema, "_make_schema_loader", original)
    monkeypatch.setattr(jobs, "cache_schema_documents", lambda: False)
    plain = job("plain")
    assert schema._make_schema_loader is original  # parsed every time
    monkeypatch.setattr(jobs, "cache_schema_documents", asdf_yaml.cache_schema_documents)
    cached = job("cached")
    assert getattr(schema._make_schema_loader, "_webbflow_cached", False)
    # (the cache is installed; reads without per-value validation, the crf/i2d/segm values assigned
    # without it and writes without asdf's tree validation may leave it no schema document to hold)
    problems, n = make.compare_products(plain, cached)
    assert n >= 4 and problems == []


def test_rate_file_is_refused_with_a_clear_message(tmp_path):
    model = datamodels.ImageModel(np.zeros((8, 8), np.float32))
    model.meta.bunit_data = "DN/s"
    from webbflow.steps.resample import make_tan_wcs

    model.meta.wcs = make_tan_wcs((10.0, 10.0), (4, 4), np.eye(2) * 1e-5, (8, 8))
    path = tmp_path / "x_rate.fits"
    model.save(path)
    with pytest.raises(InputError, match="x_rate.fits.*DN/s.*photom"):
        image3.run([path], i2d=tmp_path / "a_i2d.fits", cat=tmp_path / "a_cat.ecsv", segm=tmp_path / "a_segm.fits",
                   crf_dir=tmp_path, asn_id="o001", product="a")


def test_vega_magnitudes_from_an_abvegaoffset_reference(runs, tmp_path):
    from webbflow.io.image3 import read_cal
    from webbflow.simulate.stage2_refs import write_abvegaoffset_reference
    from webbflow.steps.source_catalog import read_abvega_offset

    path = write_abvegaoffset_reference(tmp_path / "abvega.asdf", "NRCA1",
                                        {("F200W", "CLEAR"): 1.79, ("F150W", "CLEAR"): 1.24})
    assert read_abvega_offset(path, "F200W", "CLEAR") == pytest.approx(1.79)
    with pytest.raises(InputError, match="0 rows for F444W/CLEAR"):
        read_abvega_offset(path, "F444W", "CLEAR")
    with pytest.raises(InputError, match="ABVEGAOFFSET"):
        read_abvega_offset(runs["paths"][0], "F200W", "CLEAR")
    # Without a reference (the module's runs) Vega equals AB, as jwst's catalog without one.
    plain = Table.read(runs["aligned"]["cat"])
    np.testing.assert_array_equal(plain["aper_total_vegamag"], plain["aper_total_abmag"])
    models = [read_cal(p) for p in runs["paths"]]
    result = image3.run_models(models, {"tweakreg": {"skip": True}, "outlier_detection": {"skip": True},
                                        "source_catalog": {"abvegaoffset_file": str(path)}})
    cat = result["catalog"].catalog
    assert cat.meta["abvega_offset"] == pytest.approx(1.79)
    for name in ("aper30", "aper50", "aper70", "aper_total", "isophotal"):
        good = np.isfinite(cat[f"{name}_abmag"])
        assert good.sum() >= 10
        np.testing.assert_allclose(cat[f"{name}_abmag"][good] - cat[f"{name}_vegamag"][good], 1.79, atol=1e-6)
        np.testing.assert_array_equal(cat[f"{name}_vegamag_err"], cat[f"{name}_abmag_err"])


def test_catalog_references_chosen_by_crds_are_read_and_recorded(runs, tmp_path):
    """source_catalog reads the APCORR and ABVEGAOFFSET CRDS chose (jwst's ``get_reference_file``), a
    file given by path wins (jwst's ``override_<type>``), ``measure_apcorr`` measures instead of the
    APCORR; the catalog names what it read (crds://<file> and the context for CRDS's)."""
    from webbflow.simulate.stage2_refs import (
        write_abvegaoffset_reference,
        write_apcorr_reference,
    )
    from webbflow.steps.source_catalog import read_apcorr

    cache = tmp_path / "references" / "jwst" / "nircam"
    apcorr = write_apcorr_reference(cache / "x_apcorr.fits", "ANY", "F200W", "CLEAR", [0.3, 0.5, 0.7],
                                    [1.3, 2.2, 3.7], [3.0, 1.9, 1.37], 5.0, 8.0)
    abvega = write_abvegaoffset_reference(cache / "x_abvega.asdf", "ANY", {("F200W", "CLEAR"): 1.79})
    by_path = write_abvegaoffset_reference(tmp_path / "mine.asdf", "ANY", {("F200W", "CLEAR"): 1.5})
    references = {"apcorr": str(apcorr), "abvegaoffset": str(abvega)}
    provenance = {"step_parameters": {}, "config_digest": "abc", "crds_context": "jwst_9000.pmap",
                  "crds_version": "13.0", "reference_names": {"apcorr": "crds://x_apcorr.fits",
                                                              "abvegaoffset": "crds://x_abvega.asdf"}}
    params = {"tweakreg": {"skip": True}, "outlier_detection": {"skip": True}}
    out = tmp_path / "out"
    written = image3.run(runs["paths"], i2d=out / f"{PRODUCT}_i2d.fits", cat=out / f"{PRODUCT}_cat.ecsv",
                         segm=out / f"{PRODUCT}_segm.fits", crf_dir=out, asn_id="o001", product=PRODUCT,
                         params=params, provenance=provenance, references=references)
    cat = Table.read(written["cat"])
    assert (cat.meta["R_APCORR"], cat.meta["R_ABVEGA"]) == ("crds://x_apcorr.fits", "crds://x_abvega.asdf")
    assert cat.meta["CRDS_CTX"] == "jwst_9000.pmap" and cat.meta["CRDS_VER"] == "13.0"
    # the reference's radii and correction, not the measured ones; Vega = AB - the reference's offset
    assert cat.meta["aperture_correction"] == pytest.approx(1.37)
    assert cat.meta["abvega_offset"] == pytest.approx(1.79)
    good = np.isfinite(cat["aper_total_abmag"])
    assert good.sum() >= 10
    np.testing.assert_allclose(cat["aper_total_abmag"][good] - cat["aper_total_vegamag"][good], 1.79, atol=1e-6)
    ratio = cat["aper_total_flux"][good] / cat["aper70_flux"][good]
    np.testing.assert_allclose(ratio, float(read_apcorr(apcorr, "F200W", "CLEAR")["apcorr"][-1]), rtol=1e-6)

    models = [datamodels.open(p) for p in runs["paths"]]
    try:
        mine = image3.run_models(models, {**params, "source_catalog": {"abvegaoffset_file": str(by_path),
                                                                      "measure_apcorr": True}},
                                 references=references)
    finally:
        for m in models:
            m.close()
    assert mine["catalog_references"] == {"apcorr": None, "abvegaoffset": str(by_path)}
    assert mine["catalog"].catalog.meta["abvega_offset"] == pytest.approx(1.5)
    assert mine["catalog"].catalog.meta["aperture_correction"] != pytest.approx(1.37, abs=1e-3)
    assert image3.catalog_provenance(mine["catalog_references"], references, provenance) == {"R_ABVEGA": "mine.asdf"}


def test_clipped_apertures_are_flagged_not_nan(runs):
    """An aperture over a pixel with no data is NaN (jwst); with ``clip_apertures`` it sums the
    measured pixels and ``aper_coverage`` < 1 flags it, other sources unchanged."""
    from webbflow.steps.source_catalog import source_catalog

    with datamodels.open(runs["aligned"]["i2d"]) as m:
        data, err, wht, wcs = np.array(m.data), np.array(m.err), np.array(m.wht), m.meta.wcs
        pixar = m.meta.photometry.pixelarea_steradians
    cat = Table.read(runs["aligned"]["cat"])
    k = int(np.nanargmax(np.where(cat["nn_dist"] > 12, cat["aper_total_flux"], np.nan)))
    x, y = int(round(cat["xcentroid"][k])), int(round(cat["ycentroid"][k]))
    data[y, x + 1] = np.nan  # one unmeasured pixel beside the core, as a saturated core leaves
    mask = (wht == 0) | ~np.isfinite(data)
    kwargs = dict(mask=mask, apcorr_table=None)
    plain = source_catalog(data, err, wcs, pixar, **kwargs).catalog
    clipped = source_catalog(data, err, wcs, pixar, clip_apertures=True, **kwargs).catalog
    assert "aper_coverage" not in plain.colnames
    j = int(np.argmin(np.hypot(plain["xcentroid"] - x, plain["ycentroid"] - y)))
    total = {name: np.asarray(getattr(c["aper_total_flux"], "value", c["aper_total_flux"]), float)
             for name, c in (("plain", plain), ("clipped", clipped), ("file", cat))}
    assert np.isnan(total["plain"][j]) and np.isfinite(total["clipped"][j])
    radius = clipped.meta["aperture_radii_pix"][-1]
    assert 1 - 1.01 / (np.pi * radius**2) < clipped["aper_coverage"][j] < 1  # one pixel of the aperture lost
    # the lost pixel held a bright part of the core: the clipped flux is a lower limit
    assert total["clipped"][j] < total["file"][k]
    full = np.asarray(clipped["aper_coverage"]) == 1
    assert full.sum() >= 10
    finite = full & np.isfinite(total["plain"])
    np.testing.assert_allclose(total["clipped"][finite], total["plain"][finite], rtol=1e-10)
    # the sources plain leaves NaN at the footprint's edge are clipped and flagged too
    edge = ~np.isfinite(total["plain"]) & (np.arange(len(plain)) != j)
    assert np.isfinite(total["clipped"][edge]).all() and (np.asarray(clipped["aper_coverage"])[edge] < 1).all()


def test_on_arc_prefilter_gives_the_exact_ufuncs_booleans():
    """skymatch's ``_intersects_point`` answers as spherical_geometry's quad-double ufunc for points
    on, near (1e-14 .. 1e-3 rad off the great circle), beyond and far from arcs of 1 mas to 1 rad,
    and its polygon intersections are the same vertices."""
    from spherical_geometry import great_circle_arc as gca
    from spherical_geometry import math_util
    from spherical_geometry.polygon import SphericalPolygon

    from webbflow.steps import skymatch

    exact = math_util.intersects_point
    rng = np.random.default_rng(7)
    on_arc = 0
    for _ in range(300):
        length = 10 ** rng.uniform(-8.3, 0)
        a = rng.normal(size=3)
        a /= np.linalg.norm(a)
        t = rng.normal(size=3)
        t -= t.dot(a) * a
        t /= np.linalg.norm(t)
        b = np.cos(length) * a + np.sin(length) * t
        n = np.cross(a, b) / np.linalg.norm(np.cross(a, b))
        f = rng.uniform(-0.5, 1.5, 40)
        off = np.where(rng.uniform(size=40) < 0.3, 0.0, 10 ** rng.uniform(-14, -3, 40)) * rng.choice([-1, 1], 40)
        points = np.cos(f * length)[:, None] * a + np.sin(f * length)[:, None] * t + off[:, None] * n
        points = np.vstack([points, a, b, rng.normal(size=(5, 3))]) * rng.uniform(0.5, 2.0)
        want = exact(a, b, points)
        np.testing.assert_array_equal(skymatch._intersects_point(a, b, points, exact), want)
        on_arc += int(want.sum())
    assert on_arc > 2000  # the borderline cases were there to get wrong

    def square(ra, dec, half):
        return SphericalPolygon.from_radec(ra + half * np.array([-1, 1, 1, -1, -1]) / np.cos(np.radians(dec)),
                                           dec + half * np.array([-1, -1, 1, 1, -1]))

    saved = gca.intersects_point
    one, two = square(10.0, 20.0, 0.001), square(10.0008, 20.0005, 0.001)
    plain = list(one.intersection(two).to_radec())
    with skymatch._fast_on_arc():
        assert gca.intersects_point is not saved
        fast = list(one.intersection(two).to_radec())
    assert gca.intersects_point is saved
    assert len(fast) == len(plain) == 1

    def vertices(piece):  # spherical_geometry starts the ring at a vertex that varies from call to call
        return sorted(zip(piece[0][:-1].tolist(), piece[1][:-1].tolist()))

    assert len(vertices(plain[0])) == 4 and vertices(fast[0]) == vertices(plain[0])


def test_wcsinfo_values_assigned_at_once_are_those_assigned_one_by_one():
    """io.image3's one validation of wcsinfo stores what validating each keyword would: all of a
    valid set, and without the refused value (the node put back first) when one is invalid."""
    import warnings

    from webbflow.io import image3 as io3

    def one_by_one(items):
        model = datamodels.ImageModel(np.zeros((4, 4), np.float32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k, v in items:
                setattr(model.meta.wcsinfo, k, v)
        return model.meta.wcsinfo.instance

    good = [("crpix1", 80.5), ("crval2", -27.5), ("ctype1", "RA---TAN-SIP"), ("a_order", 3), ("a_2_0", 1.5e-6)]
    bad = good[:2] + [("crval1", "not a number")] + good[2:]
    for items, stored in ((good, True), (bad, False)):
        model = datamodels.ImageModel(np.zeros((4, 4), np.float32))
        model.meta.wcsinfo.v3yangle = 0.5
        assert io3._assign_all_valid(model, model.meta.wcsinfo, items) is stored
        if not stored:
            assert model.meta.wcsinfo.instance == {"v3yangle": 0.5}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for k, v in items:
                    setattr(model.meta.wcsinfo, k, v)
        want = {"v3yangle": 0.5, **one_by_one(items)}
        assert list(model.meta.wcsinfo.instance.items()) == list(want.items())
        assert all(k in want for k, _ in items) is stored  # the refused value is the one left out


def test_template_metadata_checked_at_once_is_what_a_validated_update_copies():
    """io.image3's i2d/segm model: the template's primary metadata checked once as a whole keeps
    every value of a valid template as a validated update does, and takes the validated path (the
    invalid value warned of and left out) when one is invalid."""
    import warnings

    from webbflow.io import image3 as io3

    def template(bad):
        model = datamodels.ImageModel(np.zeros((4, 4), np.float32))
        model.meta.exposure.exposure_time = 10.5
        model.meta.instrument.name = "NIRCAM"
        model.meta.instrument.filter = "F200W"
        model.meta.observation.program_number = "01234"
        if bad:  # as an unchecked open of a file holding it would leave it
            model._instance["meta"]["instrument"]["filter"] = 200
        return model

    data = np.ones((3, 3), np.float32)
    for bad in (False, True):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            want = datamodels.ImageModel(data)
            want.update(template(bad), only="PRIMARY")
        got_warnings = len(seen)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            got = io3._model_from_template(datamodels.ImageModel, data, template(bad))
        assert (len(seen) > 0) is bad and (got_warnings > 0) is bad
        for m in (want, got):
            del m._instance["meta"]["date"]  # the time each was made
        assert got._instance["meta"] == want._instance["meta"]
        assert ("filter" in got._instance["meta"]["instrument"]) is not bad
        assert got._instance["meta"]["exposure"]["exposure_time"] == 10.5
        assert got._validate_on_assignment is False  # its later values are io.image3's own


def test_on_arc_end_points_answer_as_the_exact_ufunc():
    """An arc's own end points (given bit for bit, as spherical_geometry's graph passes its nodes)
    are answered without the quad-double ufunc, and as it answers: on the arc, for arcs of any
    length, tiny, near-antipodal and null ones included."""
    from spherical_geometry import math_util

    from webbflow.steps import skymatch

    exact = math_util.intersects_point
    rng = np.random.default_rng(11)
    calls = []

    def counted(a, b, c):
        calls.append(len(c))
        return exact(a, b, c)

    for i in range(2000):
        a, b = rng.normal(size=3), rng.normal(size=3)
        if i % 4 == 1:
            b = a + rng.normal(size=3) * 10 ** rng.uniform(-12, -6)
        elif i % 4 == 2:
            b = -a + rng.normal(size=3) * 1e-6
        elif i % 50 == 0:
            b = a.copy()
        points = np.vstack([a, b, rng.normal(size=(2, 3)), b, a])
        got = skymatch._intersects_point(a, b, points, counted)
        np.testing.assert_array_equal(got, exact(a, b, points))
        assert got[[0, 1, 4, 5]].all()
    assert sum(calls) < 2000  # the end points did not go to the ufunc
