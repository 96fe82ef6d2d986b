"""Tests of webbflow.simulate: formats, truth consistency, determinism, presets."""

import time
import warnings
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from webbflow import dqflags
from webbflow.simulate import (ExposureSpec, Star, delinearize, detector_model_for, frame_time,
                               linearize, preset_specs, run_preset, simulate_exposure,
                               subarray_geometry)
from webbflow.simulate.noise import OneOverF, pink_noise

dm = pytest.importorskip("stdatamodels.jwst.datamodels")

SMALL = ExposureSpec(subarray="SUB64", size=64, readpatt="RAPID", nints=2, ngroups=6,
                     n_stars=4, n_galaxies=1, seed=11)


def _open_strict(path):
    """Open with stdatamodels, failing on any warning (e.g. a dropped enum value)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return dm.open(path)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    t0 = time.perf_counter()
    paths = run_preset("demo-imaging", out)
    return out, paths, time.perf_counter() - t0


# ---------------------------------------------------------------- geometry / timing
def test_frame_times_match_jdox():
    assert frame_time(subarray_geometry("NRCA1", "FULL")) == pytest.approx(10.73677, abs=1e-5)
    assert frame_time(subarray_geometry("NRCA1", "SUB160")) == pytest.approx(0.27864, abs=1e-5)
    assert frame_time(subarray_geometry("NRCALONG", "SUB640")) == pytest.approx(4.18584, abs=1e-5)


def test_subarray_reference_pixels():
    sw = subarray_geometry("NRCA1", "SUB160")
    lw = subarray_geometry("NRCALONG", "SUB160")
    assert (sw.xstart, sw.ystart, lw.xstart, lw.ystart) == (1889, 1889, 945, 945)
    ref = sw.reference_pixels()
    # corner subarray: top 4 rows and right 4 columns of the detector
    assert ref[-4:, :].all() and ref[:, -4:].all() and not ref[:-4, :-4].any()
    assert ref.sum() == 160 * 4 * 2 - 16
    assert not lw.reference_pixels().any()


# ---------------------------------------------------------------- physics helpers
def test_delinearize_inverts_linearity():
    model = detector_model_for(SMALL)
    linear = np.linspace(0, 45000, 64 * 64).reshape(64, 64)
    measured = delinearize(linear, model.coeffs)
    assert np.abs(linearize(measured, model.coeffs) - linear).max() < 1e-6
    # sub-linear detector: measured below linear, by ~8 % near 40 kDN
    assert measured[-1, -1] < linear[-1, -1]
    assert 0.05 < 1 - measured[-1, -1] / linear[-1, -1] < 0.12


def test_pink_noise_unit_variance_and_red_spectrum():
    x = pink_noise(2 ** 16, np.random.default_rng(3))
    assert 0.6 < x.std() < 1.4
    p = np.abs(np.fft.rfft(x)) ** 2
    low, high = p[1:50].mean(), p[-5000:].mean()
    assert low / high > 100  # 1/f: far more power at low frequency


def test_one_over_f_correlated_along_fast_axis():
    geom = subarray_geometry("NRCA1", "SUB160")
    noise = OneOverF(geom, "NRCA1", 1, 5.0, np.random.default_rng(0)).frame(0)
    # neighbours along a row (fast read, 10 µs apart) are nearly equal; along a
    # column (1.7 ms apart) much less so
    along_row = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
    along_col = np.corrcoef(noise[:-1, :].ravel(), noise[1:, :].ravel())[0, 1]
    assert along_row > 0.7
    assert along_row > along_col + 0.2


# ---------------------------------------------------------------- formats
def test_uncal_and_references_open_as_models(tmp_path):
    ex = simulate_exposure(SMALL, tmp_path, return_details=True)
    m = _open_strict(ex.uncal)
    assert type(m).__name__ == "Level1bModel"
    assert m.data.dtype == np.uint16 and m.data.shape == (2, 6, 64, 64)
    assert m.zeroframe.shape == (2, 64, 64)
    assert m.meta.subarray.name == "SUB64" and m.meta.subarray.xstart == 1985
    assert m.meta.exposure.readpatt == "RAPID" and m.meta.exposure.ngroups == 6
    assert m.meta.instrument.detector == "NRCA1" and m.meta.instrument.filter == "F200W"
    assert m.meta.exposure.frame_time == pytest.approx(frame_time(SMALL.geometry), abs=1e-5)
    assert len(m.group) == 12 and len(m.int_times) == 2
    m.close()
    r = dm.RampModel(ex.uncal)
    assert r.data.shape == (2, 6, 64, 64) and r.data.dtype == np.float32
    assert r.pixeldq.shape == (64, 64) and r.groupdq.shape == (2, 6, 64, 64)
    assert r.groupdq.dtype == np.uint8 and not r.groupdq.any()
    r.close()
    expected = {"mask": "MaskModel", "saturation": "SaturationModel",
                "superbias": "SuperBiasModel", "linearity": "LinearityModel",
                "dark": "DarkModel", "gain": "GainModel", "readnoise": "ReadnoiseModel"}
    for reftype, path in ex.refs.items():
        ref = _open_strict(path)
        assert type(ref).__name__ == expected[reftype]
        assert ref.meta.reftype == reftype.upper() and ref.meta.instrument.detector == "NRCA1"
        assert ref.meta.subarray.xsize == 64
        ref.close()
    mask = dm.MaskModel(ex.refs["mask"])
    # the SUB64 corner subarray carries the detector's top/right reference border
    assert (mask.dq[-4:, :] & dqflags.REFERENCE_PIXEL).all()
    assert (mask.dq & dqflags.DEAD).any() and (mask.dq & dqflags.HOT).any()
    dark = dm.DarkModel(ex.refs["dark"])
    assert dark.meta.exposure.nframes == 1 and dark.meta.exposure.groupgap == 0
    assert dark.data.shape[0] >= 6


# ---------------------------------------------------------------- truth consistency
def test_noiseless_ramp_is_bias_plus_rate_times_time(tmp_path):
    spec = replace(SMALL, readpatt="SHALLOW4", ngroups=5, nints=1).noiseless()
    ex = simulate_exposure(spec, tmp_path, return_details=True)
    model = ex.model
    sci = fits.getdata(ex.uncal, "SCI").astype(np.float64)
    per, nf, tf = spec.nframes + spec.groupgap, spec.nframes, model.tframe
    dark = model.group_dark(spec.ngroups, nf, spec.groupgap)
    unsat = ex.first_saturated[0] < 0
    for g in range(spec.ngroups):
        linear = linearize(sci[0, g] - model.superbias, model.coeffs) - dark[g]
        t_mid = (g * per + (nf + 1) / 2) * tf  # mean read time of the group's frames
        expect = ex.rate * t_mid
        # rounding to integer DN (+ frame averaging of a non-linear response)
        # (faint pixels: for bright ones the group mean of a curved response differs
        # from the response of the mean, as on the real detector)
        good = unsat & (model.qe > 0) & (ex.rate < 500)
        err = np.abs(linear - expect)[good]
        assert good.sum() > 3000 and err.max() < 0.6, (g, err.max())
    # reference pixels see exactly the bias, no light, no dark
    ref = model.refpix
    assert np.abs(sci[0][:, ref] - np.rint(model.superbias[ref])).max() == 0
    truth = fits.getdata(ex.truth["rate"])
    assert np.array_equal(truth, ex.rate) and truth[ref].max() == 0
    # the dark reference, averaged per group as the dark step does, is what went in
    frames = fits.getdata(ex.refs["dark"], "SCI")
    for g in range(spec.ngroups):
        assert np.array_equal(frames[g * per: g * per + nf].mean(axis=0, dtype=np.float32),
                              dark[g])
    hot = (model.mask & dqflags.HOT) != 0
    assert hot.any() and (model.dark_rate[hot] >= 1.0).all()
    assert np.allclose(frames[per, hot], model.dark_rate[hot] * (per + 1) * tf, rtol=1e-5)


def test_cosmic_rays_in_ecsv_are_the_jumps_in_the_ramp(tmp_path):
    spec = replace(SMALL, cr_rate=0.05, n_stars=0, n_galaxies=0, n_saturating_stars=0,
                   one_over_f=0.0, sky=1.0, nints=2)
    ex = simulate_exposure(spec, tmp_path, return_details=True)
    # the same exposure without cosmic rays (identical other noise: independent streams)
    clean = simulate_exposure(replace(spec, cr_rate=0.0), tmp_path / "clean", return_details=True)
    table = Table.read(ex.truth["cosmic_rays"], format="ascii.ecsv")
    assert len(table) > 50 and set(table["kind"]) == {"cosmic_ray"}
    assert (table["group"] < spec.ngroups).all()
    diff = (fits.getdata(ex.uncal, "SCI").astype(float)
            - fits.getdata(clean.uncal, "SCI").astype(float))
    hit = np.zeros(diff.shape, bool)
    for row in table:
        i, g, y, x = row["integration"], row["group"], row["y"], row["x"]
        before = diff[i, :g, y, x]
        assert np.all(before == 0)
        hit[i, g:, y, x] = True
    # every group changed by a cosmic ray is explained by an ECSV row, and vice versa
    assert np.array_equal(diff != 0, hit & (diff != 0))
    big = table[table["amplitude"] > 50]
    seen = [diff[r["integration"], -1, r["y"], r["x"]] for r in big]
    # a hit in group g carries (most of) its amplitude into the last group
    ratio = np.array(seen) / big["amplitude"]
    assert np.median(ratio) > 0.85
    # many hits far above the ~5.5 DN single-frame noise
    assert (table["amplitude"] > 10 * 7.5).mean() > 0.5


def test_first_saturated_group_matches_threshold(tmp_path):
    spec = replace(SMALL, ngroups=8, nints=1,
                   stars=(Star(30.0, 30.0, 2e6), Star(12.0, 45.0, 5e5)))
    ex = simulate_exposure(spec, tmp_path, return_details=True)
    sci = fits.getdata(ex.uncal, "SCI")
    thresh = ex.model.sat_thresh
    first = fits.getdata(ex.truth["first_saturated"])
    assert first.shape == (1, 64, 64) and first.dtype.kind == "i"
    sat = first[0] >= 0
    assert 5 < sat.sum() < 400
    ys, xs = np.nonzero(sat)
    for y, x in zip(ys, xs):
        g = first[0, y, x]
        assert sci[0, g, y, x] >= thresh[y, x]
        assert (sci[0, :g, y, x] < thresh[y, x]).all()
    assert (sci[0][:, ~sat] < thresh[~sat]).all()
    # the bright star's peak saturates mid-ramp, leaving unsaturated groups to fit
    assert 1 <= first[0, 30, 30] <= 4


def test_same_seed_identical_different_seed_not(tmp_path):
    a = fits.getdata(simulate_exposure(SMALL, tmp_path / "a"), "SCI")
    b = fits.getdata(simulate_exposure(SMALL, tmp_path / "b"), "SCI")
    c = fits.getdata(simulate_exposure(replace(SMALL, seed=12), tmp_path / "c"), "SCI")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_snowball_has_saturated_core_and_halo(tmp_path):
    spec = replace(SMALL, snowballs=1, cr_rate=0.0, ngroups=8, nints=1, n_saturating_stars=0,
                   n_stars=0)
    ex = simulate_exposure(spec, tmp_path, return_details=True)
    table = Table.read(ex.truth["cosmic_rays"], format="ascii.ecsv")
    snow = table[table["kind"] == "snowball"]
    assert len(snow) >= 12
    g = int(snow["group"][0])
    first = ex.first_saturated[0]
    core = first[snow["y"], snow["x"]] >= 0
    assert core.sum() >= 9  # radius >= 2 px disk saturates
    assert (first[snow["y"][core], snow["x"][core]] >= g).all()
    assert (~core).sum() > 0  # a halo below saturation


# ---------------------------------------------------------------- presets
def test_demo_preset_writes_16_exposures(demo):
    out, paths, seconds = demo
    assert len(paths) == 16 and all(p.exists() for p in paths)
    print(f"demo preset simulated in {seconds:.1f} s")  # speed is a benchmark matter, not a test
    combos = set()
    for p in paths:
        h = fits.getheader(p)
        combos.add((h["DETECTOR"], h["FILTER"], h["EXPOSURE"]))
        assert h["SUBARRAY"] == "SUB160" and h["NOUTPUTS"] == 1 and h["NINTS"] == 2
        assert h["EXP_TYPE"] == "NRC_IMAGE" and h["PROGRAM"] == "01234"
        assert h["READPATT"] == "SHALLOW4" and h["NGROUPS"] == 6
        assert (h["SUBSTRT1"], h["SUBSTRT2"]) == ((1889, 1889) if h["DETECTOR"] == "NRCA1"
                                                  else (945, 945))
        assert h["ZEROFRAM"] is True and h["NUMDTHPT"] == 4
        assert p.name == (f"jw01234001001_{h['VISITGRP']}1{h['ACT_ID']}_0000{h['EXPOSURE']}_"
                          f"{h['DETECTOR'].lower()}_uncal.fits")
        root = p.name[: -len("_uncal.fits")]
        for suffix in ("_truth_rate.fits", "_cosmic_rays.ecsv", "_first_saturated.fits"):
            assert (out / "truth" / f"{root}{suffix}").exists()
    filters = {(d, f) for d, f, _ in combos}
    assert filters == {("NRCA1", "F150W"), ("NRCA1", "F200W"),
                       ("NRCALONG", "F356W"), ("NRCALONG", "F444W")}
    assert len(combos) == 16
    refs = sorted(p.name for p in (out / "refs").iterdir())
    # 7 stage-1 types per detector + flat per filter (2), photom, area, distortion per detector,
    # and stage 3's ABVEGAOFFSET and APCORR (every filter)
    assert len(refs) == 26 and "webbflow_nrca1_dark_sub160.fits" in refs
    assert "webbflow_nircam_abvegaoffset.asdf" in refs and "webbflow_nircam_apcorr.fits" in refs
    assert "webbflow_nrca1_distortion.asdf" in refs and "webbflow_nrcalong_flat_f444w_clear_sub160.fits" in refs


def test_demo_has_saturation_cosmic_rays_and_lw_has_no_refpix(demo):
    out, paths, _ = demo
    sw = [p for p in paths if "nrca1" in p.name][0]
    root = sw.name[: -len("_uncal.fits")]
    first = fits.getdata(out / "truth" / f"{root}_first_saturated.fits")
    late = (first >= 2).sum()
    assert late > 0  # saturating after group 2: unsaturated groups remain to fit
    crs = Table.read(out / "truth" / f"{root}_cosmic_rays.ecsv", format="ascii.ecsv")
    assert (crs["kind"] == "cosmic_ray").sum() > 20
    assert crs.meta["SEED"] > 0
    lw_mask = dm.MaskModel(out / "refs" / "webbflow_nrcalong_mask_sub160.fits")
    sw_mask = dm.MaskModel(out / "refs" / "webbflow_nrca1_mask_sub160.fits")
    assert not (lw_mask.dq & dqflags.REFERENCE_PIXEL).any()
    assert ((sw_mask.dq & dqflags.REFERENCE_PIXEL) != 0).sum() == 160 * 8 - 16


def test_demo_is_deterministic(demo, tmp_path):
    out, paths, _ = demo
    specs = preset_specs("demo-imaging")
    for spec, path in zip(specs[:2], paths[:2]):
        again = simulate_exposure(spec, tmp_path, n_dark_frames=29)
        assert again.name == path.name
        assert np.array_equal(fits.getdata(again, "SCI"), fits.getdata(path, "SCI"))
        assert np.array_equal(fits.getdata(again, "ZEROFRAME"), fits.getdata(path, "ZEROFRAME"))


@pytest.mark.slow
def test_fullframe_preset(tmp_path, request):
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("full frame: run with -m slow")
    t0 = time.perf_counter()
    (path,) = run_preset("fullframe", tmp_path)
    seconds = time.perf_counter() - t0
    m = dm.RampModel(path)
    assert m.data.shape == (1, 10, 2048, 2048)
    assert m.meta.exposure.noutputs == 4 and m.meta.subarray.name == "FULL"
    print(f"fullframe preset simulated in {seconds:.1f} s")
