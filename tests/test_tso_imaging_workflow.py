"""Mode ``tso_imaging`` in the workflow (issue #14 part 2): uncal segments -> rateints -> calints ->
crfints and ``<product>_phot.ecsv``.

Two segments of 4 integrations of the ``demo-tso-imaging`` geometry (F210M + WLP8, NRCA3 SUB64P)
go through snakemake with ``step_defaults: jwst``; the library's stages on the same files give the
same products (calints and the phot table identical), the table has a row per integration at the
INT_TIMES mid-times, jwst's columns and the SUB64P + WLP8 whole-subarray sum (the parity test,
tests/test_parity_tso_imaging.py, compares the library with jwst 3.0 itself).
"""

from pathlib import Path

import numpy as np
import pytest
import yaml
from _snakemake import run_snakemake
from astropy.io import fits
from astropy.table import QTable

from webbflow.refs import select_references
from webbflow.refs.select import IMAGE2_REFTYPES
from webbflow.simulate import run_specs, tso_image_specs
from webbflow.stages import detector1, image2, tso3

REPO = Path(__file__).resolve().parents[1]
PRODUCT = "jw01366-o003_t001_nircam_f210m-wlp8-sub64p"


@pytest.mark.workflow
@pytest.mark.slow
def test_tso_imaging_mode_makes_calints_crfints_and_phot(tmp_path, make):
    data = tmp_path / "data"
    uncals = run_specs(tso_image_specs(n_segments=2, ints_per_segment=4), data)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "inputs": {"uncal_dir": str(data / "uncal")}, "results_dir": "out", "references": {"dir": str(data / "refs")},
        "modes": ["tso_imaging"], "step_defaults": "jwst"}))
    run_snakemake(tmp_path, "--configfile", str(config), "--cores", "2", "stage1", "stage2", "stage3", timeout=600)
    out = tmp_path / "out"
    products = sorted(out.rglob("*.fits"))  # rate, rateints, calints, crfints: DATASUM/CHECKSUM that verify
    assert {p.name.rsplit("_", 1)[-1] for p in products} == {"rate.fits", "rateints.fits", "calints.fits",
                                                              "crfints.fits"}
    make.assert_fits_checksums(products)

    # the library on the same segments
    lib, calints, gain = tmp_path / "lib", [], None
    for uncal in uncals:
        root = uncal.name.removesuffix("_uncal.fits")
        header = fits.getheader(uncal)
        refs = select_references(header, data / "refs")
        gain = refs["gain"]
        detector1.run(uncal, lib / f"{root}_rate.fits", lib / f"{root}_rateints.fits", refs, {})
        image2.run(lib / f"{root}_rateints.fits", lib / f"{root}_calints.fits",
                   select_references(header, data / "refs", None, IMAGE2_REFTYPES), {})
        calints.append(lib / f"{root}_calints.fits")
        mine = out / "image2" / "f210m" / f"{root}_calints.fits"
        with fits.open(mine) as a, fits.open(calints[-1]) as b:
            assert a["SCI"].data.shape == (4, 64, 64) and a["SCI"].header["BUNIT"] == "MJy/sr"
            for ext in ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"):
                np.testing.assert_array_equal(a[ext].data, b[ext].data, err_msg=ext)
            np.testing.assert_array_equal(a["INT_TIMES"].data, b["INT_TIMES"].data)
        crf = out / "tso3" / "crfints" / PRODUCT / f"{root}_o003_crfints.fits"
        assert crf.exists()  # step_defaults jwst: tso3's outlier_detection runs
    crf = [lib / f"{c.name.removesuffix('_calints.fits')}_o003_crfints.fits" for c in calints]
    tso3.run_photometry(calints, crf, lib / "phot.ecsv", {"gain": gain}, {})
    phot, ref = QTable.read(out / "tso3" / f"{PRODUCT}_phot.ecsv"), QTable.read(lib / "phot.ecsv")
    assert phot.colnames == ref.colnames and phot.meta == ref.meta
    for name in phot.colnames:
        np.testing.assert_array_equal(np.asarray(phot[name]), np.asarray(ref[name]), err_msg=name)
    mids = np.concatenate([fits.getdata(u, "INT_TIMES")["int_mid_MJD_UTC"] for u in uncals])
    np.testing.assert_array_equal(phot["MJD"], mids)
    assert phot.meta["number_of_integrations"] == 8 and str(phot["aperture_sum"].unit) == "Jy"
    assert np.isnan(phot["annulus_sum"]).all() and "sum of all values" in phot.meta["apertures"]
    # jwst's centroid (centre of mass in an 11-px box) is no truth measure for a 40-px donut: only finite
    assert np.isfinite(phot["centroid_x"]).all() and np.isfinite(phot["psf_width_x"]).all()


