"""spec2 for grism time series without the oracle: wavelengths against the simulator's truth, the
jwst 3.0 cutout rows, the grism photom conversion against its formula, a trace's flux recovered
by the box extraction, and bad input refused in one line with nothing written.
"""

import hashlib
import io
import json
import warnings

import numpy as np
import pytest
from astropy.io import fits
from tso_segments import TSO_SPECS

from webbflow.io.errors import InputError, ReferenceFileError
from webbflow.io.spec import X1dintsStream, load_specwcs, load_wavelengthrange
from webbflow.refs import select_references
from webbflow.simulate import optics, simulate_exposure
from webbflow.simulate.grism import (GRISM_PHOTMJSR, relative_response, trace_wavelength,
                                     write_grism_references)
from webbflow.simulate.stage2_refs import write_stage2_references
from webbflow.stages import detector1, spec2
from webbflow.steps.assign_wcs import tsgrism_wavelength
from webbflow.steps.extract_2d import tsgrism_rows
from webbflow.steps.photom import grism_conversion


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    out = tmp_path_factory.mktemp("grismrefs")
    return write_grism_references(out, "NRCALONG", "F322W2", optics.pixar_sr("NRCALONG"),
                                  optics.pixar_a2("NRCALONG"))


@pytest.mark.parametrize("xref,xstart", [(1581.0, 1), (1024.5, 1), (900.0, 513)])
def test_wavelength_of_every_column_is_the_simulators(refs, xref, xstart):
    dispersion = load_specwcs(refs["specwcs"])
    wave = tsgrism_wavelength(dispersion, xref, 35.0, xstart, 1024)
    truth = trace_wavelength("F322W2", np.arange(1024) + xstart - 1, xref)
    np.testing.assert_allclose(wave, truth, rtol=0, atol=1e-9)
    # 1 nm per pixel, increasing to the right (GRISMR)
    np.testing.assert_allclose(np.diff(wave), 1.7 / 1700.0, rtol=1e-9)
    # a barycentric velocity of 30 km/s shortens every wavelength by v/c
    moving = tsgrism_wavelength(dispersion, xref, 35.0, xstart, 1024, velosys=30000.0)
    np.testing.assert_allclose(moving / wave, 1 / (1 + 30000.0 / 299792458.0), rtol=1e-12)


@pytest.mark.parametrize("height,ysize,rows", [(None, 64, (0, 63)), (64, 256, (0, 63)), (40, 64, (0, 39)),
                                               (300, 256, (0, 256)), (1, 64, (0, 34)), (2, 64, (0, 1))])
def test_cutout_rows_follow_jwst_3_0(height, ysize, rows):
    """Rows start at 0 whatever the height (the fixed centre at row 34, tso-algorithms.md §2.3)."""
    assert tsgrism_rows(height, ysize) == rows


def test_grism_conversion_is_response_over_dispersion(refs):
    with fits.open(refs["photom"]) as hdul:
        table = np.array(hdul["PHOTOM"].data)
    wave = np.broadcast_to(trace_wavelength("F322W2", np.arange(2048), 1581.0), (8, 2048)).astype(np.float32)
    conv, no_cal, photmjsr = grism_conversion(table, "F322W2", "GRISMR", 1, wave)
    assert photmjsr == np.float32(GRISM_PHOTMJSR)
    inside = ~no_cal
    # the table samples the response every ~11 nm: linear interpolation is good to 1e-4 there
    want = GRISM_PHOTMJSR * relative_response(wave) / (1.7 / 1700.0)
    np.testing.assert_allclose(conv[inside], want[inside], rtol=2e-4)
    # beyond the table (2.09-4.39 um) there is no calibration
    assert (no_cal == ((wave < 2.09) | (wave > 4.39 + 1e-6))).mean() > 0.999 and (conv[no_cal] == 0).all()
    assert grism_conversion(table, "F322W2", "GRISMC", 1, wave)[0] is None


@pytest.fixture(scope="module")
def segment(tmp_path_factory, refs):
    spec = TSO_SPECS["grism-4out"]
    out = tmp_path_factory.mktemp("seg")
    uncal = simulate_exposure(spec, out)
    stage1 = select_references(fits.getheader(uncal), out / "refs")
    rateints = out / f"{spec.rootname}_rateints.fits"
    detector1.run(uncal, out / f"{spec.rootname}_rate.fits", rateints, stage1, {})
    imaging = write_stage2_references(out, spec.detector, spec.geometry, spec.filter, spec.pupil, 0)
    return spec, out, rateints, {**refs, "flat": imaging["flat"], "distortion": imaging["distortion"]}


