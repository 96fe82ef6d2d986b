"""The simulated sky: catalogue, placement through the WCS, stage-2 references, demo star counts."""

from dataclasses import replace

import numpy as np
import pytest

from webbflow.simulate import ExposureSpec, optics, preset_specs
from webbflow.simulate.exposure import pointing_truth
from webbflow.simulate.headers import exposure_timing, pointing_keywords
from webbflow.simulate.sky import catalog_for, flux_column, make_catalog, place_sources, source_rates
from webbflow.simulate.stage2_refs import write_stage2_references

SPEC = ExposureSpec(detector="NRCA1", subarray="SUB160", scene="sky", filter="F200W")


def test_catalog_is_deterministic_with_power_law_fluxes():
    a = make_catalog(53.16, -27.79, seed=3)
    b = make_catalog(53.16, -27.79, seed=3)
    assert len(a) == len(b) > 100 and np.array_equal(a["ra"], b["ra"])
    assert set(a["type"]) == {"star", "galaxy"}
    ratio = a[flux_column("F444W")] / a[flux_column("F200W")]
    np.testing.assert_allclose(ratio, (4.421 / 1.989) ** a["alpha"], rtol=1e-12)
    assert str(a[flux_column("F200W")].unit) == "Jy"


def test_rates_follow_photom_and_pixel_area():
    cat = catalog_for(SPEC)
    rate = source_rates(cat, SPEC)
    expect = cat["flux_f200w"] / (0.40 * optics.pixar_sr("NRCA1") * 1e6)
    np.testing.assert_allclose(rate, expect, rtol=1e-12)
    # PIXAR_SR is the solid angle of the reference pixel: about 0.0311 x 0.0313 arcsec
    assert optics.pixar_a2("NRCA1") == pytest.approx(0.03113 * 0.03132, rel=1e-3)


def test_distortion_inverse_and_area_map():
    g = SPEC.geometry
    x, y = np.array([0.0, 80.3, 159.0]), np.array([0.0, 12.7, 159.0])
    v2, v3 = optics.pixel_to_v23("NRCA1", g, x, y)
    xi, yi = optics.v23_to_pixel("NRCA1", g, v2, v3)
    np.testing.assert_allclose([xi, yi], [x, y], atol=1e-8)
    area = optics.pixel_area_map("NRCA1")
    assert area[1023, 1023] == pytest.approx(1.0, abs=1e-4)
    assert 1.002 < area.max() < 1.1 and 0.95 < area.min() <= 1.0  # a few % of distortion


def test_header_pointing_is_commanded_and_truth_is_offset():
    spec = replace(SPEC, pointing_error=(0.15, -0.05))
    keys = pointing_keywords(spec)
    row = pointing_truth(spec)
    assert keys["RA_REF"] == pytest.approx(row["ra_ref"]) and keys["DEC_REF"] == pytest.approx(row["dec_ref"])
    cosd = np.cos(np.radians(row["dec_ref"]))
    moved = np.hypot((row["ra_ref_true"] - row["ra_ref"]) * cosd, row["dec_ref_true"] - row["dec_ref"]) * 3600
    assert moved == pytest.approx(np.hypot(0.15, -0.05), abs=1e-4)
    # the sources move on the detector by that error / pixel scale
    cat = catalog_for(spec)
    x0, y0 = place_sources(cat, replace(spec, pointing_error=(0.0, 0.0)))
    x1, y1 = place_sources(cat, spec)
    assert np.median(np.hypot(x1 - x0, y1 - y0)) == pytest.approx(np.hypot(0.15, 0.05) / 0.0312, rel=0.02)


def test_roll_error_rotates_the_sources_about_the_pointing_reference():
    spec = replace(SPEC, roll_error=0.03, field_half_size=12.0)
    cat = catalog_for(spec)
    v2v3 = {}
    for roll in (0.0, 0.03):
        s = replace(spec, roll_error=roll)
        x, y = place_sources(cat, s)
        v2v3[roll] = np.array(optics.pixel_to_v23(s.detector, s.geometry, x, y)) - np.array(optics.POINTING_V2V3["A"])[:, None]
    # each star's V2/V3 position turns by the roll error about the module's pointing reference
    angle = np.degrees(np.arctan2(v2v3[0.03][1], v2v3[0.03][0]) - np.arctan2(v2v3[0.0][1], v2v3[0.0][0]))
    radius = np.hypot(*v2v3[0.0])
    far = radius > 5.0
    assert far.sum() > 100
    np.testing.assert_allclose(np.abs(angle[far]), 0.03, rtol=1e-3)
    np.testing.assert_allclose(np.hypot(*v2v3[0.03])[far], radius[far], atol=1e-6)
    assert pointing_truth(spec)["droll_deg"] == 0.03


