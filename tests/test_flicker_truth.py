"""clean_flicker_noise judged against the simulator's truth, with bias and 1/f tested apart.

stcal-algorithms.md §6: 1/f shifts whole rows together, so one small realization's median z
wanders for any correct pipeline.  So:

- **1/f**: an interior SUB256 subarray (no reference pixels: refpix cannot remove the 1/f, only
  clean_flicker_noise can) with 3 DN of 1/f.  The row-to-row scatter of the row medians of
  (rate − true rate) over background pixels must drop by ≥ 50 % in power with the step on.
- **bias**: the same field with the 1/f off (median z of background pixels within ±0.02 with the
  step off).  With it on, the background moves by no more than jwst's median of integer-DN group
  differences allows (0.5 DN per difference: 0.5 / TGROUP DN/s), and bright stars photometered
  against a local background keep their fluxes within 0.1 %.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from webbflow.simulate import ExposureSpec, simulate_exposure
from webbflow.stages import detector1

REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")
SPEC = ExposureSpec(detector="NRCA1", subarray="SUB256", size=256, corner="interior", readpatt="BRIGHT2",
                    nints=2, ngroups=6, one_over_f=3.0, cr_rate=2e-4, n_stars=20, star_rate_range=(2000.0, 20000.0),
                    n_galaxies=0,
                    n_saturating_stars=0, seed=52)
ON = {"clean_flicker_noise": {"skip": False}}
T_GROUP = 1.38288  # s, BRIGHT2 on SUB256 (2 frames of 0.69144 s)


def _reduce(sim, out, params, label):
    rate = Path(out) / f"{label}_rate.fits"
    detector1.run(sim.uncal, rate, Path(out) / f"{label}_rateints.fits", {t: sim.refs[t] for t in REFTYPES}, params)
    with fits.open(rate) as r:
        return {e: r[e].data.astype(np.float64) for e in ("SCI", "ERR", "DQ")}


def _case(out, one_over_f):
    sim = simulate_exposure(replace(SPEC, one_over_f=one_over_f), out, return_details=True)
    truth = fits.getdata(sim.truth["rate"]).astype(np.float64)
    crs = Table.read(sim.truth["cosmic_rays"])
    hit = np.zeros(truth.shape, bool)
    hit[crs["y"], crs["x"]] = True
    # background: far from every source (the truth's sky level plus a margin), no cosmic ray
    sky = np.median(truth)
    sources = ndimage.binary_dilation(truth > sky + 0.5, iterations=4)
    background = ~sources & ~ndimage.binary_dilation(hit, iterations=1)
    return dict(truth=truth, background=background, sky=sky,
                off=_reduce(sim, out, {}, "off"), on=_reduce(sim, out, ON, "on"))


@pytest.fixture(scope="module")
def with_one_over_f(tmp_path_factory):
    return _case(tmp_path_factory.mktemp("flicker"), SPEC.one_over_f)


@pytest.fixture(scope="module")
def without_one_over_f(tmp_path_factory):
    return _case(tmp_path_factory.mktemp("noflicker"), 0.0)


def _row_scatter(rate, truth, background):
    resid = np.where(background & np.isfinite(rate), rate - truth, np.nan)
    rows = np.nanmedian(resid, axis=1)
    return np.nanstd(rows)


def test_one_over_f_power_halved(with_one_over_f):
    r = with_one_over_f
    before = _row_scatter(r["off"]["SCI"], r["truth"], r["background"])
    after = _row_scatter(r["on"]["SCI"], r["truth"], r["background"])
    print(f"row-median scatter of rate - truth: {before:.4f} DN/s off, {after:.4f} DN/s on "
          f"(power ratio {(after / before) ** 2:.3f})")
    assert (after / before) ** 2 <= 0.5


def _local_fluxes(image, labels, ids):
    """Flux of each labelled footprint less its area times the median of a 4-px ring around it."""
    fluxes = []
    for i in ids:
        inside = labels == i
        ring = ndimage.binary_dilation(inside, iterations=4) & ~inside & (labels == 0)
        fluxes.append(np.nansum(image[inside]) - inside.sum() * np.nanmedian(image[ring]))
    return np.array(fluxes)


def test_no_bias_without_one_over_f(without_one_over_f):
    r = without_one_over_f
    on, off, truth = r["on"], r["off"], r["truth"]
    good = r["background"] & np.isfinite(on["SCI"]) & np.isfinite(off["SCI"]) & (on["DQ"] == 0)
    assert good.sum() > 0.5 * good.size
    z_off = ((off["SCI"] - truth) / off["ERR"])[good]
    shift = np.median((on["SCI"] - off["SCI"])[good])
    # jwst's background is the median of group differences of integer DN: it can sit up to half a DN
    # from the distribution's centre, which the per-row medians (averaging over many rows) do not
    # share, so the whole frame moves by up to 0.5 DN per difference, 0.5 / TGROUP in the rate.
    bound = 0.5 / T_GROUP
    print(f"background pixels {good.sum()}: median z {np.median(z_off):+.4f} with the step off; on - off "
          f"{shift:+.4f} DN/s (bound {bound:.3f}); row scatter of on - off "
          f"{_row_scatter(on['SCI'], off['SCI'], good):.4f} DN/s")
    assert abs(np.median(z_off)) <= 0.02
    assert abs(shift) <= bound
    # bright stars, photometered against a local background as a photometrist would: unchanged.  The
    # row medians the step subtracts carry white noise (~1.25 sigma / sqrt(pixels per row)), a few DN/s
    # over a footprint of ~10 x 10 pixels: 0.1 % of a star above 5000 DN/s.
    labels, n = ndimage.label(ndimage.binary_dilation(truth > r["sky"] + 5.0, iterations=3))
    ids = np.arange(1, n + 1)
    bright = ids[ndimage.sum(truth - r["sky"], labels, ids) > 5000.0]
    assert bright.size >= 3
    f_on, f_off = _local_fluxes(on["SCI"], labels, bright), _local_fluxes(off["SCI"], labels, bright)
    f_true = _local_fluxes(truth, labels, bright)
    rel = np.abs(f_on / f_off - 1)
    print(f"{bright.size} bright stars: max |flux on / flux off - 1| = {rel.max():.2e}; "
          f"median |flux off / truth - 1| = {np.median(np.abs(f_off / f_true - 1)):.2e}")
    assert rel.max() <= 1e-3
