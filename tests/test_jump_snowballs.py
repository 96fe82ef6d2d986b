"""Snowball flagging (jump's ``expand_large_events``): against the simulator's truth and against jwst 3.0.

Truth (default run): on a SUB256 exposure with 8 simulated snowballs (saturated core of radius
2-4 px, exponential halo down to 5 DN; ``truth/<root>_snowballs.ecsv`` gives each event) and
saturating stars, with jwst's snowball parameters:

- >= 99 % of the halo pixels (snowball deposits outside the core) have their ramp cut at the hit
  (group DQ JUMP_DET, or SATURATED where the grown core covers them; without the flagging about half
  are: the faint halo passes the 4-sigma test only near the core), and >= 90 % are JUMP_DET in the
  rateints DQ (the rest are those SATURATED ones);
- the rate inside the halos is unbiased: median (rate - truth) / ERR within +-0.1 (+1.2 without);
- extra JUMP_DET (flagged with the option, not without) farther than 2 (halo radius + 1) + 1 px from
  every snowball is below 1 % of the pixels: the expansion stays around the events, and what remains
  is jump regions within ``edge_size`` of the edges, which jwst expands without a saturated core.

Parity (``parity`` marker, needs the oracle): jwst 3.0 and ours with ``expand_large_events`` on
the same simulated exposure give identical jump-step GROUPDQ and PIXELDQ, with jwst's defaults and
with a variant (no saturated core required, other expansion, no next-integration masking); and
stcal's own ``flag_large_events`` (in the oracle environment) and ours give identical group DQ on
synthetic ones (cosmic-ray plus shapes, round and elliptical snowballs with cores saturating in this
or the next group, some cut by the edges, saturating stars) with three parameter sets.
"""

import dataclasses

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from webbflow import dqflags
from webbflow.io import read_uncal
from webbflow.oracle import (
    PRODUCT_ARRAYS,
    detector1_tolerance_failures,
    product_agreement,
    run_detector1,
)
from webbflow.refs import load_references, select_references
from webbflow.simulate import ExposureSpec, simulate_exposure
from webbflow.stages import detector1

REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")
JUMP = dqflags.JUMP_DET


@pytest.fixture(scope="module")
def truth_case(tmp_path_factory):
    spec = ExposureSpec(detector="NRCA1", subarray="SUB256", size=256, corner="refpix", readpatt="BRIGHT2",
                        nints=2, ngroups=8, cr_rate=2e-4, snowballs=8, n_stars=40, n_saturating_stars=6, seed=5)
    out = tmp_path_factory.mktemp("snowball_truth")
    ex = simulate_exposure(spec, out, return_details=True)
    refs = select_references(fits.getheader(ex.uncal), out / "refs")
    products = {}
    for name, steps in (("off", {}), ("on", {"jump": {"expand_large_events": True}})):
        rateints = out / name / "x_rateints.fits"
        detector1.run(ex.uncal, out / name / "x_rate.fits", rateints, refs, steps)
        products[name] = {k: fits.getdata(rateints, k) for k in ("SCI", "ERR", "DQ")}
        products[name]["GROUPDQ"] = _our_jump(ex.uncal, refs, steps.get("jump", {}))[0]
    return ex, Table.read(ex.truth["snowballs"]), Table.read(ex.truth["cosmic_rays"]), products


def _halo(events, deposits):
    """Snowball deposit pixels outside the saturated cores: (integration, group of the hit, y, x) arrays."""
    snow = deposits[deposits["kind"] == "snowball"]
    core = np.zeros(len(snow), bool)
    for e in events:
        core |= (snow["integration"] == e["integration"]) & (
            np.hypot(snow["x"] - e["x"], snow["y"] - e["y"]) <= e["r_core"])
    halo = snow[~core]
    return tuple(np.asarray(halo[c]) for c in ("integration", "group", "y", "x"))


def test_truth_table_describes_the_deposits(truth_case):
    _, events, deposits, _ = truth_case
    assert len(events) == 8
    snow = deposits[deposits["kind"] == "snowball"]
    for e in events:
        mine = snow[(snow["integration"] == e["integration"]) & (snow["group"] == e["group"])
                    & (np.hypot(snow["x"] - e["x"], snow["y"] - e["y"]) <= e["halo_radius"] * np.sqrt(2) + 1)]
        r = np.hypot(mine["x"] - e["x"], mine["y"] - e["y"])
        # the core is the part above full well; the halo ends where it falls to the faintest deposit
        assert np.all(mine["amplitude"][r <= e["r_core"] - 1] > 1e4)
        assert np.all(mine["amplitude"][r > e["r_core"] + 1] <= e["halo_amplitude"])
        assert r.max() <= e["halo_radius"] * np.sqrt(2) + 1e-9


