"""image3 against STScI's jwst 3.0 calwebb_image3 (the oracle) on the demo's F200W association.

Four dithered SUB160 NRCA1 exposures of the demo preset are simulated and reduced by our
detector1 + image2 (bit-identical to jwst's, see test_workflow_parity.py / test_image2.py);
both pipelines then run image3 on the same cal files and association JSON.

Two cases:

* ``notweak`` - tweakreg skipped in both: the same input WCSs.  Both build their default
  output grid (we build it as jwst does: S_REGION fiducial, scale at ra_ref/dec_ref, roll_ref),
  so nothing about the grid is passed to jwst; the test asserts the grids are the same.
* ``tweak`` - tweakreg run by both (the demo's small-field settings).  The alignments agree to
  about a milliarcsecond but not exactly (the two source finders' lists and tangent planes
  differ), so the default grids (fiducial of the aligned footprints) may differ by a fraction of
  a pixel: jwst is given our grid through ``resample.crval``/``crpix``/``output_shape`` (not
  ``output_wcs``: with a custom WCS file jwst sets ``pixel_scale_ratio`` from the input's
  nominal PIXAR_SR, which then rescales its ERR and the catalog's aperture radii by ~0.8 %).

"Common pixels" are pixels with WHT > 0 in both i2d.  Fluxes are compared two ways:
per pixel where S/N > 10 (meaningful only when the algorithms and alignment are identical:
a 1 mas shift moves the flux of a star's core by several percent between neighbouring
pixels), and as aperture sums (7x7 pixels, centred on the catalog sources with S/N > 50),
which a sub-pixel shift leaves unchanged.  The issue's criterion (within 0.5 %) is asserted
on every common pixel in ``notweak`` (they are in fact identical) and, in ``tweak``, on the
median aperture sum and on every aperture whose drizzle weights agree (within 10 %, what a 1 mas shift changes at most; one flagged exposure out of four changes it by ~25 %): where
they do not, the two outlier detections flagged different pixels of that source (the blotted
median of a sharp core moves with the ~1 mas alignment difference), an inherent difference.

Catalogs: both source_catalog runs use the same APCORR (written from our curve of growth)
and ABVEGAOFFSET references and ``deblend=True`` (jwst's default); sources are matched on
sky_centroid within 0.1".  Positions of matched sources with S/N > 20 must agree within 5 mas
and the median aperture-total flux ratio within 0.5 %; in ``notweak`` (identical i2d) the
catalogs must be the same to float32 precision (positions < 0.01 mas, fluxes 1e-5, NaN for the
same sources: apertures touching the no-coverage NaNs).  Flux ratios and matched/unmatched
counts are printed (``pytest -s``).
"""


import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from stdatamodels.jwst import datamodels

from webbflow.associations import associations_from_cals, write_asn
from webbflow.config import DETECTOR1_STEPS
from webbflow.io.image3 import read_cal
from webbflow.oracle import run_image3
from webbflow.refs.select import DETECTOR1_REFTYPES, IMAGE2_REFTYPES, select_references
from webbflow.simulate import preset_specs, simulate_exposure
from webbflow.simulate.headers import exposure_timing
from webbflow.simulate.stage2_refs import write_abvegaoffset_reference, write_apcorr_reference
from webbflow.stages import detector1, image2, image3

pytestmark = [pytest.mark.parity, pytest.mark.slow]

FILTER = "F200W"
TWEAK = {"minobj": 4, "searchrad": 0.5, "separation": 0.5, "tolerance": 0.2}  # the demo's small fields
CATALOG = {"deblend": True}
OUTLIER = 16  # DQ OUTLIER bit


def simulate_cal_files(out, preset="demo-imaging", filt=FILTER):
    """Simulate ``preset``'s ``filt`` exposures into ``out`` and reduce them to cal files (ours)."""
    specs = preset_specs(preset)
    need = max(exposure_timing(s)["frames_read"] for s in specs)
    cals = []
    for spec in (s for s in specs if s.filter == filt):
        uncal = simulate_exposure(spec, out, n_dark_frames=need)
        header = fits.getheader(uncal)
        rate = out / f"{spec.rootname}_rate.fits"
        detector1.run(uncal, rate, out / f"{spec.rootname}_rateints.fits",
                      select_references(header, out / "refs", None, DETECTOR1_REFTYPES),
                      {s: {} for s in DETECTOR1_STEPS})
        cal = out / f"{spec.rootname}_cal.fits"
        image2.run(rate, cal, select_references(header, out / "refs", None, IMAGE2_REFTYPES), {})
        cals.append(cal)
    return sorted(cals)


