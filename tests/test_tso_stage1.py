"""Stage 1 of time-series segments (NRC_TSGRISM / NRC_TSIMAGE): products, truth and bad input.

jwst-parity of the same segments is in tests/test_parity_tso.py (needs the oracle).
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _snakemake import run_snakemake
from astropy.io import fits
from stdatamodels.jwst import datamodels
from tso_segments import TSO_SPECS

from webbflow import dqflags
from webbflow.io import InputError
from webbflow.io.uncal import is_tso, read_uncal
from webbflow.refs import select_references
from webbflow.simulate import simulate_exposure
from webbflow.stages import detector1


@pytest.fixture(scope="module")
def segment(tmp_path_factory):
    """The 4-output grism segment (integrations 9-16 of 24), simulated and reduced."""
    spec = TSO_SPECS["grism-4out"]
    out = tmp_path_factory.mktemp("tso")
    sim = simulate_exposure(spec, out, return_details=True)
    refs = select_references(fits.getheader(sim.uncal), out / "refs")
    rate, rateints = (out / "ours" / f"{spec.rootname}_{s}.fits" for s in ("rate", "rateints"))
    detector1.run(sim.uncal, rate, rateints, refs, {})
    return spec, sim, refs, rate, rateints


def test_rateints_is_a_segment_cube_with_its_times(segment):
    spec, sim, _, _, rateints = segment
    with datamodels.open(rateints) as model:
        assert isinstance(model, datamodels.CubeModel)
        assert model.data.shape == (spec.nints, 64, 2048)
        assert model.meta.exposure.type == "NRC_TSGRISM" and model.meta.visit.tsovisit is True
        seg = model.meta.exposure
        assert (seg.segment_number, seg.segment_total, seg.integration_start, seg.integration_end, seg.nints) == \
            (2, 3, 9, 16, 24)
        numbers = np.asarray(model.int_times["integration_number"])
        assert numbers.tolist() == list(range(9, 17))
        mid = np.asarray(model.int_times["int_mid_MJD_UTC"])
        assert np.all(np.diff(mid) > 0)
    with fits.open(sim.uncal) as uncal:
        np.testing.assert_array_equal(mid, uncal["INT_TIMES"].data["int_mid_MJD_UTC"])


def test_segment_rate_recovers_truth(segment, make):
    _, sim, _, rate, _ = segment
    make.assert_rate_recovers_truth(rate, sim.truth["rate"], "grism-4out")


def test_rateints_recover_truth_per_integration(segment):
    """Each integration's rate is unbiased against the true rate (every unflagged pixel: 1/f rows average out)."""
    _, sim, _, _, rateints = segment
    truth = fits.getdata(sim.truth["rate"]).astype(np.float64)
    with fits.open(rateints) as hdul:
        for i, (sci, err, dq) in enumerate(zip(hdul["SCI"].data, hdul["ERR"].data, hdul["DQ"].data)):
            good = (dq == 0) & np.isfinite(sci) & (truth > 5)
            pull = (sci[good] - truth[good]) / err[good]
            assert good.sum() > 50, i
            assert abs(np.median(pull)) < 0.3 and 0.6 < np.std(pull) < 1.5, (i, np.median(pull), np.std(pull))


def _copy(src, dst, edit):
    with fits.open(src) as hdul:
        edit(hdul)
        hdul.writeto(dst)
    return dst


def _refuse(uncal, refs, out, match):
    out.mkdir(exist_ok=True)
    with pytest.raises(InputError, match=match):
        detector1.run(uncal, out / "x_rate.fits", out / "x_rateints.fits", refs, {})
    assert list(out.iterdir()) == []


def test_time_series_without_int_times_is_refused(segment, tmp_path):
    _, sim, refs, _, _ = segment
    bad = _copy(sim.uncal, tmp_path / "noint_uncal.fits", lambda h: h.pop("INT_TIMES"))
    _refuse(bad, refs, tmp_path / "out", r"noint_uncal.fits: a time series .* without its INT_TIMES table.*Fix:")


