"""The exposure table is built from headers (not file names), including real STScI uncal headers."""

from pathlib import Path

import pytest

from webbflow.exposures import exposure_table, rootname
from webbflow.io import InputError


def test_table_from_headers_not_file_names(tmp_path, make):
    cube = make.ramp(nints=1, ngroups=2, ny=4, nx=4)
    # file names deliberately say nothing: the identity must come from the headers
    make.uncal(tmp_path / "b_uncal.fits", cube, PROGRAM="2736", OBSERVTN="7", VISIT="2", VISITGRP="3",
                SEQ_ID="1", ACT_ID="1a", EXPOSURE="12", DETECTOR="NRCBLONG", FILTER="F444W")
    make.uncal(tmp_path / "a_uncal.fits", cube, DETECTOR="NRCA3", FILTER="F090W", EXPOSURE="2")
    table = exposure_table(tmp_path)
    assert [e.rootname for e in table] == ["jw01234001001_02101_00002_nrca3", "jw02736007002_0311a_00012_nrcblong"]
    first, second = table
    assert (first.filter, first.detector, first.exp_type, first.subarray) == ("F090W", "NRCA3", "NRC_IMAGE", "SUB64P")
    assert second.exposure_id == "jw02736007002_0311a_00012"
    assert (second.program, second.observtn, second.visit, second.visitgrp) == ("02736", "007", "002", "03")
    assert (second.seq_id, second.act_id, second.exposure) == ("1", "1a", "00012")
    assert (second.nints, second.ngroups, second.readpatt, second.pupil) == (1, 2, "RAPID", "CLEAR")
    assert second.path.endswith("b_uncal.fits")


def test_duplicate_exposure_is_an_error(tmp_path, make):
    cube = make.ramp(nints=1, ngroups=2, ny=4, nx=4)
    make.uncal(tmp_path / "one_uncal.fits", cube)
    make.uncal(tmp_path / "two_uncal.fits", cube)
    with pytest.raises(InputError, match="two_uncal.fits.*same exposure"):
        exposure_table(tmp_path)


def test_bad_files_are_left_out_and_reported_when_asked(tmp_path, make):
    """errors=[]: each refused file is one InputError in the list and the rest is the table (an
    incomplete time series: tests/test_tso_stage1.py)."""
    cube = make.ramp(nints=1, ngroups=2, ny=4, nx=4)
    make.uncal(tmp_path / "a_uncal.fits", cube, EXPOSURE="1")
    make.uncal(tmp_path / "b_uncal.fits", cube, EXPOSURE="1")  # duplicate of a
    make.uncal(tmp_path / "c_uncal.fits", cube, EXPOSURE="3", NGROUPS="two")
    make.uncal(tmp_path / "d_uncal.fits", cube, EXPOSURE="4")
    (tmp_path / "e_uncal.fits").write_bytes((tmp_path / "d_uncal.fits").read_bytes()[:200])
    errors = []
    table = exposure_table(tmp_path, errors=errors)
    assert [e.rootname for e in table] == ["jw01234001001_02101_00001_nrca1", "jw01234001001_02101_00004_nrca1"]
    assert [e.path for e in table] == [str(tmp_path / "a_uncal.fits"), str(tmp_path / "d_uncal.fits")]
    assert sorted(Path(e.path).name for e in errors) == ["b_uncal.fits", "c_uncal.fits", "e_uncal.fits"]
    problems = {Path(e.path).name: e.problem for e in errors}
    assert "same exposure" in problems["b_uncal.fits"] and "NGROUPS='two'" in problems["c_uncal.fits"]
    assert all("\n" not in str(e) and ". Fix: " in str(e) for e in errors)
    # without the list, the first refusal is raised (planning's behaviour when no file is good)
    with pytest.raises(InputError, match="b_uncal.fits.*same exposure"):
        exposure_table(tmp_path)


def test_rootname_rejects_bad_header():
    header = {"PROGRAM": "1234", "OBSERVTN": "1", "VISIT": "1", "VISITGRP": "1", "SEQ_ID": "1",
              "ACT_ID": "1", "EXPOSURE": "123456", "DETECTOR": "NRCA1"}
    with pytest.raises(InputError, match="EXPOSURE='123456' has more than 5 digits"):
        rootname(header)
    del header["DETECTOR"]
    with pytest.raises(InputError, match="lacks DETECTOR"):
        rootname(header)


def test_segments_of_a_time_series_are_named_as_jwst_names_them():
    header = {"PROGRAM": "1366", "OBSERVTN": "2", "VISIT": "1", "VISITGRP": "4", "SEQ_ID": "1",
              "ACT_ID": "03", "EXPOSURE": "1", "DETECTOR": "NRCALONG", "EXSEGNUM": 2, "EXSEGTOT": 4}
    assert rootname(header) == "jw01366002001_04103_00001-seg002_nrcalong"
    from webbflow.exposures import exposure_from_header

    exposure = exposure_from_header(header, "x_uncal.fits")
    assert (exposure.exposure_id, exposure.segment, exposure.exposure) == (
        "jw01366002001_04103_00001-seg002", 2, "00001")
    header["EXSEGNUM"] = "two"
    with pytest.raises(InputError, match="EXSEGNUM='two' is not a number"):
        rootname(header)
    del header["EXSEGNUM"]  # not segmented (imaging): no suffix
    assert rootname(header) == "jw01366002001_04103_00001_nrcalong"


def test_real_stsci_uncal_headers(shared_dir):
    from astropy.io import fits

    from webbflow.exposures import exposure_from_header
    from webbflow.io.uncal import validate_headers

    folder = shared_dir / "realdata" / "nircam" / "uncal_header_only"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    paths = sorted(folder.glob("*_uncal.fits"))
    table = [exposure_from_header(fits.getheader(p), p) for p in paths]
    assert [e.rootname for e in table] == [
        "jw01075001001_03105_00009_nrca2", "jw01075001001_03105_00009_nrca3", "jw01075001001_03105_00009_nrca4"]
    for exposure in table:
        assert (exposure.exp_type, exposure.filter, exposure.pupil) == ("NRC_CORON", "F210M", "MASKRND")
        assert (exposure.subarray, exposure.readpatt, exposure.nints, exposure.ngroups) == ("FULL", "RAPID", 1, 10)
        # the root name rebuilt from the header is the name STScI gave the file
        assert exposure.path.endswith(f"{exposure.rootname}_uncal.fits")
        # every keyword a step uses is valid in STScI's own headers ...
        values = validate_headers(fits.getheader(exposure.path), path=exposure.path)
        assert (values["TGROUP"], values["NFRAMES"], values["GROUPGAP"]) == (10.73677, 1, 0)
        # the coronagraphy mode's identity keys: IS_PSF read as a bool (these are science exposures)
        assert exposure.is_psf is (fits.getheader(exposure.path).get("IS_PSF") is True)
    # ... but their SCI was cut to (1, 1, 1, 1) by jwst's test authors: not a reducible exposure
    with pytest.raises(InputError, match=r"nrca2_uncal.fits: header keywords disagree with the data: "
                                         r"NGROUPS=10 but SCI has 1 groups; SUBSIZE2=2048 but SCI has 1 rows"):
        exposure_table(folder)
