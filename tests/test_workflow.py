"""The Snakemake workflow end to end: the demo, parameter changes, a user's own config."""

import json
import re
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from _snakemake import assert_ok as _ok
from _snakemake import run_snakemake
from astropy.io import fits

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
PRODUCT = re.compile(r"results/detector1/(f\d{3}[wmn])/(jw\d{11}_\d{5}_\d{5}_(nrca1|nrcalong))_(rate|rateints)\.fits$")


# snakemake on the repository's workflow in a folder; the completed process, whatever its status
snakemake = partial(run_snakemake, timeout=300, check=False)


@pytest.fixture(scope="module")
def demo_run(demo_workdir):
    """The demo reduced once (simulated, then every stage on all 16 exposures) with 2 cores (conftest)."""
    return demo_workdir


def test_demo_products_open_as_models(demo_run):
    from stdatamodels.jwst import datamodels

    products = sorted((demo_run / "results" / "detector1").rglob("*.fits"))
    assert len(products) == 32  # 16 exposures x (rate, rateints)
    manifest = json.loads((demo_run / "demo" / "manifest.json").read_text())
    assert len(manifest["uncal"]) == 16
    for path in products:
        match = PRODUCT.search(path.relative_to(demo_run).as_posix())
        assert match, path
        filt, root, det, suffix = match.groups()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no ValidationWarning
            model = datamodels.open(path)
        with model:
            assert type(model).__name__ == {"rate": "ImageModel", "rateints": "CubeModel"}[suffix]
            assert model.data.shape == ((160, 160) if suffix == "rate" else (2, 160, 160))
            assert model.meta.instrument.filter.lower() == filt
            assert model.meta.instrument.detector.lower() == det
            assert model.meta.cal_step.jump == "COMPLETE" and model.meta.cal_step.ramp_fit == "COMPLETE"
            assert model.meta.cal_step.refpix in ("COMPLETE", "SKIPPED")
            # chosen through the demo's local CRDS cache, recorded as jwst does
            assert model.meta.ref_file.gain.name == f"crds://webbflow_{det}_gain_sub160.fits"
            assert model.meta.ref_file.dark.name == f"crds://webbflow_{det}_dark_sub160.fits"
            assert model.meta.filename == f"{root}_{suffix}.fits"
            if suffix == "rateints":
                assert len(model.int_times) == 2
        header = fits.getheader(path)
        assert header["WF_VER"] == header["CAL_VER"] == "0.1.0"
        assert re.fullmatch(r"[0-9a-f]{64}", header["WF_CFGD"])
        assert json.loads(header["WF_PARS"])["jump"]["rejection_threshold"] == 4.0
        assert fits.getheader(path, "SCI")["BUNIT"] == "DN/s"
    assert len(list((demo_run / "results" / "logs" / "detector1").rglob("*.log"))) == 16


def test_demo_products_carry_checksums(demo_run, make, tmp_path):
    """Every FITS product of every stage (rate, rateints, cal, crf, i2d, segm) carries DATASUM/CHECKSUM
    that verify; a copy with one flipped data byte does not."""
    import shutil

    products = sorted((demo_run / "results").rglob("*.fits"))
    suffixes = {p.name.rsplit("_", 1)[-1] for p in products}
    assert {"rate.fits", "rateints.fits", "cal.fits", "crf.fits", "i2d.fits", "segm.fits"} <= suffixes, suffixes
    make.assert_fits_checksums(products)
    for suffix in ("cal.fits", "i2d.fits"):
        damaged = tmp_path / f"damaged_{suffix}"
        shutil.copy(next(p for p in products if p.name.endswith(suffix)), damaged)
        make.flip_byte(damaged, "SCI", offset=4 * 1000 + 1)
        with pytest.raises(Warning, match="Checksum verification failed"):
            make.assert_fits_checksums([damaged])


def test_demo_rates_recover_the_truth(demo_run, make):
    """Recovered rates match the simulator's truth (plus dark current) where nothing was flagged."""
    truths = sorted((demo_run / "demo" / "truth").glob("*_truth_rate.fits"))
    assert len(truths) == 16
    for truth_path in truths[:4]:
        root = truth_path.name.replace("_truth_rate.fits", "")
        rate_path = next((demo_run / "results" / "detector1").rglob(f"{root}_rate.fits"))
        make.assert_rate_recovers_truth(rate_path, truth_path, root)



