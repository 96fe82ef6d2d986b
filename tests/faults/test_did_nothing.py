"""A run that would reduce nothing says so in one line (issue 12 item 8).

Each case plans (``snakemake -n``) a tiny project and checks the exit status, the single error line
naming the key or file and the fix, no traceback, and that no product was written.
"""

from pathlib import Path

import pytest
from _snakemake import run_snakemake

pytestmark = [pytest.mark.faults, pytest.mark.workflow]

REPO = Path(__file__).resolve().parents[2]


def plan(workdir, config_text):
    (workdir / "cfg.yaml").write_text(config_text)
    return run_snakemake(workdir, "-n", "--configfile", str(workdir / "cfg.yaml"), timeout=300, check=False)


def one_line(proc, *needles):
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text[-3000:]
    lines = [line for line in text.splitlines() if all(n in line for n in needles)]
    assert len(lines) == 1, text[-3000:]
    return lines[0]


def no_products(workdir):
    assert not list(workdir.glob("results/**/*.fits"))


def test_empty_uncal_folder_is_refused(tmp_path):
    (tmp_path / "uncal").mkdir()
    proc = plan(tmp_path, "inputs:\n  uncal_dir: uncal\nreferences:\n  dir: refs\n")
    assert proc.returncode != 0
    line = one_line(proc, "uncal: no *_uncal.fits files")
    assert "Fix: " in line
    no_products(tmp_path)


def test_no_modes_is_refused(tmp_path):
    proc = plan(tmp_path, "modes: []\n")
    assert proc.returncode != 0
    line = one_line(proc, "config key modes: no mode is enabled")
    assert "Fix: enable at least one of" in line and "imaging" in line
    no_products(tmp_path)


@pytest.mark.parametrize("name, hint", [("Imaging", "did you mean imaging?"), ("imagin", "use one of")])
def test_wrong_mode_name_is_refused(tmp_path, name, hint):
    proc = plan(tmp_path, f"modes: [{name}]\n")
    assert proc.returncode != 0
    line = one_line(proc, f"unknown mode '{name}'")
    assert hint in line
    no_products(tmp_path)


def _folder(tmp_path, make, **keywords):
    (tmp_path / "uncal").mkdir()
    make.uncal(tmp_path / "uncal" / "jw01234001001_02101_00001_nrca1_uncal.fits", make.ramp(), **keywords)


def test_missing_filter_is_refused(tmp_path, make):
    _folder(tmp_path, make)
    from astropy.io import fits

    path = tmp_path / "uncal" / "jw01234001001_02101_00001_nrca1_uncal.fits"
    with fits.open(path, mode="update") as hdul:
        del hdul[0].header["FILTER"]
    proc = plan(tmp_path, "inputs:\n  uncal_dir: uncal\nreferences:\n  dir: refs\n")
    assert proc.returncode != 0
    line = one_line(proc, path.name, "header keyword FILTER")
    assert "Fix: " in line
    no_products(tmp_path)
    assert not (tmp_path / "results" / "detector1" / "n").exists()


def test_all_unsupported_with_skip_warns_with_a_count(tmp_path, make):
    _folder(tmp_path, make, EXP_TYPE="NRC_DARK")
    (tmp_path / "refs").mkdir()
    proc = plan(tmp_path, "inputs:\n  uncal_dir: uncal\n  on_unsupported: skip\nreferences:\n  dir: refs\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one_line(proc, "skipped 1 of 1 exposures", "nothing to reduce")
    no_products(tmp_path)
