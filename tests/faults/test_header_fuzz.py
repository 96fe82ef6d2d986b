"""Header fuzz (issue 12): every keyword a step depends on, damaged one at a time.

For each keyword of :data:`webbflow.io.uncal.HEADER_KEYWORDS` (so a keyword added
there is fuzzed too) and each damage (removed, non-numeric, zero, negative,
non-integer, inconsistent with the data or another keyword), detector1 on a
small SHALLOW4-like exposure (NFRAMES=4, GROUPGAP=1, with a ZEROFRAME) must
either refuse the file with ONE line naming the file and the keyword and leave
no product, or write products identical to the intact file's (only where jwst
has a default for the keyword).  The exposure table must refuse the same files.
"""

import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from webbflow.exposures import exposure_table
from webbflow.io import InputError
from webbflow.io.uncal import HEADER_KEYWORDS
from webbflow.stages import detector1

pytestmark = pytest.mark.faults

NAME = "jw01234001001_02101_00001_nrca1_uncal.fits"
SHAPE = (2, 4, 16, 16)  # nints, ngroups, ny, nx
# SHALLOW4: 4 frames a group, 1 dropped: TGROUP = (4 + 1) * TFRAME; a dark reaching 4*4 + 3 frames
TIMING = {"READPATT": "SHALLOW4", "NFRAMES": 4, "GROUPGAP": 1, "TFRAME": 0.2, "TGROUP": 1.0,
          "ZEROFRAM": True, "DRPFRMS1": 0}
KEYWORDS = {kw.name: kw for kw in HEADER_KEYWORDS}
REMOVE = object()


def _damages(kw):
    """(label, value) pairs for one keyword; REMOVE deletes it."""
    out = [("removed", REMOVE)]
    if kw.kind in (int, float):
        out += [("non-numeric", "abc"), ("zero", 0), ("negative", -3), ("logical", True)]
        if kw.kind is int:
            out += [("non-integer", 1.5)]
        if kw.choices is not None:
            out += [("not-a-choice", 3)]
    elif kw.kind is str:
        out += [("empty", ""), ("number", 7)]
        if kw.choices is not None:
            out += [("not-a-choice", "NRCZ9")]
    elif kw.kind is bool:
        out += [("string", "T"), ("number", 1)]
    return out


CASES = [pytest.param(kw.name, value, id=f"{kw.name}-{label}")
         for kw in HEADER_KEYWORDS for label, value in _damages(kw)]
# values of the right type that disagree with the data or with other keywords
INCONSISTENT = [pytest.param(key, value, id=f"{key}-inconsistent-{value}") for key, value in [
    ("NINTS", 3), ("NGROUPS", 5), ("SUBSIZE1", 17), ("SUBSIZE2", 32),  # SCI smaller than the header says
    ("NFRAMES", 1), ("GROUPGAP", 0), ("TFRAME", 0.25), ("TGROUP", 0.2),  # TGROUP != (NFRAMES+GROUPGAP)*TFRAME
    ("SUBSTRT1", 2040), ("SLOWAXIS", -1),  # beyond the detector; both axes the same
    ("ZEROFRAM", False), ("INTSTART", 2),  # a ZEROFRAME though ZEROFRAM=F; INTSTART without INTEND
]]


def _write(path, make, damage=None, zeroframe="ok"):
    sci = make.ramp(*SHAPE, rate=300.0)
    make.uncal(path, sci, **TIMING)
    with fits.open(path, mode="update") as hdul:
        if zeroframe is not None:
            nints, _, ny, nx = SHAPE
            zshape = (nints, ny, nx) if zeroframe == "ok" else (nints, ny - 1, nx)
            hdul.append(fits.ImageHDU(np.full(zshape, 1000, np.uint16), name="ZEROFRAME"))
        if damage is not None:
            key, value = damage
            if value is REMOVE:
                hdul[0].header.remove(key, ignore_missing=True)
            else:
                hdul[0].header[key] = value
    return path


@pytest.fixture(scope="module")
def bench(tmp_path_factory, make):
    """References and the products of the intact exposure."""
    root = tmp_path_factory.mktemp("header_fuzz")
    refs = make.reference_set(root / "refs", shape=SHAPE[2:], ndark=20)
    (root / "intact").mkdir()
    intact = _write(root / "intact" / NAME, make)
    out = root / "intact_out"
    out.mkdir()
    detector1.run(intact, out / "rate.fits", out / "rateints.fits", refs, {})
    return root, refs, out


