"""Every reference is checked against the exposure before use (issue 12, items 5, 6 and 9).

One check (:func:`webbflow.refs.check.check_reference`) is used by detector1's loader
(:func:`webbflow.refs.load_references`) and image2's (:mod:`webbflow.io.cal`), whether the file
came from ``overrides``, ``references.dir`` or CRDS: REFTYPE, INSTRUME, DETECTOR, the subarray
region, each extension present with the expected dimensions and a numeric type, and a complete
file.  Each bad case is one :class:`ReferenceFileError` line naming the file, the problem and
``overrides.<type>``; once through the workflow (an override for another detector) the job fails
with that one line and leaves no product.
"""

from pathlib import Path

import asdf
import numpy as np
import pytest
import yaml
from _snakemake import run_snakemake
from astropy.io import fits
from astropy.modeling.models import Shift

from webbflow.io.cal import load_area, load_distortion, load_flat, load_photom
from webbflow.io.errors import InputError, ReferenceFileError
from webbflow.ramp import Readout
from webbflow.refs import load_reference, load_references
from webbflow.refs.load import map_dq

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]
SHAPE = (16, 16)  # the science subarray: SUB64P-like, at SUBSTRT (5, 9) of a 32x32 "full frame"
READOUT = Readout(nints=1, ngroups=5, detector="NRCA1", substrt1=5, substrt2=9, subarray="SUB64P")
SCI = {"shape": SHAPE, "xstart": 5, "ystart": 9, "detector": "NRCA1"}


@pytest.fixture
def refs(tmp_path, make):
    return make.reference_set(tmp_path / "refs", detector="NRCA1", shape=(32, 32))


def _raises(path, match, call):
    """``call()`` raises one ReferenceFileError line: the file first, the problem, the overrides fix."""
    with pytest.raises(ReferenceFileError) as err:
        call()
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert "Fix: " in message and "overrides." in message, message
    assert match in message, message
    return message


def _truncate(path, cut):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:cut])
    return path


def _hdu_locations(path):
    with fits.open(path) as hdul:
        return {hdu.name: hdul.fileinfo(i) for i, hdu in enumerate(hdul)}


# ---------------------------------------------------------------- detector1 (refs/load.py)

def test_full_frame_reference_is_cut_at_the_science_substrt(tmp_path, make, refs):
    gain = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)
    path = make.reference(tmp_path / "gain.fits", "gain", {"SCI": gain})
    out = load_reference("gain", path, READOUT, SHAPE)["gain"]
    np.testing.assert_array_equal(out, gain[8:24, 4:20])
    # the whole set loads through the one check
    loaded = load_references(refs, READOUT, SHAPE)
    assert set(loaded) == set(refs) and loaded["linearity"]["coeffs"].shape == (3, *SHAPE)
    # a subarray reference at the science position, its own size, is used as it is
    sub = make.reference(tmp_path / "gain_sub.fits", "gain", {"SCI": gain[8:24, 4:20]}, subarray="SUB64P",
                         substrt=(5, 9))
    np.testing.assert_array_equal(load_reference("gain", sub, READOUT, SHAPE)["gain"], gain[8:24, 4:20])
    # and a bigger subarray reference containing it is cut relative to its own SUBSTRT
    big = make.reference(tmp_path / "gain_big.fits", "gain", {"SCI": gain[4:28, 2:30]}, subarray="SUB28",
                         substrt=(3, 5))
    np.testing.assert_array_equal(load_reference("gain", big, READOUT, SHAPE)["gain"], gain[8:24, 4:20])


@pytest.mark.parametrize("keyword, value, match", [
    ("DETECTOR", "NRCB1", "DETECTOR='NRCB1', the exposure is NRCA1"),
    ("REFTYPE", "READNOISE", "REFTYPE='READNOISE'), used as gain"),
    ("INSTRUME", "NIRISS", "INSTRUME='NIRISS'"),
])
def test_reference_for_another_detector_type_or_instrument(tmp_path, make, keyword, value, match):
    path = make.reference(tmp_path / "gain.fits", "gain", {"SCI": np.ones((32, 32), np.float32)},
                          **{keyword: value})
    _raises(path, match, lambda: load_reference("gain", path, READOUT, SHAPE))


