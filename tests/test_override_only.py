"""A user's own exposures reduced with references given only as overrides: no CRDS anywhere (issue 11).

The exposures are simulated (two NRCA1 F150W dithers of the demo sky) and moved into folders not
named like the demo; no CRDS cache exists, ``CRDS_PATH`` is unset, ``HOME`` is a fresh folder (no
``~/crds_cache``), and ``import crds`` fails in the workflow's processes, so any attempt to consult
CRDS while planning or running a job would stop the run.
"""

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from _snakemake import run_snakemake
from astropy.io import fits

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
STAGE1 = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")
IMAGE2 = ("distortion", "flat", "photom", "area")
R_KEYS = {"mask": "R_MASK", "saturation": "R_SATURA", "superbias": "R_SUPERB", "linearity": "R_LINEAR",
          "dark": "R_DARK", "gain": "R_GAIN", "readnoise": "R_READNO"}


@pytest.fixture(scope="module")
def site(tmp_path_factory, make):
    """Two simulated exposures and their references, in a user's own folders, with no CRDS cache."""
    root = tmp_path_factory.mktemp("override_only")
    sim = root / "sim"
    specs = [spec for spec, _ in make.simulate_dithers(sim)]
    shutil.rmtree(sim / "crds_cache", ignore_errors=True)  # the simulator writes none; make sure
    data = root / "observatory"
    shutil.move(sim / "uncal", data / "raw_exposures")
    shutil.move(sim / "refs", data / "calibration")
    refs = {}
    for path in (data / "calibration").iterdir():
        reftype = path.stem.split("_")[2]  # webbflow_<det>_<reftype>[_...]
        refs[reftype] = path
    # stage 1 and 2's types, and image3's catalog references (Vega offsets, aperture corrections), which
    # this test gives no stage
    assert set(refs) == set(STAGE1) | set(IMAGE2) | {"abvegaoffset", "apcorr"}
    home = root / "home"
    home.mkdir()
    # A `crds` that cannot be imported: planning and jobs must not need the client at all.
    blocker = root / "no_crds" / "crds"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("crds must not be imported in an override-only run")\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDS_")}
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join(filter(None, [str(blocker.parent),
                                                                      env.get("PYTHONPATH")])))
    return {"root": root, "uncal": data / "raw_exposures", "refs": refs, "truth": sim / "truth",
            "env": env, "roots": [s.rootname for s in specs]}


def write_config(path, site, reftypes, results="reduced"):
    """A config with only inputs.uncal_dir, results_dir, overrides.<reftypes> and steps."""
    overrides = "".join(f"  {t}: {site['refs'][t]}\n" for t in reftypes)
    path.write_text(f"inputs:\n  uncal_dir: {site['uncal']}\nresults_dir: {results}\n"
                    f"overrides:\n{overrides}steps:\n  jump:\n    rejection_threshold: 5.0\n")
    return path


def snakemake(site, workdir, *args, timeout=600):
    return run_snakemake(workdir, *args, timeout=timeout, check=False, env=site["env"])


