"""CRDS chooses the grism time-series references (issue 13): per mode, locked, as folder mode does.

Each exposure asks crds for the reference types of its own mode's stages
(:func:`webbflow.config.stage_reftypes`): a grism segment for detector1's, spec2's and tso3's, an
imaging exposure for detector1's and image2's only (its cache has no SPECWCS).  One simulated
segment (4 integrations) is reduced twice through detector1, spec2 and tso3: with
``references.dir: null`` (crds, the simulator's local cache) and with ``references.dir`` (folder
mode); the lockfile names exactly the folder's choice for every type, and the products are the same.
"""

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from _snakemake import run_snakemake
from astropy.io import fits
from astropy.table import Table

from webbflow.config import STAGES, load_modes, stage_reftypes
from webbflow.refs.select import DETECTOR1_REFTYPES, IMAGE2_REFTYPES, SPEC2_REFTYPES, select_references


REPO = Path(__file__).resolve().parents[1]
PRODUCT = "jw01366-o002_t001_nircam_f322w2-grismr-subgrism64"
ROOT = "jw01366002001_03101_00001-seg001_nrcalong"
GRISM_ONLY = set(SPEC2_REFTYPES) - set(IMAGE2_REFTYPES)  # specwcs, wavelengthrange, extract1d


# crds is configured through os.environ: every test gets the process's CRDS_* variables back
# afterwards (conftest's crds_env)
pytestmark = [pytest.mark.workflow, pytest.mark.usefixtures("crds_env")]


def test_each_mode_asks_for_the_types_of_its_stages():
    presets = load_modes(REPO / "config" / "modes", REPO / "config" / "schema.yaml")
    imaging = stage_reftypes(presets["imaging"]["stages"])
    grism = stage_reftypes(presets["tso_grism"]["stages"])
    # imaging: stage 1's and image2's types, then image3's catalog references (jwst's source_catalog)
    assert imaging == DETECTOR1_REFTYPES + IMAGE2_REFTYPES + ("apcorr", "abvegaoffset")
    assert not GRISM_ONLY & set(imaging)
    assert set(grism) == set(DETECTOR1_REFTYPES) | set(SPEC2_REFTYPES) and len(grism) == len(set(grism))
    assert "area" not in grism  # image2's, not spec2's
    # every stage a preset may name has its entry (a new stage without one would ask for nothing)
    assert all(isinstance(stage.reftypes, tuple) for stage in STAGES.values())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One 4-integration segment of the demo's geometry, its references and the local CRDS cache."""
    from webbflow.refs.crds_cache import build_cache
    from webbflow.simulate.presets import run_specs, tso_grism_specs

    root = tmp_path_factory.mktemp("crds_tso")
    (uncal,) = run_specs(tso_grism_specs(n_segments=1, ints_per_segment=4), root / "sim")
    build_cache(root / "sim" / "refs", root / "sim" / "crds_cache", context="jwst_9000.pmap")
    return {"root": root, "uncal": uncal, "refs": root / "sim" / "refs", "cache": root / "sim" / "crds_cache"}


snakemake = partial(run_snakemake, timeout=900, check=False)


def write_config(path, results, **extra):
    config = {"modes": ["tso_grism"], "inputs": {"uncal_dir": "sim/uncal"}, "results_dir": results, **extra}
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


TARGETS = [f"spec2/f322w2/{ROOT}_calints.fits", f"spec2/f322w2/{ROOT}_x1dints.fits",
           f"tso3/{PRODUCT}_x1dints.fits", f"tso3/{PRODUCT}_whtlt.ecsv"]


@pytest.fixture(scope="module")
def runs(site):
    """The segment through detector1, spec2 and tso3 twice: references through crds, and from the folder."""
    root = site["root"]
    for results, extra in (("results-crds", {"crds": {"cache": "sim/crds_cache"}}),
                           ("results-folder", {"references": {"dir": "sim/refs"}})):
        config = write_config(root / f"{results}.yaml", results, **extra)
        proc = snakemake(root, "--configfile", str(config), "--cores", "2", *(f"{results}/{t}" for t in TARGETS))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"crds": root / "results-crds", "folder": root / "results-folder"}


