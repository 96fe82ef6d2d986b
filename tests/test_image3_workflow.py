"""image3 on the simulated demo program: the workflow's products, and astrometry/photometry against the sky truth.

Runs the whole demo (uncal -> rate -> cal -> image3) once, so it is marked ``workflow`` and ``slow``.
"""

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from _snakemake import run_snakemake
from astropy.coordinates import SkyCoord
from astropy.table import Table
from scipy import ndimage
from stdatamodels.jwst import datamodels

from webbflow.associations import read_asn
from webbflow.io.image3 import read_cal
from webbflow.report.truth import (
    edge_mask,
    exposure_residuals,
    mark_isolated,
    match_stars,
    truth_residuals,
)
from webbflow.simulate import optics
from webbflow.simulate.exposure import GAIA_CATALOG
from webbflow.stages import image3

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
# Issue 17: bright stars within 5 mas rms of the truth (absolute) and within 5 mas rms of each other
# (scatter about the mean offset) in every filter, SW and LW.
FILTERS = ("f150w", "f200w", "f356w", "f444w")
LIMIT_MAS = 5.0
DEMO_TWEAK = {"minobj": 4, "searchrad": 0.5, "separation": 0.5, "tolerance": 0.2}


_snakemake = partial(run_snakemake, timeout=900)


@pytest.fixture(scope="module")
def demo(demo_workdir):
    workdir = demo_workdir  # the session's demo run (conftest)
    # Isolated stars: no other source (star or galaxy) within 0.4" (about 3 LW FWHM) to blend with.
    truth = mark_isolated(Table.read(workdir / "demo" / "truth" / "sources.ecsv"), radius=0.4)
    stars = truth[truth["type"] == "star"]
    return workdir, stars


def _product(workdir, filt, suffix):
    ext = "ecsv" if suffix == "cat" else "fits"
    return workdir / "results" / "image3" / f"jw01234-o001_t001_nircam_clear-{filt}_{suffix}.{ext}"


def test_demo_image3_products(demo):
    workdir, _ = demo
    for filt in FILTERS:
        with datamodels.open(_product(workdir, filt, "i2d")) as i2d:
            assert isinstance(i2d, datamodels.ImageModel) and i2d.meta.bunit_data == "MJy/sr"
            assert i2d.meta.instrument.filter == filt.upper() and i2d.meta.cal_step.resample == "COMPLETE"
            assert i2d.meta.cal_step.tweakreg == "COMPLETE"  # the demo's settings tie its small fields
        assert len(Table.read(_product(workdir, filt, "cat"))) >= 5
        asn = read_asn(workdir / "results" / "asn" / f"jw01234-o001_t001_nircam_clear-{filt}_asn.json")
        assert len(asn["members"]) == 4 and all(Path(m).exists() for m in asn["members"])
        crfs = sorted((workdir / "results" / "image3" / "crf" / f"jw01234-o001_t001_nircam_clear-{filt}").glob("*.fits"))
        assert len(crfs) == 4 and all(p.name.endswith("_o001_crf.fits") for p in crfs)


def test_resample_parameter_reruns_only_image3(demo, tmp_path):
    workdir, _ = demo
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"steps": {"resample": {"pixfrac": 0.8}}}))
    plan = _snakemake(workdir, "--configfile", str(config), "-n").stdout
    rules = {line.split("rule ")[1].rstrip(":") for line in plan.splitlines()
             if line.startswith(("rule ", "localrule ")) and "rule " in line}
    assert rules == {"image3", "qa_mosaics", "qa_truth", "all"}  # the mosaics and their report figures


def _truth_match(cat, wht, stars):
    # Sources whose isophote reaches the mosaic's edge have clipped centroids: leave them out.
    idx, sep, good = match_stars(cat, stars, edge_mask(wht, iterations=8), max_sep=0.3, min_snr=100)
    return idx, sep, good