@pytest.fixture(scope="module")
def stage1_run(site):
    """``snakemake stage1`` with overrides for the seven stage-1 types only."""
    workdir = site["root"] / "work"
    workdir.mkdir()
    config = write_config(site["root"] / "stage1.yaml", site, STAGE1)
    proc = snakemake(site, workdir, "stage1", "--configfile", str(config), "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir


def rate_path(workdir, root, suffix="rate"):
    return workdir / "reduced" / "detector1" / "f150w" / f"{root}_{suffix}.fits"


def test_stage1_products_record_the_override_references(site, stage1_run):
    from stdatamodels.jwst import datamodels

    assert not (site["root"] / "home" / "crds_cache").exists()
    assert not (stage1_run / "reduced" / "crds.lock.json").exists()  # crds was not consulted
    assert not (stage1_run / "demo").exists()
    products = sorted((stage1_run / "reduced" / "detector1").rglob("*.fits"))
    assert [p.name for p in products] == sorted(f"{r}_{s}.fits" for r in site["roots"] for s in ("rate", "rateints"))
    for root in site["roots"]:
        for suffix, model_type, shape in (("rate", "ImageModel", (160, 160)), ("rateints", "CubeModel", (2, 160, 160))):
            path = rate_path(stage1_run, root, suffix)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no ValidationWarning
                model = datamodels.open(path)
            with model:
                assert type(model).__name__ == model_type and model.data.shape == shape
                assert model.meta.cal_step.jump == "COMPLETE" and model.meta.cal_step.ramp_fit == "COMPLETE"
                for reftype in STAGE1:
                    assert getattr(model.meta.ref_file, reftype).name == site["refs"][reftype].name
            header = fits.getheader(path)
            assert all(header[key] == site["refs"][t].name for t, key in R_KEYS.items())
            assert "CRDS_CTX" not in header and "CRDS_VER" not in header  # as in folder mode
            assert json.loads(header["WF_PARS"])["jump"]["rejection_threshold"] == 5.0


def test_stage1_rates_equal_detector1_run_directly(site, stage1_run, tmp_path):
    """The workflow's products are exactly what detector1 makes from the same files and parameters."""
    from webbflow.stages import detector1

    root = site["roots"][0]
    rate = rate_path(stage1_run, root)
    params = json.loads(fits.getheader(rate)["WF_PARS"])
    refs = {t: str(site["refs"][t]) for t in STAGE1}
    detector1.run(site["uncal"] / f"{root}_uncal.fits", tmp_path / "rate.fits", tmp_path / "rateints.fits",
                  refs, params, exp_types=("NRC_IMAGE",))
    for ours, direct in ((rate, tmp_path / "rate.fits"),
                         (rate_path(stage1_run, root, "rateints"), tmp_path / "rateints.fits")):
        with fits.open(ours) as a, fits.open(direct) as b:
            for ext in ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE"):
                np.testing.assert_array_equal(a[ext].data, b[ext].data, err_msg=f"{ours.name} {ext}")


def test_stage1_rates_recover_the_truth(site, stage1_run, make):
    for root in site["roots"]:
        make.assert_rate_recovers_truth(rate_path(stage1_run, root), site["truth"] / f"{root}_truth_rate.fits", root)


def test_all_stages_from_overrides_only(site, stage1_run):
    """With the four image2 types given too, `snakemake` (rate, cal, i2d) needs no CRDS either."""
    before = {p: p.stat().st_mtime_ns for p in (stage1_run / "reduced" / "detector1").rglob("*.fits")}
    config = write_config(site["root"] / "all.yaml", site, STAGE1 + IMAGE2)
    proc = snakemake(site, stage1_run, "--configfile", str(config), "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the rates are kept: the image2 overrides change nothing in stage 1
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert not (stage1_run / "reduced" / "crds.lock.json").exists()
    cals = sorted((stage1_run / "reduced" / "image2").rglob("*_cal.fits"))
    assert [p.name for p in cals] == [f"{r}_cal.fits" for r in site["roots"]]
    for path in cals:
        header = fits.getheader(path)
        assert header["R_DISTOR"] == site["refs"]["distortion"].name
        assert header["R_FLAT"] == site["refs"]["flat"].name
        assert header["R_PHOTOM"] == site["refs"]["photom"].name
        assert header["R_AREA"] == site["refs"]["area"].name
        assert header["S_WCS"] == header["S_FLAT"] == header["S_PHOTOM"] == "COMPLETE"
    i2d = sorted((stage1_run / "reduced" / "image3").rglob("*_i2d.fits"))
    assert len(i2d) == 1
    with fits.open(i2d[0]) as hdul:
        assert np.isfinite(hdul["SCI"].data).sum() > 0.5 * 160 * 160


@pytest.mark.parametrize("given, target, missing, stage", [
    (tuple(t for t in STAGE1 if t != "readnoise"), "stage1", ("readnoise",), "detector1"),
    (STAGE1, "all", IMAGE2, "image2"),
])
def test_uncovered_types_without_crds_name_the_fix(site, tmp_path, given, target, missing, stage):
    config = write_config(tmp_path / "partial.yaml", site, given)
    proc = snakemake(site, tmp_path, target, "--configfile", str(config), "--cores", "2", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    lines = [line for line in out.splitlines() if "no CRDS cache is configured" in line]
    assert len(lines) == 1, out[-3000:]  # one message, not one per job or a traceback of repeats
    message = lines[0]
    assert f"{stage} needs the {', '.join(missing)} reference(s)" in message
    assert str(site["uncal"]) in message and "_uncal.fits" in message  # the exposure
    assert "set crds.cache (or $CRDS_PATH)" in message and "references.dir" in message
    assert ", ".join(f"overrides.{t}" for t in missing) in message
    assert "crds must not be imported" not in out
    assert not list((tmp_path / "reduced").rglob("*.fits")) if (tmp_path / "reduced").exists() else True