def test_detector_wildcards_are_accepted(tmp_path, make):
    for detector in ("ANY", "MULTIPLE"):
        path = make.reference(tmp_path / f"gain_{detector}.fits", "gain", {"SCI": np.ones((32, 32), np.float32)},
                              detector=detector)
        assert load_reference("gain", path, READOUT, SHAPE)["gain"].shape == SHAPE


def test_subarray_reference_at_another_position(tmp_path, make):
    # same size as the science array, but cut at SUBSTRT (1, 1): used to be taken as it was
    path = make.reference(tmp_path / "gain.fits", "gain", {"SCI": np.ones(SHAPE, np.float32)}, subarray="SUB64P",
                          substrt=(1, 1))
    message = _raises(path, "does not contain the science array's (16, 16) at SUBSTRT1=5, SUBSTRT2=9",
                      lambda: load_reference("gain", path, READOUT, SHAPE))
    assert "SUBSTRT1=1, SUBSTRT2=1" in message
    # partly overlapping: also refused
    part = make.reference(tmp_path / "gain2.fits", "gain", {"SCI": np.ones((20, 20), np.float32)}, subarray="SUB20",
                          substrt=(10, 10))
    _raises(part, "does not contain", lambda: load_reference("gain", part, READOUT, SHAPE))


@pytest.mark.parametrize("reftype, arrays, match", [
    ("saturation", {"SCI": np.ones((32, 32), np.float32)}, "has no DQ extension"),
    ("linearity", {"DQ": np.zeros((32, 32), np.uint32)}, "has no COEFFS extension"),
    ("mask", {"SCI": np.zeros((32, 32), np.float32)}, "has no DQ extension"),
])
def test_missing_extension(tmp_path, make, reftype, arrays, match):
    path = make.reference(tmp_path / f"{reftype}.fits", reftype, arrays)
    _raises(path, match, lambda: load_reference(reftype, path, READOUT, SHAPE))


@pytest.mark.parametrize("reftype, arrays, match", [
    ("linearity", {"COEFFS": np.ones((32, 32), np.float32), "DQ": np.zeros((32, 32), np.uint32)},
     "COEFFS has shape (32, 32), expected 3-D"),
    ("gain", {"SCI": np.ones((2, 32, 32), np.float32)}, "SCI has shape (2, 32, 32), expected 2-D"),
    ("saturation", {"SCI": np.ones((32, 32), np.float32), "DQ": np.zeros((30, 32), np.uint32)},
     "extensions disagree in shape"),
    ("mask", {"DQ": np.zeros((32, 32), np.float32)}, "DQ is floating point"),
])
def test_wrong_shape_or_type(tmp_path, make, reftype, arrays, match):
    path = make.reference(tmp_path / f"{reftype}.fits", reftype, arrays)
    _raises(path, match, lambda: load_reference(reftype, path, READOUT, SHAPE))


def test_subsize_disagreeing_with_the_arrays(tmp_path, make):
    path = make.reference(tmp_path / "gain.fits", "gain", {"SCI": np.ones((32, 32), np.float32)}, SUBSIZE1=2048,
                          SUBSIZE2=2048)
    _raises(path, "arrays are (32, 32) but SUBSIZE2, SUBSIZE1 say (2048, 2048)",
            lambda: load_reference("gain", path, READOUT, SHAPE))


def test_non_numeric_array(tmp_path, make):
    path = make.reference(tmp_path / "gain.fits", "gain", {"SCI": np.ones((32, 32), np.float32)})
    table = fits.BinTableHDU(np.array([("a", 1.0)], dtype=[("NAME", "S8"), ("VALUE", "f4")]), name="SCI")
    fits.HDUList([fits.PrimaryHDU(header=fits.getheader(path)), table]).writeto(path, overwrite=True)
    _raises(path, "SCI is a BinTableHDU, not a numeric image array",
            lambda: load_reference("gain", path, READOUT, SHAPE))


