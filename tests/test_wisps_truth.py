"""image2's wisp subtraction (issue 17 part 6, NC-103) on a simulated NRCA3 exposure, against its truth.

One exposure of the ``demo-imaging-wisps`` preset (NRCA3 SUB320 corner, F150W, sky 2 DN/s, 1/f
noise, cosmic rays, Poisson and read noise), with a wisp of 8 % of the sky at its peak, through
detector1 and image2 with the option off and on (the simulator's template folder).  The wisp left
in a cal is measured independently of the step: a least-squares fit of the template with a constant
per row (the 1/f stripes) on the pixels away from every true source, clipped at 4 sigma.
"""

from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from webbflow import dqflags
from webbflow.config import DETECTOR1_STEPS
from webbflow.refs.select import DETECTOR1_REFTYPES, IMAGE2_REFTYPES, select_references
from webbflow.simulate import simulate_exposure
from webbflow.simulate.presets import preset_specs
from webbflow.stages import detector1, image2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("wisps")
    spec = preset_specs("demo-imaging-wisps")[0]
    spec = replace(spec, nints=1, ngroups=8, wisp=0.08 * spec.sky)
    uncal = simulate_exposure(spec, out)
    header = fits.getheader(uncal)
    rate = out / f"{spec.rootname}_rate.fits"
    detector1.run(uncal, rate, out / f"{spec.rootname}_rateints.fits",
                  select_references(header, out / "refs", None, DETECTOR1_REFTYPES), {s: {} for s in DETECTOR1_STEPS})
    refs = select_references(header, out / "refs", None, IMAGE2_REFTYPES)
    cals = {"off": out / "off_cal.fits", "on": out / "on_cal.fits"}
    image2.run(rate, cals["off"], refs, {})
    statuses = image2.run(rate, cals["on"], refs, {"wisps": {"template_dir": str(out / "wisps")}})
    truth = fits.getheader(out / "truth" / f"{spec.rootname}_truth_rate.fits")
    template = fits.getdata(out / "wisps" / truth["WISPTMPL"]).astype(float)
    g = spec.geometry
    template = template[g.ystart - 1:g.ystart - 1 + g.ysize, g.xstart - 1:g.xstart - 1 + g.xsize]
    placed = Table.read(out / "truth" / f"{spec.rootname}_sources.ecsv")
    return spec, cals, statuses, truth, template, placed


def _away_from_sources(placed, shape):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    far = np.ones(shape, bool)
    for s in placed:
        far &= np.hypot(xx - s["x"], yy - s["y"]) > (15 if s["rate"] > 300 else 8)
    return far


def _wisp_amplitude(cal, template, placed):
    """Template scale in ``cal`` (MJy/sr): least squares with a free constant per row, true sources
    masked, 4-sigma clipped (cosmic-ray and snowball residuals)."""
    data = fits.getdata(cal, "SCI").astype(float)
    dq = fits.getdata(cal, "DQ")
    good = _away_from_sources(placed, data.shape) & np.isfinite(data) & ((dq & dqflags.DO_NOT_USE) == 0)
    use = good
    for _ in range(5):
        n = np.maximum(use.sum(axis=1, keepdims=True), 1)
        t = template - np.where(use, template, 0).sum(axis=1, keepdims=True) / n
        d = data - np.where(use, data, 0).sum(axis=1, keepdims=True) / n
        scale = (t[use] @ d[use]) / (t[use] @ t[use])
        r = d - scale * t
        sigma = 1.4826 * np.median(np.abs(r[use] - np.median(r[use])))
        use = good & (np.abs(r) < 4 * sigma)
    return scale


def test_cal_records_the_subtraction(reduced):
    _, cals, statuses, truth, _, _ = reduced
    from stdatamodels.jwst import datamodels

    assert statuses["wisps"] == "COMPLETE"
    with datamodels.open(str(cals["on"])) as m:
        assert type(m).__name__ == "ImageModel" and m.meta.cal_step.photom == "COMPLETE"
    primary = fits.getheader(cals["on"])
    assert primary["S_WISPS"] == "COMPLETE" and primary["R_WISP"] == truth["WISPTMPL"]
    assert primary["WISPSCL"] == pytest.approx(truth["WISPMJSR"], rel=0.10)
    assert "S_WISPS" not in fits.getheader(cals["off"])  # off: the cal is jwst's


def test_residual_wisp_at_most_ten_percent_of_injected(reduced):
    _, cals, _, truth, template, placed = reduced
    injected = truth["WISPMJSR"]
    # the measure sees the whole wisp when nothing is subtracted ...
    assert _wisp_amplitude(cals["off"], template, placed) == pytest.approx(injected, rel=0.10)
    # ... and at most 10 % of it after the subtraction
    assert abs(_wisp_amplitude(cals["on"], template, placed)) <= 0.10 * injected


def test_source_fluxes_unchanged_within_half_a_percent(reduced):
    """Bright isolated stars: aperture sums of the subtracted cal (less the true sky) against those of
    the unsubtracted one less the true sky and the true wisp: the step takes the wisp, not the stars."""
    _, cals, _, truth, template, placed = reduced
    on, off = (fits.getdata(cals[k], "SCI").astype(float) for k in ("on", "off"))
    sky = truth["SKY_MJSR"]
    expected = off - sky - truth["WISPMJSR"] * template
    ny, nx = on.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ratios = []
    for s in placed[(placed["type"] == "star") & (placed["rate"] > 500)]:
        if not (12 < s["x"] < nx - 13 and 12 < s["y"] < ny - 13):
            continue
        if np.sort(np.hypot(placed["x"] - s["x"], placed["y"] - s["y"]))[1] < 20:
            continue
        ap = np.hypot(xx - s["x"], yy - s["y"]) <= 8
        if not np.isfinite(on[ap]).all():
            continue
        ratios.append(np.sum(on[ap] - sky) / np.sum(expected[ap]))
    assert len(ratios) >= 5
    assert np.all(np.abs(np.array(ratios) - 1) < 0.005), ratios