def test_int_times_with_duplicate_or_missing_rows_are_refused(segment, tmp_path):
    _, sim, refs, _, _ = segment

    def duplicate(hdul):
        t = hdul["INT_TIMES"].data
        t["int_mid_MJD_UTC"][3] = t["int_mid_MJD_UTC"][2]

    def missing(hdul):
        hdul["INT_TIMES"].data["integration_number"][4] = 99

    _refuse(_copy(sim.uncal, tmp_path / "dup_uncal.fits", duplicate), refs, tmp_path / "o1",
            r"dup_uncal.fits: INT_TIMES mid-integration times are not strictly increasing \(integration 12 ")
    _refuse(_copy(sim.uncal, tmp_path / "gap_uncal.fits", missing), refs, tmp_path / "o2",
            r"gap_uncal.fits: INT_TIMES has no row for integration\(s\) \[13\] of this file \(integrations 9..16\)")


@pytest.mark.parametrize("keys, match", [
    ({"EXSEGNUM": 4}, r"EXSEGNUM=4 must be <= 3"),
    ({"EXSEGTOT": None}, r"header keyword EXSEGTOT is missing \(the other of EXSEGNUM/EXSEGTOT is set\)"),
    ({"INTEND": 15}, r"INTEND - INTSTART \+ 1 = 7 but SCI has 8 integrations"),
])
def test_inconsistent_segment_keywords_are_refused(segment, tmp_path, keys, match):
    _, sim, refs, _, _ = segment

    def edit(hdul):
        for key, value in keys.items():
            if value is None:
                del hdul[0].header[key]
            else:
                hdul[0].header[key] = value

    _refuse(_copy(sim.uncal, tmp_path / "seg_uncal.fits", edit), refs, tmp_path / "out", match)


def test_is_tso_as_jwst():
    assert is_tso({"EXP_TYPE": "NRC_TSGRISM", "NINTS": 5})
    assert is_tso({"EXP_TYPE": "NRC_IMAGE", "TSOVISIT": True, "NINTS": 5})
    assert not is_tso({"EXP_TYPE": "NRC_TSIMAGE", "NINTS": 1})  # jwst: never a TSO with one integration
    assert not is_tso({"EXP_TYPE": "NRC_IMAGE", "TSOVISIT": False, "NINTS": 5})


def test_one_integration_time_series_needs_no_int_times(tmp_path, make):
    uncal = make.uncal(tmp_path / "one_uncal.fits", make.ramp(nints=1, ngroups=4), EXP_TYPE="NRC_TSIMAGE")
    _copy(uncal, tmp_path / "bare_uncal.fits", lambda h: h.pop("INT_TIMES"))
    _, readout, headers = read_uncal(tmp_path / "bare_uncal.fits")
    assert readout.nints == 1 and headers.int_times is None


def _reduce(spec, out, roeba):
    sim = simulate_exposure(spec, out, return_details=True)
    refs = select_references(fits.getheader(sim.uncal), out / "refs")
    path = out / f"ri_{roeba}.fits"
    detector1.run(sim.uncal, out / f"r_{roeba}.fits", path, refs, {"refpix": {"roeba": roeba}})
    truth = fits.getdata(sim.truth["rate"]).astype(np.float64)
    with fits.open(path) as hdul:
        sci, err = (hdul[e].data.astype(np.float64) for e in ("SCI", "ERR"))
        dq = hdul["DQ"].data
    good = (dq == 0) & np.isfinite(sci) & (truth > 5)
    resid = np.where(good, sci - truth, np.nan)
    rows = np.nanmedian(resid.reshape(spec.nints, 64, 4, 512), axis=3)  # integration, row, amplifier
    stripes = rows - np.nanmean(rows, axis=1, keepdims=True)
    z = ((sci - truth) / err)[good]
    return {"stripes": float(np.nanstd(stripes)), "median_z": float(np.median(z)), "std_z": float(np.std(z)),
            "jump": float(np.mean((dq & dqflags.JUMP_DET) != 0))}