def test_halo_pixels_flagged_and_rate_unbiased(truth_case):
    ex, events, deposits, products = truth_case
    i, g, y, x = _halo(events, deposits)
    # the ramp is cut at the hit: JUMP_DET, or SATURATED where a grown core covers the pixel
    cut = {k: np.mean(products[k]["GROUPDQ"][i, g, y, x] & (JUMP | dqflags.SATURATED) != 0) for k in products}
    jump = {k: np.mean(products[k]["DQ"][i, y, x] & JUMP != 0) for k in products}
    z = {k: np.nanmedian(((products[k]["SCI"] - ex.rate[None]) / products[k]["ERR"])[i, y, x]) for k in products}
    print(f"{i.size} halo pixels: cut at the hit {cut['on']:.3f} (off {cut['off']:.3f}), JUMP_DET in rateints "
          f"{jump['on']:.3f} (off {jump['off']:.3f}); median z {z['on']:+.3f} (off {z['off']:+.3f})")
    assert cut["on"] >= 0.99 and cut["off"] < 0.6
    assert jump["on"] >= 0.90
    assert abs(z["on"]) <= 0.1 and z["off"] > 0.5


def test_few_extra_flags_away_from_snowballs(truth_case):
    _, events, _, products = truth_case
    on, off = products["on"]["DQ"], products["off"]["DQ"]
    ny, nx = on.shape[1:]
    near = np.zeros(on.shape, bool)
    yy, xx = np.mgrid[:ny, :nx]
    for e in events:
        near[e["integration"]] |= np.hypot(xx - e["x"], yy - e["y"]) <= 2 * (e["halo_radius"] + 1) + 1
    extra = (on & JUMP != 0) & (off & JUMP == 0) & ~near
    print(f"extra JUMP_DET away from snowballs: {extra.mean():.4%} ({extra.sum()} pixel-integrations)")
    assert extra.mean() < 0.01


# ------------------------------------------------------------------------------------------ parity
PARITY_SPEC = ExposureSpec(detector="NRCA1", subarray="SUB256", size=256, corner="refpix", readpatt="BRIGHT2",
                           nints=2, ngroups=8, cr_rate=1e-3, snowballs=6, n_stars=40, n_saturating_stars=6, seed=21)
VARIANTS = {
    "jwst": {"expand_large_events": True},
    "variant": {"expand_large_events": True, "sat_required_snowball": False, "expand_factor": 1.5,
                "min_jump_area": 8.0, "mask_snowball_core_next_int": False},
}


@pytest.fixture(scope="module")
def parity_uncal(tmp_path_factory, oracle):
    out = tmp_path_factory.mktemp("snowball_parity")
    uncal = simulate_exposure(PARITY_SPEC, out)
    return out, uncal, select_references(fits.getheader(uncal), out / "refs")


def _our_jump(uncal, refs, jump):
    ramp, readout, headers = read_uncal(uncal)
    loaded = load_references({t: refs[t] for t in REFTYPES}, readout, ramp.shape[-2:])
    for step, _, _ in detector1.iter_steps(ramp, readout, headers, loaded, {"jump": jump}):
        if step == "jump":
            return ramp.groupdq.copy(), ramp.pixeldq.copy()
    raise AssertionError("jump did not run")


@pytest.mark.parity
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_snowball_flags_identical_to_jwst(parity_uncal, variant):
    out, uncal, refs = parity_uncal
    ours = VARIANTS[variant]
    theirs, _ = run_detector1(uncal, refs, out / variant, save_steps=True,
                              settings={f"jump.{k}": v for k, v in ours.items()})
    gdq, pdq = _our_jump(uncal, refs, ours)
    plain, _ = _our_jump(uncal, refs, {})
    with fits.open(theirs["jump"]) as hdul:
        jw_gdq, jw_pdq = hdul["GROUPDQ"].data, hdul["PIXELDQ"].data
    added = np.count_nonzero(gdq & JUMP) - np.count_nonzero(plain & JUMP)
    print(f"{variant}: snowball flagging added {added} JUMP_DET groups; "
          f"{np.count_nonzero(gdq != jw_gdq)} GROUPDQ values differ from jwst")
    assert added > 1000  # the case exercises the flagging
    assert np.count_nonzero(gdq != jw_gdq) == 0
    assert np.count_nonzero(pdq != jw_pdq) == 0

    root = uncal.name.removesuffix("_uncal.fits")
    rate, rateints = out / f"ours_{variant}" / f"{root}_rate.fits", out / f"ours_{variant}" / f"{root}_rateints.fits"
    detector1.run(uncal, rate, rateints, refs, {"jump": ours})
    for path, suffix in ((rate, "rate"), (rateints, "rateints")):
        with fits.open(path) as a, fits.open(theirs[suffix]) as b:
            mine, jw = {e: a[e].data for e in PRODUCT_ARRAYS}, {e: b[e].data for e in PRODUCT_ARRAYS}
        agreement = product_agreement(mine, jw)
        print(f"{suffix}: bit-identical fraction {agreement['identical']}")
        assert not detector1_tolerance_failures(agreement), (suffix, detector1_tolerance_failures(agreement))
        assert np.array_equal(mine["DQ"], jw["DQ"])


