"""CLI errors are one line ``webbflow <command>: <file/key>: <problem>. Fix: <fix>``, exit 1 (issue 12 item 9).

Each case runs ``python -m webbflow.cli`` and checks the exit status, exactly one stderr line naming the
file or key with a fix, no traceback, and that nothing finished-looking was written.
"""

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.faults]


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "webbflow.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def one_error_line(proc, prefix, *needles):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(prefix) and "Fix: " in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def uncal(tmp_path, make):
    path = tmp_path / "jw01234001001_02101_00001_nrca1_uncal.fits"
    make.uncal(path, make.ramp())
    return path


@pytest.mark.parametrize("item, needles", [
    ("jump.rejection_threshold=abc", ["jump", "rejection_threshold"]),
    ("jump.rejection_threshold=-1", ["jump", "rejection_threshold"]),
    ("jumpp.rejection_threshold=5", ["detector1 has no step jumpp"]),
    ("flat_field.skip=true", ["detector1 has no step flat_field"]),  # an image2 step: not ignored
    ("jump.no_such_param=5", ["no_such_param"]),
    ("rejection_threshold=5", ["STEP.PARAM=VALUE"]),
])
def test_bad_set(tmp_path, uncal, item, needles):
    out = tmp_path / "out"
    proc = cli("detector1", uncal, out, "--set", item)
    one_error_line(proc, "webbflow detector1: --set", *needles)
    assert not list(tmp_path.glob("out/*.fits"))


@pytest.mark.parametrize("item, needles", [("drak=x.fits", ["unknown reference type drak"]),
                                           ("dark", ["REFTYPE=PATH"])])
def test_bad_override(tmp_path, uncal, item, needles):
    proc = cli("detector1", uncal, tmp_path / "out", "--override", item)
    one_error_line(proc, f"webbflow detector1: --override {item}", *needles)
    assert not list(tmp_path.glob("out/*.fits"))


def test_simulate_unknown_preset(tmp_path):
    proc = cli("simulate", "demo-imagin", tmp_path / "sim")
    one_error_line(proc, "webbflow simulate: preset demo-imagin: unknown preset", "demo-imaging")
    assert not (tmp_path / "sim").exists()


def test_crds_select_truncated_file(tmp_path, uncal):
    cut = tmp_path / "cut_uncal.fits"
    cut.write_bytes(uncal.read_bytes()[:1000])  # inside the primary header
    proc = cli("crds", "select", cut, "--cache", tmp_path / "cache")
    one_error_line(proc, f"webbflow crds: {cut}: not a readable FITS file")


def test_download_offline(tmp_path):
    # a proxy on a port where nothing listens: every MAST request fails at once, as offline
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": ""}
    proc = cli("download", "1234", tmp_path / "dl", env=env)
    one_error_line(proc, "webbflow download: https://mast.stsci.edu", "check the network connection")
    assert not list(tmp_path.glob("dl/*"))


def test_detector1_zeroframe_of_another_shape(tmp_path, make):
    """The reader's InputError reaches the CLI as its one line (ZEROFRAME not (nints, ny, nx))."""
    from astropy.io import fits
    import numpy as np

    uncal = tmp_path / "jw01234001001_02101_00001_nrca1_uncal.fits"
    make.uncal(uncal, make.ramp(), ZEROFRAM=True)
    with fits.open(uncal, mode="update") as hdul:
        hdul.append(fits.ImageHDU(np.full((2, 15, 16), 1000, np.uint16), name="ZEROFRAME"))
    refs = make.reference_set(tmp_path / "refs")
    proc = cli("detector1", uncal, tmp_path / "out", "--refs-dir", refs["mask"].parent)
    one_error_line(proc, f"webbflow detector1: {uncal}: ZEROFRAME is (2, 15, 16)")
    assert not list(tmp_path.glob("out/*.fits"))


@pytest.mark.parametrize("ext, into", [("SCI", "data"), ("DQ_DEF", "header")])
def test_detector1_reference_truncated(tmp_path, uncal, make, ext, into):
    """A reference cut inside its data (or a later header): one line naming that file, no products."""
    from astropy.io import fits

    refs = make.reference_set(tmp_path / "refs")
    dark = refs["dark"]
    with fits.open(dark) as hdul:
        info = {hdu.name: hdul.fileinfo(i) for i, hdu in enumerate(hdul)}[ext]
    cut = (info["datLoc"] if into == "data" else info["hdrLoc"]) + 1000
    dark.write_bytes(dark.read_bytes()[:cut])
    proc = cli("detector1", uncal, tmp_path / "out", "--refs-dir", dark.parent)
    one_error_line(proc, f"webbflow detector1: {dark}: dark reference")
    assert not list(tmp_path.glob("out/*.fits"))