@pytest.mark.parametrize("method", ["box", "optimal"])
def test_box_extraction_recovers_a_stars_rate(segment, tmp_path, method):
    """The brightest star of the segment (20000 DN/s, a point source, not a trace) lies in the
    aperture rows: with photom and flat off, the extracted FLUX summed around its column is its rate
    (by the box sum and by the optimal extraction: its profile per column is the PSF's)."""
    spec, out, rateints, references = segment
    star = max(spec.stars, key=lambda s: s.rate)
    calints, x1dints = tmp_path / "a_calints.fits", tmp_path / "a_x1dints.fits"
    ref = {"apertures": [{"id": "ANY", "region_type": "target", "dispaxis": 1, "xstart": 0, "xstop": 2047,
                          "ystart": round(star.y) - 5, "ystop": round(star.y) + 5,
                          "bkg_coeff": [[2.5], [12.5], [50.5], [60.5]], "bkg_fit": "median"}]}
    (tmp_path / "box.json").write_text(json.dumps(ref))
    statuses = spec2.run(rateints, calints, x1dints, {**references, "extract1d": tmp_path / "box.json"},
                         {"photom": {"skip": True}, "flat_field": {"skip": True}, "extract_1d": {"method": method}})
    assert statuses["photom"] == statuses["flat_field"] == "SKIPPED"
    with fits.open(x1dints) as hdul:
        t = hdul["EXTRACT1D"].data
        assert hdul["EXTRACT1D"].columns["FLUX"].unit == "DN/s"
        flux = np.nansum(t["FLUX"][:, int(star.x) - 8:int(star.x) + 9], axis=1)
        err = np.sqrt(np.nansum(t["FLUX_ERROR"][:, int(star.x) - 8:int(star.x) + 9] ** 2, axis=1))
    # the 17 x 11 box holds >= 99 % of a NIRCam LW PSF core; 5 sigma of the propagated error
    assert np.all(np.abs(flux - 0.995 * star.rate) < 0.01 * star.rate + 5 * err), (flux, err)


def _expect_refusal(run, match):
    with pytest.raises((InputError, ReferenceFileError), match=match) as info:
        run()
    assert "\n" not in str(info.value)


def test_bad_input_is_one_line_and_writes_nothing(segment, tmp_path):
    spec, out, rateints, references = segment
    calints, x1dints = tmp_path / "x_calints.fits", tmp_path / "x_x1dints.fits"

    def run(refs=references, params=None, path=rateints):
        return spec2.run(path, calints, x1dints, refs, params or {})

    broken = tmp_path / "broken.json"
    broken.write_text('{"apertures": [{"id": "ANY", "xstart": 4,')
    _expect_refusal(lambda: run({**references, "extract1d": broken}), "broken.json")
    off = tmp_path / "off.json"
    off.write_text(json.dumps({"apertures": [{"id": "ANY", "dispaxis": 1, "xstart": 4, "xstop": 2043,
                                              "ystart": 200, "ystop": 210}]}))
    _expect_refusal(lambda: run({**references, "extract1d": off}), "does not fit the cutout")
    _expect_refusal(lambda: run({k: v for k, v in references.items() if k != "specwcs"}), "no specwcs reference")
    _expect_refusal(lambda: run({**references, "specwcs": references["flat"]}), "specwcs")
    _expect_refusal(lambda: run({**references, "wavelengthrange": references["distortion"]}), "wavelengthrange")
    rate = out / f"{spec.rootname}_rate.fits"
    _expect_refusal(lambda: run(path=rate), "not a 3-D CubeModel")
    assert not calints.exists() and not x1dints.exists()
    assert not list(tmp_path.glob(".*part*"))


def test_wavelengthrange_must_be_for_tsgrism(refs, tmp_path):
    orders, limits = load_wavelengthrange(refs["wavelengthrange"], "F322W2")
    assert orders == [1] and limits[1] == pytest.approx((2.39, 4.09))
    with pytest.raises(ReferenceFileError, match="no orders for FILTER=F210M"):
        load_wavelengthrange(refs["wavelengthrange"], "F210M")


class WholeX1dints:
    """spec2's and tso3's x1dints as it was written before the rows were streamed: the spectra
    collected in memory, one EXTRACT1D table each built whole, the product written by stdatamodels
    (:func:`webbflow.io.spec.write_x1dints`)."""

    def __init__(self, path, primary, specs, nrows, **kwargs):
        self.args, self.rows = (path, primary, specs, kwargs), [[] for _ in specs]

    def __enter__(self):
        return self

    def write_rows(self, spec, row0, table):
        assert row0 == sum(len(t) for t in self.rows[spec])
        self.rows[spec].append(table)

    def __exit__(self, kind, value, tb):
        from webbflow.io.spec import write_x1dints

        path, primary, specs, kwargs = self.args
        if kind is None:
            for spec, rows in zip(specs, self.rows):
                units = {c.name: c.unit for c in spec.spec_table.columns}
                spec.spec_table = np.concatenate(rows)
                for name, unit in units.items():
                    spec.spec_table.columns[name].unit = unit
            write_x1dints(path, primary, specs, **kwargs)