def _ours(cals, params):
    models = [read_cal(p) for p in cals]
    try:
        return image3.run_models(models, params, [p.name for p in cals])
    finally:
        for m in models:
            m.close()


def _grid_settings(wcs):
    """jwst resample parameters that rebuild our TAN grid (0-based crpix, [x, y] shape)."""
    tr = wcs.forward_transform
    crpix = [-float(tr.offset_0.value), -float(tr.offset_1.value)]
    crval = [float(tr.lon_4.value), float(tr.lat_4.value)]
    ny, nx = wcs.array_shape
    return {"resample.crpix": crpix, "resample.crval": crval, "resample.output_shape": [nx, ny]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, oracle):
    out = tmp_path_factory.mktemp("image3_parity")
    cals = simulate_cal_files(out)
    asn = write_asn(associations_from_cals(cals)[0], out / "image3_asn.json")
    # The aperture model both catalogs use: our curve of growth on the untweaked i2d.
    probe = _ours(cals, {"tweakreg": {"skip": True}, "source_catalog": CATALOG})["catalog"].apertures
    apcorr = write_apcorr_reference(out / "apcorr.fits", "NRCA1", FILTER, "CLEAR", probe.eefractions, probe.radii,
                                    [1 / f for f in probe.eefractions[:-1]] + [probe.apcorr], probe.skyin,
                                    probe.skyout)
    abvega = write_abvegaoffset_reference(out / "abvega.asdf", "NRCA1", {(FILTER, "CLEAR"): 1.7})
    catalog = {**CATALOG, "apcorr_file": str(apcorr), "abvegaoffset_file": str(abvega)}
    result = {}
    for case, tweak in (("notweak", {"skip": True}), ("tweak", TWEAK)):
        ours = _ours(cals, {"tweakreg": tweak, "source_catalog": catalog})
        settings = {f"source_catalog.{k}": v for k, v in CATALOG.items()}
        skip = ("tweakreg",) if tweak.get("skip") else ()
        if not skip:
            settings.update({f"tweakreg.{k}": v for k, v in TWEAK.items()})
            settings.update(_grid_settings(ours["resampled"].wcs))
        theirs, wall = run_image3(asn, {"apcorr": apcorr, "abvegaoffset": abvega}, out / f"jwst_{case}", skip=skip,
                                  settings=settings)
        print(f"\n[{case}] jwst image3 {wall:.1f} s")
        result[case] = {"ours": ours, "theirs": theirs, "cals": cals}
    return result


def _i2d(path):
    with datamodels.open(path) as m:
        return m.data.copy(), m.wht.copy(), m.err.copy(), m.meta.wcs, m.meta.resample.pixel_scale_ratio


def test_grids_are_the_same(runs):
    for case, run in runs.items():
        ours = run["ours"]["resampled"]
        data, _, _, wcs, ratio = _i2d(run["theirs"]["i2d"])
        assert data.shape == ours.data.shape, case
        ny, nx = data.shape
        yy, xx = np.mgrid[0:ny - 1:9j, 0:nx - 1:9j]
        sep = SkyCoord(*ours.wcs(xx, yy), unit="deg").separation(SkyCoord(*wcs(xx, yy), unit="deg"))
        print(f"\n[{case}] grid {data.shape}, max corner/inner separation {sep.to_value('uas').max():.3g} uas, "
              f"jwst pixel_scale_ratio {ratio}")
        assert sep.to_value("uas").max() < 1.0 and ratio == 1.0


