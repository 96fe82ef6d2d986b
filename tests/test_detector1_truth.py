"""detector1 end to end on simulated exposures, judged against the simulator's truth.

Bias of the ramp fit is tested with 1/f noise off (1/f shifts whole rows
together, so one small realization's median z wanders for any correct
pipeline: stcal-algorithms.md §6); 1/f handling is tested apart, as the drop
in row-to-row scatter that the reference-pixel step buys on a full frame.
"""

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from webbflow import dqflags
from webbflow.simulate import ExposureSpec, simulate_exposure
from webbflow.stages import detector1

REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")


def _reduce(sim, outdir, params=None, label="x"):
    rate = Path(outdir) / f"{label}_rate.fits"
    rateints = Path(outdir) / f"{label}_rateints.fits"
    detector1.run(sim.uncal, rate, rateints, {t: sim.refs[t] for t in REFTYPES}, params or {})
    with fits.open(rate) as r, fits.open(rateints) as ri:
        return ({e: r[e].data.copy() for e in ("SCI", "ERR", "DQ")},
                {e: ri[e].data.copy() for e in ("SCI", "ERR", "DQ")})


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """A 256x256 corner subarray, 2 ints x 8 groups, 1/f off, many cosmic rays."""
    out = tmp_path_factory.mktemp("truth")
    spec = ExposureSpec(detector="NRCA1", subarray="SUB256", size=256, corner="refpix",
                        readpatt="BRIGHT2", nints=2, ngroups=8, one_over_f=0.0,
                        cr_rate=1e-3, n_stars=40, n_saturating_stars=6, seed=11)
    sim = simulate_exposure(spec, out, return_details=True)
    rate, rateints = _reduce(sim, out)
    truth = fits.getdata(sim.truth["rate"]).astype(float)
    first_sat = fits.getdata(sim.truth["first_saturated"]).astype(int)
    crs = Table.read(sim.truth["cosmic_rays"])
    mask_dq = fits.getdata(sim.refs["mask"], "DQ")
    gain = fits.getdata(sim.refs["gain"], "SCI").astype(float)
    rn = fits.getdata(sim.refs["readnoise"], "SCI").astype(float)
    return dict(spec=spec, rate=rate, rateints=rateints, truth=truth, first_sat=first_sat,
                crs=crs, mask_dq=mask_dq, gain=gain, rn=rn)


def _cr_map(crs, shape):
    hit = np.zeros(shape, bool)
    hit[crs["integration"], crs["y"], crs["x"]] = True
    return hit


def _clean_pixels(r):
    """Light-sensitive, good, never saturated pixels with no cosmic ray in any integration."""
    nints = r["spec"].nints
    shape = r["truth"].shape
    hit = _cr_map(r["crs"], (nints, *shape)).any(axis=0)
    bad = (r["mask_dq"] & (dqflags.DO_NOT_USE | dqflags.REFERENCE_PIXEL)) != 0
    saturated = (r["first_sat"] >= 0).any(axis=0)
    return ~hit & ~bad & ~saturated


def test_rate_matches_truth_within_errors(reduced):
    r = reduced
    good = _clean_pixels(r) & np.isfinite(r["rate"]["SCI"]) & (r["rate"]["ERR"] > 0)
    assert good.sum() > 0.8 * good.size
    z = ((r["rate"]["SCI"] - r["truth"]) / r["rate"]["ERR"])[good]
    median, std = np.median(z), np.std(z)
    print(f"clean pixels: {good.sum()}  median z = {median:+.4f}  std z = {std:.4f}")
    assert abs(median) <= 0.02
    assert abs(std - 1) <= 0.05


def test_rateints_match_truth_per_integration(reduced):
    r = reduced
    good = _clean_pixels(r)
    for i in range(r["spec"].nints):
        sci, err = r["rateints"]["SCI"][i], r["rateints"]["ERR"][i]
        ok = good & np.isfinite(sci) & (err > 0)
        z = ((sci - r["truth"]) / err)[ok]
        print(f"int {i}: median z = {np.median(z):+.4f} std z = {np.std(z):.4f}")
        assert abs(np.median(z)) <= 0.03
        assert abs(np.std(z) - 1) <= 0.06


