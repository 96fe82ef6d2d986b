"""The demo through CRDS end to end: local cache only, lockfile, context change, parallel jobs."""

import json
import re
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from _snakemake import run_snakemake
from astropy.io import fits

# A full demo run with 8 parallel jobs plus a dry run: over a minute on two loaded cores.
pytestmark = [pytest.mark.workflow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
JOB = re.compile(r"^\s*(?:local)?rule (\w+):\n(?:.*\n)*?\s*wildcards: (.*)$", re.M)


snakemake = partial(run_snakemake, timeout=400)


def detector1_targets(workdir):
    """The rate/rateints products of the demo (stage 1 only: later stages have their own tests)."""
    targets = []
    for uncal in sorted((workdir / "demo" / "uncal").glob("*_uncal.fits")):
        filt = fits.getheader(uncal)["FILTER"].lower()
        root = uncal.name.removesuffix("_uncal.fits")
        targets += [f"results/detector1/{filt}/{root}_{s}.fits" for s in ("rate", "rateints")]
    return targets


@pytest.fixture(scope="module")
def crds_demo(tmp_path_factory):
    """Demo simulated, its refs/ folder removed (only the CRDS cache is left), then 8 parallel jobs."""
    workdir = tmp_path_factory.mktemp("crds_demo")
    snakemake(workdir, "--cores", "1", "--until", "demo")
    assert (workdir / "demo" / "crds_cache" / "mappings" / "jwst" / "jwst_9000.pmap").is_file()
    assert not (workdir / "results" / "crds.lock.json").exists()  # cold: nothing fetched or locked yet
    shutil.rmtree(workdir / "demo" / "refs")  # no shortcut left: every reference must come through crds
    snakemake(workdir, "--cores", "8", "--jobs", "8", *detector1_targets(workdir))
    return workdir


def test_products_and_lockfile_name_the_same_crds_files(crds_demo):
    lock = json.loads((crds_demo / "results" / "crds.lock.json").read_text())
    assert lock["context"] == "jwst_9000.pmap" and lock["crds_version"]
    assert len(lock["exposures"]) == 16
    # 7 stage-1 types x 2 detectors (later stages add their own types to the same lock)
    stage1 = {e["file"] for x in lock["exposures"].values() for t, e in x["references"].items()
              if e and t in ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")}
    assert len(stage1) == 14 and stage1 <= set(lock["references"])
    # an imaging exposure is asked for its mode's types only (stage 1, image2, image3): no grism type, which
    # the imaging cache does not map at all
    from webbflow.config import stage_reftypes

    imaging = set(stage_reftypes(["detector1", "image2", "image3"]))
    assert len(imaging) == 13 and not {"specwcs", "wavelengthrange", "extract1d"} & imaging
    assert all(set(x["references"]) == imaging for x in lock["exposures"].values())
    products = sorted((crds_demo / "results" / "detector1").rglob("*_rate.fits"))
    assert len(products) == 16
    keywords = {"mask": "R_MASK", "saturation": "R_SATURA", "superbias": "R_SUPERB", "linearity": "R_LINEAR",
                "dark": "R_DARK", "gain": "R_GAIN", "readnoise": "R_READNO"}
    for path in products:
        header = fits.getheader(path)
        root = path.name.removesuffix("_rate.fits")
        locked = lock["exposures"][root]["references"]
        assert header["CRDS_CTX"] == "jwst_9000.pmap" and header["CRDS_VER"] == lock["crds_version"]
        for reftype, key in keywords.items():
            assert header[key] == f"crds://{locked[reftype]['file']}"
        det = root.rsplit("_", 1)[1]
        assert header["R_GAIN"] == f"crds://webbflow_{det}_gain_sub160.fits"


def test_parallel_jobs_start_after_the_lock(crds_demo):
    """With 8 jobs on a cold cache, every detector1 job began after the lockfile was complete."""
    lock_mtime = (crds_demo / "results" / "crds.lock.json").stat().st_mtime
    logs = sorted((crds_demo / "results" / "logs" / "detector1").rglob("*.log"))
    assert len(logs) == 16
    for log in logs:
        text = log.read_text()
        assert "detector1 done" in text and "ERROR" not in text
    prefetch_log = (crds_demo / "results" / "logs" / "crds_prefetch.log").read_text()
    assert prefetch_log.count("] jw01234001001_") == 16
    for product in (crds_demo / "results" / "detector1").rglob("*.fits"):
        assert product.stat().st_mtime >= lock_mtime


def _gain_context(workdir):
    """Context jwst_9001.pmap: as jwst_9000 but with a new NRCA1 gain (5 % higher)."""
    from webbflow.refs.crds_cache import build_cache

    cache = workdir / "demo" / "crds_cache"
    refs = workdir / "refs_9001"
    if not refs.exists():  # once per module: the cache's files are immutable
        refs.mkdir()
        for path in (cache / "references" / "jwst" / "nircam").glob("*.fits"):
            if path.name != "webbflow_nrca1_gain_sub160.fits":
                shutil.copy(path, refs)
        with fits.open(cache / "references" / "jwst" / "nircam" / "webbflow_nrca1_gain_sub160.fits") as hdul:
            hdul["SCI"].data = (hdul["SCI"].data * np.float32(1.05)).astype(np.float32)
            hdul[0].header["USEAFTER"] = "2023-01-01T00:00:00"
            hdul.writeto(refs / "webbflow_nrca1_gain_sub160_v2.fits")
    return build_cache(refs, cache, context="jwst_9001.pmap", make_latest=False)


def test_new_context_reruns_exactly_the_affected_products(crds_demo, tmp_path):
    assert _gain_context(crds_demo) == "jwst_9001.pmap"
    cfg = tmp_path / "ctx.yaml"
    cfg.write_text("crds:\n  context: jwst_9001.pmap\n")
    dry = snakemake(crds_demo, "-n", *detector1_targets(crds_demo), "--configfile", str(cfg)).stdout
    jobs = JOB.findall(dry)
    assert jobs and all(rule == "detector1" for rule, _ in jobs)
    detectors = sorted(re.search(r"detector=(\w+)", wc).group(1) for _, wc in jobs)
    assert detectors == ["nrca1"] * 8  # the 8 NRCA1 exposures; the NRCALONG ones keep their gain


def test_new_context_run_records_the_new_gain(crds_demo, tmp_path):
    _gain_context(crds_demo)
    cfg = tmp_path / "ctx.yaml"
    cfg.write_text("crds:\n  context: jwst_9001.pmap\n")
    snakemake(crds_demo, "--cores", "2", *detector1_targets(crds_demo), "--configfile", str(cfg))
    lock = json.loads((crds_demo / "results" / "crds.lock.json").read_text())
    assert lock["context"] == "jwst_9001.pmap"
    for path in (crds_demo / "results" / "detector1").rglob("*_rate.fits"):
        header = fits.getheader(path)
        root = path.name.removesuffix("_rate.fits")
        assert header["R_GAIN"] == f"crds://{lock['exposures'][root]['references']['gain']['file']}"
        if "nrca1" in root:
            assert header["CRDS_CTX"] == "jwst_9001.pmap"
            assert header["R_GAIN"] == "crds://webbflow_nrca1_gain_sub160_v2.fits"
        else:
            assert header["CRDS_CTX"] == "jwst_9000.pmap"  # not re-run: made under 9000, same files