def test_skymatch_and_outlier_flags_match_without_tweakreg(runs):
    run = runs["notweak"]
    for image, crf in zip(run["ours"]["images"], sorted(run["theirs"]["crf"])):
        with datamodels.open(crf) as m:
            level, dq = m.meta.background.level, m.dq
            ours_out, theirs_out = (image.dq & OUTLIER) > 0, (dq & OUTLIER) > 0
            print(f"\n{image.name}: sky ours {image.sky:.9f} jwst {level:.9f}; outliers ours {ours_out.sum()} "
                  f"jwst {theirs_out.sum()} both {(ours_out & theirs_out).sum()}")
            assert image.sky == pytest.approx(level, abs=1e-9)
            np.testing.assert_array_equal(image.dq, dq, err_msg=image.name)


def test_alignment_agrees_with_jwst_tweakreg(runs):
    run = runs["tweak"]
    worst = 0.0
    for image, cal, crf in zip(run["ours"]["images"], run["cals"], sorted(run["theirs"]["crf"])):
        yy, xx = np.mgrid[0:159:5j, 0:159:5j]
        with datamodels.open(cal) as c, datamodels.open(crf) as j:
            start = SkyCoord(*c.meta.wcs(79.5, 79.5), unit="deg")
            ours_c, theirs_c = SkyCoord(*image.wcs(79.5, 79.5), unit="deg"), SkyCoord(*j.meta.wcs(79.5, 79.5), unit="deg")
            sep = SkyCoord(*image.wcs(xx, yy), unit="deg").separation(SkyCoord(*j.meta.wcs(xx, yy), unit="deg"))
        do = [v.to_value("mas") for v in start.spherical_offsets_to(ours_c)]
        dj = [v.to_value("mas") for v in start.spherical_offsets_to(theirs_c)]
        worst = max(worst, sep.to_value("mas").max())
        print(f"\n{image.name}: correction ours ({do[0]:+.1f}, {do[1]:+.1f}) jwst ({dj[0]:+.1f}, {dj[1]:+.1f}) mas; "
              f"WCS difference max {sep.to_value('mas').max():.2f} mas")
    assert worst < 3.0


def _bright_boxes(cat, err_ok, shape, half=3, snr=50.0):
    flux, ferr = np.asarray(cat["aper_total_flux"], float), np.asarray(cat["aper_total_flux_err"], float)
    x, y = np.rint(np.asarray(cat["xcentroid"], float)).astype(int), np.rint(np.asarray(cat["ycentroid"], float)).astype(int)
    keep = (flux / ferr > snr) & (x >= half) & (y >= half) & (x < shape[1] - half) & (y < shape[0] - half)
    return [(slice(yy - half, yy + half + 1), slice(xx - half, xx + half + 1)) for xx, yy in zip(x[keep], y[keep])
            if err_ok[yy - half:yy + half + 1, xx - half:xx + half + 1].all()]


@pytest.mark.parametrize("case", ["notweak", "tweak"])
def test_i2d_fluxes_in_common_pixels(runs, case):
    run = runs[case]
    ours = run["ours"]["resampled"]
    data, wht, err, _, _ = _i2d(run["theirs"]["i2d"])
    common = (wht > 0) & (ours.wht > 0)
    signal = common & (data / err > 10)
    ratio = ours.data[signal] / data[signal]
    boxes = _bright_boxes(run["ours"]["catalog"].catalog, common, data.shape)
    sums = np.array([ours.data[b].sum() / data[b].sum() for b in boxes])
    # Boxes where the two pipelines' outlier detection flagged different pixels (their drizzle
    # weights differ); with tweakreg the ~1 mas alignment difference moves the blotted median of a
    # sharp core enough to flip a few flags.
    same = np.array([np.allclose(ours.wht[b], wht[b], rtol=0.1) for b in boxes])
    print(f"\n[{case}] common pixels {common.sum()} (ours only {((ours.wht > 0) & ~(wht > 0)).sum()}, jwst only "
          f"{((wht > 0) & ~(ours.wht > 0)).sum()}); per pixel S/N>10: n={signal.sum()} ratio median "
          f"{np.median(ratio):.6f}, 1-99 % [{np.percentile(ratio, 1):.4f}, {np.percentile(ratio, 99):.4f}]; "
          f"max |d|/err {np.max(np.abs(ours.data - data)[common] / err[common]):.3g}; 7x7 sums of {len(sums)} sources: "
          f"ratio median {np.median(sums):.6f} range [{sums.min():.5f}, {sums.max():.5f}], same weights "
          f"{same.sum()} (range [{sums[same].min():.5f}, {sums[same].max():.5f}]); "
          f"WHT ratio range [{(ours.wht[common] / wht[common]).min():.4f}, {(ours.wht[common] / wht[common]).max():.4f}]")
    assert common.sum() > 0.99 * max((wht > 0).sum(), (ours.wht > 0).sum())
    assert len(boxes) >= 5 and abs(np.median(sums) - 1) < 0.005
    assert same.sum() >= 0.6 * len(boxes) and np.all(np.abs(sums[same] - 1) < 0.005)
    if case == "notweak":  # identical inputs and algorithms: every common pixel, not only the bright ones
        np.testing.assert_allclose(ours.data[common], data[common], rtol=0.005, atol=0)
        np.testing.assert_allclose(ours.err[common], err[common], rtol=1e-4)
        np.testing.assert_allclose(ours.wht[common], wht[common], rtol=1e-4)