def test_detector1_terminated_mid_write_leaves_nothing(tmp_path, uncal, make, monkeypatch):
    """SIGTERM (kill, a batch time limit) while the rate is being written, after the rateints: the CLI
    unwinds as for Ctrl-C (exit 143), so neither the temporary folder nor the rateints alone is left."""
    import signal
    import time

    from webbflow import cli as webbflow_cli
    from webbflow.io.files import atomic_output
    from webbflow.stages import detector1

    def write_rate_killed(path, *args, **kwargs):
        with atomic_output(path) as tmp:
            tmp.write_bytes(b"half a product")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here

    monkeypatch.setattr(detector1, "write_rate", write_rate_killed)
    refs = make.reference_set(tmp_path / "refs")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_:
        webbflow_cli.main(["detector1", str(uncal), str(tmp_path / "out"), "--refs-dir", str(refs["mask"].parent)])
    assert exit_.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # no .part folder, no rateints
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the CLI's only while it runs


def killed_cli(args, patch, env=None):
    """Run ``webbflow`` with ``args`` after ``patch`` (Python source, ``os`` and ``signal`` imported),
    which makes the process SIGKILL itself at some point; assert it died so."""
    script = f"import os, signal, sys\n{patch}from webbflow.cli import main\nsys.exit(main())\n"
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == -9, proc.stderr


@pytest.mark.parametrize("scratch", ["beside", "elsewhere"])
def test_streamed_detector1_killed_scratch_is_removed_and_rerun_identical(tmp_path, uncal, make, scratch):
    """SIGKILL mid-way through a streamed detector1 (chunks of integrations, rows written into the
    rateints in place) leaves its scratch folder and the rateints's temporary folder; the next run
    removes both and writes products identical to an uninterrupted run's."""
    refs = make.reference_set(tmp_path / "refs")
    env = dict(os.environ)
    scratch_dir = tmp_path / "out" if scratch == "beside" else tmp_path / "scratch"
    if scratch == "elsewhere":
        env["WEBBFLOW_SCRATCH"] = str(scratch_dir)

    def args(out):  # a budget of 10 kB: one integration per chunk
        return ["detector1", uncal, out, "--refs-dir", refs["mask"].parent, "--max-memory-mb", "0.01"]

    killed_cli(args(tmp_path / "out"), "from webbflow.io import products\n"
                                       "write_rows = products.RateintsStream.write_rows\n"
                                       "def killed(self, r0, arrays):\n"
                                       "    write_rows(self, r0, arrays)\n"
                                       "    os.kill(os.getpid(), signal.SIGKILL)  # after the first block\n"
                                       "products.RateintsStream.write_rows = killed\n", env=env)
    root = uncal.name.removesuffix("_uncal.fits")
    # the rateints's temporary folder beside it, the scratch (ramp, group DQ files) where it was put
    (product,) = (p for p in (tmp_path / "out").glob(f".{root}_rateints.fits.*.part") if ".detector1." not in p.name)
    (work,) = scratch_dir.glob(f".{root}_rateints.fits.detector1.*.part")
    assert len(list(work.iterdir())) >= 2 and list(product.iterdir()), (work, product)
    assert not list((tmp_path / "out").glob("*.fits"))  # nothing finished-looking

    proc = cli(*args(tmp_path / "out"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert not list(scratch_dir.glob(".*")) and not list((tmp_path / "out").glob(".*")), \
        sorted(p.name for p in scratch_dir.iterdir())
    proc = cli(*args(tmp_path / "clean"), env=env)
    assert proc.returncode == 0, proc.stderr
    problems, n = make.compare_products(tmp_path / "out", tmp_path / "clean")
    assert not problems and n == 2, problems  # rate, rateints
    make.assert_fits_checksums([tmp_path / "out" / f"{root}_rateints.fits"])


def test_detector1_killed_leftovers_are_removed_by_the_rerun(tmp_path, uncal, make):
    """SIGKILL (nothing can be caught) while the rate is being written leaves its hidden
    ``.<name>.<host>-<pid>.*.part`` folder; the next run of the same command removes it."""
    refs = make.reference_set(tmp_path / "refs")
    out = tmp_path / "out"
    args = ["detector1", str(uncal), str(out), "--refs-dir", str(refs["mask"].parent)]
    killed_cli(args, "from webbflow.io.files import atomic_output\n"
                     "from webbflow.stages import detector1\n"
                     "def write_rate(path, *args, **kwargs):\n"
                     "    with atomic_output(path) as tmp:\n"
                     "        tmp.write_bytes(b'half a product')\n"
                     "        os.kill(os.getpid(), signal.SIGKILL)\n"
                     "detector1.write_rate = write_rate\n")
    parts = list(out.glob(".*_rate.fits.*.part"))
    assert len(parts) == 1 and [p.name for p in parts[0].iterdir()] == [f"{uncal.name[:-11]}_rate.fits"]
    # the rateints, written before, waits in its own folder: no rateints without its rate (atomic_group)
    assert not list(out.glob("*.fits")) and len(list(out.glob(".*_rateints.fits.*.part/*_rateints.fits"))) == 1
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert not parts[0].exists() and not list(out.glob(".*")), sorted(p.name for p in out.iterdir())
    from astropy.io import fits

    with fits.open(next(out.glob("*_rate.fits"))) as hdul:
        assert hdul["SCI"].data.shape == (16, 16)
