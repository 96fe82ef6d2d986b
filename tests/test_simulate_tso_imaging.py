"""The imaging time-series simulator (presets ``demo-tso-imaging``, ``tso-imaging-lw``; issue #14 part 1).

* the segments are real uncal files (Level1bModel, NRC_TSIMAGE, SUB64P on NRCA3 with its SIAF corner)
  with consistent EXSEGNUM/INTSTART/INTEND/INT_TIMES, and jwst's detector1 reduces one (oracle, parity);
* the stage-1 and image2 references open as the models jwst reads and crds selects every one of them
  for NRC_TSIMAGE from the demo's local cache;
* noise-free, the PSF sum of the ramps is the truth flux × the truth light curve (1e-4), the
  flux-weighted centroid of the rate is the truth position (0.005 px), and the 0.1 px step is there.

Default-run tests simulate a shortened exposure (3 segments × 4 integrations) and one noise-free
segment per preset; the full preset and the oracle run under ``-m slow`` / ``-m parity``.
"""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable

from webbflow.simulate import run_specs, simulate_exposure, tso_image_specs
from webbflow.simulate.headers import exposure_timing
from webbflow.simulate.tso_image import TsoPsf, psf_images, star_rate_cube, tso_image_truth
from webbflow.transit import relative_flux

from tso_segments import check_segment_files, star_only


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory):
    """The demo-tso-imaging geometry with 4 integrations per segment."""
    out = tmp_path_factory.mktemp("tsoimg")
    specs = tso_image_specs(ints_per_segment=4)
    return out, specs, run_specs(specs, out)


# -- segments ---------------------------------------------------------------------------------------

def test_segments_open_as_level1b_with_the_tsimage_keywords(short_demo):
    from stdatamodels.jwst import datamodels

    out, specs, paths = short_demo
    assert [p.name for p in paths] == [f"jw01366003001_03101_00001-seg00{k}_nrca3_uncal.fits" for k in (1, 2, 3)]
    for path in paths:
        with datamodels.open(path) as m:
            assert type(m).__name__ == "Level1bModel"
            assert m.data.shape == (4, 8, 64, 64)
            e, inst, sub = m.meta.exposure, m.meta.instrument, m.meta.subarray
            assert (e.type, e.readpatt, e.noutputs, e.nints, e.ngroups) == ("NRC_TSIMAGE", "RAPID", 1, 12, 8)
            assert (inst.detector, inst.channel, inst.module, inst.filter, inst.pupil) == \
                ("NRCA3", "SHORT", "A", "F210M", "WLP8")
            # NRCA3_SUB64P (SIAF): the left four columns are the detector's reference columns
            assert (sub.name, sub.xstart, sub.ystart, sub.xsize, sub.ysize) == ("SUB64P", 1, 101, 64, 64)
            assert (sub.fastaxis, sub.slowaxis) == (-1, 2)
            assert m.meta.visit.tsovisit is True
            assert (m.meta.wcsinfo.siaf_xref_sci, m.meta.wcsinfo.siaf_yref_sci) == (35.0, 32.5)
            assert (m.meta.wcsinfo.crpix1, m.meta.wcsinfo.crpix2) == (35.0, 32.5)
            assert e.integration_time > 0 and e.frame_time == pytest.approx(0.05016)
    check_segment_files(paths, 4, exposure_timing(specs[0])["t_int"])