def test_roeba_removes_row_stripes_of_one_over_f(tmp_path):
    """1/f alone (5 DN per amplifier, 80 % common): ROEBA takes out the row-to-row stripes of the rates."""
    spec = replace(TSO_SPECS["grism-4out"].noiseless(), one_over_f=5.0)
    off, on = _reduce(spec, tmp_path, False), _reduce(spec, tmp_path, True)
    assert off["stripes"] > 1.0  # jwst's side-pixel correction leaves them (DN/s)
    assert on["stripes"] < off["stripes"] / 5, (off, on)


def test_roeba_lowers_the_scatter_and_false_jumps_without_bias(tmp_path):
    """The seed's problem as numbers: with 1/f the rates scatter more than their errors say and jump
    flags more; ROEBA brings both down.  Without 1/f it changes nothing on average (no bias)."""
    noisy = replace(TSO_SPECS["grism-4out"], one_over_f=5.0)
    off, on = _reduce(noisy, tmp_path / "a", False), _reduce(noisy, tmp_path / "a", True)
    assert on["std_z"] < off["std_z"] - 0.05, (off, on)
    assert on["jump"] < 0.85 * off["jump"], (off, on)
    clean = replace(TSO_SPECS["grism-4out"], one_over_f=0.0)
    off, on = _reduce(clean, tmp_path / "b", False), _reduce(clean, tmp_path / "b", True)
    assert abs(on["median_z"] - off["median_z"]) < 0.02 and abs(on["median_z"]) < 0.05, (off, on)
    assert on["std_z"] <= off["std_z"] + 0.01, (off, on)


