"""One bad exposure does not stop a survey (issue 12 item 7).

A program of two good simulated exposures (CRDS mode, a local cache built from their references)
plus one file of each kind the planning refuses: an unreadable header, a missing DETECTOR, a
non-numeric NGROUPS, a duplicate of a good exposure, and an exposure crds has no reference for.
With keep-going (the workflow profile's default) the good exposures are reduced exactly as in a
run without the bad files, the exit status is non-zero, and each bad file is named with one
message (file, problem, fix), no traceback; nothing is written for it.
"""

import re
import shutil
from pathlib import Path

import pytest
from _snakemake import run_snakemake
from astropy.io import fits

pytestmark = [pytest.mark.faults, pytest.mark.workflow]

REPO = Path(__file__).resolve().parents[2]
CONTEXT = "jwst_9000.pmap"


@pytest.fixture(scope="module")
def program(tmp_path_factory, make):
    """Two good NRCA1 exposures, their references in a local CRDS cache, and five bad files."""
    root = tmp_path_factory.mktemp("keep_going")
    good = [path for _, path in make.simulate_dithers(root / "sim", cache=root / "crds_cache", context=CONTEXT)]
    clean, mixed = root / "clean_uncal", root / "uncal"
    clean.mkdir()
    mixed.mkdir()
    for path in good:
        shutil.copy(path, clean / path.name)
        shutil.copy(path, mixed / path.name)

    def variant(name, **cards):
        """A copy of the first good exposure as another exposure number, with ``cards`` changed
        (None: deleted)."""
        path = mixed / name
        shutil.copy(good[0], path)
        with fits.open(path, mode="update") as hdul:
            for key, value in cards.items():
                if value is None:
                    del hdul[0].header[key]
                else:
                    hdul[0].header[key] = value
        return path

    bad = {
        "corrupt": mixed / "jw01234001001_02101_00091_nrca1_uncal.fits",
        "DETECTOR": variant("jw01234001001_02101_00092_nrca1_uncal.fits", EXPOSURE="92", DETECTOR=None),
        "NGROUPS": variant("jw01234001001_02101_00093_nrca1_uncal.fits", EXPOSURE="93", NGROUPS="six"),
        # sorts after the original, which is the copy kept
        "same exposure": mixed / f"zz_{good[0].name}",
        # crds has only NRCA1 references
        "no mask reference": variant("jw01234001001_02101_00095_nrca2_uncal.fits", EXPOSURE="95", DETECTOR="NRCA2"),
    }
    bad["corrupt"].write_bytes(good[1].read_bytes()[:100])  # cut inside the primary header
    shutil.copy(good[0], bad["same exposure"])
    return {"root": root, "clean": clean, "mixed": mixed, "good": [p.name for p in good], "bad": bad}


def _run(program, name, uncal_dir, *args, cores=2):
    work = program["root"] / name
    work.mkdir()
    config = work / "config.yaml"
    config.write_text(f"inputs:\n  uncal_dir: {uncal_dir}\ncrds:\n  cache: {program['root'] / 'crds_cache'}\n"
                      f"  context: {CONTEXT}\n")
    proc = run_snakemake(work, "--cores", str(cores), "stage1", *args, "--configfile", str(config), timeout=600,
                         check=False)
    return work, proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def clean_run(program):
    """The good exposures alone, reduced in one run: what every other run must reproduce."""
    work, status, output = _run(program, "clean", program["clean"])
    assert status == 0 and "bad input" not in output, output[-3000:]
    return work


@pytest.mark.slow
def test_bad_exposures_are_skipped_and_named(program, clean_run, make):
    # one job at a time: two jobs failing at once may interleave their lines on the shared stderr
    work, status, output = _run(program, "mixed", program["mixed"], "--keep-going", cores=1)
    assert status != 0 and "Traceback" not in output, output[-3000:]
    for keyword, path in program["bad"].items():
        # every line naming the file carries the same one message: file, problem, fix
        messages = {line[line.index(str(path)):] for line in output.splitlines() if str(path) in line}
        assert len(messages) == 1, (keyword, messages, output[-3000:])
        (message,) = messages
        assert keyword in message and ". Fix: " in message, message
    assert f"{len(program['bad'])} bad input file(s) skipped" in output, output[-3000:]

    # the good exposures, exactly as reduced without the bad files; nothing for a bad one
    clean = clean_run
    products = sorted(p.name for p in (work / "results" / "detector1").rglob("*.fits"))
    assert products == sorted(n.replace("_uncal", f"_{s}") for n in program["good"] for s in ("rate", "rateints"))
    problems, n = make.compare_products(work / "results" / "detector1", clean / "results" / "detector1")
    # rate, rateints and the 1/f QA table (_onef.ecsv) of each good exposure
    assert not problems and n == 3 * len(program["good"]), problems[:5]
    assert not (work / "results" / "bad_input").exists() or not any((work / "results" / "bad_input").iterdir())


@pytest.mark.slow
def test_new_uncal_in_a_users_folder_is_reduced_in_one_run(program, clean_run, make):
    """Issue 12 item 1 in a user's own folder (CRDS mode): an uncal added after a run is planned by
    ``snakemake -n`` and reduced by the first run (not only crds_prefetch), as a run with it from the
    start reduces it; then nothing is left to do."""
    first, second = program["good"]
    folder = program["root"] / "growing_uncal"
    folder.mkdir()
    shutil.copy(program["clean"] / first, folder / first)
    work, status, output = _run(program, "growing", folder)
    assert status == 0, output[-3000:]
    shutil.copy(program["clean"] / second, folder / second)
    config = ["--configfile", str(work / "config.yaml")]
    dry = run_snakemake(work, "stage1", *config, "-n", timeout=600, check=False)
    jobs = re.findall(r"^\s*(?:local)?rule (\w+):$", dry.stdout + dry.stderr, re.M)
    assert dry.returncode == 0 and jobs.count("detector1") == 1, (jobs, dry.stderr[-3000:])
    run_snakemake(work, "stage1", *config, "--cores", "2", timeout=600)
    problems, n = make.compare_products(work / "results" / "detector1", clean_run / "results" / "detector1")
    assert not problems and n == 3 * 2, problems[:5]
    dry = run_snakemake(work, "stage1", *config, "-n", timeout=600, check=False)
    assert dry.returncode == 0 and not re.findall(r"^\s*(?:local)?rule (\w+):$", dry.stdout + dry.stderr, re.M)


def test_dry_run_plans_them_and_no_keep_going_stops(program):
    """A dry run plans the good work and one bad_input job per bad file; without keep-going the run
    stops at a bad file's job, with its line."""
    work = program["root"] / "dry"
    work.mkdir()
    config = work / "config.yaml"
    config.write_text(f"inputs:\n  uncal_dir: {program['mixed']}\ncrds:\n  cache: {program['root'] / 'crds_cache'}\n"
                      f"  context: {CONTEXT}\n")
    base = ["stage1", "--configfile", str(config)]
    dry = run_snakemake(work, *base, "-n", timeout=600, check=False)
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = re.findall(r"^\s*(?:local)?rule (\w+):$", dry.stdout + dry.stderr, re.M)
    assert jobs.count("bad_input") == len(program["bad"]) and jobs.count("detector1") == 2, jobs
    proc = run_snakemake(work, *base, "--cores", "1", "--workflow-profile", "none", timeout=600, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert "webbflow bad_input failed: " in proc.stdout + proc.stderr
