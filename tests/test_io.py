"""webbflow.io and webbflow.refs: reading uncal files, writing products, choosing and cutting references."""

import json
import os
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits

from webbflow import dqflags
from webbflow.config import config_digest
from webbflow.io import read_uncal, write_rate, write_rateints
from webbflow.io.errors import ReferenceFileError
from webbflow.ramp import Readout
from webbflow.refs import load_reference, map_dq, select_references


def _image_arrays(shape, seed=0):
    rng = np.random.default_rng(seed)
    var_p = rng.uniform(1, 2, shape).astype(np.float32)
    var_r = rng.uniform(0.1, 0.2, shape).astype(np.float32)
    return SimpleNamespace(
        data=rng.normal(100, 5, shape).astype(np.float32),
        dq=np.arange(np.prod(shape), dtype=np.uint32).reshape(shape) % 5,
        var_poisson=var_p, var_rnoise=var_r, err=np.sqrt(var_p + var_r),
    )


def test_read_uncal_gives_float_ramp_readout_and_headers(uncal_file):
    ramp, readout, headers = read_uncal(uncal_file)
    assert ramp.data.shape == (2, 5, 16, 16)
    assert ramp.data.dtype == np.float32
    # the cube was bias 1000 + 100 DN per group
    assert ramp.data[1, 4, 3, 7] == 1400.0
    assert ramp.pixeldq.shape == (16, 16) and ramp.pixeldq.dtype == np.uint32
    assert ramp.groupdq.shape == (2, 5, 16, 16) and ramp.groupdq.dtype == np.uint8
    assert (readout.nints, readout.ngroups, readout.nframes, readout.groupgap) == (2, 5, 1, 0)
    assert readout.tgroup == pytest.approx(0.05016)
    assert (readout.subarray, readout.detector, readout.noutputs) == ("SUB64P", "NRCA1", 1)
    assert headers.primary["FILTER"] == "F200W"
    assert list(headers.int_times["integration_number"]) == [1, 2]


def test_rate_and_rateints_open_as_models_with_keywords(uncal_file, tmp_path):
    from stdatamodels.jwst import datamodels

    _, _, headers = read_uncal(uncal_file)
    rate = _image_arrays((16, 16))
    rateints = _image_arrays((2, 16, 16), seed=1)
    steps = {"jump": "COMPLETE", "refpix": "SKIPPED", "dark_current": "COMPLETE"}
    refs = {"gain": "/somewhere/webbflow_nrca1_gain_full.fits", "dark": None}
    prov = {"step_parameters": {"jump": {"rejection_threshold": 5.0}}, "config_digest": "abc123"}
    out = tmp_path / "out"
    write_rate(out / "x_rate.fits", rate, headers, cal_steps=steps, ref_files=refs, provenance=prov)
    write_rateints(out / "x_rateints.fits", rateints, headers, cal_steps=steps, ref_files=refs, provenance=prov)
    assert sorted(p.name for p in out.iterdir()) == ["x_rate.fits", "x_rateints.fits"]  # no temporaries

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ValidationWarning would fail the test
        with datamodels.open(out / "x_rate.fits") as model:
            assert type(model).__name__ == "ImageModel"
            np.testing.assert_array_equal(model.data, rate.data)
            np.testing.assert_array_equal(model.dq, rate.dq)
            np.testing.assert_array_equal(model.var_poisson, rate.var_poisson)
            np.testing.assert_array_equal(model.var_rnoise, rate.var_rnoise)
            np.testing.assert_array_equal(model.err, rate.err)
            assert model.meta.cal_step.jump == "COMPLETE"
            assert model.meta.cal_step.refpix == "SKIPPED"
            assert model.meta.cal_step.dark_sub == "COMPLETE"
            assert model.meta.ref_file.gain.name == "webbflow_nrca1_gain_full.fits"
            assert model.meta.ref_file.dark.name == "N/A"
            assert model.meta.instrument.filter == "F200W"
        with datamodels.open(out / "x_rateints.fits") as cube:
            assert type(cube).__name__ == "CubeModel"
            assert cube.data.shape == (2, 16, 16)
            np.testing.assert_array_equal(cube.data, rateints.data)
            assert list(cube.int_times["int_mid_MJD_UTC"]) == [60310.0, 60310.001]

    primary = fits.getheader(out / "x_rate.fits", 0)
    sci = fits.getheader(out / "x_rate.fits", "SCI")
    assert primary["DATAMODL"] == "ImageModel"
    assert primary["CAL_VER"] == primary["WF_VER"] == "0.1.0"
    assert primary["WF_CFGD"] == "abc123"
    assert json.loads(primary["WF_PARS"]) == {"jump": {"rejection_threshold": 5.0}}
    assert primary["TARGNAME"] == "TEST" and primary["PATT_NUM"] == 1  # carried from the uncal
    assert primary["NGROUPS"] == 5 and primary["S_JUMP"] == "COMPLETE" and primary["R_DARK"] == "N/A"
    assert sci["BUNIT"] == "DN/s" and fits.getheader(out / "x_rate.fits", "ERR")["BUNIT"] == "DN/s"
    assert sci["XPOSURE"] == 1.0


