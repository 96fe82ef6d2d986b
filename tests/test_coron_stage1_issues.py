"""The coronagraphic stage-1 known issues as numbers (issue #15; JDox NC-CI01, NC-CI02).

Every exposure of the ``demo-coron`` preset (2 rolls + 5 reference dither points, 2 integrations × 5
groups, MEDIUM2; a dark reference with 6 DN/frame of noise; 3 DN of 1/f that no reference pixel can
remove) goes through our detector1 three ways: jwst's defaults (dark subtracted, refpix a no-op),
dark skipped, dark skipped + pseudo reference rows (the ``coronagraphy`` preset's stage 1).  Measured
on the background (> 40 px from the mask centre, rows 8–311), against the truth rate:

* **jump-flag fraction** of the rateints pixels.  Subtracting the noisy dark adds its noise to every
  group difference, so jump flags more: skipping it must give at most 0.95 × as many flags
  (measured 0.0621 vs 0.0735 when the test was written; 0.0612 with the pseudo rows too).
* **pixel noise** of the rateints (robust σ of rateints − truth rate over the background): the
  dark's noise adds to every pixel's slope; skipping it must lower it to at most 0.85 × (measured
  0.141 vs 0.194 DN/s; 0.140 with the pseudo rows).
* **background-level noise**: the scatter (std) over the 14 integrations of each integration's
  background median of (rateints − truth rate).  The 1/f's low frequencies shift whole groups,
  which no reference pixel of the subarray sees; the pseudo reference rows remove those per-group
  offsets: with them it must be at most 0.8 × what it is without (measured 0.0219 vs 0.0317 DN/s).
  They also remove the sky that falls on the edge rows (the median drops by ~0.3 DN/s, the sky
  rate), so the level itself is not compared.
* **row noise** (std of the row medians within an integration) is printed, not asserted: the pseudo
  rows correct whole groups, not the row-wise 1/f (measured 0.0386 without, 0.0387 with).
"""

import numpy as np
import pytest
from astropy.io import fits

from webbflow import dqflags
from webbflow.refs import select_references
from webbflow.simulate import run_specs
from webbflow.simulate.presets import coron_specs
from webbflow.stages import detector1

pytestmark = pytest.mark.slow

CASES = {
    "jwst": {},
    "no_dark": {"dark_current": {"skip": True}},
    "no_dark_pseudo": {"dark_current": {"skip": True}, "refpix": {"pseudo_refpix": True}},
}


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("coron_issues")
    uncals = run_specs(coron_specs(), out)
    y, x = np.mgrid[:320, :320]
    background = (np.hypot(x - 159.5, y - 159.5) > 40) & (y >= 8) & (y < 312)
    stats = {}
    for name, params in CASES.items():
        jumps, levels, row_noise, pixel_noise, status = [], [], [], [], set()
        for uncal in uncals:
            refs = select_references(fits.getheader(uncal), out / "refs")
            truth = fits.getdata(out / "truth" / uncal.name.replace("_uncal.fits", "_truth_rate.fits"))
            rateints = out / name / uncal.name.replace("_uncal", "_rateints")
            rateints.parent.mkdir(exist_ok=True)
            detector1.run(uncal, rateints.with_name(uncal.name.replace("_uncal", "_rate")), rateints, refs, params)
            with fits.open(rateints) as h:
                sci, dq = h["SCI"].data, h["DQ"].data
                status.add(h[0].header.get("S_REFPIX"))
            jumps.append(((dq & dqflags.JUMP_DET) != 0)[:, background])
            resid = np.where(background, sci - truth, np.nan)
            levels.extend(np.nanmedian(resid, axis=(1, 2)))
            rows = np.nanmedian(resid[:, 8:312], axis=2)
            row_noise.extend(np.nanstd(rows, axis=1))
            good = resid[:, background]
            good = good[np.isfinite(good)]
            pixel_noise.append(1.4826 * np.median(np.abs(good - np.median(good))))
        stats[name] = {"jump": float(np.mean(jumps)), "level_scatter": float(np.std(levels)),
                       "level": float(np.mean(levels)), "row_noise": float(np.mean(row_noise)),
                       "pixel_noise": float(np.mean(pixel_noise)),
                       "refpix": status}
    print(stats)
    return stats


def test_dark_off_gives_fewer_false_jumps_and_less_pixel_noise(reduced):
    assert reduced["no_dark"]["jump"] <= 0.95 * reduced["jwst"]["jump"]
    assert reduced["no_dark"]["pixel_noise"] <= 0.85 * reduced["jwst"]["pixel_noise"]


def test_pseudo_refpix_lowers_background_level_noise(reduced):
    assert reduced["no_dark_pseudo"]["refpix"] == {"COMPLETE"} and reduced["no_dark"]["refpix"] == {"SKIPPED"}
    assert reduced["no_dark_pseudo"]["level_scatter"] <= 0.8 * reduced["no_dark"]["level_scatter"]
