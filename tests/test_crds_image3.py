"""image3's catalog references through CRDS (issue 17 part 4): APCORR and ABVEGAOFFSET chosen by the
crds client from the local CRDS stand-in, locked by the prefetch with each exposure's other references,
read by source_catalog and named in the catalog; a cache with no APCORR for the exposures is one
clear error before anything runs.

Two simulated NRCA1 F150W dithers, their references in a local cache built by webbflow (no refs/
folder the demo's by-path choice could take), reduced to the i2d and catalog under ``step_defaults:
jwst`` (jwst's own choice: CRDS's APCORR and ABVEGAOFFSET).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _snakemake import run_snakemake
from astropy.table import Table

# simulation, detector1, image2 and image3 of two exposures: about a minute on two loaded cores
pytestmark = [pytest.mark.workflow, pytest.mark.slow, pytest.mark.usefixtures("crds_env")]

CONTEXT = "jwst_9000.pmap"
APCORR = "webbflow_nircam_apcorr.fits"
ABVEGA = "webbflow_nircam_abvegaoffset.asdf"


@pytest.fixture(scope="module")
def site(tmp_path_factory, make):
    """Two exposures, a CRDS cache of their references, and one whose APCORR is for grism exposures."""
    from webbflow.refs.crds_cache import build_cache
    from webbflow.simulate.stage2_refs import retarget_exp_type

    root = tmp_path_factory.mktemp("crds_image3")
    sim = root / "sim"
    specs = [spec for spec, _ in make.simulate_dithers(sim, cache=root / "cache", context=CONTEXT)]
    grism_only = root / "refs_grism_apcorr"
    shutil.copytree(sim / "refs", grism_only)
    retarget_exp_type(grism_only / APCORR, "NRC_WFSS", "NRC_WFSS|")
    build_cache(grism_only, root / "cache_no_apcorr", context=CONTEXT)
    shutil.rmtree(sim / "refs")  # every reference must come through crds
    return {"root": root, "uncal": sim / "uncal", "roots": [s.rootname for s in specs]}


def write_config(site, cache, name):
    path = site["root"] / f"{name}.yaml"
    path.write_text(f"inputs:\n  uncal_dir: {site['uncal']}\nresults_dir: {name}\nstep_defaults: jwst\n"
                    f"crds:\n  cache: {cache}\n  context: {CONTEXT}\n")
    return path


@pytest.fixture(scope="module")
def reduced(site):
    workdir = site["root"] / "work"
    workdir.mkdir()
    config = write_config(site, site["root"] / "cache", "reduced")
    run_snakemake(workdir, "--configfile", str(config), "--cores", "2", timeout=900)
    return workdir / "reduced"


def test_catalog_reads_and_names_the_references_crds_chose(site, reduced):
    from stdatamodels.jwst import datamodels

    from webbflow.refs import crds_select
    from webbflow.simulate import optics
    from webbflow.steps.source_catalog import read_apcorr

    lock = json.loads((reduced / "crds.lock.json").read_text())
    assert sorted(lock["exposures"]) == sorted(site["roots"])
    for root in site["roots"]:  # prefetched and locked with the exposure's other types
        refs = lock["exposures"][root]["references"]
        assert (refs["apcorr"]["file"], refs["abvegaoffset"]["file"]) == (APCORR, ABVEGA)
    (cat_path,) = (reduced / "image3").glob("*_cat.ecsv")
    (i2d_path,) = (reduced / "image3").glob("*_i2d.fits")
    cat = Table.read(cat_path)
    assert (cat.meta["R_APCORR"], cat.meta["R_ABVEGA"]) == (f"crds://{APCORR}", f"crds://{ABVEGA}")
    assert cat.meta["CRDS_CTX"] == CONTEXT and cat.meta["CRDS_VER"] == lock["crds_version"]

    # what jwst's source_catalog would ask crds with: the i2d's own parameters select the same files
    setup = crds_select.CrdsSetup(site["root"] / "cache", CONTEXT, readonly=True)
    crds_select.configure(setup)
    with datamodels.open(i2d_path) as i2d:
        params = i2d.get_crds_parameters()
        assert (i2d.meta.instrument.filter, i2d.meta.exposure.type) == ("F150W", "NRC_IMAGE")
    assert crds_select.best_references(params, ["apcorr", "abvegaoffset"], setup, CONTEXT) \
        == {"apcorr": APCORR, "abvegaoffset": ABVEGA}

    # their values are the ones used: the reference's 30/50/70 % radii and 70 % correction, and the
    # filter's AB-Vega offset
    table = read_apcorr(Path(setup.cache) / "references" / "jwst" / "nircam" / APCORR, "F150W", "CLEAR")
    rows = [table[np.isclose(table["eefraction"], ee / 100)][0] for ee in (30, 50, 70)]
    np.testing.assert_allclose(cat.meta["aperture_radii_pix"], [r["radius"] for r in rows], rtol=1e-6)
    assert cat.meta["aperture_correction"] == pytest.approx(float(rows[-1]["apcorr"]))
    assert cat.meta["abvega_offset"] == pytest.approx(optics.abvega_offset("F150W"))
    good = np.isfinite(cat["aper_total_abmag"])
    assert good.sum() >= 5
    np.testing.assert_allclose(cat["aper_total_abmag"][good] - cat["aper_total_vegamag"][good],
                               optics.abvega_offset("F150W"), atol=1e-6)


def test_no_apcorr_for_the_exposures_is_one_clear_error(site, tmp_path):
    """A cache whose APCORR rules match grism exposures only: no exposure can be reduced, so planning
    stops before any job with the first exposure's line, naming the type, the context and the ways
    out (and no overrides.apcorr, which the config would refuse)."""
    config = write_config(site, site["root"] / "cache_no_apcorr", "no_apcorr")
    proc = run_snakemake(tmp_path, "--configfile", str(config), "-n", check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    lines = {line.strip() for line in text.splitlines() if "no apcorr reference" in line}
    assert len(lines) == 1, text[-3000:]
    (line,) = lines
    assert f"{site['roots'][0]}_uncal.fits: no apcorr reference in CRDS context {CONTEXT}" in line
    assert "cache_no_apcorr" in line and "crds.context" in line and "overrides.apcorr" not in line
    assert not (tmp_path / "no_apcorr").exists()  # nothing planned, nothing written
