"""Shared fixtures: tiny hand-built uncal exposures and reference files.

These files follow the real layouts (Level1bModel uncal; CRDS reference
formats with DQ_DEF) so the I/O code is tested on exactly what it meets in
production, without depending on the simulator.
"""

import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]

# numba's JIT for every kernel, as before webbflow.aot: no compiled twins from the user's cache, and no
# background build of them started by a test's workflow run (tests/test_aot.py turns them on itself)
os.environ.setdefault("WEBBFLOW_AOT", "0")
SHARED = REPO.parent / "shared"

HEADER = {
    "DATAMODL": "Level1bModel", "TELESCOP": "JWST", "INSTRUME": "NIRCAM", "DETECTOR": "NRCA1",
    "MODULE": "A", "CHANNEL": "SHORT", "FILTER": "F200W", "PUPIL": "CLEAR", "EXP_TYPE": "NRC_IMAGE",
    "PROGRAM": "01234", "OBSERVTN": "001", "VISIT": "001", "VISITGRP": "02", "SEQ_ID": "1",
    "ACT_ID": "01", "EXPOSURE": "1", "DATE-OBS": "2024-01-01", "TIME-OBS": "00:00:00.000",
    "READPATT": "RAPID", "NFRAMES": 1, "GROUPGAP": 0, "NOUTPUTS": 1, "FASTAXIS": -1, "SLOWAXIS": 2,
    "SUBARRAY": "SUB64P", "SUBSTRT1": 1, "SUBSTRT2": 1, "SUBSIZE1": 16, "SUBSIZE2": 16,
    "TFRAME": 0.05016, "TGROUP": 0.05016, "ZEROFRAM": False, "TARGNAME": "TEST", "PATT_NUM": 1,
}

INT_TIMES_DTYPE = [("integration_number", ">i4"), ("int_start_MJD_UTC", ">f8"), ("int_mid_MJD_UTC", ">f8"),
                   ("int_end_MJD_UTC", ">f8"), ("int_start_BJD_TDB", ">f8"), ("int_mid_BJD_TDB", ">f8"),
                   ("int_end_BJD_TDB", ">f8")]


def asdf_hdu():
    """The ASDF extension (empty tree) that ends every stdatamodels-written JWST file."""
    from webbflow.io.products import _asdf_hdu

    return _asdf_hdu()


def write_uncal(path, sci, **keywords):
    """Write an uncal file holding ``sci`` (uint16 4-D) with HEADER updated by ``keywords``."""
    nints, ngroups, ny, nx = sci.shape
    header = fits.Header(HEADER)
    header.update({"NINTS": nints, "NGROUPS": ngroups, "SUBSIZE1": nx, "SUBSIZE2": ny})
    header.update(keywords)
    sci_hdu = fits.ImageHDU(sci, name="SCI")
    sci_hdu.header["BUNIT"] = "DN"
    sci_hdu.header["XPOSURE"] = 1.0
    times = np.zeros(nints, INT_TIMES_DTYPE)
    times["integration_number"] = np.arange(1, nints + 1)
    times["int_mid_MJD_UTC"] = 60310.0 + np.arange(nints) * 1e-3
    # ASDF last, as stdatamodels writes it (a file without one is refused as truncated)
    hdul = fits.HDUList([fits.PrimaryHDU(header=header), sci_hdu, fits.BinTableHDU(times, name="INT_TIMES"),
                         asdf_hdu()])
    hdul.writeto(path, overwrite=True)
    return Path(path)


def ramp_cube(nints=2, ngroups=5, ny=16, nx=16, rate=100.0, bias=1000.0, seed=1):
    """A noiseless linear ramp cube (uint16): bias + rate * group index."""
    g = np.arange(ngroups, dtype=np.float64)[None, :, None, None]
    cube = bias + rate * g + np.zeros((nints, ngroups, ny, nx))
    return np.round(cube).astype(np.uint16)


DQ_DEF = np.array(
    [(0, 1, "DO_NOT_USE", "Bad pixel"), (1, 2, "HOT", "Hot pixel"), (2, 4, "DEAD", "Dead pixel"),
     (3, 8, "REFERENCE_PIXEL", "Reference pixel")],
    dtype=[("BIT", ">i4"), ("VALUE", ">u4"), ("NAME", "S40"), ("DESCRIPTION", "S80")],
)