@pytest.mark.workflow
def test_tso_grism_mode_in_the_workflow_recommended_and_jwst_lines(tmp_path):
    """`modes: [tso_grism]` reduces a segment to rateints, calints and x1dints; the preset turns ROEBA
    on and photom off, and the one line `step_defaults: jwst` gives exactly the products of jwst's
    defaults (the parity tests' line): the library's detector1 and spec2 with no parameters."""
    import json
    from pathlib import Path

    import yaml
    from stdatamodels.jwst import datamodels

    from webbflow.refs.select import SPEC2_REFTYPES
    from webbflow.simulate import optics
    from webbflow.simulate.grism import write_grism_references
    from webbflow.simulate.stage2_refs import write_stage2_references
    from webbflow.stages import spec2

    # the whole series in one segment (a lone segment of several would be refused: a gap)
    spec = replace(TSO_SPECS["grism-4out"], segment=(1, 1, 1, 8))
    sim = simulate_exposure(spec, tmp_path / "data", return_details=True)
    refs_dir = tmp_path / "data" / "refs"
    write_grism_references(tmp_path / "data", spec.detector, spec.filter, optics.pixar_sr(spec.detector),
                           optics.pixar_a2(spec.detector))
    write_stage2_references(tmp_path / "data", spec.detector, spec.geometry, spec.filter, spec.pupil, 0)
    reference = {s: tmp_path / f"ref_{s}.fits" for s in ("rate", "rateints", "calints", "x1dints")}
    detector1.run(sim.uncal, reference["rate"], reference["rateints"],
                  select_references(fits.getheader(sim.uncal), refs_dir), {})
    grism_refs = select_references(fits.getheader(sim.uncal), refs_dir, reftypes=SPEC2_REFTYPES)
    assert all(grism_refs.values()), grism_refs  # the folder mode finds every grism reference
    spec2.run(reference["rateints"], reference["calints"], reference["x1dints"], grism_refs, {})
    products = {}
    for line in ("recommended", "jwst"):
        config = tmp_path / f"{line}.yaml"
        config.write_text(yaml.safe_dump({
            "inputs": {"uncal_dir": str(Path(sim.uncal).parent)}, "results_dir": f"out_{line}",
            "references": {"dir": str(refs_dir)}, "modes": ["tso_grism"], "step_defaults": line}))
        run_snakemake(tmp_path, "--configfile", str(config), "--cores", "2", "stage1", "stage2", "stage3",
                      timeout=600)
        out = tmp_path / f"out_{line}"
        level3 = out / "tso3" / "jw01234-o001_t001_nircam_f322w2-grismr-subgrism64"
        products[line] = {"rateints": out / "detector1" / "f322w2" / f"{spec.rootname}_rateints.fits",
                          **{s: out / "spec2" / "f322w2" / f"{spec.rootname}_{s}.fits" for s in ("calints", "x1dints")},
                          "whtlt": level3.with_name(level3.name + "_whtlt.ecsv"),
                          "trace": level3.with_name(level3.name + "_trace.ecsv"),
                          "x1dints3": level3.with_name(level3.name + "_x1dints.fits"),
                          "crfints": out / "tso3" / "crfints" / level3.name / f"{spec.rootname}_o001_crfints.fits"}
    with fits.open(products["recommended"]["rateints"]) as rec, fits.open(products["jwst"]["rateints"]) as jw, \
            fits.open(reference["rateints"]) as ref:
        assert json.loads(rec[0].header["WF_PARS"])["refpix"]["roeba"] is True
        assert json.loads(jw[0].header["WF_PARS"])["refpix"]["roeba"] is False
        for ext in ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE"):
            np.testing.assert_array_equal(jw[ext].data, ref[ext].data, err_msg=ext)
        assert not np.array_equal(rec["SCI"].data, ref["SCI"].data, equal_nan=True)
    for line, photom in (("recommended", "SKIPPED"), ("jwst", "COMPLETE")):
        with datamodels.open(products[line]["calints"]) as cal, datamodels.open(products[line]["x1dints"]) as x1d:
            assert isinstance(cal, datamodels.SlitModel) and cal.data.shape == (8, 64, 2048)
            assert isinstance(x1d, datamodels.TSOMultiSpecModel) and len(x1d.spec[0].spec_table) == 8
            assert cal.meta.cal_step.photom == x1d.meta.cal_step.photom == photom
            unit = x1d.spec[0].spec_table.columns["FLUX"].unit
            assert unit == ("DN/s" if photom == "SKIPPED" else "Jy"), unit
    with fits.open(products["jwst"]["x1dints"]) as jw, fits.open(reference["x1dints"]) as ref:
        for column in ("WAVELENGTH", "FLUX", "FLUX_ERROR", "BACKGROUND", "NPIXELS", "DQ"):
            np.testing.assert_array_equal(jw["EXTRACT1D"].data[column], ref["EXTRACT1D"].data[column],
                                          err_msg=column)
    # stage 3: the library's tso3 on the reference calints gives the workflow's white-light curve
    from astropy.table import Table

    from webbflow.stages import tso3

    tso3.run([reference["calints"]], [tmp_path / "ref_crfints.fits"], tmp_path / "ref3_x1dints.fits",
             tmp_path / "ref_whtlt.ecsv", {"extract1d": grism_refs["extract1d"]}, {})
    for line in ("recommended", "jwst"):
        # the recommended layer skips tso3's outlier_detection: no crfints then
        assert products[line]["crfints"].exists() == (line == "jwst") and products[line]["x1dints3"].exists()
        curve = Table.read(products[line]["whtlt"])
        assert len(curve) == 8 and curve.meta["number_of_integrations"] == 8
        # the brightest star (row 33.7 of the strip, a point source here, not a dispersed trace: few
        # columns carry it) holds the trace fit; no drift was injected (the demo test checks the drift)
        trace = Table.read(products[line]["trace"])
        assert np.array_equal(trace["MJD_UTC"], curve["MJD_UTC"])
        assert np.all(np.abs(trace["trace_y"].value - 33.7) < 1.5), trace["trace_y"]
        assert np.all(trace["trace_width"].value > 0.5) and np.all(np.isfinite(trace["trace_y_err"]))
    mine, ref = Table.read(products["jwst"]["whtlt"]), Table.read(tmp_path / "ref_whtlt.ecsv")
    np.testing.assert_array_equal(mine["MJD_UTC"], ref["MJD_UTC"])
    np.testing.assert_array_equal(mine["whitelight_flux"], ref["whitelight_flux"])


