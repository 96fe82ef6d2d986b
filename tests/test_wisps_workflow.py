"""The wisp demo through the workflow (issue 17 part 6): ``demo: {preset: demo-imaging-wisps}`` to stage 2.

Under ``step_defaults: recommended`` image2 subtracts the demo's own templates from its four NRCA3
exposures (the cals record it, the scale agrees with the injected amplitude of truth/wisps.ecsv);
under ``jwst`` the template folder is not set and the template is no input of image2.
Runs the simulation and detector1 of four SUB320 exposures: ``workflow`` and ``slow``.
"""

import json
from functools import partial
from pathlib import Path

import pytest
import yaml
from _snakemake import run_snakemake
from astropy.io import fits
from astropy.table import Table

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


_snakemake = partial(run_snakemake, timeout=1200)


@pytest.fixture(scope="module")
def wisp_demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wisp_demo")
    config = workdir / "wisps.yaml"
    config.write_text(json.dumps({"demo": {"preset": "demo-imaging-wisps"}}))
    _snakemake(workdir, "--configfile", str(config), "--cores", "2", "stage2")
    return workdir, config


def test_recommended_subtracts_each_exposures_wisp(wisp_demo):
    workdir, _ = wisp_demo
    truth = Table.read(workdir / "demo" / "truth" / "wisps.ecsv")
    assert len(truth) == 4 and set(truth["detector"]) == {"NRCA3"}
    for row in truth:
        cal = next((workdir / "results" / "image2").glob(f"*/{row['rootname']}_cal.fits"))
        primary = fits.getheader(cal)
        assert primary["S_WISPS"] == "COMPLETE" and primary["R_WISP"] == row["template"]
        assert (workdir / "demo" / "wisps" / row["template"]).exists()
        # each exposure's own scale (4-8 % of the sky, different per exposure), within 10 %
        assert primary["WISPSCL"] == pytest.approx(row["amplitude_mjysr"], rel=0.10)


def test_jwst_line_leaves_the_wisps(wisp_demo, tmp_path):
    """Under jwst (with the recommended layer's snowball line kept, so that detector1 is unchanged)
    exactly the four image2 jobs re-run, because their wisp parameters changed: no template folder,
    no template input."""
    workdir, _ = wisp_demo
    # the imaging preset's recommended jump line (snowballs), whatever it holds, kept under jwst
    jump = yaml.safe_load((REPO / "config" / "modes" / "imaging.yaml").read_text())["recommended"]["detector1"]["jump"]
    jwst = tmp_path / "jwst.yaml"
    jwst.write_text(json.dumps({"demo": {"preset": "demo-imaging-wisps"}, "step_defaults": "jwst",
                                "steps": {"jump": jump}}))
    plan = _snakemake(workdir, "--configfile", str(jwst), "-n", "stage2").stdout
    jobs = [line.split("rule ")[1].rstrip(":") for line in plan.splitlines() if line.startswith(("rule ", "localrule "))]
    assert sorted(jobs) == ["image2"] * 4 + ["stage2"], jobs
    assert "WISP_NRCA3" not in plan and '"template_dir":null' in plan