def test_default_digest_is_sha256_of_canonical_config(uncal_file, tmp_path):
    _, _, headers = read_uncal(uncal_file)
    params = {"jump": {"rejection_threshold": 4.0, "skip": False}}
    write_rate(tmp_path / "r_rate.fits", _image_arrays((16, 16)), headers,
               ref_files={"gain": "/a/g.fits"}, provenance={"step_parameters": params})
    expected = config_digest({"steps": params, "references": {"gain": "g.fits"}})
    assert fits.getheader(tmp_path / "r_rate.fits")["WF_CFGD"] == expected
    assert len(expected) == 64


def test_failed_write_leaves_nothing(uncal_file, tmp_path, monkeypatch):
    _, _, headers = read_uncal(uncal_file)

    def broken(self, path, *args, **kwargs):
        open(path, "wb").write(b"SIMPLE  =                    T")  # a partial file, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", broken)
    with pytest.raises(OSError, match="disk full"):
        write_rate(tmp_path / "x_rate.fits", _image_arrays((16, 16)), headers)
    assert list(tmp_path.glob("*rate*")) == [] and list(tmp_path.glob(".*")) == []


def test_products_carry_checksums_that_catch_one_flipped_byte(uncal_file, tmp_path, make, monkeypatch):
    from webbflow.io import products, write_fitopt

    _, _, headers = read_uncal(uncal_file)
    rateints = _image_arrays((2, 16, 16), seed=1)
    opt = {n: np.full((2, 1, 16, 16) if n in ("weights", "crmag") else (2, 16, 16), 1.5, np.float32)
           for n in ("slope", "sigslope", "var_poisson", "var_rnoise", "yint", "sigyint", "pedestal", "weights",
                     "crmag")}
    write_rate(tmp_path / "x_rate.fits", _image_arrays((16, 16)), headers)
    write_rateints(tmp_path / "x_rateints.fits", rateints, headers)
    write_fitopt(tmp_path / "x_fitopt.fits", opt, headers)
    # the streamed writer sums the cubes from the file: blocks of 100 words (a cube is 512), the last one short
    monkeypatch.setattr(products, "_BLOCK_WORDS", 100)
    with products.RateintsStream(tmp_path / "s_rateints.fits", (2, 16, 16), headers) as stream:
        for r0 in range(0, 16, 5):  # rows out of order would do as well: the sum is of words
            stream.write_rows(r0, SimpleNamespace(**{k: v[:, r0:r0 + 5] for k, v in vars(rateints).items()}))
    names = ["x_rate.fits", "x_rateints.fits", "x_fitopt.fits", "s_rateints.fits"]
    make.assert_fits_checksums(tmp_path / n for n in names)
    with fits.open(tmp_path / "x_rateints.fits") as whole, fits.open(tmp_path / "s_rateints.fits") as streamed:
        for a, b in zip(whole, streamed):  # the same data, so the same DATASUM
            np.testing.assert_array_equal(a.data, b.data)
            assert a.header["DATASUM"] == b.header["DATASUM"], a.name

    for name, hdu in (("x_rate.fits", "SCI"), ("s_rateints.fits", "DQ"), ("s_rateints.fits", "VAR_RNOISE")):
        make.flip_byte(tmp_path / name, hdu, offset=777)
        with pytest.raises(Warning, match="Checksum verification failed"):  # astropy's, as an error
            make.assert_fits_checksums([tmp_path / name])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(tmp_path / name, checksum=True) as hdul:
                hdul[hdu].data  # noqa: B018 - reading the HDU verifies it
        assert any("Checksum verification failed" in str(w.message) for w in caught), (name, hdu)


def test_map_dq_translates_through_dq_def(make):
    # reference bits: 1 DO_NOT_USE, 2 HOT, 4 DEAD, 8 REFERENCE_PIXEL; 16 is undefined and dropped
    raw = np.array([[0, 1, 2, 4], [8, 3, 12, 16]], np.uint32)
    mapped = map_dq(raw, make.DQ_DEF)
    expected = np.array(
        [[0, dqflags.DO_NOT_USE, dqflags.HOT, dqflags.DEAD],
         [dqflags.REFERENCE_PIXEL, dqflags.DO_NOT_USE | dqflags.HOT, dqflags.DEAD | dqflags.REFERENCE_PIXEL, 0]],
        np.uint32)
    np.testing.assert_array_equal(mapped, expected)
    np.testing.assert_array_equal(map_dq(raw, None), raw)


