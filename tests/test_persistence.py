"""Persistence from earlier exposures (``steps.persistence``, beyond jwst): against the simulator's truth.

Two NRCA1 exposures on different 64 x 64 subarrays that overlap on the detector: the first has
saturating stars; the second starts 60 s after the first ends and carries their afterglow (the
simulator's decaying excess current, ``afterglow_deposits``) on the pixels the first saturated,
which sit elsewhere in its own array (another SUBSTRT).  The first exposure's high pixels (raw ramp
reaching the saturation reference), mapped through the full-frame grid, flag PERSISTENCE in the
second's PIXELDQ:

- >= 95 % of the afterglow pixels flagged and < 1 % of the other pixels, by the library functions,
  by detector1 (rate DQ, ``S_PERSIS``; the summary also from an exposure streamed in chunks) and by
  the workflow (``slow``: two jobs linked by _highpix);
- the afterglow matters: unflagged, the rate at those pixels is biased (median
  (rate - truth) / ERR > 3) while elsewhere it is not (|median| < 0.3);
- the window and the detector are honoured (no flags outside the window or from another detector);
- off, nothing changes: detector1's rate arrays and config digest equal a run without the option,
  the workflow plans no summaries or links, and a simulated afterglow outside the array leaves the
  ramps bit-identical.
"""

import dataclasses

import numpy as np
import pytest
from _snakemake import run_snakemake
from astropy.io import fits
from astropy.time import Time

from webbflow import dqflags
from webbflow.io import persistence as highpix_io
from webbflow.io import read_uncal
from webbflow.io.errors import InputError
from webbflow.refs import load_references, select_references
from webbflow.simulate import ExposureSpec, simulate_exposure
from webbflow.simulate.headers import exposure_timing
from webbflow.stages import detector1
from webbflow.steps import persistence

REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")
GAP_S = 60.0

BRIGHT = ExposureSpec(detector="NRCA1", subarray="SUB64", size=64, corner=(301, 301), readpatt="RAPID",
                      nints=1, ngroups=6, n_stars=6, n_saturating_stars=30, cr_rate=0.0, one_over_f=0.0,
                      seed=71, scene_seed=71)


def _later(spec, gap_s):
    """DATE-OBS of an exposure starting ``gap_s`` after ``spec`` ends."""
    return Time(exposure_timing(spec)["end"] + gap_s / 86400.0, format="mjd", scale="utc").isot


def _ramp_and_saturation(uncal, refs_dir):
    """The raw ramp (dq_init applied) and the saturation reference's levels (raw DN, bias included)."""
    ramp, readout, headers = read_uncal(uncal)
    paths = select_references(fits.getheader(uncal), refs_dir)
    refs = load_references({t: paths[t] for t in ("mask", "saturation")}, readout, ramp.shape[-2:])
    for _ in detector1.iter_steps(ramp, readout, headers, refs, {}, steps=("dq_init",)):
        pass
    return ramp, readout, headers, refs["saturation"]["sat_thresh"]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    out = tmp_path_factory.mktemp("persistence")
    # one folder each: the simulator names references by SUBARRAY, and the two arrays differ in place
    first = simulate_exposure(BRIGHT, out / "first", return_details=True)
    ramp, readout, headers, sat = _ramp_and_saturation(first.uncal, out / "first" / "refs")
    record = persistence.high_pixels(ramp.data, sat, readout.detector, headers.primary["EXPSTART"],
                                     headers.primary["EXPEND"], readout.substrt1, readout.substrt2)
    later = dataclasses.replace(BRIGHT, corner=(309, 305), n_saturating_stars=0, seed=72, exposure=2,
                                dither_position=2, date_obs=_later(BRIGHT, GAP_S))
    # the truth's bright pixels: saturated in the first exposure, full-frame coordinates
    sy, sx = np.nonzero((first.first_saturated >= 0).any(axis=0))
    glow = {"x_full": sx + BRIGHT.geometry.xstart - 1, "y_full": sy + BRIGHT.geometry.ystart - 1,
            "amplitude": 200.0, "tau": 300.0, "delay": GAP_S}
    second = simulate_exposure(later, out / "second", return_details=True, afterglow=glow)
    return out, first, second, record, later