def test_stage2_references_open_as_crds_models(tmp_path):
    from stdatamodels.jwst import datamodels

    paths = write_stage2_references(tmp_path, "NRCA1", SPEC.geometry, "F200W", "CLEAR", 7)
    with datamodels.FlatModel(str(paths["flat"])) as m:
        assert m.data.shape == (160, 160) and m.meta.instrument.filter == "F200W"
        assert m.meta.reftype == "FLAT" and m.meta.subarray.xstart == 1889
        # the 4-pixel reference border on the detector's edges (this SUB160 is the corner at x, y >= 1889:
        # its last 4 rows and columns) is NaN (NO_FLAT_FIELD), as are the 5 dead pixels inside
        border = np.zeros(m.data.shape, bool)
        border[-4:, :] = border[:, -4:] = True
        assert np.isnan(m.data[border]).all() and np.isnan(m.data[~border]).sum() == 5
        assert 0.9 < np.nanmedian(m.data) < 1.1
    with datamodels.NrcImgPhotomModel(str(paths["photom"])) as m:
        row = m.phot_table[list(m.phot_table["filter"]).index("F200W")]
        assert row["photmjsr"] == pytest.approx(0.40)
        assert m.meta.photometry.pixelarea_steradians == pytest.approx(optics.pixar_sr("NRCA1"))
    with datamodels.PixelAreaModel(str(paths["area"])) as m:
        assert m.data.shape == (2048, 2048)
    with datamodels.DistortionModel(str(paths["distortion"])) as m:
        assert m.meta.instrument.detector == "NRCA1" and str(m.meta.output_units) == "arcsec"
        np.testing.assert_allclose(m.model(100.0, 200.0), optics.distortion_model("NRCA1")(100.0, 200.0))


def test_demo_gives_enough_bright_isolated_stars():
    """Every demo exposure: >= 8 isolated stars with S/N > 100 (photon + sky + read noise)."""
    for spec in preset_specs("demo-imaging"):
        assert spec.scene == "sky" and 0.05 <= np.hypot(*spec.pointing_error) <= 0.2
        cat = catalog_for(spec)
        x, y = place_sources(cat, spec)
        rate = source_rates(cat, spec)
        ny, nx = spec.geometry.shape
        gain = 2.0
        t = exposure_timing(spec)["effexptm"]
        npix = 30
        snr = rate * gain * t / np.sqrt(rate * gain * t + npix * (spec.sky * gain * t + 16.0**2))
        inside = (x > 8) & (x < nx - 9) & (y > 8) & (y < ny - 9) & (cat["type"] == "star")
        d = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
        np.fill_diagonal(d, np.inf)
        isolated = d.min(axis=1) > 6
        good = inside & isolated & (snr > 100) & (rate < 2e4)
        assert good.sum() >= 8, (spec.rootname, good.sum())


def test_apcorr_reference_follows_the_drizzled_point_source(tmp_path):
    """The simulator's APCORR reference (jwst's NrcImgApcorrModel) lists, per filter, the radius enclosing
    each EE fraction of its point source as an i2d shows it.  For a wide Gaussian the curve is analytic:
    the detector pixel, the drizzle kernel (pixfrac 1) and the piecewise-constant output pixels each
    add a box of 1 pixel, so sigma^2 grows by 3/12 and r(F) = sigma_eff * sqrt(-2 ln(1 - F))."""
    from stdatamodels.jwst import datamodels

    from webbflow.simulate.apcorr import EEFRACTIONS, i2d_encircled_energy
    from webbflow.simulate.stage2_refs import write_demo_apcorr
    from webbflow.steps.source_catalog import read_apcorr

    sigma = 3.0
    radii, ee = i2d_encircled_energy(sigma)
    sigma_eff = np.sqrt(sigma**2 + 3 / 12)
    for frac in (0.3, 0.5, 0.7):
        expected = sigma_eff * np.sqrt(-2 * np.log(1 - frac))
        assert np.interp(frac, ee, radii) == pytest.approx(expected, rel=0.005)
    # without the three pixel boxes the radii would be 1.4 % smaller: the test can tell
    assert sigma_eff / sigma - 1 > 0.013

    path = write_demo_apcorr(tmp_path)
    with datamodels.NrcImgApcorrModel(str(path)) as model:
        filters = set(np.char.strip(np.asarray(model.apcorr_table["filter"]).astype(str)))
    assert filters == set(optics.FILTERS)
    sw, lw = read_apcorr(path, "F200W", "CLEAR"), read_apcorr(path, "F444W", "CLEAR")
    assert list(np.round(sw["eefraction"], 2)) == list(EEFRACTIONS)
    np.testing.assert_allclose(sw["apcorr"], 1 / np.asarray(EEFRACTIONS), rtol=1e-6)
    assert np.all(np.diff(sw["radius"]) > 0) and np.all(lw["radius"] > sw["radius"])  # LW PSF is wider in pixels
    assert np.all(sw["skyin"] > sw["radius"].max()) and np.all(sw["skyout"] > sw["skyin"])