def test_reference_dq_def_with_unsigned_values_from_file(tmp_path, make):
    # VALUE 2**31 is stored as int32 with TZERO: the mapping must see the unsigned value
    dq = np.zeros((16, 16), np.uint32)
    dq[0, :4] = 8  # REFERENCE_PIXEL in this file's convention
    dq[5, 5] = 1 | 4
    path = make.reference(tmp_path / "mask.fits", "mask", {"DQ": dq}, subarray="SUB64P")
    table = np.array([(0, 1, "DO_NOT_USE", ""), (31, 2**31, "REFERENCE_PIXEL", "")],
                     dtype=[("BIT", ">i4"), ("VALUE", ">u4"), ("NAME", "S40"), ("DESCRIPTION", "S80")])
    with fits.open(path, mode="update") as hdul:
        hdul["DQ"].data = np.where(dq == 8, np.uint32(2**31), dq & 1).astype(np.uint32)
        hdul["DQ_DEF"] = fits.BinTableHDU(table, name="DQ_DEF")
    assert fits.getheader(path, "DQ_DEF")["TFORM2"] == "J"  # signed storage + TZERO
    mask = load_reference("mask", path, Readout(nints=1, ngroups=2, subarray="SUB64P"), (16, 16))["mask_dq"]
    assert (mask[0, :4] == dqflags.REFERENCE_PIXEL).all()
    assert mask[5, 5] == dqflags.DO_NOT_USE
    assert np.count_nonzero(mask) == 5


def test_select_prefers_exact_subarray_then_full_and_override_wins(tmp_path, make):
    refs = tmp_path / "refs"
    full = make.reference_set(refs, detector="NRCA1", shape=(32, 32), subarray="FULL")
    make.reference_set(refs, detector="NRCB1", shape=(32, 32), subarray="FULL")  # other detector
    exact = make.reference(refs / "sub_gain.fits", "gain", {"SCI": np.ones((16, 16), np.float32)},
                            detector="NRCA1", subarray="SUB64P")
    header = {"INSTRUME": "NIRCAM", "DETECTOR": "NRCA1", "SUBARRAY": "SUB64P", "SUBSTRT1": 1, "SUBSTRT2": 1,
              "SUBSIZE1": 16, "SUBSIZE2": 16, "DATE-OBS": "2024-01-01"}
    chosen = select_references(header, refs)
    assert chosen["gain"] == str(exact)
    assert chosen["dark"] == str(full["dark"])
    assert set(chosen) == {"mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise"}
    override = make.reference(tmp_path / "mine.fits", "dark", {"SCI": np.zeros((1, 16, 16), np.float32)})
    assert select_references(header, refs, overrides={"dark": str(override)})["dark"] == str(override)
    # a FULL reference that does not cover the subarray is not a candidate
    header_far = dict(header, SUBARRAY="SUB160", SUBSTRT1=30, SUBSTRT2=30)
    assert select_references(header_far, refs)["dark"] is None
    with pytest.raises(ReferenceFileError, match="overrides.gain"):
        select_references(header, refs, overrides={"gain": str(tmp_path / "missing.fits")})


def test_full_frame_reference_is_cut_at_substrt(tmp_path, make):
    ny, nx = 32, 40
    yy, xx = np.mgrid[:ny, :nx]
    gain = (1000 * yy + xx).astype(np.float32)  # value encodes its own position
    path = make.reference(tmp_path / "gain.fits", "gain", {"SCI": gain})
    readout = Readout(nints=1, ngroups=2, substrt1=5, substrt2=3, subarray="SUB64P")
    cut = load_reference("gain", path, readout, (16, 20))["gain"]
    assert cut.shape == (16, 20)
    assert cut[0, 0] == 1000 * 2 + 4  # 1-indexed SUBSTRT (5, 3) -> 0-indexed (x=4, y=2)
    assert cut[15, 19] == 1000 * 17 + 23
    assert not cut.flags.writeable  # the cache must not be modified by a step