def test_references_open_as_jwst_models_for_tsimage(short_demo):
    from stdatamodels.jwst import datamodels

    out, _, _ = short_demo
    refs = out / "refs"
    expect = {
        "webbflow_nrca3_flat_f210m_wlp8_sub64p.fits": "FlatModel",
        "webbflow_nrca3_photom.fits": "NrcImgPhotomModel",
        "webbflow_nrca3_distortion.asdf": "DistortionModel",
        "webbflow_nrca3_area_full.fits": "PixelAreaModel",
        "webbflow_nrca3_dark_sub64p.fits": "DarkModel",
        "webbflow_nrca3_mask_sub64p.fits": "MaskModel",
    }
    for name, model_name in expect.items():
        with datamodels.open(refs / name) as m:
            assert type(m).__name__ == model_name, name
            if model_name in ("FlatModel", "DarkModel", "PixelAreaModel", "DistortionModel"):
                assert m.meta.exposure.type == "NRC_TSIMAGE", name
            if model_name == "FlatModel":
                assert m.meta.instrument.pupil == "WLP8" and m.data.shape == (64, 64)
            if model_name == "NrcImgPhotomModel":
                rows = {(r["filter"], r["pupil"]): r["photmjsr"] for r in m.phot_table}
                # jwst's photom matches FILTER and PUPIL: the weak lens needs its own row
                assert rows[("F210M", "WLP8")] > rows[("F210M", "CLEAR")] > 0
            if model_name == "MaskModel":
                ref_cols = (m.dq & 2 ** 31) > 0  # REFERENCE_PIXEL
                assert ref_cols[:, :4].all() and not ref_cols[:, 4:].any()


