import numpy as np

from webbflow import dqflags as F
from webbflow.steps import superbias


def test_subtracts_bias_nan_as_zero_and_keeps_zeroframe_zeros(make_ramp):
    ramp = make_ramp(np.full((2, 3, 2, 2), 100.0), zeroframe=[[[50.0, 0.0], [60.0, 70.0]]] * 2)
    bias = np.array([[10.0, np.nan], [20.0, 30.0]], np.float32)
    bias_dq = np.array([[0, F.UNRELIABLE_BIAS], [0, 0]], np.uint32)
    assert superbias.run(ramp, bias, bias_dq) == "COMPLETE"
    np.testing.assert_array_equal(ramp.data[1, 2], [[90.0, 100.0], [80.0, 70.0]])
    np.testing.assert_array_equal(ramp.data[0, 0], [[90.0, 100.0], [80.0, 70.0]])
    np.testing.assert_array_equal(ramp.zeroframe[0], [[40.0, 0.0], [40.0, 40.0]])
    assert ramp.pixeldq[0, 1] == F.UNRELIABLE_BIAS and ramp.pixeldq.sum() == F.UNRELIABLE_BIAS