def write_reference(path, reftype, arrays, detector="NRCA1", subarray="FULL", substrt=(1, 1), **keywords):
    """Write a CRDS-style reference file: arrays is EXTNAME -> array; DQ_DEF is added with DQ."""
    shape = next(iter(arrays.values())).shape
    header = fits.Header({"REFTYPE": reftype.upper(), "TELESCOP": "JWST", "INSTRUME": "NIRCAM",
                          "DETECTOR": detector, "SUBARRAY": subarray, "SUBSTRT1": substrt[0],
                          "SUBSTRT2": substrt[1], "SUBSIZE1": shape[-1], "SUBSIZE2": shape[-2],
                          "FASTAXIS": -1, "SLOWAXIS": 2, "USEAFTER": "2022-01-01T00:00:00",
                          "PEDIGREE": "DUMMY", "AUTHOR": "tests", "DESCRIP": "test reference"})
    header.update(keywords)
    hdus = [fits.PrimaryHDU(header=header)]
    for name, array in arrays.items():
        hdus.append(fits.ImageHDU(array, name=name))
    if "DQ" in arrays:
        hdus.append(fits.BinTableHDU(DQ_DEF, name="DQ_DEF"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


@pytest.fixture
def uncal_file(tmp_path):
    """A 2-integration, 5-group, 16x16 NRC_IMAGE uncal file."""
    return write_uncal(tmp_path / "jw01234001001_02101_00001_nrca1_uncal.fits", ramp_cube())


@pytest.fixture
def shared_dir():
    """The shared reference-data folder; tests using it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} not present")
    return SHARED


def write_reference_set(folder, detector="NRCA1", shape=(32, 32), subarray="FULL", ncoeffs=3, ndark=10):
    """Write the seven detector1 references for ``detector`` into ``folder`` (bias 1000 DN, gain 2)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ny, nx = shape
    dq = np.zeros(shape, np.uint32)
    lin = np.zeros((ncoeffs, ny, nx), np.float32)
    lin[1] = 1.0  # identity correction
    arrays = {
        "mask": {"DQ": dq},
        "saturation": {"SCI": np.full(shape, 60000, np.float32), "DQ": dq},
        "superbias": {"SCI": np.full(shape, 1000, np.float32), "ERR": np.zeros(shape, np.float32), "DQ": dq},
        "linearity": {"COEFFS": lin, "DQ": dq},
        "dark": {"SCI": np.zeros((ndark, ny, nx), np.float32), "ERR": np.zeros((ndark, ny, nx), np.float32),
                 "DQ": dq},
        "gain": {"SCI": np.full(shape, 2.0, np.float32)},
        "readnoise": {"SCI": np.full(shape, 5.0, np.float32)},
    }
    paths = {}
    for reftype, arrs in arrays.items():
        extra = {"NFRAMES": 1, "GROUPGAP": 0, "READPATT": "ANY"} if reftype == "dark" else {}
        name = f"webbflow_{detector.lower()}_{reftype}_{subarray.lower()}.fits"
        paths[reftype] = write_reference(folder / name, reftype, arrs, detector=detector, subarray=subarray,
                                         **extra)
    return paths


def simulate_dithers(outdir, n=2, detector="NRCA1", filter_name="F150W", cache=None, context="jwst_9000.pmap"):
    """Simulate the demo program's first ``n`` exposures of one detector and filter into ``outdir``
    (``uncal/``, ``refs/``, ``truth/``): a small program of the demo sky for workflow tests.
    ``cache``: also a local CRDS cache there of ``refs/`` (``webbflow crds build``), context ``context``.

    Returns
    -------
    list of (ExposureSpec, pathlib.Path)
        Each exposure's spec and uncal file.
    """
    from webbflow.simulate.exposure import simulate_exposure
    from webbflow.simulate.presets import preset_specs

    specs = [s for s in preset_specs("demo-imaging") if s.detector == detector and s.filter == filter_name][:n]
    simulated = [(spec, Path(simulate_exposure(spec, outdir))) for spec in specs]
    if cache:
        from webbflow.refs.crds_cache import build_cache

        build_cache(Path(outdir) / "refs", cache, context=context)
    return simulated


def assert_rate_recovers_truth(rate_path, truth_path, label=""):
    """A rate product against the simulator's true rate, where nothing was flagged and the truth is
    above 5 DN/s: most such pixels are usable, the pulls are unbiased within 0.3 sigma and the errors
    describe the scatter (pull std 0.7-1.4; dark current is small in the simulated presets)."""
    truth = fits.getdata(truth_path).astype(np.float64)
    with fits.open(rate_path) as hdul:
        rate, dq, err = hdul["SCI"].data, hdul["DQ"].data, hdul["ERR"].data
    good = (dq == 0) & np.isfinite(rate) & (truth > 5)
    assert good.sum() > 0.5 * good.size * (truth > 5).mean(), label
    pull = (rate[good] - truth[good]) / err[good]
    assert abs(np.median(pull)) < 0.3, label
    assert 0.7 < np.std(pull) < 1.4, label


def assert_fits_checksums(paths):
    """Every HDU of every file carries DATASUM and CHECKSUM, both verify, and the file is valid FITS
    (astropy's warnings, a checksum mismatch among them, fail the assertion)."""
    paths = list(paths)
    assert paths, "no FITS file to check"
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with fits.open(path, checksum=True) as hdul:
                hdul.verify("exception")
                for hdu in hdul:
                    assert "CHECKSUM" in hdu.header and "DATASUM" in hdu.header, (path.name, hdu.name)
                    assert hdu.verify_datasum() == 1 and hdu.verify_checksum() == 1, (path.name, hdu.name)


def flip_byte(path, hdu="SCI", offset=0):
    """Flip every bit of one byte of ``hdu``'s data in ``path`` (a product damaged on disk)."""
    with fits.open(path) as hdul:
        at = hdul.fileinfo(hdul.index_of(hdu))["datLoc"] + offset
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


def compare_products(a, b):
    """``benchmarks/compare_products.compare``: the lines naming every difference between two runs'
    products (arrays and cards but dates and checksums), and how many products were compared."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_products", REPO / "benchmarks" / "compare_products.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compare(a, b)


def planned_outputs(stdout):
    """Output files of the jobs a snakemake dry run (``-n``) plans, by rule, in the plan's order (not
    ``--list-changes params``: in snakemake 9.27 that lists every output whether or not its parameters
    changed)."""
    import re

    planned, rule = {}, None
    for line in stdout.splitlines():
        head = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line)
        if head:
            rule = head.group(1)
        elif line.strip().startswith("output:") and rule:
            planned.setdefault(rule, []).extend(f.strip() for f in line.split(":", 1)[1].split(","))
    return planned


@pytest.fixture(scope="session", autouse=True)
def _job_servers():
    """The warm job servers that this session's workflow runs start (``jobs.warm_server`` is ``auto``:
    on for a local run) live in a folder of the session's own and exit 30 s after their last job, not
    60 s, so none outlives the session by long; a module that needs other settings sets its own
    (tests/test_jobserver.py).  Set ``WEBBFLOW_JOB_SERVER=0`` to run every job in-process."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="wfjs-session-", dir="/tmp")  # short: a socket path has ~100 characters
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WEBBFLOW_JOB_SERVER_DIR", folder)
        mp.setenv("WEBBFLOW_JOB_SERVER_IDLE", "30")
        yield folder
    shutil.rmtree(folder, ignore_errors=True)  # a server still idling removes nothing of it but its socket