def test_afterglow_pixels_flagged(case):
    out, _, second, record, _ = case
    ramp, readout, headers, _ = _ramp_and_saturation(second.uncal, out / "second" / "refs")
    dep = second.deposits
    glow = dep.kind == "afterglow"
    truth = np.zeros(ramp.pixeldq.shape, bool)
    truth[dep.y[glow], dep.x[glow]] = True
    assert truth.sum() >= 20, "the two arrays must overlap on the first exposure's saturated pixels"
    before = ramp.pixeldq.copy()
    n = persistence.flag(ramp.pixeldq, readout.detector, headers.primary["EXPSTART"], [record],
                         readout.substrt1, readout.substrt2, window=600.0)
    flagged = (ramp.pixeldq & dqflags.PERSISTENCE) != 0
    assert n == flagged.sum()
    assert np.array_equal(ramp.pixeldq & ~np.uint32(dqflags.PERSISTENCE), before)  # only the one bit
    recovered = flagged[truth].mean()
    false = flagged[~truth].mean()
    print(f"afterglow pixels {truth.sum()}, flagged {recovered:.3f}, false flags {false:.4f}")
    assert recovered >= 0.95
    assert false < 0.01

    # outside the window, or another detector: nothing
    for kwargs in ({"window": 30.0}, {"detector": "NRCA2"}):
        dq = np.zeros_like(ramp.pixeldq)
        args = {"detector": readout.detector, "window": 600.0, **kwargs}
        assert persistence.flag(dq, args["detector"], headers.primary["EXPSTART"], [record], readout.substrt1,
                                readout.substrt2, window=args["window"]) == 0
        assert not dq.any()


def test_afterglow_biases_the_rate(case):
    """The flag marks something real: the uncorrected rate is high where the afterglow is."""
    out, _, second, _, _ = case
    refs = select_references(fits.getheader(second.uncal), out / "second" / "refs")
    detector1.run(second.uncal, out / "r2_rate.fits", out / "r2_rateints.fits", refs, {})
    rate, err, dq = (fits.getdata(out / "r2_rate.fits", k) for k in ("SCI", "ERR", "DQ"))
    dep = second.deposits
    glow = dep.kind == "afterglow"
    truth = np.zeros(rate.shape, bool)
    truth[dep.y[glow], dep.x[glow]] = True
    good = (dq & dqflags.DO_NOT_USE) == 0
    z = (rate - second.rate) / err
    z_glow, z_rest = np.median(z[truth & good]), np.median(z[~truth & good])
    print(f"median z: afterglow pixels {z_glow:.2f}, others {z_rest:.3f}")
    assert z_glow > 3.0
    assert abs(z_rest) < 0.3


def test_high_pixels_threshold_and_round_trip(case, tmp_path):
    out, first, _, record, _ = case
    ramp, readout, _, sat = _ramp_and_saturation(first.uncal, out / "first" / "refs")
    args = (readout.detector, 0.0, 1.0, readout.substrt1, readout.substrt2)
    # the truth's saturated pixels are exactly those reaching the saturation reference
    truth = (first.first_saturated >= 0).any(axis=0)
    assert len(record) == truth.sum()
    # half the saturation level takes in more pixels, every saturated one among them
    low = persistence.high_pixels(ramp.data, 0.5 * sat, *args)
    assert len(low) > len(record)
    assert set(zip(record.x.tolist(), record.y.tolist())) <= set(zip(low.x.tolist(), low.y.tolist()))

    path = tmp_path / "x_highpix.ecsv"
    highpix_io.write_high_pixels(path, record)
    back = highpix_io.read_high_pixels(path)
    assert (back.detector, back.expstart, back.expend) == (record.detector, record.expstart, record.expend)
    assert np.array_equal(back.x, record.x) and np.array_equal(back.y, record.y)
    bad = tmp_path / "bad.ecsv"
    bad.write_text("# %ECSV 1.0\n# ---\n# datatype:\n# - {name: x, datatype: int32}\nx\n1\n")
    with pytest.raises(InputError, match="DETECTOR"):
        highpix_io.read_high_pixels(bad)