def test_dark_reference_keeps_frames_and_maps_dq(tmp_path, make):
    frames = np.arange(3 * 16 * 16, dtype=np.float32).reshape(3, 16, 16)
    dq = np.zeros((16, 16), np.uint32)
    dq[2, 3] = 2  # HOT in the reference's own bit convention
    path = make.reference(tmp_path / "dark.fits", "dark", {"SCI": frames, "DQ": dq}, subarray="SUB64P",
                           NFRAMES=4, GROUPGAP=1)
    readout = Readout(nints=1, ngroups=2, subarray="SUB64P")
    dark = load_reference("dark", path, readout, (16, 16))
    np.testing.assert_array_equal(dark["dark_frames"], frames)
    assert dark["dark_dq"][2, 3] == dqflags.HOT and dark["dark_dq"].sum() == dqflags.HOT
    assert (dark["dark_nframes"], dark["dark_groupgap"]) == (4, 1)


def test_uncal_with_zeroframe_is_read(tmp_path, make):
    path = make.uncal(tmp_path / "z_uncal.fits", make.ramp(nints=1, ngroups=3, ny=8, nx=8), ZEROFRAM=True)
    with fits.open(path, mode="append") as hdul:
        hdul.append(fits.ImageHDU(np.full((1, 8, 8), 990, np.uint16), name="ZEROFRAME"))
    ramp, _, _ = read_uncal(path)
    assert ramp.zeroframe.shape == (1, 8, 8) and ramp.zeroframe[0, 0, 0] == 990.0


def test_real_stsci_header_is_carried_to_products(shared_dir, tmp_path, make):
    """Synthetic pixels under a real uncal header: every keyword survives, no ValidationWarning."""
    from stdatamodels.jwst import datamodels

    source = shared_dir / "realdata" / "nircam" / "uncal_header_only" / "jw01075001001_03105_00009_nrca2_uncal.fits"
    if not source.exists():
        pytest.skip(f"{source} not present")
    with fits.open(source) as hdul:
        primary, sci = hdul[0].header.copy(), hdul["SCI"].header.copy()
    for key in ("NAXIS1", "NAXIS2", "NAXIS3", "NAXIS4", "BZERO", "BSCALE"):
        sci.remove(key, ignore_missing=True)
    primary["NGROUPS"], primary["SUBSIZE1"], primary["SUBSIZE2"] = 3, 8, 8  # as the SCI below
    uncal = tmp_path / "real_uncal.fits"
    fits.HDUList([fits.PrimaryHDU(header=primary),
                  fits.ImageHDU(np.full((1, 3, 8, 8), 1000, np.uint16), header=sci, name="SCI"),
                  make.asdf_hdu()]).writeto(uncal)
    _, readout, headers = read_uncal(uncal, exp_types=None)  # NRC_CORON: accepted only when asked
    assert (readout.detector, readout.fastaxis, readout.slowaxis, readout.noutputs) == ("NRCA2", 1, -2, 4)
    out = tmp_path / "x_rate.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_rate(out, _image_arrays((8, 8)), headers)
        with datamodels.open(out) as model:
            assert model.meta.wcsinfo.s_region.startswith("POLYGON ICRS  245.979858401")
            assert model.meta.pointing.ra_v1 == pytest.approx(245.980217997301)
    written, written_sci = fits.getheader(out, 0), fits.getheader(out, "SCI")
    lost = [k for k in primary if k and k not in ("COMMENT", "HISTORY") and k not in written]
    assert lost == []
    assert [k for k in sci if k and k not in written_sci] == []
    assert written["PROGRAM"] == "01075" and written_sci["XPOSURE"] == pytest.approx(107.368)


def test_libyaml_manifests_parse_identically():
    """Every asdf extension manifest parses to the same object with libyaml (what
    ``use_libyaml_manifests`` makes asdf use) as with PyYAML's pure-Python ``safe_load``."""
    import asdf
    import yaml

    from webbflow.io.asdf_yaml import use_libyaml_manifests

    manager = asdf.get_config().resource_manager
    uris = [u for u in manager if "/manifests/" in u]
    assert len(uris) > 20  # asdf-standard, astropy, gwcs, stdatamodels, transforms...
    for uri in uris:
        assert yaml.load(manager[uri], Loader=yaml.CSafeLoader) == yaml.safe_load(manager[uri]), uri
    assert use_libyaml_manifests() and use_libyaml_manifests()  # idempotent
    from asdf.extension import _manifest

    assert _manifest.yaml.safe_load(manager[uris[0]]) == yaml.safe_load(manager[uris[0]])