def test_tso_imaging_preset_recommended_and_jwst_lines():
    from webbflow.config import load_modes, step_parameters

    modes = load_modes(REPO / "config" / "modes", REPO / "config" / "schema.yaml")  # validated
    preset = modes["tso_imaging"]
    assert preset["exp_types"] == ["NRC_TSIMAGE"] and preset["stages"] == ["detector1", "image2", "tso3"]
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    defaults = {s: {} for s in schema["properties"]["steps"]["properties"]}
    jwst = step_parameters(defaults, "tso3", preset, recommended=False)
    rec = step_parameters(defaults, "tso3", preset, recommended=True)
    assert not jwst["outlier_detection"].get("skip") and rec["outlier_detection"]["skip"] is True
    # beyond jwst: the template centroid, apertures that follow it, the clipped annulus; none on jwst's line
    assert rec["tso_photometry"] == {"centroid_method": "template", "moving_centroid": True,
                                     "background_method": "sigma_clip"}
    assert not jwst["tso_photometry"]
    assert step_parameters(defaults, "detector1", preset, recommended=True)["refpix"]["roeba"] is True


def test_imaging_segments_ask_crds_for_no_extract1d():
    from webbflow.config import stage_reftypes

    stages = ["detector1", "image2", "tso3"]
    imaging = stage_reftypes(stages, "NRC_TSIMAGE")
    assert "extract1d" not in imaging and {"gain", "flat", "photom", "distortion"} <= set(imaging)
    assert "extract1d" in stage_reftypes(["detector1", "spec2", "tso3"], "NRC_TSGRISM")
    assert "extract1d" in stage_reftypes(stages)  # the union over modes keeps it


def _calints(path, xref, yref, pupil="CLEAR"):
    """A small imaging calints (CubeModel) with INT_TIMES and the keywords tso_photometry reads."""
    from stdatamodels.jwst import datamodels

    model = datamodels.CubeModel((2, 32, 32))
    model.data[:] = 1.0
    model.err[:] = 0.1
    for name in ("var_poisson", "var_rnoise", "var_flat"):
        setattr(model, name, np.full((2, 32, 32), 0.005, np.float32))
    cols = [f"int_{w}_{s}" for w in ("start", "mid", "end") for s in ("MJD_UTC", "BJD_TDB")]
    times = np.zeros(2, [("integration_number", "i4")] + [(c, "f8") for c in cols])
    times["integration_number"] = [1, 2]
    for c in cols:
        times[c] = [60000.0, 60000.001]
    model.int_times = times
    m = model.meta
    m.exposure.type, m.instrument.name, m.instrument.detector = "NRC_TSIMAGE", "NIRCAM", "NRCA3"
    m.instrument.filter, m.instrument.pupil, m.subarray.name = "F210M", pupil, "SUB32TATS"
    m.wcsinfo.siaf_xref_sci, m.wcsinfo.siaf_yref_sci = xref, yref
    m.bunit_data = m.bunit_err = "MJy/sr"
    m.photometry.pixelarea_steradians = 1e-13
    model.save(path)
    return path