def _same_product(whole, chunked, tree=True):
    """Every HDU's data byte for byte and its keywords (not the checksums, DATE) equal, and with
    ``tree`` the ASDF trees (not the date) and each tree's FITS hash that of its file's headers;
    every checksum verifies."""
    import asdf

    with fits.open(whole, checksum=True) as a, fits.open(chunked, checksum=True) as b:
        assert [h.name for h in a] == [h.name for h in b]
        for ha, hb in zip(a, b):
            assert ha.header.get("DATASUM") is not None and hb.header.get("DATASUM") is not None, ha.name
            cards = [[(c.keyword, c.value) for c in h.header.cards if c.keyword not in ("CHECKSUM", "DATASUM", "DATE")]
                     for h in (ha, hb)]
            assert cards[0] == cards[1], ha.name
            if ha.name == "ASDF" and tree:
                trees = []
                for h in (ha, hb):
                    with warnings.catch_warnings():  # its arrays' links to the FITS HDUs, not resolved here
                        warnings.simplefilter("ignore", asdf.exceptions.AsdfConversionWarning)
                        with asdf.open(io.BytesIO(h.data["ASDF_METADATA"][0].tobytes()), lazy_load=False) as af:
                            trees.append(af.tree)
                for t, hdul in zip(trees, (a, b)):
                    # the tree's FITS hash is of the headers as written (before the checksums): trusted on reading
                    text = "".join(str(fits.Header([c for c in h.header.cards if c.keyword not in ("CHECKSUM", "DATASUM")]))
                                   for h in hdul if h.name != "ASDF")
                    assert t.pop("_fits_hash") == hashlib.sha256(text.encode()).hexdigest()
                    t.pop("asdf_library", None), t.pop("history", None)
                    for node in [t] + t.get("spec", []):  # creation times
                        node["meta"].pop("date")
                assert repr(trees[0]) == repr(trees[1])
            elif ha.name == "HDRTAB":  # its rows hold each member's write time (DATE)
                for column in ha.columns.names:
                    if column != "DATE":
                        assert ha.data[column].tobytes() == hb.data[column].tobytes(), column
            elif ha.name not in ("PRIMARY", "ASDF"):
                assert ha.data.tobytes() == hb.data.tobytes(), ha.name


def test_chunks_of_integrations_give_the_whole_segments_products(segment, tmp_path, monkeypatch):
    """spec2 in bounded memory: a budget of a few integrations per chunk (with a shorter last chunk)
    writes the products of the whole segment at once, byte for byte in every array and table (the
    x1dints's rows filled in place as against its table built whole and written by stdatamodels),
    and the calints opens in stdatamodels as a SlitModel with its full cubes and the same gwcs."""
    from stdatamodels.jwst import datamodels

    spec, out, rateints, references = segment
    params = {"extract_2d": {"tsgrism_extract_height": 40}}  # a cutout that is not every row
    nints, ny, nx = fits.getdata(rateints, "SCI").shape
    per_int_mb = spec2._BYTES_PER_PIXEL * ny * nx / 2**20
    small = 3.5 * per_int_mb  # 3 integrations a chunk: 3 + 3 + 2
    assert spec2.ints_per_chunk((nints, ny, nx), small) == 3 and nints % 3 != 0
    assert spec2.ints_per_chunk((nints, ny, nx), 10**6) == nints
    runs = {}
    for name, budget in (("whole", 10**6), ("chunks", small)):
        runs[name] = (tmp_path / name / "seg_calints.fits", tmp_path / name / "seg_x1dints.fits")  # same FILENAME
        with monkeypatch.context() as m:
            if name == "whole":  # the x1dints table built whole and written by stdatamodels
                m.setattr(spec2, "X1dintsStream", WholeX1dints)
            spec2.run(rateints, *runs[name], references, params, max_memory_mb=budget)
    for whole, chunked in zip(runs["whole"], runs["chunks"]):  # the calints's tree keeps its 1-integration hash
        _same_product(whole, chunked, tree=whole.name.endswith("x1dints.fits"))
    with datamodels.open(runs["chunks"][1]) as x1d:
        assert isinstance(x1d, datamodels.TSOMultiSpecModel) and len(x1d.spec) == 1
        table = x1d.spec[0].spec_table
        assert len(table) == nints and table["FLUX"].shape == (nints, table["N_ALONGDISP"][0])
        assert np.isfinite(table["FLUX"]).any()
        np.testing.assert_array_equal(table["INT_NUM"], np.arange(spec.segment[2], spec.segment[2] + nints))
    with datamodels.open(runs["chunks"][0]) as a, datamodels.open(runs["whole"][0]) as b:
        assert isinstance(a, datamodels.SlitModel) and a.data.shape == (nints, 40, nx)
        assert (a.ystart, a.ysize, a.meta.cal_step.photom) == (b.ystart, b.ysize, b.meta.cal_step.photom)
        np.testing.assert_array_equal(a.dq, b.dq)
        assert a.meta.wcs(100.0, 20.0) == b.meta.wcs(100.0, 20.0)