def test_a_missing_middle_segment_is_one_error_at_planning(tmp_path, make):
    from webbflow.exposures import exposure_table

    base = TSO_SPECS["strip-1out"]
    for num, start in ((1, 1), (3, 11)):  # segment 2 (integrations 6-10) is missing
        simulate_exposure(replace(base, segment=(num, 3, start, 15), nints=5), tmp_path)
    with pytest.raises(InputError, match=r"seg001_nrca1_uncal.fits: segment\(s\) \[2\] of 3 of the time series "
                       r"jw01234001001_02101_00001_nrca1 are missing.*Fix: put "
                       r"jw01234001001_02101_00001-seg002_nrca1_uncal.fits into inputs.uncal_dir"):
        exposure_table(tmp_path / "uncal")
    # asked for the refusals (planning with other exposures): every present segment is left out and named
    make.uncal(tmp_path / "uncal" / "other_uncal.fits", make.ramp(nints=1, ngroups=2, ny=4, nx=4), EXPOSURE="7")
    errors = []
    assert [e.exposure for e in exposure_table(tmp_path / "uncal", errors=errors)] == ["00007"]
    assert [Path(e.path).name for e in errors] == [f"jw01234001001_02101_00001-seg00{n}_nrca1_uncal.fits"
                                                   for n in (1, 3)]
    assert errors[0].problem == errors[1].problem and "segment(s) [2] of 3" in errors[0].problem
    (tmp_path / "uncal" / "other_uncal.fits").unlink()
    simulate_exposure(replace(base, segment=(2, 3, 6, 15), nints=5), tmp_path)
    table = exposure_table(tmp_path / "uncal")
    assert [(e.segment, e.segments) for e in table] == [(1, 3), (2, 3), (3, 3)]


def test_tsgrism_without_a_grism_is_refused(segment, tmp_path):
    _, sim, refs, _, _ = segment
    bad = _copy(sim.uncal, tmp_path / "clear_uncal.fits", lambda h: h[0].header.set("PUPIL", "CLEAR"))
    _refuse(bad, refs, tmp_path / "out", r"clear_uncal.fits: header keyword PUPIL='CLEAR' is not a grism "
            r"\(GRISMR, GRISMC\), but EXP_TYPE is NRC_TSGRISM")


def _one_over_f(spec, out, roeba):
    """detector1's 1/f QA table of ``spec`` (simulated once per folder); with ROEBA, also the rateints
    without the table, which must be the same."""
    from astropy.table import Table

    uncal = out / "uncal" / f"{spec.rootname}_uncal.fits"
    if not uncal.exists():
        simulate_exposure(spec, out)
    refs = select_references(fits.getheader(uncal), out / "refs")
    steps = {"refpix": {"roeba": roeba}}
    detector1.run(uncal, out / f"r_{roeba}.fits", out / f"ri_{roeba}.fits", refs, steps,
                  one_over_f_path=out / f"onef_{roeba}.ecsv")
    if roeba:  # measuring changes nothing (with ROEBA off the workflow test compares with jwst's line)
        detector1.run(uncal, out / "r_plain.fits", out / "ri_plain.fits", refs, steps)
        with fits.open(out / f"ri_{roeba}.fits") as a, fits.open(out / "ri_plain.fits") as b:
            for ext in ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE"):
                np.testing.assert_array_equal(a[ext].data, b[ext].data, err_msg=ext)
    return Table.read(out / f"onef_{roeba}.ecsv")