@pytest.mark.parametrize("xref, params, match", [
    (80.0, {}, "lies off the 32x32 subarray"),
    (16.0, {"radius_outer": 20.0}, "steps.tso_photometry.radius_outer = 20 px"),
    (16.0, {"radius": 17.0, "radius_inner": 18.0, "radius_outer": 19.0}, "steps.tso_photometry.radius = 17 px"),
    (16.0, {"radii": [2.0, 4.5]}, "steps.tso_photometry.radii has 4.5 px, beyond radius_inner = 4 px"),
])
def test_target_off_the_subarray_or_a_too_large_aperture_is_refused(tmp_path, xref, params, match):
    from webbflow.io.errors import InputError

    cal = _calints(tmp_path / "a_calints.fits", xref, 16.0)
    with pytest.raises(InputError, match=match):
        tso3.run_photometry([cal], [tmp_path / "a_crfints.fits"], tmp_path / "p_phot.ecsv", {},
                            {"tso_photometry": params})
    assert not (tmp_path / "p_phot.ecsv").exists() and not (tmp_path / "a_crfints.fits").exists()


def test_a_flat_calints_gives_area_times_value(tmp_path):
    cal = _calints(tmp_path / "a_calints.fits", 16.0, 16.0)
    tso3.run_photometry([cal], [tmp_path / "a_crfints.fits"], tmp_path / "p_phot.ecsv", {},
                        {"tso_photometry": {"centroid_source": False}})
    phot = QTable.read(tmp_path / "p_phot.ecsv")
    # 1 MJy/sr x 1e-13 sr = 1e-7 Jy per pixel over the r = 3 px circle; the annulus mean removes it all
    np.testing.assert_allclose(phot["aperture_sum"].value, np.pi * 9 * 1e-7, rtol=1e-6)
    np.testing.assert_allclose(phot["net_aperture_sum"].value, 0.0, atol=1e-12)
    assert len(phot) == 2 and phot.meta["number_of_integrations"] == 2


def _same_tree(a, b, path="tree"):
    """Assert two stdatamodels trees equal: the same keys at every level, equal leaves and arrays."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{path}: {sorted(a)} vs {sorted(b)}"
        for key in a:
            _same_tree(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same_tree(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def test_calints_read_unvalidated_gives_the_validated_tree(tmp_path):
    """tso3 opens an imaging calints without stdatamodels' per-value validation (half of a warm
    open); with the unset keywords' empty branches dropped its tree is the validated open's, and the
    crfints written from either is the same file (bar DATE)."""
    from webbflow.io.cal import open_product, write_model

    path = _calints(tmp_path / "a_calints.fits", 16.0, 16.0)
    model, arrays = tso3.read_calints(path, imaging=True)
    assert model._validate_on_assignment is False and arrays.data.shape == (2, 32, 32)
    with open_product(path, "calints", "image2", lambda m: None, native=True) as checked:
        assert checked._validate_on_assignment is True
        _same_tree(model._instance, checked._instance)
        # a keyword the file lacks reads as None either way and no empty branch is kept for it
        assert "asn" not in model._instance["meta"] and model.meta.asn.pool_name is None
        for m, name in ((model, "u"), (checked, "v")):
            m.meta.cal_step.outlier_detection = "COMPLETE"
            write_model(m, tmp_path / f"{name}_crfints.fits")
    model.close()
    with fits.open(tmp_path / "u_crfints.fits") as u, fits.open(tmp_path / "v_crfints.fits") as v:
        assert len(u) == len(v)
        for hu, hv in zip(u, v):
            if hu.name == "ASDF":  # its tree holds the write time (meta.date) and the file's hash
                continue
            cards = lambda h: [(c.keyword, c.value) for c in h.header.cards
                               if c.keyword not in ("DATE", "CHECKSUM", "DATASUM", "FILENAME")]
            assert cards(hu) == cards(hv), hu.name
            if hu.data is not None:
                assert np.asarray(hu.data).tobytes() == np.asarray(hv.data).tobytes(), hu.name