def test_pixels_saturating_late_recover_rate(reduced):
    """Pixels that saturate at group 3 or later are fit from the groups before.

    Saturation is grown to the 3x3 neighbours (n_pix_grow_sat=1, as jwst), so
    the whole neighbourhood must stay unsaturated until group 3.
    """
    r = reduced
    fs = r["first_sat"]
    never = np.iinfo(np.int16).max
    first = np.where(fs < 0, never, fs)
    padded = np.pad(first, ((0, 0), (1, 1), (1, 1)), constant_values=never)
    ny, nx = fs.shape[1:]
    box_min = np.min([padded[:, dy:dy + ny, dx:dx + nx] for dy in range(3) for dx in range(3)], axis=0)
    late = (box_min >= 3).all(axis=0) & (first < never).any(axis=0)
    hit = _cr_map(r["crs"], fs.shape).any(axis=0)
    bad = (r["mask_dq"] & dqflags.DO_NOT_USE) != 0
    late &= ~hit & ~bad
    assert late.sum() >= 10, "the scene must have pixels that saturate mid-ramp"
    sci, err, dq = (r["rate"][e][late] for e in ("SCI", "ERR", "DQ"))
    assert np.all(np.isfinite(sci)) and not np.any(dq & dqflags.DO_NOT_USE)
    assert np.all(dq & dqflags.SATURATED)
    z = (sci - r["truth"][late]) / err
    print(f"{late.sum()} late-saturating pixels: median z = {np.median(z):+.3f}, "
          f"max |z| = {np.abs(z).max():.2f}, median rel. error = "
          f"{np.median(np.abs(sci / r['truth'][late] - 1)):.4f}")
    assert abs(np.median(z)) < 0.5
    assert np.percentile(np.abs(z), 95) < 3.5


def test_cosmic_rays_detected_and_few_false_jumps(reduced):
    r = reduced
    spec = r["spec"]
    dq = r["rateints"]["DQ"]
    fs = r["first_sat"]
    crs = r["crs"]
    # noise of one group difference (DN): CDS read noise / sqrt(nframes) and photon noise
    rate = np.clip(r["truth"], 0, None)
    tgroup = _tgroup(spec)
    sigma = np.sqrt(r["rn"] ** 2 / spec.nframes + rate * tgroup / r["gain"])
    bad = (r["mask_dq"] & (dqflags.DO_NOT_USE | dqflags.REFERENCE_PIXEL)) != 0
    cr = crs[(crs["kind"] == "cosmic_ray") & (crs["group"] >= 1)]
    i, y, x, g = (np.asarray(cr[c]) for c in ("integration", "y", "x", "group"))
    strong = np.asarray(cr["amplitude"]) > 10 * sigma[y, x]
    usable = ~bad[y, x] & ((fs[i, y, x] < 0) | (fs[i, y, x] > g))
    sel = strong & usable
    found = (dq[i[sel], y[sel], x[sel]] & dqflags.JUMP_DET) != 0
    frac = found.mean()
    print(f"{sel.sum()} cosmic rays above 10 sigma: {frac:.4%} flagged")
    assert sel.sum() > 200
    assert frac >= 0.99

    # false jumps: integrations of pixels with no hit on them or their 4 neighbours
    hit = _cr_map(crs, dq.shape)
    near = hit.copy()
    near[:, 1:, :] |= hit[:, :-1, :]
    near[:, :-1, :] |= hit[:, 1:, :]
    near[:, :, 1:] |= hit[:, :, :-1]
    near[:, :, :-1] |= hit[:, :, 1:]
    clean = ~near & ~bad[None] & (fs < 0)
    false = ((dq & dqflags.JUMP_DET) != 0)[clean].mean()
    print(f"false jump rate on {clean.sum()} clean pixel-integrations: {false:.4%}")
    assert false < 0.005


def _tgroup(spec):
    from webbflow.simulate.detectors import frame_time

    return (spec.nframes + spec.groupgap) * frame_time(spec.geometry)


@pytest.mark.slow
def test_refpix_removes_one_over_f_rows(tmp_path):
    """Full frame, 4 amplifiers: side reference pixels take out row-to-row 1/f scatter.

    jwst's side correction is a running median over 11 rows of the 8 side
    reference columns, so it removes only the part of the 1/f power slower than
    ~11 rows; faster 1/f (within rows) stays.  With the simulator's default
    mix (80 % of the variance common to the amplifiers) that is a ~20 % cut
    in the rate's row-median scatter.
    """
    spec = ExposureSpec(detector="NRCA1", subarray="FULL", readpatt="RAPID", nints=1, ngroups=4,
                        one_over_f=3.0, cr_rate=0.0, n_stars=0, n_galaxies=0,
                        n_saturating_stars=0, seed=5)
    sim = simulate_exposure(spec, tmp_path, return_details=True)
    truth = fits.getdata(sim.truth["rate"]).astype(float)
    scatter = {}
    for label, params in (("on", {}), ("off", {"refpix": {"skip": True}})):
        rate, _ = _reduce(sim, tmp_path, params, label)
        resid = rate["SCI"][4:-4, 4:-4] - truth[4:-4, 4:-4]
        row_medians = np.nanmedian(resid, axis=1)
        scatter[label] = np.std(row_medians - np.median(row_medians))
    print(f"row-median scatter (DN/s): refpix off {scatter['off']:.4f}, on {scatter['on']:.4f}")
    assert scatter["on"] < 0.85 * scatter["off"]