def test_crds_cache_selects_every_stage1_and_image2_reference(short_demo, tmp_path, crds_env):
    from webbflow.refs import crds_select
    from webbflow.refs.crds_cache import build_cache

    out, _, paths = short_demo
    context = build_cache(out / "refs", tmp_path / "crds_cache", context="jwst_9000.pmap")
    setup = crds_select.CrdsSetup(tmp_path / "crds_cache", context)
    crds_select.configure(setup)
    params = crds_select.crds_parameters(fits.getheader(paths[1]))
    want = {f"{t}": f"webbflow_nrca3_{t}_sub64p.fits"
            for t in ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")}
    want.update({"distortion": "webbflow_nrca3_distortion.asdf", "filteroffset": None,
                 "flat": "webbflow_nrca3_flat_f210m_wlp8_sub64p.fits", "photom": "webbflow_nrca3_photom.fits",
                 "area": "webbflow_nrca3_area_full.fits"})
    assert crds_select.best_references(params, list(want), setup, context, fetch=True) == want


# -- truth tables -----------------------------------------------------------------------------------

def test_truth_tables_describe_the_injected_transit_and_pointing(short_demo):
    out, specs, paths = short_demo
    truth = out / "truth"
    transit = QTable.read(truth / "transit.ecsv")
    centroid = QTable.read(truth / "centroid.ecsv")
    star = QTable.read(truth / "star.ecsv")
    scene = specs[0].tso
    mids = np.concatenate([fits.getdata(p, "INT_TIMES")["int_mid_MJD_UTC"] for p in paths])
    np.testing.assert_array_equal(transit["int_mid_MJD_UTC"].to_value("d"), mids)
    np.testing.assert_allclose(transit["white_flux"], relative_flux(mids, [2.093], scene.transit)[:, 0], rtol=1e-12)
    assert transit.meta["white_depth"] == pytest.approx(0.01) and transit.meta["rp_ref"] == 0.10
    assert list(centroid["integration"]) == list(range(1, 13)) and list(centroid["segment"]) == [1] * 4 + [2] * 4 + [3] * 4
    # the star sits where TA put it (XREF_SCI - 1) plus drift and jitter, and from integration 11
    # (85 % of the exposure) on the step
    assert centroid.meta["step_integration"] == 11 and list(np.flatnonzero(centroid["step"])) == [10]
    after = np.asarray(centroid["after_step"])
    assert list(np.flatnonzero(after)) == [10, 11]
    t = (np.asarray(centroid["integration"]) - 0.5) * exposure_timing(specs[0])["t_int"]
    jitter_x = centroid["dx"].value - 0.08 * after - scene.drift_rate[0] * t
    jitter_y = centroid["dy"].value + 0.06 * after - scene.drift_rate[1] * t
    for jitter in (jitter_x, jitter_y):  # 0.01 px rms, independent axes
        assert 0.004 < np.std(jitter) < 0.02 and np.abs(jitter).max() < 0.05
    assert abs(np.corrcoef(jitter_x, jitter_y)[0, 1]) < 0.8
    np.testing.assert_allclose(centroid["x"].value - centroid["dx"].value, 34.0, atol=1e-12)
    np.testing.assert_allclose(centroid["y"].value - centroid["dy"].value, 31.5, atol=1e-12)
    assert np.all(centroid["psf_fraction"] > 1 - 1e-6)  # the whole donut is on the light-sensitive pixels
    assert star["total_rate"][0].value == scene.total_rate and star["psf_model"][0] == "annulus*gaussian"
    assert (star["r_inner"][0].value, star["r_outer"][0].value, star["sigma"][0].value) == (8.0, 20.0, 1.5)


def test_full_exposure_truth_has_baseline_transit_and_one_step():
    specs = tso_image_specs()
    truth = tso_image_truth(specs)
    transit, centroid = truth["transit"], truth["centroid"]
    white = np.asarray(transit["white_flux"])
    assert len(white) == 90 and (white[:20] == 1).all() and (white[-15:] == 1).all()
    assert white.min() < 1 - 0.9 * transit.meta["white_depth"]
    (k,) = np.flatnonzero(centroid["step"])
    assert centroid["integration"][k] == centroid.meta["step_integration"] and white[k:].min() == 1.0
    jump = np.hypot(np.diff(centroid["x"].value), np.diff(centroid["y"].value))
    # the step (0.1 px) stands far above the jitter of neighbouring integrations (0.014 px rms)
    assert np.argmax(jump) == k - 1 and 0.06 < jump[k - 1] < 0.14
    assert np.median(np.delete(jump, k - 1)) < 0.03


# -- the PSF model ------------------------------------------------------------------------------------

@pytest.mark.parametrize("psf", [TsoPsf(20.0, 8.0, 1.5), TsoPsf(sigma=1.0)])
def test_psf_integrates_to_one_and_is_centred(psf):
    x, y = np.array([30.3, 31.77]), np.array([29.1, 33.46])
    img = psf_images(psf, (64, 64), x, y)
    np.testing.assert_allclose(img.sum(axis=(1, 2)), 1.0, rtol=0, atol=1e-9)
    yy, xx = np.mgrid[:64, :64]
    np.testing.assert_allclose((img * xx).sum(axis=(1, 2)), x, atol=1e-4)
    np.testing.assert_allclose((img * yy).sum(axis=(1, 2)), y, atol=1e-4)
    if psf.r_outer:
        # a donut: the centre is darker than the ring (the defocused pupil's central obscuration)
        r = np.hypot(xx - x[0], yy - y[0])
        assert img[0][r < 4].mean() < 0.2 * img[0][(r > 12) & (r < 16)].mean()


# -- noise-free: the rate and the ramps follow the truth ------------------------------------------------

@pytest.fixture(scope="module", params=["SW", "LW"])
def noiseless_segment(request, tmp_path_factory):
    """The last segment of each preset (egress and the step), noise-free and linear, no bad pixels."""
    # 16 groups (the presets have 8): the uint16 rounding of the ramps (~0.3 DN/s per pixel in the
    # fitted slope, frozen per pixel) stays ~2e-5 of the PSF sum
    if request.param == "SW":
        specs = tso_image_specs(ngroups=16)
    else:
        specs = tso_image_specs(n_segments=2, ints_per_segment=15, ngroups=16, channel="LW")
    spec = replace(specs[-1].noiseless(), nonlinearity=False, bad_pixel_fraction=0.0)
    out = tmp_path_factory.mktemp(f"tsoimg_noiseless_{request.param}")
    sim = simulate_exposure(spec, out, return_details=True)
    truth = tso_image_truth(specs)
    first = spec.first_int
    return spec, sim, truth["transit"][first:first + spec.nints], truth["centroid"][first:first + spec.nints]


def test_noiseless_ramps_hold_the_truth_flux_and_light_curve(noiseless_segment):
    spec, sim, transit, centroid = noiseless_segment
    total = spec.tso.total_rate
    with fits.open(sim.uncal) as hdul:
        sci = hdul["SCI"].data.astype(np.float64)
    dark = sim.model.dark_frames(spec.ngroups).astype(np.float64)
    # RAPID: group g is frame g = bias + dark_g + rate x (g + 1) tframe (+ rounding): a straight-line fit
    t = (np.arange(spec.ngroups) + 1.0) * sim.model.tframe
    w = (t - t.mean()) / ((t - t.mean()) ** 2).sum()
    slope = np.einsum("g,igyx->iyx", w, sci - dark[None])
    # summed over the PSF (where the truth image has > 1e-8 of its peak): the truth flux x light curve
    psf = psf_images(spec.tso.psf, spec.geometry.shape, centroid["x"].value, centroid["y"].value)
    on = (psf > 1e-8 * psf.max(axis=(1, 2), keepdims=True)) & (sim.model.qe > 0)[None]
    star = (star_only(spec, sim, slope) * on).sum(axis=(1, 2))
    expect = total * np.asarray(transit["white_flux"]) * (psf * on).sum(axis=(1, 2))
    np.testing.assert_allclose(star, expect, rtol=1e-4, atol=0)
    assert np.all((psf * on).sum(axis=(1, 2)) > 1 - 1e-6)  # the mask holds the whole PSF
    white = np.asarray(transit["white_flux"])
    assert white.min() < 0.999 and white.max() == 1.0  # the segment holds part of the transit and baseline
    # the star alone (no response, no sky) is the truth to rounding
    np.testing.assert_allclose(star_rate_cube(spec).sum(axis=(1, 2)), total * white, rtol=1e-9)


def test_noiseless_centroid_is_the_truth_track_with_the_step(noiseless_segment):
    spec, sim, _, centroid = noiseless_segment
    star = star_only(spec, sim, sim.rate.astype(np.float64))
    yy, xx = np.mgrid[: star.shape[1], : star.shape[2]]
    norm = star.sum(axis=(1, 2))
    x = (star * xx).sum(axis=(1, 2)) / norm
    y = (star * yy).sum(axis=(1, 2)) / norm
    np.testing.assert_allclose(x, centroid["x"].value, rtol=0, atol=0.005)
    np.testing.assert_allclose(y, centroid["y"].value, rtol=0, atol=0.005)
    # the step: the largest move between integrations, where the truth puts it, of (0.08, -0.06) px
    (k,) = np.flatnonzero(centroid["step"])
    move = np.hypot(np.diff(x), np.diff(y))
    assert np.argmax(move) == k - 1
    assert abs(x[k] - x[k - 1] - 0.08) < 0.04 and abs(y[k] - y[k - 1] + 0.06) < 0.04


# -- jwst reduces a segment (oracle) -----------------------------------------------------------------

def _references(refs):
    return {t: refs / f"webbflow_nrca3_{t}_sub64p.fits"
            for t in ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")}


@pytest.mark.parity
def test_jwst_detector1_image2_tso3_reduce_a_segment(short_demo, tmp_path):
    from stdatamodels.jwst import datamodels

    from webbflow.oracle import OracleUnavailable, oracle_paths, run_detector1, run_tso3

    out, specs, paths = short_demo
    try:
        products, _ = run_detector1(paths[1], _references(out / "refs"), tmp_path / "d1")
    except OracleUnavailable as exc:
        pytest.skip(str(exc))
    with datamodels.open(products["rateints"]) as m:
        m.validate()
        assert type(m).__name__ == "CubeModel" and m.data.shape == (4, 64, 64)
        assert m.meta.exposure.type == "NRC_TSIMAGE" and m.meta.cal_step.ramp_fit == "COMPLETE"
        assert m.meta.cal_step.refpix == "COMPLETE" and m.meta.cal_step.dark_sub == "COMPLETE"
        assert list(m.int_times["integration_number"]) == [5, 6, 7, 8]
        assert (m.meta.exposure.integration_start, m.meta.exposure.integration_end) == (5, 8)
        # the star's DN/s: the truth total within the noise (CRs, 1/f, flat response ±3 %)
        total = specs[1].tso.total_rate
        star = np.nansum(np.where(np.isfinite(m.data), m.data, 0.0)[:, :, 4:], axis=(1, 2)) \
            - specs[1].sky * 60 * 64
        assert np.all(np.abs(star / total - 1) < 0.05)
    # image2 (assign_wcs, flat_field, photom with the WLP8 row) and tso3 take it as it is
    python, script = oracle_paths()
    refs = out / "refs"
    subprocess.run([str(python), str(script), "image2", str(products["rateints"]), str(tmp_path / "i2"),
                    f"--override=assign_wcs.distortion={refs / 'webbflow_nrca3_distortion.asdf'}",
                    f"--override=flat_field.flat={refs / 'webbflow_nrca3_flat_f210m_wlp8_sub64p.fits'}",
                    f"--override=photom.photom={refs / 'webbflow_nrca3_photom.fits'}",
                    f"--override=photom.area={refs / 'webbflow_nrca3_area_full.fits'}"],
                   check=True, capture_output=True, timeout=600, cwd=tmp_path)
    (calints,) = (tmp_path / "i2").glob("*_calints.fits")
    with datamodels.open(calints) as m:
        assert type(m).__name__ == "CubeModel" and m.meta.cal_step.photom == "COMPLETE"
        assert m.meta.photometry.conversion_megajanskys == pytest.approx(1.30 / 0.90, rel=1e-6)
    asn = tmp_path / "asn.json"
    asn.write_text(json.dumps({"asn_type": "tso3", "asn_rule": "candidate_Asn_Lv3TSO", "asn_id": "o003",
                               "asn_pool": "none", "program": "01366", "target": "t001", "products": [
                                   {"name": "jw01366-o003_t001_nircam_f210m-wlp8-sub64p",
                                    "members": [{"expname": str(calints), "exptype": "science"}]}]}))
    tso3, _ = run_tso3(asn, {"gain": refs / "webbflow_nrca3_gain_sub64p.fits"}, tmp_path / "t3")
    phot = QTable.read(tso3["phot"])
    np.testing.assert_allclose(phot["MJD"], fits.getdata(paths[1], "INT_TIMES")["int_mid_MJD_UTC"], rtol=0, atol=1e-9)
    # SUB64P + WLP8: the whole subarray is the aperture, no background annulus
    assert np.all(np.isnan(phot["annulus_sum"])) and np.all(phot["net_aperture_sum"].value > 0)


# -- the full presets --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("preset,shape,nseg", [("demo-tso-imaging", (30, 8, 64, 64), 3),
                                               ("tso-imaging-lw", (15, 8, 64, 64), 2)])