def test_tso3_in_bounded_memory_gives_the_whole_members_products(segment, tmp_path, monkeypatch):
    """tso3 on a member too big for its budget: outlier_detection by blocks of rows (rolling median
    narrower than the segment, so the whole cube's weight threshold is used), extract_1d and the
    trace on chunks of integrations read back from the crfints, give the products of the member
    reduced whole: every array and table byte for byte, the white-light and trace tables equal.
    The x1dints's rows spooled and filled in place give the product of its tables built whole."""
    from webbflow.stages import tso3

    spec, out, rateints, references = segment
    calints = tmp_path / "seg_calints.fits"
    spec2.run(rateints, calints, tmp_path / "seg_x1dints.fits", references, {})
    nints, ny, nx = fits.getdata(calints, "SCI").shape
    params = {"outlier_detection": {"rolling_window_width": 3}}
    runs = {}
    for name, budget in (("table", tso3.MAX_MEMORY_MB), ("whole", tso3.MAX_MEMORY_MB),
                         ("blocks", 2.5 * tso3._BYTES_PER_PIXEL * nints * nx / 2**20)):
        monkeypatch.setattr(tso3, "MAX_MEMORY_MB", budget)
        # "table": the x1dints's tables built whole and written by stdatamodels, as before they were streamed
        monkeypatch.setattr(tso3, "X1dintsStream", WholeX1dints if name == "table" else X1dintsStream)
        runs[name] = [tmp_path / name / f"seg_{s}" for s in ("crfints.fits", "x1dints.fits", "whtlt.ecsv", "trace.ecsv")]
        crf, x1d, whtlt, trace_path = runs[name]
        tso3.run([calints], [crf], x1d, whtlt, {"extract1d": references["extract1d"]}, params, trace_path=trace_path)
    _same_product(runs["table"][1], runs["whole"][1])
    # the white-light sums taken a chunk at a time are those of the whole table's spectra
    from astropy.table import Table

    from webbflow.steps import white_light

    with fits.open(runs["blocks"][1]) as hdul:
        t = hdul["EXTRACT1D"].data
        whole = white_light.white_light([white_light.SpectralSeries(t["MJD-AVG"], t["TDB-MID"], t["WAVELENGTH"],
                                                                    t["FLUX"], "DN/s")])
    curve = Table.read(runs["blocks"][2], format="ascii.ecsv")
    assert len(curve) == nints and np.isfinite(whole["whitelight_flux"].value).all()
    np.testing.assert_array_equal(np.asarray(curve["whitelight_flux"]), whole["whitelight_flux"].value)
    assert nints * ny * nx * tso3._BYTES_PER_PIXEL > budget * 2**20  # the second run was streamed (2 rows a block)
    for whole, blocks in zip(runs["whole"][:2], runs["blocks"][:2]):
        with fits.open(whole, checksum=True) as a, fits.open(blocks, checksum=True) as b:
            assert [h.name for h in a] == [h.name for h in b]
            for ha, hb in zip(a, b):
                if ha.name in ("PRIMARY", "ASDF"):
                    continue
                if ha.name != "HDRTAB":  # its rows hold each member's write time
                    assert ha.data.tobytes() == hb.data.tobytes(), ha.name
    with fits.open(runs["blocks"][0]) as b:
        assert (b["DQ"].data & 16).any()  # OUTLIER: the blocks flagged something to compare
    for whole, blocks in zip(runs["whole"][2:], runs["blocks"][2:]):
        text = [[line for line in p.read_text().splitlines() if "date" not in line.lower()] for p in (whole, blocks)]
        assert text[0] == text[1], whole.name


