"""Bad input gives one clear error naming the file and the fix, and leaves no product behind."""

from pathlib import Path

import numpy as np
import pytest
from _snakemake import run_snakemake
from astropy.io import fits

from webbflow.io import InputError, ReferenceFileError, read_uncal
from webbflow.stages import detector1

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def dataset(tmp_path, make):
    refs = make.reference_set(tmp_path / "refs", shape=(32, 32))
    uncal = make.uncal(tmp_path / "jw01234001001_02101_00001_nrca1_uncal.fits", make.ramp(nints=1, ngroups=4))
    out = tmp_path / "out"
    out.mkdir()
    return uncal, refs, out


def _run(uncal, refs, out):
    return detector1.run(uncal, out / "x_rate.fits", out / "x_rateints.fits", refs, {})


@pytest.mark.parametrize("keep", [100, 2880 + 500, 2880 * 3 + 1000])
def test_truncated_fits(dataset, keep):
    uncal, refs, out = dataset
    data = uncal.read_bytes()
    uncal.write_bytes(data[:keep])  # cut inside the primary header, the SCI header, or the pixels
    with pytest.raises(InputError) as err:
        _run(uncal, refs, out)
    message = str(err.value)
    assert str(uncal) in message
    assert "truncated or corrupt" in message and "Fix:" in message
    assert list(out.iterdir()) == []


def test_not_an_uncal_file(dataset, tmp_path, make):
    _, refs, out = dataset
    rate = tmp_path / "x_rate.fits"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"DATAMODL": "ImageModel", "INSTRUME": "NIRCAM",
                                                      "EXP_TYPE": "NRC_IMAGE"})),
                  fits.ImageHDU(np.zeros((4, 4), np.float32), name="SCI")]).writeto(rate)
    with pytest.raises(InputError, match=r"x_rate.fits: DATAMODL is 'ImageModel', not an uncal file.*Fix: give the"):
        _run(rate, refs, out)
    # right DATAMODL but a 3-D float cube
    cube = make.uncal(tmp_path / "cube_uncal.fits", make.ramp(nints=1, ngroups=2, ny=4, nx=4))
    with fits.open(cube, mode="update") as hdul:
        hdul["SCI"].data = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(InputError, match=r"cube_uncal.fits: SCI is 3-D float32, an uncal file has 4-D uint16"):
        _run(cube, refs, out)
    assert list(out.iterdir()) == []


def test_unsupported_exp_type(dataset, tmp_path, make):
    _, refs, out = dataset
    tacq = make.uncal(tmp_path / "tacq_uncal.fits", make.ramp(nints=1, ngroups=3), EXP_TYPE="NRC_TACQ")
    with pytest.raises(InputError, match=r"tacq_uncal.fits: EXP_TYPE 'NRC_TACQ' is not supported.*Fix: remove"):
        _run(tacq, refs, out)
    assert list(out.iterdir()) == []
    # a caller that enables the type gets past the check (here: it then fails on nothing else)
    _, _, headers = read_uncal(tacq, exp_types=("NRC_IMAGE", "NRC_TACQ"))
    assert headers.primary["EXP_TYPE"] == "NRC_TACQ"


def test_coron_exposure_on_a_subarray_the_mode_does_not_know(dataset, make):
    """An NRC_CORON exposure on a non-coronagraphic subarray (SUB64P: no PSFMASK, no coron3 association,
    an unchecked reference-pixel layout) is one line naming the file, the subarray and the fix, from the
    library and from the exposure table (the workflow's bad_input job), before any product; the same file
    on a coronagraphic subarray, or on FULL, is accepted."""
    from webbflow.exposures import exposure_table
    from webbflow.io.uncal import CORON_SUBARRAYS

    good, refs, out = dataset
    folder = good.parent
    coron = make.uncal(folder / "jw01234002001_02101_00001_nrca2_uncal.fits", make.ramp(nints=1, ngroups=4),
                       DETECTOR="NRCA2", EXP_TYPE="NRC_CORON", PUPIL="MASKRND", FILTER="F210M", SUBARRAY="SUB64P")
    with pytest.raises(InputError) as err:
        _run(coron, refs, out)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{coron}: header keyword SUBARRAY='SUB64P' is not a "
                                                        "coronagraphic subarray the coronagraphy mode knows")
    assert all(name in message for name in CORON_SUBARRAYS)
    assert "Fix: check SUBARRAY against APERNAME" in message and "remove the file from inputs.uncal_dir" in message
    assert list(out.iterdir()) == []
    errors = []
    assert [e.path for e in exposure_table(folder, errors=errors)] == [str(good)]
    assert [str(e) for e in errors] == [message]
    for subarray in ("SUB640A210R", "FULL"):
        with fits.open(coron, mode="update") as hdul:
            hdul[0].header["SUBARRAY"] = subarray
        rows = exposure_table(folder)
        assert [(e.exp_type, e.subarray) for e in rows] == [("NRC_IMAGE", "SUB64P"), ("NRC_CORON", subarray)]


def test_reference_with_mismatched_shape(dataset, make):
    uncal, refs, out = dataset
    # a SUB64P-named gain that is 8x8: cannot be the 16x16 science subarray
    bad = make.reference(refs["gain"].parent / "bad_gain.fits", "gain", {"SCI": np.ones((8, 8), np.float32)},
                          subarray="SUB64P")
    refs = dict(refs, gain=bad)
    with pytest.raises(ReferenceFileError) as err:
        _run(uncal, refs, out)
    message = str(err.value)
    assert message.startswith(str(bad))
    assert "(8, 8)" in message and "(16, 16)" in message and "overrides.gain" in message
    assert list(out.iterdir()) == []


def test_missing_reference_names_the_fix(dataset):
    uncal, refs, out = dataset
    refs = dict(refs, dark=None)
    with pytest.raises(ReferenceFileError, match=r"no dark reference.*overrides.<reftype>.*skip dark_current"):
        _run(uncal, refs, out)
    assert list(out.iterdir()) == []


def test_bad_config_value_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  jump:\n    rejection_threshold: high\n")
    proc = run_snakemake(REPO, "-n", "--configfile", str(bad), timeout=120, check=False)
    assert proc.returncode != 0
    assert "steps.jump.rejection_threshold" in proc.stdout + proc.stderr
    assert "'high' is not of type 'number'" in proc.stdout + proc.stderr


def test_failure_while_writing_leaves_no_product(dataset, monkeypatch):
    """rateints is written first; if the rate then fails, the rateints is removed too."""
    uncal, refs, out = dataset

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(detector1, "write_rate", disk_full)
    with pytest.raises(OSError, match="disk full"):
        _run(uncal, refs, out)
    assert list(out.iterdir()) == []
