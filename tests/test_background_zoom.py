"""The separable mesh resize (webbflow.steps._bkgzoom) gives photutils' Background2D images.

photutils expands its mesh with ``scipy.ndimage.zoom``; ours takes two matrix products.  On a
float32 image the level and rms must be the same bits, on float64 equal to 1e-13 relative, for
square and rectangular boxes and with a coverage mask.
"""

import numpy as np
import pytest
from astropy.stats import SigmaClip
from photutils.background import Background2D, MedianBackground

from webbflow.steps._bkgzoom import SeparableZoomInterpolator, use_separable_zoom


@pytest.mark.parametrize("dtype, box, filter_size, masked", [
    (np.float32, 64, 1, False), (np.float32, (40, 70), (3, 3), True), (np.float64, 100, (3, 3), False)])
def test_separable_zoom_is_photutils_zoom(dtype, box, filter_size, masked):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:300, :410]
    data = (rng.normal(0.0, 1.0, yy.shape) + 0.5 * np.sin(xx / 60.0) + yy / 150.0).astype(dtype)
    mask = np.zeros(data.shape, bool)
    if masked:
        mask[:, :25] = True
        data[mask] = np.nan
    kw = dict(sigma_clip=SigmaClip(3.0), bkg_estimator=MedianBackground(), filter_size=filter_size,
              coverage_mask=mask if masked else None)
    want = Background2D(data, box, **kw)
    got = use_separable_zoom(Background2D(data, box, **kw))
    assert isinstance(got.interpolator, SeparableZoomInterpolator)
    for name in ("background", "background_rms"):
        a, b = getattr(want, name), getattr(got, name)
        assert a.dtype == b.dtype and a.shape == b.shape == data.shape
        assert np.ptp(a[np.isfinite(a)]) > 0  # a level that varies across the image
        if dtype is np.float32:
            assert np.array_equal(a, b, equal_nan=True), name
        else:
            np.testing.assert_allclose(b, a, rtol=1e-13, err_msg=name)
