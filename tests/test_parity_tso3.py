"""tso3 on a three-segment grism time series against STScI's jwst 3.0 (the oracle).

Three segments of one exposure (8 integrations each, tests/tso_segments.py "grism-4out" geometry)
go through our detector1 and spec2, and through jwst's spec2 on the same rateints.  jwst's
calwebb_tso3 runs on its calints (its extract_1d needs their gwcs); ours runs on our calints and
on jwst's (our reader takes theirs), and jwst's tso3 also runs on ours (they carry jwst's gwcs).  Cases: the default rolling window (25, wider than a segment:
one median per segment) and a 5-integration rolling median.

Must hold (issue #13): crfints SCI/ERR/VAR_* within 1e-6 relative with identical DQ and NaNs;
x1dints (one EXTRACT1D per segment, INT_TIMES for all 24 integrations) WAVELENGTH within 1e-6 µm and
the other columns within 1e-5, its HDRTAB jwst's (a row per member, the same columns and values); whtlt within 1e-6 relative with identical times and meta; the same
level-3 file names.
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from tso_segments import TSO_SPECS

from webbflow.associations import read_asn, tso3_associations, write_asn
from webbflow.exposures import exposure_table
from webbflow.oracle import run_spec2, run_tso3
from webbflow.refs import select_references
from webbflow.simulate import optics, simulate_exposure
from webbflow.simulate.grism import write_grism_references
from webbflow.simulate.stage2_refs import write_stage2_references
from webbflow.stages import detector1, spec2, tso3

pytestmark = pytest.mark.parity

ARRAYS = ("SCI", "ERR", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")


@pytest.fixture(scope="module")
def exposure(tmp_path_factory, oracle):
    out = tmp_path_factory.mktemp("tso3")
    base = TSO_SPECS["grism-4out"]
    references, ours, theirs = None, [], []
    for k in (1, 2, 3):
        spec = replace(base, segment=(k, 3, 1 + 8 * (k - 1), 24), seed=40 + k)
        uncal = simulate_exposure(spec, out)
        rateints = out / f"{spec.rootname}_rateints.fits"
        detector1.run(uncal, out / f"{spec.rootname}_rate.fits", rateints,
                      select_references(fits.getheader(uncal), out / "refs"), {})
        if references is None:
            grism = write_grism_references(out, spec.detector, spec.filter, optics.pixar_sr(spec.detector),
                                           optics.pixar_a2(spec.detector))
            imaging = write_stage2_references(out, spec.detector, spec.geometry, spec.filter, spec.pupil, 0)
            references = {**grism, "flat": imaging["flat"], "distortion": imaging["distortion"]}
        calints = out / "ours2" / f"{spec.rootname}_calints.fits"
        spec2.run(rateints, calints, out / "ours2" / f"{spec.rootname}_x1dints.fits", references, {})
        ours.append(calints)
        theirs.append(run_spec2(rateints, references, out / "jwst2")[0]["calints"])
    (asn,) = tso3_associations(exposure_table(out / "uncal"))
    write_asn(asn, out / "jwst2" / "tso3_asn.json", suffix="calints")
    write_asn(asn, out / "ours2" / "tso3_asn.json", suffix="calints")
    return out, asn, references, ours, theirs


@pytest.fixture(scope="module", params=[25, 5], ids=["window-25", "window-5"])
def products(request, exposure):
    out, asn, references, ours, theirs = exposure
    w = request.param
    jwst, _ = run_tso3(out / "jwst2" / "tso3_asn.json", references, out / f"jwst3_{w}",
                       settings={"outlier_detection.rolling_window_width": w})
    # jwst's tso3 takes our calints as its own (they carry jwst's gwcs): the same products
    mine = {"jwst_on_ours": run_tso3(out / "ours2" / "tso3_asn.json", references, out / f"jwst3_on_ours_{w}",
                                     settings={"outlier_detection.rolling_window_width": w})[0]["all"][0].parent}
    for name, members in (("ours", ours), ("ours_on_jwst", theirs)):
        folder = out / f"{name}_{w}"
        crf = [folder / f"{m}_{asn.asn_id}_crfints.fits" for m in asn.members]
        tso3.run(members, crf, folder / f"{asn.product}_x1dints.fits", folder / f"{asn.product}_whtlt.ecsv",
                 {"extract1d": references["extract1d"]}, {"outlier_detection": {"rolling_window_width": w}},
                 asn={"asn_pool": asn.pool, "asn_table": "tso3_asn.json"})
        mine[name] = folder
    return asn, jwst, mine


def _agree(x, y, rtol, what):
    x, y = np.asarray(x, float), np.asarray(y, float)
    assert x.shape == y.shape, what
    assert not (np.isnan(x) != np.isnan(y)).any(), f"{what}: NaN at different places"
    ok = np.isclose(x, y, rtol=rtol, atol=0.0, equal_nan=True)
    assert ok.all(), f"{what}: {np.count_nonzero(~ok)} values beyond {rtol:g}"


SOFTWARE = {"CAL_VCS", "CRDS_VER", "CRDS_CTX"}
"""HDRTAB columns of jwst's own identity (its version control tag, CRDS version and context), which
webbflow writes in no product."""


def _same_header_table(ta, tb, who):
    """x1dints HDRTAB (jwst's ModelBlender table): a row per member, jwst's columns in its order and
    its values.  Aside: the software's identity (CAL_VER, SOFTWARE) and the time of the run (DATE);
    references compared by file name (jwst records an override's path as given); and, where the
    members are our calints, the reference types jwst's spec2 records as N/A and ours does not record
    (the rows are the members' metadata: our tso3 on jwst's calints has those columns too)."""
    assert len(ta) == len(tb) == 3
    names = [c for c in ta.columns.names if c not in SOFTWARE]
    theirs = [c for c in tb.columns.names if c not in SOFTWARE]
    unrecorded = [c for c in theirs if c not in names]
    assert (who == "ours_on_jwst") == (not unrecorded), (who, unrecorded)
    for col in unrecorded:
        assert col.startswith("R_") and set(tb[col]) == {"N/A"}, (who, col, set(tb[col]))
    assert names == [c for c in theirs if c not in unrecorded], who
    assert len(names) > 100
    for col in names:
        if col in ("DATE", "CAL_VER"):
            continue
        x, y = ta[col], tb[col]
        if col.startswith("R_"):
            x, y = [Path(v).name for v in x], [Path(v).name for v in y]
        assert list(x) == list(y), f"{who} HDRTAB {col}: {list(x)} != {list(y)}"
        assert ta.columns[col].format == tb.columns[col].format or col.startswith("R_"), (who, col)


@pytest.mark.parametrize("who", ["ours", "ours_on_jwst", "jwst_on_ours"])
def test_products_agree_with_jwst(products, who):
    asn, jwst, mine = products
    folder = mine[who]
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in jwst["all"])
    flagged = 0
    for theirs in jwst["crfints"]:
        with fits.open(folder / theirs.name) as a, fits.open(theirs) as b:
            for ext in ARRAYS:
                _agree(a[ext].data, b[ext].data, 1e-6, f"{who} {theirs.name} {ext}")
            np.testing.assert_array_equal(a["DQ"].data, b["DQ"].data)
            assert a[0].header["S_OUTLIR"] == b[0].header["S_OUTLIR"] == "COMPLETE"
            flagged += np.count_nonzero(b["DQ"].data & 16)
    assert flagged > 0  # the cosmic rays left after jump: outlier detection had something to do
    with fits.open(folder / jwst["x1dints"].name) as a, fits.open(jwst["x1dints"]) as b:
        assert a[0].header["DATAMODL"] == b[0].header["DATAMODL"] == "TSOMultiSpecModel"
        np.testing.assert_array_equal(np.array(a["INT_TIMES"].data.tolist()), np.array(b["INT_TIMES"].data.tolist()))
        assert len(a["INT_TIMES"].data) == 24
        for ver in (1, 2, 3):
            ta, tb = a["EXTRACT1D", ver].data, b["EXTRACT1D", ver].data
            assert ta.columns.names == tb.columns.names
            for col in tb.columns.names:
                if col == "WAVELENGTH":
                    np.testing.assert_allclose(ta[col], tb[col], rtol=0, atol=1e-6)
                elif tb[col].dtype.kind in "iu":
                    np.testing.assert_array_equal(ta[col], tb[col], err_msg=f"{ver} {col}")
                else:
                    _agree(ta[col], tb[col], 1e-5, f"{who} EXTRACT1D {ver} {col}")
            for key in ("SLTNAME", "SPORDER", "EXTRXSTR", "EXTRXSTP", "EXTRYSTR", "EXTRYSTP", "SRCXPOS", "SLIT_RA",
                        "SLIT_DEC"):
                assert a["EXTRACT1D", ver].header.get(key) == b["EXTRACT1D", ver].header.get(key), key
        for key in ("INTEND", "DURATION", "EFFEXPTM", "ASNPOOL", "S_OUTLIR", "S_EXTR1D"):
            assert a[0].header.get(key) == b[0].header.get(key), key
        _same_header_table(a["HDRTAB"].data, b["HDRTAB"].data, who)
    ta, tb = Table.read(folder / jwst["whtlt"].name), Table.read(jwst["whtlt"])
    assert ta.colnames == tb.colnames and ta.meta == tb.meta
    np.testing.assert_array_equal(ta["MJD_UTC"], tb["MJD_UTC"])
    np.testing.assert_array_equal(ta["BJD_TDB"], tb["BJD_TDB"])
    _agree(ta["whitelight_flux"].value, tb["whitelight_flux"].value, 1e-6, f"{who} whtlt")
    assert ta["whitelight_flux"].unit == tb["whitelight_flux"].unit


def test_association_is_jwsts_tso_rule(exposure):
    out, asn, *_ = exposure
    content = json.loads((out / "jwst2" / "tso3_asn.json").read_text())
    assert content["asn_type"] == "tso3" and content["asn_rule"] == "candidate_Asn_Lv3TSO"
    assert asn.product == "jw01234-o001_t001_nircam_f322w2-grismr-subgrism64"
    assert [m.split("_")[2] for m in asn.members] == ["00001-seg001", "00001-seg002", "00001-seg003"]
    assert len(read_asn(out / "jwst2" / "tso3_asn.json")["members"]) == 3