def test_mask_truncated_before_its_dq_is_not_no_bad_pixels(refs):
    path = refs["mask"]
    _truncate(path, _hdu_locations(path)["DQ"]["hdrLoc"])  # a valid FITS file of the primary alone
    _raises(path, "mask reference has no DQ extension (the file may be truncated)",
            lambda: load_reference("mask", path, READOUT, SHAPE))


@pytest.mark.parametrize("reftype, ext", [("gain", "SCI"), ("dark", "SCI"), ("linearity", "COEFFS"),
                                          ("saturation", "DQ")])
def test_reference_truncated_inside_its_data(refs, reftype, ext):
    path = refs[reftype]
    _truncate(path, _hdu_locations(path)[ext]["datLoc"] + 1000)
    _raises(path, f"{reftype} reference is truncated: its {ext} data needs",
            lambda: load_references({reftype: path}, READOUT, SHAPE))


def test_reference_truncated_inside_a_header(refs):
    path = refs["saturation"]
    _truncate(path, _hdu_locations(path)["DQ"]["hdrLoc"] + 400)
    _raises(path, "truncated or damaged", lambda: load_reference("saturation", path, READOUT, SHAPE))


def test_truncated_files_are_told_without_warning_filters(refs, make, tmp_path, monkeypatch):
    """Warning filters are process-wide and not thread-safe (detector1 loads its references in a thread
    while its main thread reads the uncal): neither io.uncal nor refs.load touches them.  A cut uncal
    or reference is still one line naming the file, also where the caller's own filters make every
    warning (astropy's "File may have been truncated") an error."""
    import inspect
    import warnings

    from webbflow.io.uncal import read_uncal, read_uncal_headers

    real = {name: getattr(warnings, name) for name in ("catch_warnings", "filterwarnings", "simplefilter")}
    changed = []

    def watched(name):
        def call(*args, **kwargs):
            caller = Path(inspect.stack()[1].filename)
            if caller.parent.name in ("io", "refs") and caller.parent.parent.name == "webbflow":
                changed.append(f"{caller.parent.name}/{caller.name}: warnings.{name}")
            return real[name](*args, **kwargs)
        return call

    for name in real:
        monkeypatch.setattr(warnings, name, watched(name))
    uncal = tmp_path / "x_uncal.fits"
    make.uncal(uncal, make.ramp())
    full = uncal.read_bytes()
    read_uncal(uncal)
    dark = refs["dark"]
    _truncate(dark, _hdu_locations(dark)["SCI"]["datLoc"] + 1000)
    with real["catch_warnings"]():
        real["simplefilter"]("error")
        for cut in (len(full) // 2, len(full) - 10):
            uncal.write_bytes(full[:cut])
            for read in (read_uncal, read_uncal_headers):
                with pytest.raises(InputError) as err:
                    read(uncal)
                message = str(err.value)
                assert message.startswith(f"{uncal}: the file is truncated: its ") and "\n" not in message, message
                assert "Fix: the file is truncated or corrupt" in message, message
        _raises(dark, "dark reference is truncated: its SCI data needs",
                lambda: load_references({"dark": dark}, READOUT, SHAPE))
    assert changed == []


def test_science_smaller_than_its_subsize_is_refused(tmp_path, make, refs):
    from webbflow.stages import detector1

    uncal = make.uncal(tmp_path / "x_uncal.fits", make.ramp(nints=1, ngroups=5), SUBSIZE1=20, SUBSIZE2=20)
    out = tmp_path / "out"
    out.mkdir()
    # refused by the uncal header check (webbflow.io.uncal.validate_headers) before any reference is cut
    with pytest.raises(InputError, match=r"x_uncal.fits: .*SUBSIZE2=20 but SCI has 16 rows; "
                                         r"SUBSIZE1=20 but SCI has 16 columns.*Fix: "):
        detector1.run(uncal, out / "x_rate.fits", out / "x_rateints.fits", refs, {})
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- image2 (io/cal.py)

def _flat(tmp_path, make, name="flat.fits", shape=(32, 32), **kw):
    flat = 1.0 + np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 1e4
    return make.reference(tmp_path / name, "flat", {"SCI": flat, "DQ": np.zeros(shape, np.uint32)},
                          FILTER="F200W", PUPIL="CLEAR", **kw), flat


def test_image2_full_frame_flat_and_area_cut_correctly(tmp_path, make):
    path, flat = _flat(tmp_path, make)
    cut, dq, err = load_flat(path, SCI)
    np.testing.assert_array_equal(cut, flat[8:24, 4:20])
    assert dq.shape == err.shape == SHAPE
    area = make.reference(tmp_path / "area.fits", "area", {"SCI": flat}, PIXAR_SR=1e-13, PIXAR_A2=0.004)
    cut, sr, a2 = load_area(area, SCI)
    np.testing.assert_array_equal(cut, flat[8:24, 4:20])
    assert (sr, a2) == (1e-13, 0.004)
    # only the window is read (hdu.section): DQ (stored int32 + BZERO) and ERR cut the same way
    dq = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) % 7 == 0).astype(np.uint32) * np.uint32(2**31 + 1)
    err = flat * np.float32(0.01)
    path = make.reference(tmp_path / "flat_dq.fits", "flat", {"SCI": flat, "DQ": dq, "ERR": err},
                          FILTER="F200W", PUPIL="CLEAR")
    cut, cut_dq, cut_err = load_flat(path, SCI)
    with fits.open(path) as hdul:  # the whole array read and mapped, then cut
        table = hdul["DQ_DEF"].data if "DQ_DEF" in hdul else None
        whole = map_dq(hdul["DQ"].data, None if table is None else
                       {"VALUE": np.asarray(table["VALUE"], np.int64), "NAME": list(table["NAME"])})
    np.testing.assert_array_equal(cut_dq, whole[8:24, 4:20])
    np.testing.assert_array_equal(cut_err, err[8:24, 4:20])
    assert cut_dq.dtype == np.uint32 and cut_dq.any() and cut.dtype.isnative and cut_err.dtype.isnative


