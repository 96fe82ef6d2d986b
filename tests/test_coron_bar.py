"""The LW bar case of the coronagraphy mode (issue #15 part 1) and the companion's sky position.

The simulator's bar configuration (``coron_specs(mask="MASKALWB")``: F335M on NRCALONG's SUB320ALWB,
the star at F335M's point 3.875" along the bar, where its HWHM is ~0.43"; both rolls and two of the
reference star's small-grid-dither points, 2 integrations x 3 groups) goes through the library as the
workflow runs it under the preset's recommended line: detector1 (dark skipped, pseudo reference
rows), image2 (calints), the coron3 association from the headers and coron3 with the bar's PSFMASK
(sector KLIP, ADI + RDI, the star measured behind the mask, the companion fit and the calibrated
contrast curve with four injection position angles).  Against the simulator's truth:

* the PSFMASK is the bar on the subarray: opaque along the bar's axis at the star's row, clear across
  it, wider at the wide end (-x for the LW bar) than at the narrow end;
* the 1e-4 companion at 1.5" is found within 0.1 px of its true pixel with S/N > 20 and its flux within
  5 % of truth x PHOTMJSR x the bar's transmission at its pixel x FLUXFRAC (as the round-mask tests);
* the contrast curve exists: finite 5-sigma contrasts between the inner working angle and 2", and the
  companion lies above the curve at its separation (it was detected);
* the companion's RA/Dec within 5 mas of truth, where the first roll's target-acquisition offset is
  6.9 mas (the WCS, which does not know it, puts the star there): ``klip.center_method: symmetry``
  measures the star behind the bar (2-3.5 mas from the true star on noiseless images of this bar;
  < 0.5 mas behind the round masks), and the RA/Dec are its offset from the star applied to the
  target's catalogue position.  The bound is the measured centre's bias on noiseless images plus the
  fit's ~1 mas; the test also checks that the error is smaller than the TA offset.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

pytestmark = pytest.mark.slow

PRODUCT = "jw01412-c1001_t001_nircam_f335m-maskbar-sub320alwb"


@pytest.fixture(scope="module")
def bar_run(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_coron_workflow import reduce_coron_case

    return reduce_coron_case(tmp_path_factory.mktemp("coron_bar"), "MASKALWB", injection_pas=[45, 135, 225, 315])


def test_bar_psfmask_is_the_lw_bar_on_the_subarray(bar_run):
    from stdatamodels.jwst import datamodels

    from webbflow.simulate.coron import BAR_OFFSETS

    out, asn, psfmask, _ = bar_run
    with datamodels.PsfMaskModel(str(psfmask)) as m:
        assert m.data.shape == (320, 320) and m.meta.subarray.name == "SUB320ALWB"
        assert m.meta.instrument.coronagraph == "MASKALWB" and fits.getheader(psfmask)["PUPIL"] == "MASKBAR"
        t = np.asarray(m.data, float)
    header = fits.getheader(out / "stage1" / f"{asn.members[0]}_calints.fits", "SCI")
    xref, yref = header["XREF_SCI"] - 1, header["YREF_SCI"] - 1
    # the star's reference point is F335M's along the bar: 3.875" (61.5 LW pixels) right of the centre
    assert abs(xref - (159.5 + BAR_OFFSETS["MASKALWB"]["F335M"] / 0.063)) < 0.5
    row = round(yref)
    assert t[row, 5:315].max() < 1e-3  # opaque along the bar's axis
    assert t[5, :].min() > 0.99 and t[314, :].min() > 0.99  # clear 4.7" across it

    def width(x):  # rows with t^2 < 0.5 at column x
        return int(np.sum(t[:, x] < 0.5))

    assert width(20) > 1.5 * width(300), (width(20), width(300))  # wide end at -x


def test_bar_coron3_recovers_the_companion_and_its_sky_position(bar_run):
    from test_coron_workflow import assert_companion_recovered, companion_against_truth

    out, asn, _, products = bar_run
    assert asn.product == PRODUCT
    assert len(products["psfsub"]) == 2 and len(products["crfints"]) == 4
    # the sky position: relative to the star measured behind the bar, not the WCS's star
    assert_companion_recovered(*companion_against_truth(out, asn, products, 63.0))


def test_bar_contrast_curve_is_produced_and_below_the_companion(bar_run):
    from astropy.table import QTable

    _, _, _, products = bar_run
    curve = QTable.read(products["contrast"])
    found = QTable.read(products["companions"])
    assert Path(products["contrast_plot"]).stat().st_size > 0
    sep = curve["separation"].value
    # the largest cut-off the library supports (4 PSF integrations + the other roll's: larger ones are NaN)
    k = [f"contrast_kl{n}" for n in curve.meta["numbasis"] if np.isfinite(curve[f"contrast_kl{n}"]).any()][-1]
    inside = (sep > 0.3) & (sep < 2.0)
    assert inside.sum() >= 5 and np.all(np.isfinite(curve[k][inside])) and np.all(curve[k][inside] > 0)
    best = found[int(np.argmax(found["snr"]))]
    limit = np.interp(float(best["separation"].value), sep, np.asarray(curve[k], float))
    print(json.dumps({"companion_contrast": float(best["contrast"]), "curve_at_its_separation": float(limit)}))
    assert float(best["contrast"]) > limit


# --- the bar demo through snakemake (config/demo-coron-bar.yaml) -----------------------------------------

DEMO_PRODUCT = PRODUCT


@pytest.fixture(scope="module")
def bar_demo(tmp_path_factory):
    """`snakemake --cores 2 --configfile config/demo-coron-bar.yaml` in a fresh folder: that folder."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_coron_workflow import run_demo_config

    return run_demo_config(tmp_path_factory.mktemp("demo_coron_bar"), "demo-coron-bar.yaml")


