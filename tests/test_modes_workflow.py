"""Modes as data, end to end: a second mode next to imaging, per-mode overrides, preset typos.

The repository ships one mode (imaging), so the test copies the workflow (Snakefile, config/,
workflow/, envs/, profiles/; the library is the installed webbflow) into a temporary folder and adds
a test preset ``config/modes/testmode.yaml`` (EXP_TYPE NRC_TSIMAGE, stage detector1 only). The
program is three hand-built exposures reduced with a folder of references (no CRDS).
"""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _snakemake import assert_ok as _ok
from _snakemake import run_snakemake
from astropy.io import fits

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[1]
TESTMODE = {"description": "test mode: NRC_TSIMAGE to rate/rateints", "exp_types": ["NRC_TSIMAGE"],
            "stages": ["detector1"], "steps": {"detector1": {}}}
IMAGING_ROOTS = ("jw01234001001_02101_00001_nrca1", "jw01234001001_02101_00002_nrca1")
TESTMODE_ROOT = "jw01234001001_02101_00003_nrca1"


def rate_products(*roots):
    """The stage-1 products of these exposures (all in F200W), relative to the work folder: rate,
    rateints and the 1/f QA table."""
    return sorted(f"out/detector1/f200w/{root}_{suffix}" for root in roots
                  for suffix in ("rate.fits", "rateints.fits", "onef.ecsv"))



@pytest.fixture(scope="module")
def program(tmp_path_factory, make):
    """The copied workflow with the test mode, the program, and a runner for config variants."""
    root = tmp_path_factory.mktemp("modes")
    flow = root / "flow"
    flow.mkdir()
    for name in ("Snakefile", "config", "workflow", "envs", "profiles"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, flow / name)
    (flow / "config" / "modes" / "testmode.yaml").write_text(yaml.safe_dump(TESTMODE))
    data = root / "data"
    make.reference_set(data / "refs", detector="NRCA1", shape=(32, 32))
    (data / "uncal").mkdir()
    for number, (exp_type, rate) in enumerate([("NRC_IMAGE", 50.0), ("NRC_IMAGE", 80.0), ("NRC_TSIMAGE", 60.0)], 1):
        make.uncal(data / "uncal" / f"e{number}_uncal.fits", make.ramp(nints=1, ngroups=5, rate=rate),
                   EXPOSURE=str(number), EXP_TYPE=exp_type)
    work = root / "work"
    work.mkdir()
    base = {"inputs": {"uncal_dir": str(data / "uncal")}, "results_dir": "out",
            "references": {"dir": str(data / "refs")}, "modes": ["imaging", "testmode"]}

    def snakemake(*args, **config):
        """Run the copied workflow in ``work`` with ``base`` updated by ``config``."""
        path = root / f"config{len(list(root.glob('config*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump({**base, **config}))
        return run_snakemake(work, "--configfile", str(path), *args, timeout=600, check=False,
                             snakefile=flow / "Snakefile")

    return type("Program", (), {"flow": flow, "work": work, "snakemake": staticmethod(snakemake)})


def _digests(work, paths):
    return {p: hashlib.sha256((work / p).read_bytes()).hexdigest() for p in paths}


def test_per_mode_override_changes_only_that_modes_products(program, make):
    run, work = program.snakemake, program.work

    def plan(**config):
        """Outputs of the jobs ``snakemake -n stage1`` plans with this config."""
        planned = make.planned_outputs(_ok(run("-n", "stage1", **config)).stdout)
        return {rule: sorted(outputs) for rule, outputs in planned.items()}

    # imaging alone: the NRC_TSIMAGE exposure is skipped
    proc = _ok(run("--cores", "2", "stage1", modes=["imaging"]))
    assert "EXP_TYPE NRC_TSIMAGE is not supported" in proc.stdout + proc.stderr
    made = sorted(p.relative_to(work).as_posix() for p in (work / "out" / "detector1").rglob("*") if p.is_file())
    assert made == rate_products(*IMAGING_ROOTS)
    # enabling the test mode adds its exposure and re-runs nothing of imaging
    assert plan() == {"detector1": rate_products(TESTMODE_ROOT)}
    _ok(run("--cores", "2", "stage1"))
    assert plan() == {}
    imaging_before = _digests(work, rate_products(*IMAGING_ROOTS))

    jump7 = {"jump": {"rejection_threshold": 7.0}}
    # one mode only: exactly that mode's products
    assert plan(mode_steps={"testmode": jump7}) == {"detector1": rate_products(TESTMODE_ROOT)}
    assert plan(mode_steps={"imaging": jump7}) == {"detector1": rate_products(*IMAGING_ROOTS)}
    # all modes: every exposure's products
    assert plan(steps=jump7) == {"detector1": rate_products(*IMAGING_ROOTS, TESTMODE_ROOT)}
    # this mode wins over all modes: the test mode set back to the default, so only imaging changes
    back = {"testmode": {"jump": {"rejection_threshold": 4.0}}}
    assert plan(steps=jump7, mode_steps=back) == {"detector1": rate_products(*IMAGING_ROOTS)}

    # run the per-mode override: the test mode's product records it, imaging's are untouched
    _ok(run("--cores", "2", "stage1", mode_steps={"testmode": jump7}))
    assert _digests(work, rate_products(*IMAGING_ROOTS)) == imaging_before
    for root, threshold in [(TESTMODE_ROOT, 7.0), (IMAGING_ROOTS[0], 4.0)]:
        with fits.open(work / "out" / "detector1" / "f200w" / f"{root}_rate.fits") as hdul:
            assert json.loads(hdul[0].header["WF_PARS"])["jump"]["rejection_threshold"] == threshold
            assert hdul[0].header["EXP_TYPE"] == ("NRC_TSIMAGE" if root == TESTMODE_ROOT else "NRC_IMAGE")
    assert plan(mode_steps={"testmode": jump7}) == {}


def test_preset_typo_stops_at_start_up_naming_file_and_key(program, tmp_path):
    flow = tmp_path / "flow"
    shutil.copytree(program.flow, flow)
    preset = flow / "config" / "modes" / "testmode.yaml"
    preset.write_text(yaml.safe_dump({**TESTMODE, "steps": {"detector1": {"jump": {"rejection_treshold": 7}}}}))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"modes": ["imaging", "testmode"], "results_dir": "out"}))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(flow / "Snakefile"), "-d", str(tmp_path / "w"),
           "--configfile", str(config), "-n"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"{preset}: key steps.detector1.jump.rejection_treshold: " in proc.stdout + proc.stderr
    # an unknown mode name in mode_steps is the user's typo: the config key is named
    preset.write_text(yaml.safe_dump(TESTMODE))
    config.write_text(yaml.safe_dump({"mode_steps": {"tesmode": {"jump": {"rejection_threshold": 7}}}}))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "config key mode_steps.tesmode: 'tesmode' is not one of ['coronagraphy', 'imaging', 'testmode'" in proc.stdout + proc.stderr
    assert not (tmp_path / "w" / "out").exists()