@pytest.mark.parametrize("case", ["notweak", "tweak"])
def test_catalog_positions_within_5_mas(runs, case):
    run = runs[case]
    ours = run["ours"]["catalog"].catalog
    theirs = Table.read(run["theirs"]["cat"])
    idx, sep, _ = ours["sky_centroid"].match_to_catalog_sky(theirs["sky_centroid"])
    sep = sep.to_value("mas")
    matched = sep < 100
    snr = np.asarray(ours["aper_total_flux"].value / ours["aper_total_flux_err"].value)
    good = matched & (snr > 20)
    ratios = {c: np.asarray(ours[c].value)[matched] / np.asarray(theirs[c].value)[idx[matched]]
              for c in ("aper30_flux", "aper50_flux", "aper70_flux", "aper_total_flux", "isophotal_flux")}
    bright = good[matched]
    print(f"\n[{case}] sources ours {len(ours)} jwst {len(theirs)}: matched {matched.sum()}, unmatched ours "
          f"{len(ours) - matched.sum()} jwst {len(theirs) - len(set(idx[matched]))}; separation (S/N>20, "
          f"n={good.sum()}) median {np.median(sep[good]):.3f} max {sep[good].max():.3f} mas")
    for c, r in ratios.items():
        print(f"  {c}: ours/jwst median {np.nanmedian(r[bright]):.6f}, S/N>20 range [{np.nanmin(r[bright]):.4f}, "
              f"{np.nanmax(r[bright]):.4f}], all matched range [{np.nanmin(r):.4f}, {np.nanmax(r):.4f}], NaN {np.isnan(r).sum()}")
    assert good.sum() >= 10 and matched.sum() >= 0.9 * min(len(ours), len(theirs))
    assert sep[good].max() < 5.0
    assert abs(np.nanmedian(ratios["aper_total_flux"][bright]) - 1) < 0.005
    if case == "notweak":  # same i2d, same algorithm: the same catalog to float32 precision
        assert len(ours) == len(theirs) and sep.max() < 0.01
        for c, r in ratios.items():
            assert np.array_equal(np.isnan(r), np.isnan(np.asarray(ours[c].value)[matched])), c
            np.testing.assert_allclose(r[np.isfinite(r)], 1.0, rtol=1e-5, err_msg=c)
        np.testing.assert_array_equal(np.asarray(ours["is_extended"])[matched],
                                      np.asarray(theirs["is_extended"])[idx[matched]])
        # Vega magnitudes: the same ABVEGAOFFSET row (1.7) taken off the same AB magnitudes
        for c in ("aper70_vegamag", "aper_total_vegamag", "isophotal_vegamag"):
            a, b = np.asarray(ours[c])[matched], np.asarray(theirs[c])[idx[matched]]
            assert np.array_equal(np.isnan(a), np.isnan(b)), c
            np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], atol=1e-4, err_msg=c)
            np.testing.assert_allclose((np.asarray(ours[c.replace("vegamag", "abmag")])[matched] - a)[np.isfinite(a)],
                                       1.7, atol=1e-6, err_msg=c)