@pytest.mark.parametrize("kw, match", [
    ({"detector": "NRCB4"}, "DETECTOR='NRCB4', the exposure is NRCA1"),
    ({"REFTYPE": "AREA"}, "used as flat"),
    ({"subarray": "SUB16", "substrt": (17, 17)}, "does not contain the science array's (16, 16)"),
])
def test_image2_flat_checked(tmp_path, make, kw, match):
    shape = (16, 16) if "substrt" in kw else (32, 32)
    path, _ = _flat(tmp_path, make, shape=shape, **kw)
    _raises(path, match, lambda: load_flat(path, SCI))


def test_missing_and_unreadable_references_keep_each_loaders_fix(tmp_path):
    """detector1's and image2's loaders open a reference through one opener
    (:func:`webbflow.refs.load.open_reference`) and each keeps its own messages: image2's tells a
    missing file apart; a file that is not FITS cannot be read, with each loader's fix."""
    missing = tmp_path / "gone_flat.fits"
    message = _raises(missing, "flat reference not found", lambda: load_flat(missing, SCI))
    assert message.endswith("Fix: check references.dir or overrides.flat"), message
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a FITS file\n" * 200)
    message = _raises(junk, "flat reference cannot be read (", lambda: load_flat(junk, SCI))
    assert message.endswith("Fix: replace it or name another with overrides.flat"), message
    message = _raises(junk, "saturation reference cannot be read (",
                      lambda: load_reference("saturation", junk, READOUT, SHAPE))
    assert message.endswith("Fix: replace the file or set overrides.saturation"), message


def test_image2_truncated_flat(tmp_path, make):
    path, _ = _flat(tmp_path, make)
    _truncate(path, _hdu_locations(path)["SCI"]["datLoc"] + 100)
    _raises(path, "flat reference is truncated: its SCI data needs", lambda: load_flat(path, SCI))
    _truncate(path, _hdu_locations(path)["SCI"]["hdrLoc"])  # cut at the SCI header: a FITS file without it
    _raises(path, "flat reference has no SCI extension", lambda: load_flat(path, SCI))