# stcal's own function, run in the oracle environment on a synthetic group DQ
_STCAL = """
import sys, numpy as np
from types import SimpleNamespace
from stcal.jump.jump import flag_large_events
gdq = np.load(sys.argv[1])
p = eval(sys.argv[3])
jd = SimpleNamespace(min_sat_area=p["min_sat_area"], min_jump_area=p["min_jump_area"],
                     sat_required_snowball=p["sat_required_snowball"], expand_factor=p["expand_factor"],
                     edge_size=p["edge_size"], min_sat_radius_extend=p["min_sat_radius_extend"],
                     sat_expand=2 * p["sat_expand"], max_extended_width=2 * p["max_extended_radius"],
                     fl_sat=2, fl_jump=4, mask_persist_grps_next_int=p["mask_snowball_core_next_int"],
                     persist_grps_flagged=int(p["snowball_time_masked_next_int"] // float(sys.argv[4])))
out, n = flag_large_events(gdq, 4, 2, jd)
np.save(sys.argv[2], out)
"""


def _synthetic_gdq(rng, nints=2, ngroups=6, n=200):
    """Cosmic-ray plus shapes, snowball discs with saturated cores (some on the edges), saturating stars."""
    gdq = np.zeros((nints, ngroups, n + 8, n + 8), np.uint8)  # drawn with a margin, cut below
    yy, xx = np.mgrid[-12:13, -12:13]
    r = np.hypot(yy + rng.uniform(-0.5, 0.5), xx + rng.uniform(-0.5, 0.5))
    for i in range(nints):
        for k in range(1, ngroups):
            p = rng.integers(1, n + 7, (150, 2))
            for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
                gdq[i, k, p[:, 0] + dy, p[:, 1] + dx] |= JUMP
            for _ in range(4):
                cy, cx = rng.integers(12, n - 4, 2)
                stretch = np.hypot(yy * rng.uniform(0.6, 1.0), xx)  # some elliptical
                gdq[i, k, cy - 12:cy + 13, cx - 12:cx + 13][stretch <= rng.uniform(3, 10)] |= JUMP
                gdq[i, k + rng.integers(0, 2):, cy - 12:cy + 13, cx - 12:cx + 13][:, r <= rng.uniform(0.5, 4)] |= 2
            cy, cx = rng.integers(12, n - 4, 2)
            gdq[i, k:, cy - 12:cy + 13, cx - 12:cx + 13][:, r <= rng.uniform(1, 6)] |= 2
    gdq[..., 0, :] |= rng.random((nints, ngroups, n + 8)) < 0.01  # a few DO_NOT_USE
    return np.ascontiguousarray(gdq[..., 4:-4, 4:-4])


@pytest.mark.parity
@pytest.mark.parametrize("params", [
    {},
    {"sat_required_snowball": False, "expand_factor": 1.4, "max_extended_radius": 6},
    {"min_sat_area": 3.0, "sat_expand": 3, "edge_size": 0, "min_sat_radius_extend": 1.0,
     "snowball_time_masked_next_int": 30},
], ids=["jwst", "no-core", "small-cores"])
def test_flag_large_events_identical_to_stcal(params, tmp_path, oracle):
    import subprocess

    from webbflow.steps.jump import LargeEvents, flag_large_events

    python, _ = oracle
    gdq = _synthetic_gdq(np.random.default_rng(len(params)))
    full = LargeEvents(**params)
    np.save(tmp_path / "in.npy", gdq)
    script = tmp_path / "stcal_flag.py"
    script.write_text(_STCAL)
    tgroup = 10.737
    subprocess.run([str(python), str(script), str(tmp_path / "in.npy"), str(tmp_path / "out.npy"),
                    repr(dataclasses.asdict(full)), str(tgroup)], check=True, capture_output=True, timeout=300)
    theirs = np.load(tmp_path / "out.npy")
    n = flag_large_events(gdq, full, tgroup)
    print(f"{params}: {n} snowballs, {np.count_nonzero(gdq != theirs)} group DQ values differ")
    assert n > 10
    np.testing.assert_array_equal(gdq, theirs)