# Folders that session-scoped fixtures make with tmp_path_factory; every other folder a test module
# made is removed when the module ends (see _free_module_scratch).
_SESSION_TMP_PREFIXES = ("demo_session",)


@pytest.fixture(scope="module", autouse=True)
def _free_module_scratch(request, tmp_path_factory):
    """Remove the temporary folders a test module made once the module is done, unless one of its tests
    failed (then they stay for inspection) or ``WEBBFLOW_KEEP_TMP`` is set.

    pytest keeps every tmp_path and module fixture's folder until the session ends; the slow and parity
    tests write tens of GB of full-frame cubes and jwst products that way, which filled CI's disk.
    """
    import shutil

    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed_before = request.session.testsfailed
    yield
    if os.environ.get("WEBBFLOW_KEEP_TMP") or request.session.testsfailed > failed_before:
        return
    for path in set(base.iterdir()) - before:
        if not path.name.startswith(_SESSION_TMP_PREFIXES):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def oracle():
    """jwst 3.0's venv, ``(python, site_packages)`` as :func:`webbflow.oracle.oracle_paths` finds it
    (``WEBBFLOW_ORACLE`` or ``.oracle``); the test is skipped, with the reason, where there is none."""
    from webbflow.oracle import OracleUnavailable, oracle_paths

    try:
        return oracle_paths()
    except OracleUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def make():
    """The file writers above, for test modules (``from conftest import`` is ambiguous when
    several test folders have a conftest.py)."""
    return SimpleNamespace(uncal=write_uncal, ramp=ramp_cube, asdf_hdu=asdf_hdu, reference=write_reference,
                           reference_set=write_reference_set, DQ_DEF=DQ_DEF,
                           assert_rate_recovers_truth=assert_rate_recovers_truth,
                           assert_fits_checksums=assert_fits_checksums, flip_byte=flip_byte,
                           compare_products=compare_products, planned_outputs=planned_outputs,
                           simulate_dithers=simulate_dithers)


@pytest.fixture(scope="session")
def demo_workdir(tmp_path_factory):
    """The demo reduced once per session by the default target and config (``snakemake --cores 2``: the
    simulated program, detector1, image2, image3 and the report's QA products), shared by the
    workflow test modules so that CI runs it once.  Tests may add files to it and dry-run in it,
    but must not change its products."""
    from _snakemake import run_snakemake

    workdir = tmp_path_factory.mktemp("demo_session")
    # with the default jobs.warm_server (auto: the warm job server); each job's line (served or not) in
    # .snakemake/webbflow_job_stats.jsonl (tests/test_jobserver.py compares with a run without it)
    env = {**os.environ, "WEBBFLOW_JOB_STATS": str(workdir / ".snakemake" / "webbflow_job_stats.jsonl")}
    env.pop("WEBBFLOW_JOB_SERVER", None)
    run_snakemake(workdir, "--cores", "2", timeout=1200, env=env)
    return workdir


@pytest.fixture
def crds_env():
    """crds is configured through os.environ: hand the process its CRDS_* variables back afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("CRDS_")}
    yield
    for key in [k for k in os.environ if k.startswith("CRDS_")]:
        del os.environ[key]
    os.environ.update(saved)
