"""Mode ``coronagraphy`` in the workflow (issue #15 parts 2-3): uncal -> rateints -> calints, and the
coron3 association JSON of the calints.

One science roll and one reference dither point of ``demo-coron`` (2 integrations × 3 groups) and a
target-acquisition image go through snakemake with the preset's recommended stage 1 (dark skipped,
pseudo reference rows, jump 4/4/4): the TA image is skipped with its reason, the products are the
library's with the same parameters (identical arrays), the stage-1 choices are recorded in the
headers, and the association names the calints as science and psf members (jwst reads it:
tests/test_parity_coron_stage12.py).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits

from webbflow.refs import select_references
from webbflow.refs.select import IMAGE2_REFTYPES
from webbflow.simulate import ExposureSpec, run_specs, simulate_exposure
from webbflow.simulate.presets import coron_specs
from webbflow.stages import detector1, image2

REPO = Path(__file__).resolve().parents[1]
PRODUCT = "jw01412-c1001_t001_nircam_f335m-maskrnd-sub320a335r"


def _preset_parameters(stage, recommended):
    from webbflow.config import load_modes, step_parameters

    modes = load_modes(REPO / "config" / "modes", REPO / "config" / "schema.yaml")  # validated
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    defaults = {s: {} for s in schema["properties"]["steps"]["properties"]}
    return modes["coronagraphy"], step_parameters(defaults, stage, modes["coronagraphy"], recommended=recommended)


def test_coronagraphy_preset_recommended_and_jwst_lines():
    preset, rec = _preset_parameters("detector1", True)
    _, jwst = _preset_parameters("detector1", False)
    assert preset["exp_types"] == ["NRC_CORON"] and preset["stages"] == ["detector1", "image2", "coron3"]
    assert rec["dark_current"]["skip"] is True and rec["refpix"]["pseudo_refpix"] is True
    assert rec["jump"]["three_group_rejection_threshold"] == 4.0
    # the jwst line: dark on, no pseudo reference pixels, jwst's jump thresholds
    assert not jwst["dark_current"].get("skip") and not jwst["refpix"].get("pseudo_refpix")
    assert "three_group_rejection_threshold" not in jwst["jump"]


@pytest.mark.workflow
@pytest.mark.slow
def test_coronagraphy_mode_makes_calints_and_coron3_association(tmp_path):
    data = tmp_path / "data"
    specs = coron_specs(nints=2, ngroups=3)
    uncals = run_specs([specs[0], specs[2]], data)
    # a target-acquisition image of the same program: skipped with its reason, not an error (even with
    # inputs.on_unsupported: error)
    tacq = ExposureSpec(detector="NRCALONG", subarray="SUB64P", exp_type="NRC_TACQ", filter="F335M", program=1412,
                        observation=1, visit_group=1, ngroups=3, n_stars=2, n_galaxies=0, n_saturating_stars=0)
    simulate_exposure(tacq, data)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "inputs": {"uncal_dir": str(data / "uncal"), "on_unsupported": "error"}, "results_dir": "out",
        "references": {"dir": str(data / "refs")}, "modes": ["coronagraphy"]}))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                           "--configfile", str(config), "--cores", "2", "stage1", "stage2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "NRC_TACQ is a target-acquisition image" in proc.stdout + proc.stderr
    out = tmp_path / "out"
    assert not list(out.rglob("*_01101_*"))  # nothing made of the TA image

    _, params1 = _preset_parameters("detector1", True)
    lib = tmp_path / "lib"
    for uncal in uncals:
        root = uncal.name.removesuffix("_uncal.fits")
        header = fits.getheader(uncal)
        detector1.run(uncal, lib / f"{root}_rate.fits", lib / f"{root}_rateints.fits",
                      select_references(header, data / "refs"), params1)
        image2.run(lib / f"{root}_rateints.fits", lib / f"{root}_calints.fits",
                   select_references(header, data / "refs", None, IMAGE2_REFTYPES), {})
        rateints = out / "detector1" / "f335m" / f"{root}_rateints.fits"
        assert fits.getheader(rateints)["S_DARK"] == "SKIPPED" and fits.getheader(rateints)["S_REFPIX"] == "COMPLETE"
        mine = out / "image2" / "f335m" / f"{root}_calints.fits"
        with fits.open(mine) as a, fits.open(lib / f"{root}_calints.fits") as b:
            assert a["SCI"].data.shape == (2, 320, 320) and a["SCI"].header["BUNIT"] == "MJy/sr"
            for ext in ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"):
                np.testing.assert_array_equal(a[ext].data, b[ext].data, err_msg=ext)
    asn = json.loads((out / "asn" / f"{PRODUCT}_asn.json").read_text())
    assert asn["asn_type"] == "coron3" and asn["products"][0]["name"] == PRODUCT
    members = asn["products"][0]["members"]
    assert [m["exptype"] for m in members] == ["science", "psf"]
    for member, uncal in zip(members, uncals):
        path = (out / "asn" / member["expname"]).resolve()
        assert path == (out / "image2" / "f335m" / uncal.name.replace("_uncal", "_calints")).resolve()