@pytest.mark.workflow
def test_bar_demo_through_snakemake_recovers_the_companion(bar_demo):
    """The bar demo's coron3 products (jwst's models) and its companion against the simulator's truth, with
    the thresholds of the MASK335R demo: within 0.1 px of its true pixel, S/N > 20, flux within 5 % of truth
    x PHOTMJSR x the bar's transmission at its pixel x FLUXFRAC, RA/Dec within 5 mas and closer than the
    first roll's TA offset (the star measured behind the bar)."""
    from types import SimpleNamespace

    from stdatamodels.jwst import datamodels
    from test_coron_workflow import assert_companion_recovered, companion_against_truth

    results = bar_demo / "results-coron-bar"
    asn = json.loads((results / "asn" / f"{DEMO_PRODUCT}_asn.json").read_text())
    members = asn["products"][0]["members"]
    assert [m["exptype"] for m in members] == ["science"] * 2 + ["psf"] * 5
    science = [Path(m["expname"]).name.removesuffix("_calints.fits") for m in members if m["exptype"] == "science"]
    out = results / "coron3"
    exposures = out / "exposures" / DEMO_PRODUCT
    for path, model_type in [(out / f"{DEMO_PRODUCT}_psfstack.fits", "CubeModel"),
                             (out / f"{DEMO_PRODUCT}_i2d.fits", "ImageModel"),
                             *[(exposures / f"{r}_c1001_{s}.fits", "CubeModel") for r in science
                               for s in ("psfalign", "psfsub", "crfints")]]:
        with datamodels.open(str(path)) as m:
            assert type(m).__name__ == model_type, path.name
    products = {"companions": out / f"{DEMO_PRODUCT}_companions.ecsv"}
    assert_companion_recovered(*companion_against_truth(bar_demo / "demo-coron-bar",
                                                        SimpleNamespace(members=science), products, 63.0))


@pytest.mark.workflow
def test_bar_demo_qa_figure_shows_the_bar_and_the_products(bar_demo):
    """The report's qa_coron3 figure of the bar demo: the panels' data recorded in the PNG are the products'.

    * the PSFMASK panel is the bar's reference (same pixels: count and sum), labelled MASKALWB F335M, with
      the star at F335M's point along the bar (XREF_SCI/YREF_SCI of the science calints, 61.5 px right of
      the subarray centre) where the bar is opaque;
    * one psfsub panel per roll, each the mean over its integrations of that roll's ``_psfsub``;
    * the combined panel is the sector KLIP image at its deepest finite cut-off, zoomed on the measured
      star (the companions table's centre) with the companion marked where the fit put it and the truth
      within 0.5 px of it;
    * the contrast panel is ``_contrast.ecsv``'s separations, and the shift panel has one row per PSF
      integration and science roll.
    """
    from test_coron_workflow import assert_coron3_panels

    from webbflow.simulate.coron import BAR_OFFSETS

    results = bar_demo / "results-coron-bar"
    png = results / "qa" / "coronagraphy" / "coron3" / f"{DEMO_PRODUCT}_coron3.png"
    (psfmask,) = (bar_demo / "demo-coron-bar" / "refs").glob("*psfmask*")
    panels = assert_coron3_panels(png, psfmask, results / "coron3", DEMO_PRODUCT, "MASKALWB F335M")
    # the star at F335M's point along the bar, where the bar is opaque
    assert abs(panels["psfmask"]["star"][0] - (159.5 + BAR_OFFSETS["MASKALWB"]["F335M"] / 0.063)) < 0.5
