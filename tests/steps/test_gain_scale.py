from types import SimpleNamespace

import numpy as np

from webbflow.steps import gain_scale


def _images(shape):
    return SimpleNamespace(data=np.full(shape, 3.0, np.float32), err=np.full(shape, 0.5, np.float32),
                           var_poisson=np.full(shape, 0.25, np.float32),
                           var_rnoise=np.full(shape, 0.04, np.float32), dq=np.zeros(shape, np.uint32))


def test_scales_rates_errors_and_variances():
    result = SimpleNamespace(rate=_images((2, 2)), rateints=_images((3, 2, 2)))
    assert gain_scale.run(result, gain_factor=2.0) == "COMPLETE"
    for im in (result.rate, result.rateints):
        np.testing.assert_allclose(im.data, 6.0)
        np.testing.assert_allclose(im.err, 1.0)
        np.testing.assert_allclose(im.var_poisson, 1.0)
        np.testing.assert_allclose(im.var_rnoise, 0.16, rtol=1e-6)


def test_no_gain_factor_is_skipped_and_leaves_data():
    result = SimpleNamespace(rate=_images((2, 2)), rateints=None)
    assert gain_scale.run(result) == "SKIPPED"
    assert np.all(result.rate.data == 3.0) and np.all(result.rate.var_poisson == 0.25)