def _same_products(a, b, key):
    """Every HDU's data equal, and every header card but the damaged keyword and the dates."""
    for name in ("rate.fits", "rateints.fits"):
        with fits.open(a / name) as ha, fits.open(b / name) as hb:
            assert [h.name for h in ha] == [h.name for h in hb]
            for x, y in zip(ha, hb):
                if x.name == "ASDF":
                    continue
                if x.data is not None:
                    assert x.data.tobytes() == y.data.tobytes(), f"{name}[{x.name}] differs"
                skip = {key, "DATE", "CHECKSUM", "DATASUM"}
                cards = lambda h: {k: v for k, v in h.header.items() if k not in skip}  # noqa: E731
                assert cards(x) == cards(y), f"{name}[{x.name}] header differs"


def _check(bench, make, tmp_path, key, value, zeroframe="ok"):
    _, refs, intact_out = bench
    uncal = _write(tmp_path / NAME, make, (key, value) if key else None, zeroframe=zeroframe)
    out = tmp_path / "out"
    out.mkdir()
    try:
        detector1.run(uncal, out / "rate.fits", out / "rateints.fits", refs, {})
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(f"{uncal}: ") and "Fix: " in message, message
        assert (key or "ZEROFRAME") in message, message
        assert list(out.iterdir()) == [], "a refused exposure left products"
        # the exposure table refuses it too, naming the file and keyword (planning can skip it)
        with pytest.raises(InputError) as table_err:
            exposure_table(tmp_path)
        table_message = str(table_err.value)
        assert "\n" not in table_message and table_message.startswith(f"{uncal}: "), table_message
        assert (key or "ZEROFRAME") in table_message and "Fix: " in table_message, table_message
        return "refused"
    _same_products(intact_out, out, key)
    assert [e.rootname for e in exposure_table(tmp_path)] == [NAME.removesuffix("_uncal.fits")]
    return "identical"


@pytest.mark.parametrize("key, value", CASES)
def test_damaged_keyword_is_refused_or_harmless(bench, make, tmp_path, key, value):
    outcome = _check(bench, make, tmp_path, key, value)
    if KEYWORDS[key].required:
        assert outcome == "refused", f"{key}: jwst has no default, so a damaged value must be refused"


@pytest.mark.parametrize("key, value", INCONSISTENT)
def test_inconsistent_keyword_is_refused(bench, make, tmp_path, key, value):
    assert _check(bench, make, tmp_path, key, value) == "refused"


@pytest.mark.parametrize("zeroframe", [None, "wrong-shape"], ids=["no-ZEROFRAME", "ZEROFRAME-of-another-shape"])
def test_zeroframe_extension_must_match_the_header(bench, make, tmp_path, zeroframe):
    assert _check(bench, make, tmp_path, None, None, zeroframe=zeroframe) == "refused"


def test_intact_copy_is_identical(bench, make, tmp_path):
    assert _check(bench, make, tmp_path, None, None) == "identical"


@pytest.mark.parametrize("key, value", [("TGROUP", REMOVE), ("NFRAMES", "four")], ids=["TGROUP-removed",
                                                                                       "NFRAMES-non-numeric"])