@pytest.mark.slow
def test_crds_locks_exactly_the_files_folder_mode_chooses(site, runs):
    lock = json.loads((runs["crds"] / "crds.lock.json").read_text())
    assert lock["context"] == "jwst_9000.pmap" and list(lock["exposures"]) == [ROOT]
    locked = {t: (v or {}).get("file") for t, v in lock["exposures"][ROOT]["references"].items()}
    tso_types = stage_reftypes(["detector1", "spec2", "tso3"])
    assert set(locked) == set(tso_types)  # the grism types are chosen, area (image2's) is not asked for
    folder = select_references(fits.getheader(site["uncal"]), site["refs"], {}, tso_types)
    assert all(folder.values()), folder
    assert locked == {t: Path(p).name for t, p in folder.items()}
    assert not (runs["folder"] / "crds.lock.json").exists()
    # every stage's products name the same files, as jwst records CRDS files (crds://<file>, the
    # context) in CRDS mode, by name in folder mode (each job checked its files against the lock)
    for product, keys in ((f"detector1/f322w2/{ROOT}_rateints.fits", ("R_DARK", "R_GAIN", "R_MASK")),
                          (f"spec2/f322w2/{ROOT}_calints.fits", ("R_SPCWCS", "R_FLAT", "R_WAVRAN", "R_DISTOR")),
                          (f"spec2/f322w2/{ROOT}_x1dints.fits", ("R_SPCWCS", "R_EXTR1D")),
                          (f"tso3/{PRODUCT}_x1dints.fits", ("R_EXTR1D",))):
        crds_header, folder_header = (fits.getheader(runs[m] / product) for m in ("crds", "folder"))
        assert crds_header["CRDS_CTX"] == "jwst_9000.pmap" and "CRDS_CTX" not in folder_header, product
        for key in keys:
            name = folder_header[key]
            assert name in locked.values() and crds_header[key] == f"crds://{name}", (product, key)


@pytest.mark.slow
def test_tso_products_carry_checksums(runs, make):
    """rateints, calints and both x1dints (spec2's and tso3's) of both runs: DATASUM/CHECKSUM that verify."""
    products = sorted(p for m in ("crds", "folder") for p in runs[m].rglob("*.fits"))
    assert {p.name.rsplit("_", 1)[-1] for p in products} >= {"rate.fits", "rateints.fits", "calints.fits",
                                                              "x1dints.fits"}
    make.assert_fits_checksums(products)


def _hdus(path):
    """Data of every extension but ASDF (the metadata tree, which holds the provenance: crds:// names)."""
    with fits.open(path) as hdul:
        return {(h.name, h.ver): (h.data.copy() if h.data is not None else None) for h in hdul if h.name != "ASDF"}


def _provenance_column(name):
    """HDRTAB columns that record the run itself: its date, the context and the reference names
    (crds://<file> in CRDS mode, the plain name in folder mode), which differ on purpose."""
    return name == "DATE" or name.startswith(("R_", "CRDS_"))


@pytest.mark.slow
def test_spec2_and_tso3_products_are_the_same_in_both_modes(runs):
    for product in TARGETS[:3]:
        crds, folder = _hdus(runs["crds"] / product), _hdus(runs["folder"] / product)
        assert crds.keys() == folder.keys() and len(crds) >= 3, product
        for key, data in crds.items():
            if data is None:
                continue
            other = folder[key]
            if data.dtype.names:  # a table: every column, NaN where NaN
                names = [n for n in data.dtype.names if key[0] != "HDRTAB" or not _provenance_column(n)]
                assert [n for n in other.dtype.names if n in names] == names, (product, key)
                for name in names:
                    assert data.dtype[name] == other.dtype[name], (product, key, name)
                    np.testing.assert_array_equal(data[name], other[name], err_msg=f"{product} {key} {name}")
            else:
                np.testing.assert_array_equal(data, other, err_msg=f"{product} {key}")
    curves = [Table.read(runs[m] / TARGETS[3]) for m in ("crds", "folder")]
    assert len(curves[0]) == 4 and np.isfinite(curves[0]["whitelight_flux"]).all()
    np.testing.assert_array_equal(curves[0]["whitelight_flux"], curves[1]["whitelight_flux"])


def test_segment_without_a_matching_specwcs_is_one_error(site, tmp_path):
    """The cache holds a SPECWCS for F444W only: planning stops naming the segment, the type and the fixes."""
    from webbflow.refs.crds_cache import build_cache
    from webbflow.simulate import grism, optics

    refs = tmp_path / "refs"
    refs.mkdir()
    for path in site["refs"].iterdir():
        if "specwcs" not in path.name:
            shutil.copy(path, refs)
    other = grism.write_grism_references(tmp_path / "f444w", "NRCALONG", "F444W", optics.pixar_sr("NRCALONG"),
                                         optics.pixar_a2("NRCALONG"))
    shutil.copy(other["specwcs"], refs)
    build_cache(refs, tmp_path / "cache", context="jwst_9000.pmap")
    (tmp_path / "sim").symlink_to(site["root"] / "sim")
    config = write_config(tmp_path / "c.yaml", "results", crds={"cache": str(tmp_path / "cache")})
    proc = snakemake(tmp_path, "--configfile", str(config), "--cores", "1", "-n", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    lines = [line for line in out.splitlines() if "no specwcs reference in CRDS context" in line]
    assert len(lines) == 1, out[-3000:]
    message = lines[0]
    assert f"sim/uncal/{ROOT}_uncal.fits" in message  # the segment
    assert "'F322W2' is not in ['F444W']" in message  # crds's own reason
    for fix in ("webbflow crds build", "overrides.specwcs", "crds.context", "references.dir"):
        assert fix in message, fix
    assert not (tmp_path / "results").exists()