@pytest.mark.parametrize("filt", FILTERS)
def test_truth_astrometry_and_photometry(demo, filt):
    """The default run's mosaics (aligned to the demo's Gaia-like catalog, as MAST's are to Gaia) put
    bright stars on their true positions; relative alignment alone leaves the reference exposure's
    pointing error (57-65 mas before issue 17)."""
    workdir, stars = demo
    assert (workdir / "demo" / GAIA_CATALOG).exists()
    cat = Table.read(_product(workdir, filt, "cat"))
    with datamodels.open(_product(workdir, filt, "i2d")) as i2d:
        wht = np.array(i2d.wht)
    idx, sep, good = _truth_match(cat, wht, stars)
    assert good.sum() >= 5
    rms = 1000 * np.sqrt(np.mean(sep[good] ** 2))
    assert rms <= LIMIT_MAS, f"{filt}: {rms:.1f} mas"
    truth = Table.read(workdir / "demo" / "truth" / "sources.ecsv")
    scatter = truth_residuals(cat, truth, wht, filt)["scatter_mas"]
    assert scatter <= LIMIT_MAS, f"{filt}: relative scatter {scatter:.1f} mas"

    # Each exposure's aligned WCS at its stars' true pixels (no centroiding noise): 0.5-1.5 mas at
    # most on the demo with one position per star in the absolute fit (abs_merge_sources); 3.6-4.2 mas
    # in F444W with jwst's concatenated catalogs, whose duplicates the matcher picks from.
    crfs = sorted((workdir / "results" / "image3" / "crf" / _product(workdir, filt, "i2d").name[:-9]).glob("*.fits"))
    offsets = [np.hypot(*e["offset_mas"]) for e in exposure_residuals(crfs, workdir / "demo" / "truth" / "sources.ecsv")]
    assert len(offsets) == 4 and max(offsets) <= 2.5, f"{filt}: exposures off by {np.round(offsets, 1)} mas"

    cals = sorted((workdir / "results" / "image2" / filt).glob("*_cal.fits"))
    relative = image3.run_models([read_cal(p) for p in cals], {"tweakreg": DEMO_TWEAK})
    _, sep_rel, good_rel = _truth_match(relative["catalog"].catalog, relative["resampled"].wht, stars)
    rms_rel = 1000 * np.sqrt(np.mean(sep_rel[good_rel] ** 2))
    assert rms_rel > 30 and rms_rel > 3 * rms, f"{filt}: relative {rms_rel:.1f} mas, absolute {rms:.1f} mas"
    # relative alignment alone (abs_refcat null) ties the exposures as tightly: only the mean is off
    scatter_rel = truth_residuals(relative["catalog"].catalog, truth, relative["resampled"].wht, filt)["scatter_mas"]
    assert scatter_rel <= LIMIT_MAS, f"{filt}: relative-only scatter {scatter_rel:.1f} mas"

    isolated = good & (cat["nn_dist"].value > 10)
    true_flux = np.asarray(stars[f"flux_{filt}"])[idx[isolated]]
    ratio = cat["aper_total_flux"].value[isolated] / true_flux
    # 1 % (issue 17): 1.0000 / 1.0015 / 1.0020 / 1.0027 on 2026-12-06.  Before the simulated flats
    # flagged the reference pixels, their ~0 MJy/sr drew dark bands at every exposure's edge that
    # outlier detection flagged with the cores of the stars they crossed (F200W 0.987).
    assert abs(np.median(ratio) - 1) < 0.01, f"{filt}: median flux ratio {np.median(ratio):.4f}"
    # Vega magnitudes from the simulator's ABVEGAOFFSET reference (jwst's format), against the truth's.
    offset = optics.abvega_offset(filt.upper())
    assert cat.meta["abvega_offset"] == pytest.approx(offset)
    true_vega = -2.5 * np.log10(true_flux / 3631.0) - offset
    dmag = np.asarray(cat["aper_total_vegamag"])[isolated] - true_vega
    assert abs(np.median(dmag)) < 0.011, f"{filt}: median Vega magnitude offset {np.median(dmag):.4f}"