def test_cli_says_one_line(bench, make, tmp_path, key, value):
    _, refs, _ = bench
    uncal = _write(tmp_path / NAME, make, (key, value))
    out = tmp_path / "out"
    args = [a for t, p in refs.items() for a in ("--override", f"{t}={p}")]
    proc = subprocess.run([sys.executable, "-c", "import sys; from webbflow.cli import main; sys.exit(main())", "detector1", str(uncal), str(out), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"webbflow detector1: {uncal}: header keyword {key}") and "Fix: " in lines[0]
    assert not out.exists() or list(out.iterdir()) == []


def _demo_layout_uncal(path, make):
    """The intact exposure rewritten by the simulator's writer: the demo's HDU layout
    (PRIMARY, SCI, ZEROFRAME, GROUP, INT_TIMES, PIXELDQ, GROUPDQ, ASDF)."""
    from webbflow.simulate.writers import write_uncal

    path.parent.mkdir()
    source = _write(path.with_name("source.fits"), make)
    with fits.open(source) as hdul:
        primary = {k: v for k, v in hdul[0].header.items() if k not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND")}
        sci, times, zeroframe = hdul["SCI"].data.copy(), np.array(hdul["INT_TIMES"].data), hdul["ZEROFRAME"].data
    source.unlink()
    nints, ngroups = SHAPE[:2]
    group = np.zeros(nints * ngroups, [("integration_number", "i4"), ("group_number", "i2"), ("end_day", "i2"),
                                       ("end_milliseconds", "i4"), ("end_submilliseconds", "i2"),
                                       ("group_end_time", "S26"), ("number_of_columns", "i2"),
                                       ("number_of_rows", "i2"), ("number_of_gaps", "i2"),
                                       ("completion_code_number", "i2"), ("completion_code_text", "S36"),
                                       ("bary_end_time", "f8"), ("helio_end_time", "f8")])
    group["integration_number"] = np.repeat(np.arange(1, nints + 1), ngroups)
    group["group_number"] = np.tile(np.arange(1, ngroups + 1), nints)
    times = times.astype([(n, t.lstrip(">")) for n, t in INT_TIMES_DTYPE_NATIVE])
    return write_uncal(path, sci, primary, {"BUNIT": "DN", "XPOSURE": 1.0}, group, times, zeroframe=zeroframe)


INT_TIMES_DTYPE_NATIVE = [("integration_number", "i4"), ("int_start_MJD_UTC", "f8"), ("int_mid_MJD_UTC", "f8"),
                          ("int_end_MJD_UTC", "f8"), ("int_start_BJD_TDB", "f8"), ("int_mid_BJD_TDB", "f8"),
                          ("int_end_BJD_TDB", "f8")]


def test_file_cut_at_each_hdu_boundary_is_refused(bench, make, tmp_path):
    """A download cut exactly after SCI, ZEROFRAME, GROUP, INT_TIMES, ... is a valid FITS file with fewer
    extensions; without its final ASDF extension it is refused as truncated (one line, no product),
    by detector1, the exposure table and the CLI, instead of a rateints without INT_TIMES."""
    _, refs, _ = bench
    demo = _demo_layout_uncal(tmp_path / "demo" / NAME, make)
    with fits.open(demo) as hdul:
        names = [h.name for h in hdul]
        cuts = [(h.name, hdul.fileinfo(i)["datLoc"] + h._data_size) for i, h in enumerate(hdul)]
    assert names[-1] == "ASDF" and {"SCI", "ZEROFRAME", "GROUP", "INT_TIMES"} <= set(names)
    data = demo.read_bytes()
    boundaries = [(name, end) for name, end in cuts[names.index("SCI"):-1]]
    assert len(boundaries) >= 4 and all(end % 2880 == 0 for _, end in boundaries)
    args = [a for t, p in refs.items() for a in ("--override", f"{t}={p}")]
    for last, end in boundaries:
        case = tmp_path / f"cut_after_{last}"
        case.mkdir()
        uncal = case / NAME
        uncal.write_bytes(data[:end])
        with fits.open(uncal) as hdul:  # astropy reads the cut file without complaint
            assert [h.name for h in hdul][-1] == last
        out = case / "out"
        out.mkdir()
        with pytest.raises(InputError) as err:
            detector1.run(uncal, out / "rate.fits", out / "rateints.fits", refs, {})
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{uncal}: no ASDF extension"), message
        assert "Fix: the file is truncated: download it again" in message, message
        assert list(out.iterdir()) == [], f"cut after {last}: a product was written"
        with pytest.raises(InputError) as table_err:
            exposure_table(case)
        assert str(table_err.value) == message
    # the CLI says the same in one line (the last cut: everything but ASDF)
    proc = subprocess.run([sys.executable, "-c", "import sys; from webbflow.cli import main; sys.exit(main())",
                           "detector1", str(uncal), str(out), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0] == f"webbflow detector1: {message}", lines[0]
    assert list(out.iterdir()) == []
    # the intact demo file is accepted
    assert [e.rootname for e in exposure_table(demo.parent)] == [NAME.removesuffix("_uncal.fits")]