def test_cached_schema_documents_validate_as_asdf_does():
    """With ``cache_schema_documents`` asdf's resolver gets each schema document parsed once: the
    same document a fresh parse gives, left unchanged by validating, and a datamodel still takes
    a valid value and refuses an invalid one."""
    from asdf import schema
    from stdatamodels.exceptions import ValidationWarning
    from stdatamodels.jwst.datamodels import ImageModel

    from webbflow.io.asdf_yaml import cache_schema_documents

    assert cache_schema_documents() and cache_schema_documents()  # idempotent
    # asdf's own lru cache may hold the schemas from earlier tests in this process: start from none
    getattr(schema, "_load_schema_cached", None) and schema._load_schema_cached.cache_clear()
    cached, fresh = schema._make_schema_loader(), schema._make_schema_loader._webbflow_original()
    with ImageModel((8, 8)) as model:
        model.data = np.ones((8, 8), np.float32)
        model.meta.exposure.nints = 3
        model.meta.photometry.conversion_megajanskys = 1.5
        with pytest.warns(ValidationWarning):
            model.meta.exposure.nints = "three"
        assert model.meta.exposure.nints == 3
        with pytest.warns(ValidationWarning):
            model.meta.instrument.name = "MIRI_NOT"
        model.validate()
    urls = [u for u in schema._make_schema_loader._webbflow_documents]
    assert len(urls) >= 5  # the datamodel schemas ($ref: core, wcsinfo, variance...)
    for url in urls:
        assert cached(url) is cached(url)  # parsed once
        assert cached(url) == fresh(url), url  # and equal to a fresh parse after the validations


