"""Planning is correct in one run (issue 12, item 1; item 10's copied project).

Each case copies the session's reduced demo (CRDS mode) to a new folder -- which is itself a
moved project -- changes one thing, and checks that ``snakemake -n`` lists exactly the work the
change needs and that the first run does it (exit 0), leaving nothing more to do.
"""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from _snakemake import run_snakemake
from astropy.io import fits

pytestmark = [pytest.mark.faults, pytest.mark.workflow]

REPO = Path(__file__).resolve().parents[2]
JOB = re.compile(r"^\s*(?:local)?rule (\w+):\n(?:.*\n)*?\s*wildcards: (.*)$", re.M)


def snakemake(workdir, *args, ok=True):
    return run_snakemake(workdir, *args, timeout=600, check=ok)


def planned(workdir, *args):
    """rule -> sorted wildcards of the jobs ``snakemake -n`` lists."""
    out = snakemake(workdir, "-n", *args)
    jobs = {}
    for rule, wildcards in JOB.findall(out.stdout + out.stderr):
        jobs.setdefault(rule, []).append(wildcards)
    return {rule: sorted(w) for rule, w in jobs.items()}


def detector1_of(jobs):
    return sorted(re.search(r"exposure=(\w+), detector=(\w+)", w).group(0) for w in jobs.get("detector1", []))


@pytest.fixture
def project(demo_workdir, tmp_path):
    """A copy of the reduced demo in another folder (mtimes kept, as mv or cp -a do)."""
    copy = tmp_path / "moved"
    shutil.copytree(demo_workdir, copy, symlinks=True)
    return copy


def test_moved_project_reruns_nothing(project):
    assert planned(project) == {}


def test_new_override_reruns_its_products_in_one_run(project, tmp_path):
    """overrides.dark applies to every exposure: all 16 detector1 jobs are planned (none was
    before the fix: only crds_prefetch ran); the 8 NRCA1 rates are made in one run."""
    dark = sorted((project / "demo" / "refs").glob("*_nrca1_dark_*.fits"))[0]
    cfg = tmp_path / "override.yaml"
    cfg.write_text(f"overrides:\n  dark: demo/refs/{dark.name}\n")
    jobs = planned(project, "--configfile", str(cfg))
    assert len(detector1_of(jobs)) == 16 and "crds_prefetch" not in jobs
    rates = sorted(str(p.relative_to(project)) for p in (project / "results" / "detector1").rglob("*nrca1_rate.fits"))
    assert len(rates) == 8
    snakemake(project, "--cores", "2", *rates, "--configfile", str(cfg))
    assert planned(project, *rates, "--configfile", str(cfg)) == {}
    lock = json.loads((project / "results" / "crds.lock.json").read_text())
    for rate in rates:
        root = Path(rate).name.removesuffix("_rate.fits")
        assert fits.getheader(project / rate)["R_DARK"] == dark.name
        assert lock["exposures"][root]["references"]["dark"]["file"] == dark.name


def test_touched_uncal_reruns_its_exposure_in_one_run(project):
    uncal = sorted((project / "demo" / "uncal").glob("*_nrcalong_uncal.fits"))[0]
    rate = next((project / "results" / "detector1").rglob(uncal.name.replace("_uncal", "_rate")))
    before = fits.getdata(rate, "SCI")
    os.utime(uncal)
    jobs = planned(project, "stage1")
    assert detector1_of(jobs) == [f"exposure={uncal.name[:25]}, detector=nrcalong"]
    snakemake(project, "--cores", "2", "stage1")
    assert planned(project, "stage1") == {}
    assert rate.stat().st_mtime > uncal.stat().st_mtime
    np.testing.assert_array_equal(fits.getdata(rate, "SCI"), before)  # NaN where no slope, on both sides


def test_new_uncal_in_the_demo_folder_is_refused_in_one_line(project):
    """The demo folder is the simulator's: an uncal its manifest does not list is not reduced as if it
    belonged to the demo (issue 12 item 2), and ``snakemake -n`` says so in one line, planning nothing.
    (A new uncal in a user's own folder of a CRDS-mode program: tests/faults/test_keep_going.py.)"""
    src = sorted((project / "demo" / "uncal").glob("*_02101_00004_nrca1_uncal.fits"))[0]
    new = src.with_name(src.name.replace("_00004_", "_00005_"))
    shutil.copy(src, new)
    proc = snakemake(project, "-n", "stage1", ok=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if "the demo is incomplete" in line]
    assert len(lines) == 1 and new.name in lines[0] and "Fix: delete demo/manifest.json" in lines[0]


def test_reference_changed_in_the_cache_is_not_relocked(project, tmp_path):
    """A CRDS file whose bytes changed is refused when the lockfile is rewritten (here: a new
    override asks for a re-lock), until the user deletes the lockfile on purpose."""
    gain = project / "demo" / "crds_cache" / "references" / "jwst" / "nircam" / "webbflow_nrca1_gain_sub160.fits"
    with fits.open(gain, mode="update") as hdul:
        hdul["SCI"].data[0, 0] += 1
    dark = sorted((project / "demo" / "refs").glob("*_nrcalong_dark_*.fits"))[0]
    cfg = tmp_path / "override.yaml"
    cfg.write_text(f"overrides:\n  dark: demo/refs/{dark.name}\n")
    before = json.loads((project / "results" / "crds.lock.json").read_text())
    proc = snakemake(project, "--cores", "2", "stage1", "--configfile", str(cfg), ok=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "webbflow_nrca1_gain_sub160.fits" in text and "changed inside the CRDS cache" in text
    assert json.loads((project / "results" / "crds.lock.json").read_text()) == before
