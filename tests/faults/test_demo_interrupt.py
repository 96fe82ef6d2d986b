"""Issue 12 items 2 and 3: the demo is written all-or-nothing, and an interrupted demo resumes cleanly.

The writer (:func:`webbflow.demo.write_demo`) is tested with injected failures; the workflow is
interrupted for real (SIGINT to the process group, as Ctrl-C does, and SIGKILL of the whole group)
while the simulator is writing (paused there by ``WEBBFLOW_DEMO_PAUSE_AFTER``), and the next plain ``snakemake`` run must complete with the 16
exposures reduced exactly as in an uninterrupted run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from _snakemake import run_snakemake

from webbflow.demo import INSTALLING, PAUSE_AFTER, STAMP, demo_problem, write_demo
from webbflow.io.errors import InputError

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]
N_DEMO = 16


# --- the all-or-nothing writer -------------------------------------------------------------------------

def _fake_simulate(n=3, fail_after=None):
    """A stand-in simulator writing ``n`` uncal files, refs and truth; raises after ``fail_after`` files."""

    def simulate(tmp, preset, seed):
        for sub in ("uncal", "refs", "truth"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        (tmp / "refs" / "webbflow_nrca1_gain_sub160.fits").write_bytes(b"ref")
        names = []
        for i in range(n):
            if fail_after is not None and i == fail_after:
                raise RuntimeError("simulated failure mid-way")
            name = f"jw01234001001_02101_0000{i + 1}_nrca1_uncal.fits"
            (tmp / "uncal" / name).write_bytes(f"{seed}-{i}".encode())
            names.append(name)
        (tmp / "truth" / "sources.ecsv").write_text("x\n")
        return {"preset": preset, "seed": seed, "uncal": names, "crds_context": None}

    return simulate


def _leftovers(outdir):
    return sorted(p.name for p in Path(outdir).iterdir()) if Path(outdir).exists() else []


def test_failure_mid_way_leaves_nothing(tmp_path):
    demo = tmp_path / "demo"
    with pytest.raises(RuntimeError, match="mid-way"):
        write_demo(demo, "demo-imaging", 1, demo / "manifest.json", simulate=_fake_simulate(fail_after=2))
    assert _leftovers(demo) == []  # no uncal/, no manifest, no temporary folder


def test_complete_demo_then_manifest(tmp_path):
    demo = tmp_path / "demo"
    record = write_demo(demo, "demo-imaging", 1, demo / "manifest.json", simulate=_fake_simulate())
    assert _leftovers(demo) == ["manifest.json", "refs", "truth", "uncal"]
    assert json.loads((demo / "manifest.json").read_text()) == record
    assert len(record["uncal"]) == 3 and (demo / "uncal" / STAMP).exists()
    assert demo_problem(demo, demo / "manifest.json") is None


def test_interrupted_leftovers_are_cleaned_and_resimulated(tmp_path):
    demo = tmp_path / "demo"
    write_demo(demo, "demo-imaging", 1, demo / "manifest.json", simulate=_fake_simulate())
    (demo / "manifest.json").unlink()
    # Killed while renaming into place: the marker names the pieces; an old temporary folder remains.
    (demo / INSTALLING).write_text(json.dumps(["refs", "truth", "uncal"]))
    (demo / ".demo.abc.part" / "uncal").mkdir(parents=True)
    (demo / "uncal" / "jw01234001001_02101_00001_nrca1_uncal.fits").unlink()
    record = write_demo(demo, "demo-imaging", 2, demo / "manifest.json", simulate=_fake_simulate(n=4))
    assert _leftovers(demo) == ["manifest.json", "refs", "truth", "uncal"]
    assert len(record["uncal"]) == 4 and record["seed"] == 2
    assert demo_problem(demo, demo / "manifest.json") is None


def test_stamped_demo_is_reused_or_replaced(tmp_path):
    demo, manifest = tmp_path / "demo", tmp_path / "demo" / "manifest.json"
    write_demo(demo, "demo-imaging", 1, manifest, simulate=_fake_simulate())
    manifest.unlink()  # e.g. snakemake re-runs the job: the output is removed first

    def never(*args):
        raise AssertionError("the complete demo must be reused")

    assert len(write_demo(demo, "demo-imaging", 1, manifest, simulate=never)["uncal"]) == 3
    manifest.unlink()
    (demo / "uncal" / "jw01234001001_02101_00002_nrca1_uncal.fits").unlink()  # ours, but incomplete
    assert len(write_demo(demo, "demo-imaging", 1, manifest, simulate=_fake_simulate(n=5))["uncal"]) == 5
    manifest.unlink()
    assert write_demo(demo, "demo-imaging", 7, manifest, simulate=_fake_simulate())["seed"] == 7  # new seed


def test_users_uncal_files_are_never_replaced(tmp_path):
    demo = tmp_path / "demo"
    (demo / "uncal").mkdir(parents=True)
    mine = demo / "uncal" / "jw09999001001_02101_00001_nrca1_uncal.fits"
    mine.write_bytes(b"mine")

    def never(*args):
        raise AssertionError("someone's uncal files must not be simulated over")

    record = write_demo(demo, "demo-imaging", 1, demo / "manifest.json", simulate=never)
    assert record["uncal"] == [mine.name] and mine.read_bytes() == b"mine"


def test_foreign_folder_is_refused(tmp_path):
    demo = tmp_path / "demo"
    (demo / "refs").mkdir(parents=True)
    (demo / "refs" / "theirs.fits").write_bytes(b"x")
    with pytest.raises(InputError, match="holds no demo of ours"):
        write_demo(demo, "demo-imaging", 1, demo / "manifest.json", simulate=_fake_simulate())
    assert (demo / "refs" / "theirs.fits").read_bytes() == b"x" and not (demo / "manifest.json").exists()


def test_manifest_must_match_the_folder(tmp_path):
    demo = tmp_path / "demo"
    write_demo(demo, "demo-imaging", 1, demo / "manifest.json", simulate=_fake_simulate())
    next((demo / "uncal").glob("*_uncal.fits")).unlink()
    assert "1 listed file(s) missing" in demo_problem(demo, demo / "manifest.json")


# --- the workflow, interrupted for real ----------------------------------------------------------------

_snakemake = partial(run_snakemake, check=False)


def _interrupt(workdir, sig, n_files=3, timeout=300):
    """Start the demo's stage1 run; once the simulator has written ``n_files`` uncal files into its
    temporary folder, send ``sig`` to the whole process group.  Returns the run's exit status.

    The simulator pauses there (``WEBBFLOW_DEMO_PAUSE_AFTER``) until the signal comes, so the signal
    lands mid-simulation however slow or fast the machine is."""
    workdir.mkdir()
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
           "stage1"]
    env = {**os.environ, PAUSE_AFTER: str(n_files)}
    with open(workdir.parent / f"{workdir.name}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        start = time.monotonic()
        try:
            while not list(workdir.glob("demo/.demo.*.part/.paused")):
                assert proc.poll() is None, (workdir.parent / f"{workdir.name}.log").read_text()[-3000:]
                assert time.monotonic() - start < timeout, f"the simulator did not write {n_files} uncal files"
                time.sleep(0.1)
            assert len(list(workdir.glob("demo/.demo.*.part/uncal/*_uncal.fits"))) == n_files
            assert not (workdir / "demo" / "uncal").exists()  # nothing in place mid-simulation
            os.killpg(proc.pid, sig)
            return proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.workflow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_demo_resumes(tmp_path, sig, demo_workdir, make):
    workdir = tmp_path / "run"
    assert _interrupt(workdir, sig) != 0
    assert not (workdir / "demo" / "manifest.json").exists()
    assert not list(workdir.glob("demo/uncal/*_uncal.fits"))  # no partial demo to be mistaken for the whole

    if sig == signal.SIGKILL:
        # snakemake itself was killed: its own lock stays (it cannot tell a dead run from a live one);
        # `--unlock` is the documented step, and nothing of the demo needs deleting by hand.
        assert _snakemake(workdir, "--unlock").returncode == 0
    proc = _snakemake(workdir, "--cores", "2", "stage1", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "IncompleteCheckpointException" not in proc.stdout + proc.stderr
    assert len(list(workdir.glob("demo/uncal/*_uncal.fits"))) == N_DEMO
    assert not list(workdir.glob("demo/.demo.*.part")) and not (workdir / "demo" / INSTALLING).exists()
    rates = list(workdir.glob("results/detector1/*/*_rate.fits"))
    assert len(rates) == N_DEMO
    problems, n = make.compare_products(workdir / "results" / "detector1", demo_workdir / "results" / "detector1")
    assert not problems and n == 3 * N_DEMO, problems[:5]  # rate, rateints, the 1/f QA table

    # Nothing is left to do, and a file deleted by hand is one clear line, not a smaller program.
    proc = _snakemake(workdir, "-n", "stage1")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "demo:" not in out and "detector1:" not in out, out[-3000:]
    if sig == signal.SIGKILL:
        next((workdir / "demo" / "uncal").glob("*_uncal.fits")).unlink()
        proc = _snakemake(workdir, "-n", "stage1")
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert "the demo is incomplete" in out and "delete" in out and "Traceback" not in out