def _same_document(a, b, where="doc"):
    """``a`` and ``b`` equal, with the same types (asdf's tagged types and their tags) everywhere."""
    assert type(a) is type(b), where
    assert getattr(a, "_tag", None) == getattr(b, "_tag", None), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _same_document(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_document(x, y, f"{where}/{i}")
    else:
        assert a == b or (a != a and b != b), where  # NaN: a YAML .nan


def _all_documents():
    """Every document asdf's resource manager holds (manifests and schemas), as bytes."""
    import asdf

    manager = asdf.get_config().resource_manager
    return {uri: manager[uri] for uri in manager}


def test_parsed_yaml_cache_gives_fresh_parses(tmp_path):
    """Every manifest and schema document asdf knows, parsed through the persistent cache (a miss,
    then a hit in a new cache read from the file), is the document a fresh parse gives: same values,
    types and tags; every hit a new object."""
    import yaml
    from asdf import yamlutil

    from webbflow.io.asdf_yaml import ParsedYamlCache

    documents = _all_documents()
    assert len(documents) > 200
    path = tmp_path / "sub" / "cache.pickle"

    def fresh(content):
        return yaml.load(content, Loader=yamlutil.AsdfLoader)  # noqa: S506 (asdf's SafeLoader subclass)

    first = ParsedYamlCache(path)
    for uri, content in documents.items():
        _same_document(first.parse("asdf", content, lambda c=content: fresh(c)), fresh(content), uri)
    assert (first.hits, first.misses) == (0, len(set(documents.values())))
    assert first.save() and not first.save()  # nothing new the second time
    second = ParsedYamlCache(path)
    parsed = {}
    for uri, content in documents.items():
        parsed[uri] = second.parse("asdf", content, lambda: pytest.fail("parsed again"))
        _same_document(parsed[uri], fresh(content), uri)
    assert second.hits == len(documents) and second.misses == 0 and not second.save()
    uri = next(u for u in documents if "/manifests/" not in u)
    assert second.parse("asdf", documents[uri], None) is not parsed[uri]  # a new object per call
    # another loader is another entry; a str is keyed apart from the same bytes
    safe = second.parse("csafe", documents[uri], lambda: yaml.load(documents[uri], Loader=yaml.CSafeLoader))
    assert second.misses == 1 and safe == yaml.safe_load(documents[uri])
    text = documents[uri].decode()
    assert second.parse("asdf", text, lambda: fresh(text)) == fresh(text) and second.misses == 2
    # a stream is parsed, never cached
    import io

    assert second.parse("asdf", io.BytesIO(documents[uri]), lambda: "streamed") == "streamed"


def test_parsed_yaml_cache_ignores_and_rewrites_bad_files(tmp_path):
    """A corrupt, truncated, stale (other versions) or damaged-entry cache file is a miss and is
    rewritten whole; an unwritable place only loses the cache."""
    import pickle

    from webbflow.io.asdf_yaml import ParsedYamlCache

    path = tmp_path / "cache.pickle"
    good = ParsedYamlCache(path)
    assert good.parse("k", b"a: 1", lambda: {"a": 1}) == {"a": 1} and good.save()
    whole = path.read_bytes()
    stale = pickle.dumps({"stamp": "other versions", "entries": pickle.loads(whole)["entries"]})
    damaged = pickle.loads(whole)
    damaged["entries"] = {k: b"not a pickle" for k in damaged["entries"]}
    for bad in (b"garbage", whole[: len(whole) // 2], stale, pickle.dumps(damaged), b""):
        path.write_bytes(bad)
        cache = ParsedYamlCache(path)
        assert cache.parse("k", b"a: 1", lambda: {"a": 1}) == {"a": 1}
        assert (cache.hits, cache.misses) == (0, 1)
        assert cache.save()
        again = ParsedYamlCache(path)
        assert again.parse("k", b"a: 1", lambda: pytest.fail("parsed again")) == {"a": 1}
    blocked = tmp_path / "file"
    blocked.write_text("")
    cache = ParsedYamlCache(blocked / "cache.pickle")  # its folder cannot be made
    assert cache.parse("k", b"a: 1", lambda: {"a": 1}) == {"a": 1} and not cache.save()


def _save_many(path, worker, rounds):
    from webbflow.io.asdf_yaml import ParsedYamlCache

    for i in range(rounds):
        cache = ParsedYamlCache(path, stamp="test")
        content = f"w{worker}: {i}".encode()
        cache.parse("k", content, lambda: {f"w{worker}": i, "pad": list(range(2000))})
        cache.save()


def test_parsed_yaml_cache_concurrent_writers(tmp_path):
    """Four processes saving to one cache file at once leave a complete file whose every entry is
    a document one of them parsed, and no temporary files."""
    import multiprocessing
    import pickle

    from webbflow.io.asdf_yaml import ParsedYamlCache

    path = tmp_path / "cache.pickle"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_save_many, args=(path, w, 25)) for w in range(4)]
    for proc in workers:
        proc.start()
    for proc in workers:
        proc.join(60)
        assert proc.exitcode == 0
    data = pickle.loads(path.read_bytes())
    assert data["stamp"] == "test" and len(data["entries"]) >= 25  # the last writer's merge at least
    for blob in data["entries"].values():
        doc = pickle.loads(blob)
        ((name, i),) = [(k, v) for k, v in doc.items() if k != "pad"]
        cache = ParsedYamlCache(path, stamp="test")
        assert cache.parse("k", f"{name}: {i}".encode(), lambda: pytest.fail("lost")) == doc
    assert [p.name for p in tmp_path.iterdir()] == ["cache.pickle"]


def test_parsed_yaml_cache_installed_in_a_job_process(tmp_path):
    """A process that installs the asdf speed-ups writes the cache at exit; the next one parses
    nothing again, and both write byte-identical products (apart from dates)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from webbflow.io.asdf_yaml import cache_schema_documents, parsed_yaml_cache, use_libyaml_manifests\n"
        "use_libyaml_manifests(); cache_schema_documents()\n"
        "import numpy as np\n"
        "from stdatamodels.jwst.datamodels import ImageModel\n"
        "with ImageModel(np.ones((4, 4), np.float32)) as m:\n"
        "    m.meta.exposure.type = 'NRC_IMAGE'\n"
        "    m.meta.date = '2026-01-01T00:00:00.000'\n"
        "    m.save(sys.argv[1])\n"
        "c = parsed_yaml_cache()\n"
        "print(c.hits, c.misses)\n"
    )
    env = dict(os.environ, WEBBFLOW_YAML_CACHE=str(tmp_path / "cache.pickle"))
    runs = []
    for name in ("a", "b"):  # the same file name: FILENAME is in the header
        (tmp_path / name).mkdir()
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path / name / "x.fits")], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        runs.append((int(out[0]), int(out[1])))
    assert runs[0][1] > 40 and runs[1] == (runs[0][0] + runs[0][1], 0)
    with fits.open(tmp_path / "a" / "x.fits") as a, fits.open(tmp_path / "b" / "x.fits") as b:
        assert len(a) == len(b)
        for ha, hb in zip(a, b):
            keep = [k for k in ha.header if k not in ("DATE", "CHECKSUM", "DATASUM")]
            assert [(k, ha.header[k]) for k in keep] == [(k, hb.header[k]) for k in keep]
            if ha.data is None:
                assert hb.data is None
            else:  # the ASDF extension's tree holds the save's date, and a hash of the headers (DATE)
                dated = re.compile(rb"\d{4}-\d\d-\d\dT[\d:.]+|_fits_hash: [0-9a-f]+")
                assert dated.sub(b"", ha.data.tobytes()) == dated.sub(b"", hb.data.tobytes())


def test_memoized_extension_selection_is_asdfs():
    """With ``memoize_extension_selection`` every ASDF Standard version gets the extensions asdf's
    own selection gives, as a new list per file, and an extension added in a config context (a new
    extension list) is seen."""
    import asdf
    from asdf import _asdf

    from webbflow.io.asdf_yaml import memoize_extension_selection

    assert memoize_extension_selection() and memoize_extension_selection()  # idempotent
    memo = _asdf.AsdfFile._process_plugin_extensions
    original = memo._webbflow_original
    for version in ("1.0.0", "1.5.0", "1.6.0", str(asdf.get_config().default_version)):
        af = asdf.AsdfFile(version=version)
        first, again = memo(af), memo(af)
        assert first == original(af) and first == again and first is not again
        assert af._plugin_extensions == original(af)  # what the file chose as it was made

    class Extra:
        extension_uri = "asdf://webbflow.test/extensions/extra-1.0.0"

    with asdf.config_context() as config:
        config.add_extension(Extra())
        af = asdf.AsdfFile()
        assert "asdf://webbflow.test/extensions/extra-1.0.0" in [e.extension_uri for e in memo(af)]
        assert memo(af) == original(af)
    assert "asdf://webbflow.test/extensions/extra-1.0.0" not in [e.extension_uri for e in memo(asdf.AsdfFile())]


def test_asdf_reference_header_without_extensions(tmp_path):
    """Reference selection reads an ASDF reference's ``meta`` from its YAML alone: the same summary as
    the tree asdf.open gives, without loading asdf's extensions (the planning process's cost)."""
    import subprocess
    import sys

    import asdf

    from webbflow.refs.select import asdf_summary, reference_header
    from webbflow.simulate.detectors import subarray_geometry
    from webbflow.simulate.stage2_refs import write_stage2_references

    path = write_stage2_references(tmp_path, "NRCA1", subarray_geometry("NRCA1", "SUB160"), "F200W", "CLEAR", 1)["distortion"]
    with asdf.open(path, lazy_load=True, memmap=False, _force_raw_types=True) as af:
        want = asdf_summary(af.tree)
    assert want["REFTYPE"] == "distortion" and want["DETECTOR"] == "NRCA1" and want["EXP_TYPE"] == "NRC_IMAGE"
    assert reference_header(path) == want
    code = ("import sys; from webbflow.refs.select import reference_header; reference_header(sys.argv[1]); "
            "import asdf.config as c; print(c.get_config()._extensions is None)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"  # no extension was loaded


def test_native_swaps_our_arrays_in_place_and_copies_mapped_ones(tmp_path):
    """``io.cal._native``: an array read into memory is swapped to native order in place (no copy);
    a memory-mapped one is copied, the file left as it was; ``fits_order`` swaps back."""
    from webbflow.io.cal import _native, fits_order

    values = np.arange(12, dtype=np.float32).reshape(3, 4) * 1.5
    path = tmp_path / "a.fits"
    fits.PrimaryHDU(values).writeto(path)
    before = path.read_bytes()
    with fits.open(path, memmap=False) as hdul:
        raw = hdul[0].data
        assert raw.dtype.byteorder == ">"
        native = _native(raw, np.float32)
        assert native.dtype == np.float32 and native.dtype.isnative and np.shares_memory(native, raw)
        np.testing.assert_array_equal(native, values)
        big = fits_order(native)
        assert big.dtype.byteorder == ">" and np.shares_memory(big, native)
        np.testing.assert_array_equal(big, values)
    with fits.open(path, memmap=True, mode="update") as hdul:
        mapped = hdul[0].data
        native = _native(mapped, np.float32)
        assert not np.shares_memory(native, mapped)
        np.testing.assert_array_equal(native, values)
    assert path.read_bytes() == before


def test_frozen_card_config_reads_headers_as_astropy_does(tmp_path, monkeypatch):
    """freeze_card_config gives astropy.io.fits.card plain copies of the two settings it reads: headers
    with values and comments that have trailing blanks and a record-valued keyword card (the settings'
    cases) read back the same, card for card, as with astropy's ConfigItems; and a header that strips
    nothing would tell the two apart (the values are the ones in force, not defaults of our own)."""
    import astropy.io.fits.card as card
    from astropy.io import fits

    from webbflow.io.fitsconf import freeze_card_config

    header = fits.Header()
    header["STRVAL"] = ("padded   ", "a comment   ")
    header.append(fits.Card.fromstring("DP1     = 'AXIS.1: 1'"))
    header["NUMBER"] = 1.5
    path = tmp_path / "h.fits"
    fits.PrimaryHDU(header=header).writeto(path)

    def cards():
        with fits.open(path) as hdul:
            return [(c.keyword, c.value, c.comment) for c in hdul[0].header.cards]

    before = cards()
    monkeypatch.setattr(card, "conf", card.conf)  # restored after the test
    freeze_card_config()
    assert card.conf is not fits.conf
    assert card.conf.strip_header_whitespace == fits.conf.strip_header_whitespace
    assert card.conf.enable_record_valued_keyword_cards == fits.conf.enable_record_valued_keyword_cards
    assert cards() == before
    assert ("DP1.AXIS.1", 1.0, "") in before  # the record-valued card was parsed as one
    assert ("STRVAL", "padded", "a comment") in before  # trailing blanks stripped, as configured


def test_unvalidated_models_skip_only_the_per_value_check(tmp_path, monkeypatch):
    """webbflow.io.unvalidated: assignments inside the context are not validated (an invalid value is
    kept, where validation warns and drops it) and the model's setting comes back; a new model
    does not validate; drop_unset prunes exactly the None leaves and the branches they empty; and
    save_model writes the same bytes with or without asdf's validation of the tree."""
    from stdatamodels.jwst import datamodels

    from webbflow.io import unvalidated
    from webbflow.io.image3 import save_model

    model = datamodels.CubeModel((2, 3, 4))
    with unvalidated.assignments(model):
        model.meta.exposure.nints = "two"
    assert model.meta.exposure.nints == "two" and model._validate_on_assignment is True
    with pytest.warns(Warning):
        model.meta.exposure.ngroups = "three"
    assert model.meta.exposure.ngroups is None
    assert unvalidated.new_model(datamodels.ImageModel)._validate_on_assignment is False

    tree = {"a": None, "b": {"c": None, "d": [{"e": None}, {"f": None}]}, "g": 1, "h": [1, None], "i": [{"j": 2}]}
    assert unvalidated.drop_unset(tree) is True
    assert tree == {"g": 1, "h": [1, None], "i": [{"j": 2}]}
    assert unvalidated.drop_unset(tree) is False

    written = []
    monkeypatch.setattr(datamodels.CubeModel, "on_save", lambda self, path: None)  # no write time
    for validate in (True, False):
        cube = unvalidated.new_model(datamodels.CubeModel)
        cube.data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        cube.meta.exposure.type = "NRC_CORON"
        cube.meta.date = "2026-01-01T00:00:00.000"
        (tmp_path / str(validate)).mkdir()
        path = save_model(cube, tmp_path / str(validate) / "a_psfstack.fits", validate_asdf=validate)
        with fits.open(path) as hdul:
            cards = [[c for c in h.header.cards if c.keyword not in ("CHECKSUM", "DATASUM")] for h in hdul]
            written.append((str(cards), hdul["SCI"].data.tobytes(), bytes(hdul["ASDF"].data[0][0])))
    (cards, sci, tree), (cards_u, sci_u, tree_u) = written
    assert cards == cards_u and sci == sci_u and "'EXP_TYPE', 'NRC_CORON'" in cards
    # the same YAML lines; asdf's validation also applies the core schema's propertyOrder (asdf_library
    # and history first), so only their order differs
    assert sorted(tree.splitlines()) == sorted(tree_u.splitlines()) and b"_fits_hash" in tree