def test_image2_photom_checked(tmp_path, make):
    table = np.array([(b"F200W", b"CLEAR", 0.3, 0.01)],
                     dtype=[("filter", "S12"), ("pupil", "S12"), ("photmjsr", "f4"), ("uncertainty", "f4")])
    header = fits.Header({"REFTYPE": "PHOTOM", "INSTRUME": "NIRCAM", "DETECTOR": "NRCA1", "PIXAR_SR": 1e-13})
    path = tmp_path / "photom.fits"
    fits.HDUList([fits.PrimaryHDU(header=header), fits.BinTableHDU(table, name="PHOTOM")]).writeto(path)
    assert load_photom(path, SCI)[0]["photmjsr"][0] == np.float32(0.3)
    _raises(path, "DETECTOR='NRCA1', the exposure is NRCB2",
            lambda: load_photom(path, dict(SCI, detector="NRCB2")))
    # a "photom" that is a flat
    flat, _ = _flat(tmp_path, make)
    _raises(flat, "REFTYPE='FLAT'), used as photom", lambda: load_photom(flat, SCI))
    # a photom without its table
    header["REFTYPE"] = "PHOTOM"
    fits.HDUList([fits.PrimaryHDU(header=header)]).writeto(path, overwrite=True)
    _raises(path, "photom reference has no PHOTOM table", lambda: load_photom(path, SCI))


def test_image2_distortion_checked(tmp_path):
    path = tmp_path / "distortion.asdf"
    meta = {"reftype": "DISTORTION", "instrument": {"name": "NIRCAM", "detector": "NRCA1"}}
    asdf.AsdfFile({"meta": meta, "model": Shift(1) & Shift(2)}).write_to(path)
    assert load_distortion(path, SCI) is not None
    _raises(path, "DETECTOR='NRCA1', the exposure is NRCB1",
            lambda: load_distortion(path, dict(SCI, detector="NRCB1")))
    meta["reftype"] = "SPECWCS"
    asdf.AsdfFile({"meta": meta, "model": Shift(1) & Shift(2)}).write_to(path)
    _raises(path, "REFTYPE='SPECWCS'), used as distortion", lambda: load_distortion(path, SCI))


# ---------------------------------------------------------------- through the workflow

def test_workflow_override_for_another_detector_fails_in_one_line(tmp_path, make):
    data = tmp_path / "data"
    make.reference_set(data / "refs", detector="NRCA1", shape=(32, 32))
    (data / "uncal").mkdir()
    make.uncal(data / "uncal" / "e1_uncal.fits", make.ramp(nints=1, ngroups=5))
    (data / "other").mkdir()
    wrong = make.reference(data / "other" / "gain_nrcb1.fits", "gain", {"SCI": np.full((32, 32), 2.0, np.float32)},
                           detector="NRCB1")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"inputs": {"uncal_dir": str(data / "uncal")}, "results_dir": "out",
                                      "references": {"dir": str(data / "refs")},
                                      "overrides": {"gain": str(wrong)}}))
    work = tmp_path / "work"
    work.mkdir()
    proc = run_snakemake(work, "--configfile", str(config), "--cores", "1", "stage1", timeout=600, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    # one message (snakemake repeats the job's exit message in its summary)
    lines = sorted({line for line in output.splitlines()
                    if line.startswith("webbflow detector1 failed: ") and str(wrong) in line})
    assert len(lines) == 1, output[-3000:]
    log = (work / "out" / "logs" / "detector1" / "f200w" / "jw01234001001_02101_00001_nrca1.log").read_text()
    assert [line for line in log.splitlines() if " ERROR " in line] == [
        line for line in log.splitlines() if str(wrong) in line], log
    assert "DETECTOR='NRCB1', the exposure is NRCA1" in lines[0]
    assert "Fix: name the NRCA1 gain reference with overrides.gain" in lines[0]
    products = [p for p in (work / "out").rglob("*") if p.is_file() and p.suffix == ".fits"]
    assert products == [], products