def test_x1dints_rows_not_all_written_leave_nothing(segment, tmp_path):
    """An x1dints whose rows were not all filled (a failed chunk) is an error and leaves no file,
    not a product with zero rows that would read as spectra; rows beyond the table are refused."""
    from webbflow.io.spec import X1D_VECTOR_COLUMNS, read_rateints, tso_spec, x1d_rows

    _, _, rateints, _ = segment
    model, _ = read_rateints(rateints, cubes=False)
    try:
        nints, _, nx = model.data.shape
        columns = {c: np.ones((nints, nx), np.uint32 if c == "DQ" else float) for c in X1D_VECTOR_COLUMNS}
        rows = x1d_rows(model, columns)
        layout = tso_spec(model, {c: v[:1] for c, v in columns.items()}, order=1, flux_unit="DN/s",
                          extraction={"xstart": 0, "xstop": nx - 1, "ystart": 30, "ystop": 38})
        path = tmp_path / "p_x1dints.fits"
        with pytest.raises(ValueError, match="do not fit"), X1dintsStream(path, model, [layout], [nints]) as x1d:
            x1d.write_rows(0, 1, rows)
        with pytest.raises(ValueError, match="rows written"), X1dintsStream(path, model, [layout], [nints]) as x1d:
            x1d.write_rows(0, 0, rows[:-1])
        assert not path.exists() and not list(tmp_path.glob(".*part*"))
        with X1dintsStream(path, model, [layout], [nints]) as x1d:
            x1d.write_rows(0, 0, rows[:3])
            x1d.write_rows(0, 3, rows[3:])
        with fits.open(path, checksum=True) as hdul:
            np.testing.assert_array_equal(hdul["EXTRACT1D"].data["INT_NUM"], rows["INT_NUM"])
            np.testing.assert_array_equal(hdul["EXTRACT1D"].data["DQ"], 1)
    finally:
        model.close()


def test_background_median_is_numpys_nanmedian_to_the_bit():
    """extract_1d's per-column background median (plain-array steps of np.ma.median) is
    np.nanmedian(axis=0) bit for bit: NaN columns, ties of +0.0 and -0.0, +-inf, odd and even
    counts, float32 and float64, and the >= 600-row case numpy takes another way."""
    from webbflow.steps.extract_1d import _column_nanmedian

    rng = np.random.default_rng(7)
    seen = {"nan": 0, "zero": 0}
    for trial in range(300):
        dtype = np.float32 if trial % 3 else np.float64
        ny = 700 if trial == 0 else int(rng.integers(1, 80))
        a = rng.normal(size=(ny, int(rng.integers(1, 200)))).astype(dtype)
        if trial % 2:
            a = np.round(a * 2) / 2  # many ties
        for value, share in ((np.nan, rng.random()), (np.inf, 0.05), (-np.inf, 0.05), (-0.0, 0.1), (0.0, 0.1)):
            a[rng.random(a.shape) < share] = value
        a[:, rng.random(a.shape[1]) < 0.1] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(a, axis=0)
        got = _column_nanmedian(a)
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes(), trial
        seen["nan"] += int(np.isnan(expected).sum())
        seen["zero"] += int((expected == 0).sum())
    assert seen["nan"] > 100 and seen["zero"] > 100  # all-NaN columns and zero medians were compared


def test_background_median_on_the_background_rows_is_the_whole_images():
    """extract_1d's background median sorts only the rows that hold background: bit for bit the
    median over every row (whose other rows are NaN), zero medians (ties of +0.0 and -0.0) included."""
    from webbflow.steps.extract_1d import _background_median, _column_nanmedian

    rng = np.random.default_rng(11)
    seen = {"zero": 0, "nan": 0}
    for trial in range(300):
        dtype = np.float32 if trial % 3 else np.float64
        ny, nx = int(rng.integers(1, 80)), int(rng.integers(1, 200))
        a = rng.normal(size=(ny, nx)).astype(dtype)
        if trial % 2:
            a = np.round(a * 2) / 2  # many ties
        for value, share in ((np.nan, 0.3 * rng.random()), (np.inf, 0.05), (-np.inf, 0.05), (-0.0, 0.2), (0.0, 0.2)):
            a[rng.random(a.shape) < share] = value
        bg = np.zeros((ny, nx))
        bg[rng.random(ny) < 0.3] = 1.0
        bg[:, rng.random(nx) < 0.1] = 0.0  # columns without background
        a[bg == 0] = np.nan
        expected = _column_nanmedian(a)
        got = _background_median(a.copy(), bg)
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes(), trial
        seen["zero"] += int((expected == 0).sum())
        seen["nan"] += int(np.isnan(expected).sum())
    assert seen["zero"] > 100 and seen["nan"] > 100