def test_consumed_arrays_are_written_as_the_same_file(uncal_file, tmp_path, make):
    # consume=True (detector1's own result arrays) byte-swaps the float32 arrays in place instead of
    # letting astropy swap them four times: the same HDUs, values, DATASUMs and valid checksums
    _, _, headers = read_uncal(uncal_file)
    for writer, shape in ((write_rate, (16, 16)), (write_rateints, (2, 16, 16))):
        given = _image_arrays(shape, seed=4)
        kept = SimpleNamespace(**{k: v.copy() for k, v in vars(given).items()})
        writer(tmp_path / "plain.fits", _image_arrays(shape, seed=4), headers)
        writer(tmp_path / "consumed.fits", given, headers, consume=True)
        make.assert_fits_checksums([tmp_path / "plain.fits", tmp_path / "consumed.fits"])
        with fits.open(tmp_path / "plain.fits") as plain, fits.open(tmp_path / "consumed.fits") as consumed:
            assert [h.name for h in plain] == [h.name for h in consumed]
            for a, b in zip(plain, consumed):
                if a.data is not None and a.name != "ASDF":
                    assert a.data.tobytes() == b.data.tobytes(), a.name
                assert a.header.get("DATASUM") == b.header.get("DATASUM"), a.name
                assert a.header.get("BITPIX") == b.header.get("BITPIX"), a.name
            np.testing.assert_array_equal(consumed["SCI"].data, kept.data)
        # the float32 arrays were given up (swapped in place); the DQ is astropy's to convert, untouched
        assert not np.array_equal(given.data, kept.data)
        np.testing.assert_array_equal(given.dq, kept.dq)
