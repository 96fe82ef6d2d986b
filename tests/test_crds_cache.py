"""The local CRDS cache, selection through the crds client, the lockfile and its export.

Every selection here goes through ``crds.getrecommendations``/``crds.getreferences`` in
serverless local mode on mappings we write; nothing reaches for a network.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from webbflow.io.errors import ReferenceFileError
from webbflow.refs import crds_select
from webbflow.refs.crds_cache import build_cache, scan_references
from webbflow.refs.lockfile import export_cache, read_lockfile, verify_reference
from webbflow.refs.prefetch import prefetch, select_exposure

TYPES = ["mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise"]


# crds is configured through os.environ: every test gets the process's CRDS_* variables back
# afterwards (conftest's crds_env)
pytestmark = pytest.mark.usefixtures("crds_env")


@pytest.fixture
def refs(tmp_path, make):
    """Full-frame-style reference sets for NRCA1 and NRCALONG (32x32), one SUB64P gain for NRCA1."""
    folder = tmp_path / "refs"
    make.reference_set(folder, "NRCA1", subarray="FULL")
    make.reference_set(folder, "NRCALONG", subarray="FULL")
    make.reference(folder / "gain_nrca1_sub64p.fits", "gain", {"SCI": np.full((16, 16), 3.0, np.float32)},
                   detector="NRCA1", subarray="SUB64P")
    return folder


@pytest.fixture
def uncals(tmp_path, make):
    out = {}
    for det in ("NRCA1", "NRCALONG"):
        root = f"jw01234001001_02101_00001_{det.lower()}"
        out[root] = make.uncal(tmp_path / f"{root}_uncal.fits", make.ramp(), DETECTOR=det,
                               SUBARRAY="SUB64P" if det == "NRCA1" else "FULL")
    return out


def _names(uncal, setup, context, reftypes=TYPES):
    params = crds_select.crds_parameters(fits.getheader(uncal))
    return crds_select.best_references(params, reftypes, setup, context)


def test_cache_selects_by_header_keywords(tmp_path, refs, uncals):
    cache = tmp_path / "cache"
    assert build_cache(refs, cache) == "jwst_9000.pmap"
    setup = crds_select.CrdsSetup(cache, "latest")
    context = crds_select.resolve_context(setup)
    assert context == "jwst_9000.pmap"
    a1 = _names(uncals["jw01234001001_02101_00001_nrca1"], setup, context, TYPES + ["flat", "photom"])
    # the exact SUB64P gain outranks the FULL one, which CRDS sees as N/A (zero weight) on SUBARRAY
    assert a1["gain"] == "gain_nrca1_sub64p.fits"
    assert a1["dark"] == "webbflow_nrca1_dark_full.fits"
    assert a1["flat"] is None and a1["photom"] is None  # N/A in the imap: the step would be skipped
    along = _names(uncals["jw01234001001_02101_00001_nrcalong"], setup, context)
    assert along == {t: f"webbflow_nrcalong_{t}_full.fits" for t in TYPES}
    rmap = (cache / "mappings" / "jwst" / "jwst_nircam_dark_9000.rmap").read_text()
    assert "'META.EXPOSURE.NOUTPUTS'" in rmap and "'META.INSTRUMENT.DETECTOR'" in rmap
    # checksums written by crds's own Mapping.write: loading with checking on succeeds
    from crds.core import rmap as crds_rmap

    loaded = crds_rmap.load_mapping(str(cache / "mappings" / "jwst" / "jwst_9000.pmap"))
    assert "jwst_nircam_gain_9000.rmap" in loaded.mapping_names()


def test_scan_uses_the_selectors_of_each_type(refs, make, tmp_path):
    flat = make.reference(tmp_path / "flat.fits", "flat", {"SCI": np.ones((4, 4), np.float32)},
                          FILTER="F200W", PUPIL="CLEAR")
    rows = {r["name"]: r for r in scan_references(list(refs.glob("*.fits")) + [flat])}
    assert rows["flat.fits"]["keys"] == ("DETECTOR", "FILTER", "PUPIL")
    assert rows["flat.fits"]["match"] == ("NRCA1", "F200W", "CLEAR")
    assert rows["webbflow_nrca1_dark_full.fits"]["match"] == ("NRCA1", "N/A", "N/A", "N/A")
    assert rows["webbflow_nrca1_dark_full.fits"]["useafter"] == "2022-01-01 00:00:00"


def test_new_context_changes_only_the_new_gain(tmp_path, refs, uncals, make):
    cache = tmp_path / "cache"
    build_cache(refs, cache)
    refs2 = tmp_path / "refs2"
    shutil.copytree(refs, refs2)
    (refs2 / "gain_nrca1_sub64p.fits").unlink()
    make.reference(refs2 / "gain_nrca1_sub64p_v2.fits", "gain", {"SCI": np.full((16, 16), 3.3, np.float32)},
                   detector="NRCA1", subarray="SUB64P")
    assert build_cache(refs2, cache, make_latest=False) == "jwst_9001.pmap"
    setup = crds_select.CrdsSetup(cache, "jwst_9001.pmap")
    assert crds_select.resolve_context(setup) == "jwst_9001.pmap"
    a1 = uncals["jw01234001001_02101_00001_nrca1"]
    new = _names(a1, setup, "jwst_9001.pmap")
    old = _names(a1, setup, "jwst_9000.pmap")
    assert {t for t in TYPES if new[t] != old[t]} == {"gain"}
    assert new["gain"] == "gain_nrca1_sub64p_v2.fits"
    # latest stays 9000: the new context is used only where it is pinned
    assert crds_select.resolve_context(crds_select.CrdsSetup(cache, "latest")) == "jwst_9000.pmap"


def test_cached_files_are_immutable(tmp_path, refs, make):
    cache = tmp_path / "cache"
    build_cache(refs, cache)
    make.reference(refs / "gain_nrca1_sub64p.fits", "gain", {"SCI": np.full((16, 16), 9.0, np.float32)},
                   detector="NRCA1", subarray="SUB64P")
    with pytest.raises(ReferenceFileError, match="already holds a different file named gain_nrca1_sub64p.fits"):
        build_cache(refs, cache)


def test_no_cache_and_missing_reference_errors(tmp_path, refs, uncals):
    with pytest.raises(ReferenceFileError) as err:
        crds_select.configure(crds_select.CrdsSetup(tmp_path / "nothing", "latest"))
    assert "crds.cache" in str(err.value) and "crds.server_url" in str(err.value)
    # a cache without any NRCALONG dark: the message names the type, the context and the ways out
    only_a1 = tmp_path / "only_a1"
    only_a1.mkdir()
    for path in refs.glob("*nrca1*"):
        shutil.copy(path, only_a1)
    cache = tmp_path / "cache"
    build_cache(only_a1, cache)
    setup = crds_select.CrdsSetup(cache, "jwst_9000.pmap")
    crds_select.configure(setup)
    with pytest.raises(ReferenceFileError) as err:
        _names(uncals["jw01234001001_02101_00001_nrcalong"], setup, "jwst_9000.pmap", ["dark"])
    text = str(err.value)
    assert "no dark reference in CRDS context jwst_9000.pmap" in text
    assert "overrides.dark" in text and str(setup.cache) in text and "crds.context" in text
    with pytest.raises(ReferenceFileError, match="context jwst_9005.pmap is not in the CRDS cache"):
        crds_select.resolve_context(crds_select.CrdsSetup(cache, "jwst_9005.pmap"))


def test_image3_catalog_references_are_chosen_and_locked_with_the_exposure(tmp_path, refs, uncals):
    """An imaging exposure's lock holds image3's APCORR and ABVEGAOFFSET (jwst's source_catalog types,
    selected by EXP_TYPE); an APCORR for other EXP_TYPEs only is one error naming the type and the ways
    out, and no override key the config would refuse."""
    from webbflow.config import stage_reftypes
    from webbflow.refs.select import IMAGE3_REFTYPES
    from webbflow.simulate.stage2_refs import (
        retarget_exp_type,
        write_abvegaoffset_reference,
        write_apcorr_reference,
    )

    imaging = stage_reftypes(["detector1", "image2", "image3"])
    assert imaging[-2:] == IMAGE3_REFTYPES == ("apcorr", "abvegaoffset")
    apcorr = write_apcorr_reference(refs / "webbflow_nircam_apcorr.fits", "ANY", "F200W", "CLEAR",
                                    [0.3, 0.5, 0.7], [1.1, 1.9, 3.2], [3.33, 2.0, 1.43], 4.0, 6.0)
    abvega = write_abvegaoffset_reference(refs / "webbflow_nircam_abvegaoffset.asdf", "ANY",
                                          {("F200W", "CLEAR"): 1.79})
    cache = tmp_path / "cache"
    build_cache(refs, cache, context="jwst_9000.pmap")
    setup = crds_select.CrdsSetup(cache, "jwst_9000.pmap")
    crds_select.configure(setup)
    uncal = uncals["jw01234001001_02101_00001_nrca1"]
    assert fits.getheader(uncal)["EXP_TYPE"] == "NRC_IMAGE"
    chosen = select_exposure(uncal, ("gain", *IMAGE3_REFTYPES), setup, "jwst_9000.pmap", fetch=True)
    assert {t: Path(p).name for t, p in chosen.items() if t != "gain"} == {"apcorr": apcorr.name,
                                                                          "abvegaoffset": abvega.name}
    assert all(Path(p).is_file() and Path(p).parent.name == "nircam" for p in chosen.values())
    lock = prefetch({"a1": uncal}, {"a1": ("gain", *IMAGE3_REFTYPES)}, setup, "jwst_9000.pmap",
                    tmp_path / "crds.lock.json")
    assert {t: e["file"] for t, e in lock["exposures"]["a1"]["references"].items() if t != "gain"} \
        == {"apcorr": apcorr.name, "abvegaoffset": abvega.name}

    # the same APCORR for grism exposures only: CRDS has a rule for the type but none for NRC_IMAGE
    wfss = tmp_path / "refs_wfss"
    shutil.copytree(refs, wfss)
    retarget_exp_type(wfss / apcorr.name, "NRC_WFSS", "NRC_WFSS|")
    cache2 = tmp_path / "cache2"
    build_cache(wfss, cache2, context="jwst_9000.pmap")
    setup2 = crds_select.CrdsSetup(cache2, "jwst_9000.pmap")
    crds_select.configure(setup2)
    with pytest.raises(crds_select.MissingReferenceError) as err:
        select_exposure(uncal, IMAGE3_REFTYPES, setup2, "jwst_9000.pmap")
    text = str(err.value)
    assert "no apcorr reference in CRDS context jwst_9000.pmap" in text and uncal.name in text
    assert str(setup2.cache) in text and "crds.context" in text and "overrides." not in text


def test_lockfile_checksums_override_and_export(tmp_path, refs, uncals, make):
    cache = tmp_path / "cache"
    build_cache(refs, cache)
    override = make.reference(tmp_path / "my_readnoise.fits", "readnoise",
                              {"SCI": np.full((16, 16), 4.0, np.float32)}, detector="NRCA1", subarray="SUB64P")
    setup = crds_select.CrdsSetup(cache, "jwst_9000.pmap")
    lock_path = tmp_path / "results" / "crds.lock.json"
    lock = prefetch(uncals, TYPES, setup, "jwst_9000.pmap", lock_path, overrides={"readnoise": str(override)})
    on_disk = json.loads(lock_path.read_text())
    assert on_disk == json.loads(json.dumps(lock))
    a1 = on_disk["exposures"]["jw01234001001_02101_00001_nrca1"]
    assert a1["context"] == "jwst_9000.pmap"
    assert a1["references"]["gain"]["file"] == "gain_nrca1_sub64p.fits"
    gain_bytes = (cache / "references" / "jwst" / "nircam" / "gain_nrca1_sub64p.fits").read_bytes()
    assert a1["references"]["gain"]["sha256"] == hashlib.sha256(gain_bytes).hexdigest()
    assert on_disk["references"]["gain_nrca1_sub64p.fits"]["sha1"] == hashlib.sha1(gain_bytes).hexdigest()
    assert a1["references"]["readnoise"]["file"] == "my_readnoise.fits"
    assert on_disk["references"]["my_readnoise.fits"]["override"] == str(override.resolve())
    assert "jwst_nircam_gain_9000.rmap" in on_disk["mappings"] and len(on_disk["mappings"]) == 9

    # export: exactly the locked files, and crds selects the same names from the copy
    exported = export_cache(lock_path, tmp_path / "airgap", cache)
    files = sorted(p.name for p in (exported / "references" / "jwst" / "nircam").iterdir())
    assert files == sorted(on_disk["references"])
    setup2 = crds_select.CrdsSetup(exported, "latest")
    assert crds_select.resolve_context(setup2) == "jwst_9000.pmap"
    got = select_exposure(uncals["jw01234001001_02101_00001_nrca1"], TYPES, setup2, "jwst_9000.pmap",
                          {"readnoise": str(override)}, fetch=True)
    assert {t: Path(p).name for t, p in got.items()} == {t: v["file"] for t, v in a1["references"].items()}

    # a reference whose bytes changed after locking is refused, by the job and by the export
    cached_gain = cache / "references" / "jwst" / "nircam" / "gain_nrca1_sub64p.fits"
    os.chmod(cached_gain, 0o644)
    make.reference(cached_gain, "gain", {"SCI": np.full((16, 16), 3.5, np.float32)}, detector="NRCA1",
                   subarray="SUB64P")
    with pytest.raises(ReferenceFileError, match="does not match the lockfile"):
        verify_reference(cached_gain, read_lockfile(lock_path))
    with pytest.raises(ReferenceFileError, match="does not match its lockfile checksum"):
        export_cache(lock_path, tmp_path / "airgap2", cache)
