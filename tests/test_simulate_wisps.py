"""The simulator's wisps (issue 17 part 6): injected as diffuse light like the sky, with their template and truth."""

from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from webbflow.simulate import ExposureSpec, optics, simulate_exposure
from webbflow.simulate.presets import preset_specs, run_specs
from webbflow.simulate.stage2_refs import flat_response
from webbflow.simulate.wisps import WISP_DETECTORS, wisp_template

SPEC = ExposureSpec(detector="NRCA3", subarray="SUB64", size=64, corner=(101, 1861), readpatt="BRIGHT2",
                    nints=1, ngroups=3, filter="F200W", scene="sky", n_stars=0, n_galaxies=0,
                    n_saturating_stars=0, n_bright_stars=0, sky=2.0, seed=3).noiseless()


def test_wisp_adds_its_template_through_area_and_flat(tmp_path):
    plain = simulate_exposure(SPEC, tmp_path / "plain", return_details=True)
    wisp = simulate_exposure(replace(SPEC, wisp=0.15), tmp_path / "wisp", return_details=True)
    g = SPEC.geometry
    template = fits.getdata(wisp.truth["wisp_template"])
    assert template.shape == (2048, 2048) and template.max() == pytest.approx(1.0)
    cut = template[g.ystart - 1:g.ystart - 1 + g.ysize, g.xstart - 1:g.xstart - 1 + g.xsize]
    assert np.ptp(cut) > 0.2  # the subarray sits on the wisp's blob
    response = flat_response(SPEC.detector, g, SPEC.filter, SPEC.pupil, SPEC.ref_seed) * wisp.model.qe
    expected = 0.15 * cut * optics.pixel_area_map(SPEC.detector, g) * response
    np.testing.assert_allclose(wisp.rate - plain.rate, expected, atol=2e-6 * float(plain.rate.max()))
    header = fits.getheader(wisp.truth["rate"])
    assert header["WISPAMP"] == 0.15 and header["WISPTMPL"] == "WISP_NRCA3_F200W_CLEAR.fits"
    assert header["WISPMJSR"] == pytest.approx(0.15 * optics.photmjsr("F200W"))
    assert "WISPAMP" not in fits.getheader(plain.truth["rate"])


def test_wisps_only_where_they_appear():
    with pytest.raises(ValueError, match="wisp= needs scene='sky' on NRCA3, NRCB3, NRCB4"):
        replace(SPEC, detector="NRCA1", subarray="SUB160", size=None, corner=None, wisp=0.1)
    for det in WISP_DETECTORS:
        t = wisp_template(det, "F150W")
        assert t.max() == pytest.approx(1.0) and t.min() >= 0 and not t.flags.writeable
    # wider at longer wavelength: more of the frame above half the peak
    assert (wisp_template("NRCA3", "F200W") > 0.5).sum() > (wisp_template("NRCA3", "F150W") > 0.5).sum()


def test_preset_amplitudes_differ_per_exposure_and_are_few_percent_of_sky():
    specs = preset_specs("demo-imaging-wisps")
    assert len(specs) == 4 and {s.detector for s in specs} == {"NRCA3"}
    amplitudes = np.array([s.wisp / s.sky for s in specs])
    assert np.all((amplitudes >= 0.04) & (amplitudes <= 0.08)) and len(set(amplitudes)) == 4


def test_truth_table_lists_each_exposure(tmp_path):
    specs = [replace(SPEC, exposure=k + 1, wisp=0.05 * (k + 1)) for k in range(2)]
    run_specs(specs, tmp_path)
    table = Table.read(tmp_path / "truth" / "wisps.ecsv")
    assert list(table["rootname"]) == [s.rootname for s in specs]
    np.testing.assert_allclose(table["amplitude_mjysr"], [0.05 * optics.photmjsr("F200W"), 0.1 * optics.photmjsr("F200W")])
    assert (tmp_path / "wisps" / table["template"][0]).exists()