def _per_amp(table, column):
    return np.array([np.median(table[column][table["amplifier"] == a]) for a in (1, 2, 3, 4)])


def test_one_over_f_table_before_and_after_roeba(tmp_path):
    """detector1's 1/f QA table: one row per integration and amplifier; with 5 DN of 1/f per amplifier
    the row medians of the slopes scatter far more than white noise before ROEBA and near it after,
    and the rates are the same with or without the table."""
    noisy = replace(TSO_SPECS["grism-4out"], one_over_f=5.0)
    off, on = _one_over_f(noisy, tmp_path / "noisy", False), _one_over_f(noisy, tmp_path / "noisy", True)
    clean = _one_over_f(replace(TSO_SPECS["grism-4out"], one_over_f=0.0), tmp_path / "clean", False)
    assert len(on) == noisy.nints * 4  # integrations 9-16 of the exposure, amplifiers 1-4 (detector order)
    assert on["integration"].tolist() == [i for i in range(9, 17) for _ in range(4)]
    assert on["amplifier"].tolist() == [1, 2, 3, 4] * noisy.nints
    assert on.meta["roeba"] is True and off.meta["roeba"] is False and clean.meta["roeba"] is False
    # ROEBA off: one measurement; ROEBA on: its "before" is that same ramp, measured the same way
    np.testing.assert_array_equal(off["before"], off["after"])
    np.testing.assert_array_equal(on["before"], off["before"])
    assert np.all(on["rows"] >= 50)  # of 64: the stars' rows are masked, not the strip
    before, after = _per_amp(on, "ratio_before"), _per_amp(on, "ratio_after")
    # jwst's side-pixel correction (8 columns over 11 rows) leaves row noise of its own: the clean
    # exposure's level; the injected 1/f doubles it at least
    floor = _per_amp(clean, "ratio_before")
    assert np.all(floor > 1.5) and np.all(before > 1.8 * floor), (floor, before)
    assert np.all(after < 0.35 * before), (before, after)
    # ROEBA's own row medians carry white noise into every group: what is left is of the order of
    # the white-noise level, not of the 1/f
    assert np.all((after > 0.8) & (after < 2.0)), after


def test_time_series_figure_draws_one_over_f_before_and_after(tmp_path):
    """The report's time-series figure takes detector1's 1/f tables: per amplifier, the ratios before
    and after ROEBA on the integrations' times (two segments' tables joined in integration order)."""
    from astropy.table import Table

    from webbflow.report import figures, jobs

    spec = replace(TSO_SPECS["grism-4out"], nints=4, one_over_f=5.0)
    table = _one_over_f(spec, tmp_path, True)
    later = table.copy()
    later["integration"] += spec.nints  # the next segment
    later.write(tmp_path / "later.ecsv")
    times = {n: 60000.0 + n / 1440 for n in range(9, 9 + 2 * spec.nints)}
    onef = jobs._one_over_f_tables([tmp_path / "later.ecsv", tmp_path / "onef_True.ecsv"], times)
    assert onef["roeba"] is True and onef["before"].shape == (2 * spec.nints, 4)
    np.testing.assert_array_equal(onef["time"], sorted(times.values()))
    first = Table.read(tmp_path / "onef_True.ecsv")
    np.testing.assert_array_equal(onef["before"][:spec.nints].ravel(), first["ratio_before"])
    assert np.all(onef["one_over_f"] < 0.35 * onef["before"])
    curve = {"time": onef["time"], "flux": np.ones(2 * spec.nints)}
    per_int = {"time": onef["time"], "jump": np.zeros(2 * spec.nints), "one_over_f": onef["one_over_f"],
               "onef": onef}
    png = tmp_path / "timeseries.png"
    figures.timeseries_panels(png, curve, np.ones((64, 100)), np.linspace(2.4, 4.0, 100), per_int, "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