def test_detector1_writes_the_summary_and_flags_the_rate_dq(case, tmp_path):
    """The stage: the first exposure's _highpix summary flags the second's rate DQ; off, nothing changes."""
    from stdatamodels.jwst import datamodels

    out, first, second, record, _ = case
    refs1 = select_references(fits.getheader(first.uncal), out / "first" / "refs")
    refs2 = select_references(fits.getheader(second.uncal), out / "second" / "refs")
    summary = tmp_path / "first_highpix.ecsv"
    detector1.run(first.uncal, tmp_path / "a_rate.fits", tmp_path / "a_rateints.fits", refs1, {},
                  highpix_path=summary)
    written = highpix_io.read_high_pixels(summary)
    assert np.array_equal(written.x, record.x) and np.array_equal(written.y, record.y)
    # streamed in chunks (a tiny memory budget): the same summary; flagging needs the whole ramp
    streamed = tmp_path / "streamed_highpix.ecsv"
    detector1.run(first.uncal, tmp_path / "s_rate.fits", tmp_path / "s_rateints.fits", refs1, {},
                  highpix_path=streamed, max_memory_mb=0.05, scratch_dir=tmp_path)
    back = highpix_io.read_high_pixels(streamed)
    assert np.array_equal(back.x, record.x) and np.array_equal(back.y, record.y)
    with pytest.raises(InputError, match="steps.persistence.skip needs the whole ramp"):
        detector1.run(first.uncal, tmp_path / "t_rate.fits", tmp_path / "t_rateints.fits", refs1,
                      {"persistence": {"skip": False}}, max_memory_mb=0.05, scratch_dir=tmp_path)
    assert not (tmp_path / "t_rate.fits").exists()

    runs = {"plain": ({}, ()), "off": ({"persistence": {"skip": True}}, (summary,)),
            "on": ({"persistence": {"skip": False, "window": 600.0}}, (summary,))}
    products = {}
    for name, (params, earlier) in runs.items():
        rate = tmp_path / f"{name}_rate.fits"
        statuses = detector1.run(second.uncal, rate, tmp_path / f"{name}_rateints.fits", refs2, params,
                                 earlier_highpix=earlier)
        with fits.open(rate) as hdul:
            products[name] = {k: hdul[k].data.copy() for k in ("SCI", "ERR", "DQ")}
            products[name]["header"] = hdul[0].header.copy()
        products[name]["statuses"] = statuses
    for k in ("SCI", "ERR", "DQ"):
        assert np.array_equal(products["off"][k], products["plain"][k], equal_nan=True), k
    assert products["off"]["header"]["WF_CFGD"] == products["plain"]["header"]["WF_CFGD"]
    assert "S_PERSIS" not in products["off"]["header"] and "persistence" not in products["off"]["statuses"]

    on = products["on"]
    dep = second.deposits
    glow = dep.kind == "afterglow"
    truth = np.zeros(on["DQ"].shape, bool)
    truth[dep.y[glow], dep.x[glow]] = True
    flagged = (on["DQ"] & dqflags.PERSISTENCE) != 0
    assert flagged[truth].mean() >= 0.95 and flagged[~truth].mean() < 0.01
    # the flag is informative: everything else as without it
    assert np.array_equal(on["DQ"] & ~np.uint32(dqflags.PERSISTENCE), products["plain"]["DQ"])
    assert np.array_equal(on["SCI"], products["plain"]["SCI"], equal_nan=True)
    assert on["header"]["WF_CFGD"] != products["plain"]["header"]["WF_CFGD"]
    with datamodels.open(tmp_path / "on_rate.fits") as model:
        assert isinstance(model, datamodels.ImageModel)
        assert model.meta.cal_step.persistence == "COMPLETE"


