"""photom: PHOTOM row matching and the DN/s -> MJy/sr conversion (hand-computed)."""

from types import SimpleNamespace

import numpy as np

from webbflow.steps import photom

TABLE = np.array([("F200W", "CLEAR", 0.40, 0.004), ("F150W", "CLEAR", 0.45, 0.0045),
                  ("F200W", "WLP8", 0.9, 0.01)],
                 dtype=[("filter", "S12"), ("pupil", "S12"), ("photmjsr", "f4"), ("uncertainty", "f4")])


def test_find_conversion_matches_filter_and_pupil():
    conv, unc = photom.find_conversion(TABLE, "F200W", "WLP8")
    assert conv == np.float32(0.9) and unc == np.float32(0.01)
    assert photom.find_conversion(TABLE, "F150W", "CLEAR")[0] == np.float32(0.45)
    assert photom.find_conversion(TABLE, "F444W", "CLEAR") == (None, None)


def test_mjsr_to_uja2():
    # 1 MJy/sr = 1e12 uJy / (206264.806^2 arcsec^2)
    assert abs(photom.MJSR_TO_UJA2 - 23.504430539) < 1e-8


def test_scales_data_and_variances():
    f32 = np.float32
    a = SimpleNamespace(data=np.full((2, 2), 100.0, f32), err=np.full((2, 2), 3.0, f32),
                        var_poisson=np.full((2, 2), 4.0, f32), var_rnoise=np.full((2, 2), 5.0, f32),
                        var_flat=np.full((2, 2), 0.5, f32), dq=np.zeros((2, 2), np.uint32))
    assert photom.run(a, np.float32(0.4)) == "COMPLETE"
    c = np.float32(0.4)
    assert a.data[0, 0] == f32(100.0) * c and a.err[0, 0] == f32(3.0) * c
    assert a.var_poisson[0, 0] == f32(4.0) * (c * c) and a.var_flat[0, 0] == f32(0.5) * (c * c)
    np.testing.assert_allclose(a.data, 40.0, rtol=1e-6)


def test_no_row_skips():
    a = SimpleNamespace(data=np.ones((1, 1), np.float32))
    assert photom.run(a, None) == "SKIPPED" and a.data[0, 0] == 1.0