def test_presets_run_from_the_command_line(tmp_path, preset, shape, nseg):
    proc = subprocess.run([sys.executable, "-c", "import sys; from webbflow.cli import main; sys.exit(main())",
                           "simulate", "--preset", preset, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths = sorted((tmp_path / "uncal").glob("*_uncal.fits"))
    assert len(paths) == nseg
    for k, path in enumerate(paths):
        with fits.open(path) as hdul:
            assert hdul["SCI"].data.shape == shape
            assert (hdul[0].header["EXSEGNUM"], hdul[0].header["INTSTART"]) == (k + 1, k * shape[0] + 1)
    transit = QTable.read(tmp_path / "truth" / "transit.ecsv")
    centroid = QTable.read(tmp_path / "truth" / "centroid.ecsv")
    assert len(transit) == len(centroid) == nseg * shape[0] and centroid["step"].sum() == 1
    assert (tmp_path / "truth" / "star.ecsv").exists()


@pytest.mark.slow
def test_demo_job_writes_the_crds_cache(tmp_path):
    from webbflow.demo import write_demo

    record = write_demo(tmp_path / "demo", "demo-tso-imaging", None, tmp_path / "manifest.json")
    assert record["crds_context"] == "jwst_9000.pmap" and len(record["uncal"]) == 3
    cached = {p.name for p in (tmp_path / "demo" / "crds_cache" / "references" / "jwst" / "nircam").iterdir()}
    assert {"webbflow_nrca3_flat_f210m_wlp8_sub64p.fits", "webbflow_nrca3_photom.fits",
            "webbflow_nrca3_dark_sub64p.fits"} <= cached


def test_run_preset_refuses_two_time_series(tmp_path):
    from webbflow.simulate import tso_grism_specs

    specs = tso_image_specs(n_segments=1, ints_per_segment=1) + tso_grism_specs(n_segments=1, ints_per_segment=1)
    with pytest.raises(ValueError, match="one time series"):
        run_specs(specs, tmp_path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