def test_changed_parameter_reruns_exactly_its_products(demo_run, tmp_path, make):
    # (snakemake 9.27's --list-changes params lists every output whatever changed, so the plan
    # of a dry run is what is checked)
    second = tmp_path / "second.yaml"
    second.write_text("steps:\n  jump:\n    rejection_threshold: 5.0\n")
    proc = _ok(snakemake(demo_run, "--configfile", str(second), "-n"))
    planned = make.planned_outputs(proc.stdout)
    expected = sorted(p.relative_to(demo_run).as_posix() for p in (demo_run / "results" / "detector1").rglob("*")
                      if p.name.endswith(("_rate.fits", "_rateints.fits", "_onef.ecsv")))
    # the demo is not simulated again; rates, and what is made from them downstream (the report's
    # QA products included), are re-made
    assert set(planned) == {"detector1", "image2", "image3", "qa_exposures", "qa_mosaics", "qa_truth"}
    assert sorted(planned["detector1"]) == expected  # the jump threshold affects all 48 (with the 1/f tables)
    cals = sorted(p.relative_to(demo_run).as_posix() for p in (demo_run / "results" / "image2").rglob("*_cal.fits"))
    assert sorted(planned["image2"]) == cals
    assert "params have changed" in proc.stdout.lower()
    # a value equal to the default changes nothing
    same = tmp_path / "same.yaml"
    same.write_text("steps:\n  jump:\n    rejection_threshold: 4.0\n")
    assert make.planned_outputs(_ok(snakemake(demo_run, "--configfile", str(same), "-n")).stdout) == {}
    # (a changed reference re-runs exactly its products: CRDS files never change in place, a new
    # context names new files, tested in
    # test_crds_workflow.py::test_new_context_reruns_exactly_the_affected_products)


def test_user_config_reduces_own_data(tmp_path, make):
    """Only public keys: inputs.uncal_dir, results_dir, references.dir, overrides, steps."""
    data = tmp_path / "mydata"
    refs = make.reference_set(data / "refs", detector="NRCA1", shape=(32, 32))
    (data / "uncal").mkdir()
    make.uncal(data / "uncal" / "a_uncal.fits", make.ramp(nints=1, ngroups=4, rate=50.0), EXPOSURE="1")
    make.uncal(data / "uncal" / "b_uncal.fits", make.ramp(nints=1, ngroups=4, rate=80.0), EXPOSURE="2",
                FILTER="F090W")
    make.uncal(data / "uncal" / "c_uncal.fits", make.ramp(nints=1, ngroups=4), EXPOSURE="3",
                EXP_TYPE="NRC_WFSS", PUPIL="GRISMR")  # no preset reduces WFSS: skipped with a warning
    own_gain = make.reference_set(tmp_path / "other", detector="NRCA1", shape=(16, 16))["gain"]
    config = tmp_path / "mine.yaml"
    config.write_text(
        f"inputs: {{uncal_dir: {data / 'uncal'}}}\nresults_dir: out\nreferences: {{dir: {data / 'refs'}}}\n"
        f"overrides: {{gain: {own_gain}}}\nsteps:\n  refpix: {{skip: true}}\n"
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    # these references cover stage 1 only, so ask for the stage-1 products
    proc = _ok(snakemake(workdir, "--configfile", str(config), "--cores", "2", "stage1"))
    assert "EXP_TYPE NRC_WFSS is not supported" in proc.stdout + proc.stderr
    rates = sorted(p.relative_to(workdir).as_posix() for p in (workdir / "out").rglob("*_rate.fits"))
    assert rates == ["out/detector1/f090w/jw01234001001_02101_00002_nrca1_rate.fits",
                     "out/detector1/f200w/jw01234001001_02101_00001_nrca1_rate.fits"]
    assert not (workdir / "demo").exists()
    with fits.open(workdir / rates[1]) as hdul:
        assert hdul[0].header["R_GAIN"] == own_gain.name and hdul[0].header["R_DARK"] == refs["dark"].name
        assert hdul[0].header["S_REFPIX"] == "SKIPPED"
        # noiseless 50 DN per group in 0.05016 s groups
        np.testing.assert_allclose(hdul["SCI"].data[4:12, 4:12], 50.0 / 0.05016, rtol=1e-5)


def test_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