def test_afterglow_off_changes_nothing(tmp_path):
    """An afterglow that misses the array leaves the simulated ramps bit-identical."""
    spec = dataclasses.replace(BRIGHT, size=32, corner=(501, 501), n_saturating_stars=0, n_stars=1)
    a = simulate_exposure(spec, tmp_path / "a")
    b = simulate_exposure(spec, tmp_path / "b", afterglow={"x_full": [10], "y_full": [10], "amplitude": 50.0,
                                                           "tau": 100.0, "delay": 10.0})
    assert np.array_equal(fits.getdata(a, "SCI"), fits.getdata(b, "SCI"))


@pytest.mark.slow
@pytest.mark.workflow
def test_workflow_links_earlier_exposures_only_when_on(tmp_path):
    """snakemake: on, each detector1 job writes _highpix and the later one flags from the earlier's;
    off (the default), neither the summaries nor any link between the jobs."""

    data = tmp_path / "data"
    spec1 = dataclasses.replace(BRIGHT, corner="interior")
    first = simulate_exposure(spec1, data, return_details=True)
    spec2 = dataclasses.replace(spec1, n_saturating_stars=0, seed=72, exposure=2, dither_position=2,
                                dither_offset=(0.5, 0.3), date_obs=_later(spec1, GAP_S))
    sy, sx = np.nonzero((first.first_saturated >= 0).any(axis=0))
    glow = {"x_full": sx + spec1.geometry.xstart - 1, "y_full": sy + spec1.geometry.ystart - 1,
            "amplitude": 200.0, "tau": 300.0, "delay": GAP_S}
    second = simulate_exposure(spec2, data, return_details=True, afterglow=glow)

    def snakemake(config_text, *args):
        config = tmp_path / f"config{len(config_text)}.yaml"
        config.write_text(f"inputs: {{uncal_dir: {data / 'uncal'}}}\nresults_dir: out\n"
                          f"references: {{dir: {data / 'refs'}}}\n" + config_text)
        return run_snakemake(tmp_path / "work", "--configfile", str(config), *args, timeout=600).stdout

    (tmp_path / "work").mkdir()
    assert "highpix" not in snakemake("", "-n", "stage1")  # off: no summaries, no links
    on = "steps:\n  persistence: {skip: false, window: 600}\n"
    snakemake(on, "--cores", "1", "stage1")
    rates = {p.name.split("_")[2]: p for p in (tmp_path / "work" / "out").rglob("*_rate.fits")}
    assert sorted(rates) == ["00001", "00002"]
    assert len(list((tmp_path / "work" / "out").rglob("*_highpix.ecsv"))) == 2
    dq1, dq2 = fits.getdata(rates["00001"], "DQ"), fits.getdata(rates["00002"], "DQ")
    assert not (dq1 & dqflags.PERSISTENCE).any()  # nothing before the first exposure
    dep = second.deposits
    truth = np.zeros(dq2.shape, bool)
    truth[dep.y[dep.kind == "afterglow"], dep.x[dep.kind == "afterglow"]] = True
    flagged = (dq2 & dqflags.PERSISTENCE) != 0
    assert truth.sum() > 0 and flagged[truth].mean() >= 0.95 and flagged[~truth].mean() < 0.01
    assert fits.getheader(rates["00002"])["S_PERSIS"] == "COMPLETE"


def test_off_by_default_and_on_the_jwst_line():
    """No preset turns persistence on, with or without its recommended layer (beyond jwst: off)."""
    from pathlib import Path

    import yaml

    from webbflow.config import DETECTOR1_EXTRA_STEPS, load_modes, step_parameters

    repo = Path(__file__).resolve().parents[1]
    schema = repo / "config" / "schema.yaml"
    steps = yaml.safe_load(schema.read_text())["properties"]["steps"]["properties"]
    defaults = {"persistence": {k: v["default"] for k, v in steps["persistence"]["properties"].items()}}
    assert defaults["persistence"]["skip"] is True
    for name, preset in load_modes(repo / "config" / "modes", schema).items():
        for recommended in (True, False):
            params = step_parameters(defaults, "detector1", preset, recommended=recommended,
                                     extra_steps=DETECTOR1_EXTRA_STEPS)
            assert params["persistence"]["skip"] is True, (name, recommended)