@pytest.mark.parametrize("filt", list(FILTERS))
def test_bright_stars_away_from_edges_have_finite_totals(demo, filt):
    """Every bright isolated star inside the mosaic's footprint (not within 8 pixels of its outer
    edge) has a finite aperture-total flux.  Those whose aperture holds pixels no exposure measured
    (the core of the demo's saturating star, DO_NOT_USE in every exposure: NaN in jwst) are
    clipped (the imaging preset's recommended ``clip_apertures``) and flagged by aper_coverage < 1."""
    workdir, stars = demo
    cat = Table.read(_product(workdir, filt, "cat"))
    with datamodels.open(_product(workdir, filt, "i2d")) as i2d:
        wht = np.array(i2d.wht)
    footprint = ndimage.binary_fill_holes(wht > 0)
    outer_edge = ndimage.binary_dilation(~footprint, iterations=8, border_value=1)
    idx, sep, _ = cat["sky_centroid"].match_to_catalog_sky(SkyCoord(stars["ra"], stars["dec"], unit="deg"))
    x = np.rint(np.asarray(cat["xcentroid"])).astype(int)
    y = np.rint(np.asarray(cat["ycentroid"])).astype(int)
    inside = ~outer_edge[np.clip(y, 0, wht.shape[0] - 1), np.clip(x, 0, wht.shape[1] - 1)]
    snr = np.asarray(cat["isophotal_flux"]) / np.asarray(cat["isophotal_flux_err"])
    bright = (sep.arcsec < 0.3) & inside & (snr > 100) & np.asarray(stars["isolated"])[idx]
    assert bright.sum() >= 15
    total = np.asarray(cat["aper_total_flux"], float)
    assert np.isfinite(total[bright]).all(), f"{filt}: NaN totals at {np.c_[x, y][bright & ~np.isfinite(total)]}"
    # pixels no exposure measured inside the footprint, within the largest aperture (+1 px) of a centroid
    radius = cat.meta["aperture_radii_pix"][-1]
    to_hole = ndimage.distance_transform_edt(~((wht == 0) & footprint))
    near_hole = to_hole[np.clip(y, 0, wht.shape[0] - 1), np.clip(x, 0, wht.shape[1] - 1)] <= radius + 1
    clipped = np.asarray(cat["aper_coverage"]) < 1
    assert not clipped[bright & ~near_hole].any()  # a full aperture is not flagged
    assert (bright & clipped).sum() <= 1, f"{filt}: {(bright & clipped).sum()} bright stars over unmeasured pixels"


@pytest.mark.parametrize("filt", FILTERS)
def test_apcorr_reference_on_the_demo_mosaics(demo, filt):
    """jwst's way (step_defaults jwst): aperture radii and correction from the simulator's APCORR reference
    instead of measured on the mosaic.  Its radii follow the mosaic's measured curve of growth within 2.5 %
    and its totals the truth within 1.5 % (demo: 0.996 / 0.999 / 1.001 / 1.011 on 2026-12-06; F444W's
    dithers drizzle its stars less broadly than the reference's average over sub-pixel phases, which is
    why the recommended line measures them: 1.000-1.003)."""
    from astropy.io import fits

    from webbflow.simulate.stage2_refs import APCORR_NAME
    from webbflow.steps import source_catalog as catalog_step

    workdir, stars = demo
    apcorr = catalog_step.read_apcorr(workdir / "demo" / "refs" / APCORR_NAME, filt.upper(), "CLEAR")
    measured = Table.read(_product(workdir, filt, "cat")).meta
    reference_radii = [float(apcorr["radius"][np.isclose(apcorr["eefraction"], ee / 100)][0])
                       for ee in measured["aperture_ee"]]
    np.testing.assert_allclose(reference_radii, measured["aperture_radii_pix"], rtol=0.025)

    i2d_path = _product(workdir, filt, "i2d")
    with datamodels.open(i2d_path) as i2d:
        data, err, wht, wcs = np.array(i2d.data), np.array(i2d.err), np.array(i2d.wht), i2d.meta.wcs
    pixar = float(fits.getheader(i2d_path, "SCI")["PIXAR_SR"])
    cat = catalog_step.source_catalog(data, err, wcs, pixar, mask=wht == 0, apcorr_table=apcorr,
                                      clip_apertures=True).catalog
    idx, _, good = _truth_match(cat, wht, stars)
    isolated = good & (cat["nn_dist"].value > 10)
    assert isolated.sum() >= 5
    ratio = cat["aper_total_flux"].value[isolated] / np.asarray(stars[f"flux_{filt}"])[idx[isolated]]
    assert abs(np.median(ratio) - 1) < 0.015, f"{filt}: median flux ratio {np.median(ratio):.4f} with the APCORR"
