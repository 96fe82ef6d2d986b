"""source_catalog: fluxes in Jy against injected fluxes, AB magnitudes, segmentation, jwst column names."""

import numpy as np
import pytest
from astropy.table import Table
from test_image3_synth import SW_SCALE, make_cal, make_sky, match_truth, pixel_area_sr

from webbflow.steps import source_catalog

JWST_COLUMNS = ("label", "xcentroid", "ycentroid", "sky_centroid", "aper_bkg_flux", "aper_bkg_flux_err",
                "aper30_flux", "aper50_flux", "aper70_flux", "aper_total_flux", "aper_total_flux_err",
                "aper_total_abmag", "aper_total_abmag_err", "CI_50_30", "CI_70_50", "CI_70_30", "is_extended",
                "isophotal_flux", "isophotal_flux_err", "isophotal_abmag", "isophotal_area", "semimajor_sigma",
                "semiminor_sigma", "ellipticity", "orientation", "nn_label", "nn_dist")


@pytest.fixture(scope="module")
def field():
    truth = make_sky(50, seed=7, radius_arcsec=3.8)
    model, info = make_cal(truth, shape=(260, 260), seed=8)
    result = source_catalog.source_catalog(model.data, model.err, model.meta.wcs, pixel_area_sr(SW_SCALE))
    return truth, model, info, result


def test_ab_magnitudes():
    mag, err = source_catalog.abmag(np.array([3631.0, 3631e-6, -1.0]), np.array([36.31, 0.0, 1.0]))
    assert mag[0] == 0.0 and abs(mag[1] - 15.0) < 1e-12 and np.isnan(mag[2])
    assert abs(err[0] - 2.5 / np.log(10) * 0.01) < 1e-12


def test_catalog_columns_and_segmentation(field):
    truth, model, info, result = field
    cat = result.catalog
    for col in JWST_COLUMNS:
        assert col in cat.colnames, col
    assert str(cat["aper_total_flux"].unit) == "Jy"
    assert set(np.unique(result.segmentation)) - {0} == set(cat["label"])
    # Every source sits on its own label in the segmentation map.
    seg_at = result.segmentation[np.rint(cat["ycentroid"]).astype(int), np.rint(cat["xcentroid"]).astype(int)]
    assert np.mean(seg_at == cat["label"]) > 0.95


def test_point_source_fluxes_within_one_percent(field):
    truth, model, info, result = field
    cat = result.catalog
    idx, sep = match_truth(cat["sky_centroid"].ra.deg, cat["sky_centroid"].dec.deg, truth)
    snr = cat["aper_total_flux"].value / cat["aper_total_flux_err"].value
    good = (sep < 0.03) & (snr > 100) & (cat["nn_dist"].value > 12)
    assert good.sum() >= 10
    ratio = cat["aper_total_flux"].value[good] / truth.flux[idx[good]]
    assert abs(np.median(ratio) - 1) < 0.01
    # EE radii of the sigma = 1 pixel Gaussian, broadened by the pixel (sigma^2 + 1/12):
    # r = sigma sqrt(-2 ln(1 - EE)), to the few per cent that pixel phase allows.
    expected = np.sqrt(1 + 1 / 12) * np.sqrt(-2 * np.log(1 - np.array([0.3, 0.5, 0.7])))
    np.testing.assert_allclose(result.apertures.radii, expected, rtol=0.06)
    # Isophotal fluxes hold most, not all, of the light.
    iso = cat["isophotal_flux"].value[good] / truth.flux[idx[good]]
    assert 0.8 < np.median(iso) < 1.0


def test_apcorr_table_sets_the_apertures(field):
    truth, model, info, measured = field
    r = np.array(measured.apertures.radii)
    table = Table({"eefraction": [0.3, 0.5, 0.7], "radius": r, "apcorr": 1 / np.array([0.3, 0.5, 0.7]),
                   "skyin": [10.0] * 3, "skyout": [15.0] * 3})
    result = source_catalog.source_catalog(model.data, model.err, model.meta.wcs, pixel_area_sr(SW_SCALE),
                                           apcorr_table=table)
    assert result.apertures.radii == tuple(r) and result.apertures.skyin == 10.0
    cat = result.catalog
    idx, sep = match_truth(cat["sky_centroid"].ra.deg, cat["sky_centroid"].dec.deg, truth)
    good = (sep < 0.03) & (cat["aper_total_flux"].value / cat["aper_total_flux_err"].value > 100) \
        & (cat["nn_dist"].value > 12)
    assert abs(np.median(cat["aper_total_flux"].value[good] / truth.flux[idx[good]]) - 1) < 0.01


def test_segmentation_imported_without_scipy_signal():
    """The module imports photutils.segmentation without scipy.signal or scipy.stats
    (webbflow.steps._photutils); photutils' one use of it, a non-rectangular source-mask dilation,
    gives the same mask as scipy.ndimage's binary dilation; afterwards scipy.signal is scipy's own."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "from webbflow.steps import source_catalog\n"
        "before = [m in sys.modules for m in ('scipy.signal', 'scipy.stats')]\n"
        "from photutils.segmentation import SegmentationImage\n"
        "from scipy.ndimage import binary_dilation\n"
        "data = np.zeros((40, 40), int); data[10:13, 8:11] = 1; data[30, 25] = 2\n"
        "y, x = np.mgrid[-3:4, -3:4]; disk = x * x + y * y <= 9\n"
        "mask = SegmentationImage(data).make_source_mask(footprint=disk)\n"
        "same = bool((mask == binary_dilation(data > 0, disk)).all()) and int(mask.sum()) > 50\n"
        "import scipy.signal\n"
        "real = hasattr(scipy.signal, 'find_peaks') and type(sys.modules['scipy.signal']).__name__ == 'module'\n"
        "print(json.dumps([before, same, real]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(out.stdout) == [[False, False], True, True]


def test_segmentation_import_with_scipy_signal_already_imported():
    """Where scipy.signal is imported first, photutils.segmentation is imported as usual (its own
    fftconvolve); a name the stand-in lacks imports the real module and is its value."""
    import json
    import subprocess
    import sys

    first = ("import json, sys\n"
             "import scipy.signal\n"
             "from webbflow.steps._photutils import import_segmentation\n"
             "seg = import_segmentation()\n"
             "import photutils.segmentation.core as core\n"
             "print(json.dumps([core.fftconvolve is scipy.signal.fftconvolve,\n"
             "                  seg is sys.modules['photutils.segmentation']]))\n")
    other = ("import json, sys\n"
             "import scipy\n"
             "from webbflow.steps._photutils import _DeferredSignal\n"
             "stand_in = _DeferredSignal('scipy.signal'); sys.modules['scipy.signal'] = stand_in\n"
             "peaks = stand_in.find_peaks\n"
             "real = sys.modules['scipy.signal']\n"
             "print(json.dumps([real is not stand_in, peaks is real.find_peaks, hasattr(stand_in, '__path__')]))\n")
    out = [json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                     check=True).stdout) for code in (first, other)]
    assert out == [[True, True], [True, True, False]]
