import numpy as np

from webbflow import dqflags as F
from webbflow.steps import linearity


def _coeffs(ny, nx):
    c = np.zeros((3, ny, nx), np.float32)
    c[0], c[1], c[2] = 1.0, 2.0, 0.5  # 1 + 2d + d^2/2
    return c


def test_polynomial_by_hand_and_saturated_groups_untouched(make_ramp):
    ramp = make_ramp([[[[3.0, 4.0]], [[10.0, 2.0]]]])
    ramp.groupdq[0, 1, 0, 0] = F.SATURATED
    assert linearity.run(ramp, _coeffs(1, 2), np.zeros((1, 2), np.uint32)) == "COMPLETE"
    # 1 + 6 + 4.5 = 11.5; 1 + 8 + 8 = 17; saturated 10 stays; 1 + 4 + 2 = 7
    np.testing.assert_array_equal(ramp.data[0, :, 0], [[11.5, 17.0], [10.0, 7.0]])
    assert not ramp.pixeldq.any()


def test_bad_coefficients_give_identity_and_no_lin_corr(make_ramp):
    ramp = make_ramp(np.full((1, 2, 1, 4), 5.0), zeroframe=[[[5.0, 0.0, 5.0, 5.0]]])
    c = _coeffs(1, 4)
    c[2, 0, 0] = np.nan          # NaN coefficient
    c[1, 0, 1] = 0.0             # zero linear term
    lin_dq = np.zeros((1, 4), np.uint32)
    lin_dq[0, 2] = F.NO_LIN_CORR  # flagged in the reference
    linearity.run(ramp, c, lin_dq)
    # pixel 3: 1 + 10 + 12.5 = 23.5 ; pixel 1: identity
    np.testing.assert_array_equal(ramp.data[0, 0, 0], [5.0, 5.0, 5.0, 23.5])
    np.testing.assert_array_equal(ramp.pixeldq[0], [F.NO_LIN_CORR] * 3 + [0])
    # ZEROFRAME is linearised with the same coefficients, its zeros stay zero
    np.testing.assert_array_equal(ramp.zeroframe[0, 0], [5.0, 0.0, 5.0, 23.5])
    # the caller's coefficients are not modified
    assert np.isnan(c[2, 0, 0]) and c[1, 0, 1] == 0.0
