import numpy as np
import pytest

from webbflow import dqflags as F
from webbflow.steps import dq_init


def test_mask_goes_to_pixeldq_and_dnu_to_every_group(make_ramp):
    ramp = make_ramp(np.zeros((2, 3, 2, 3)))
    ramp.pixeldq[0, 0] = F.REFERENCE_PIXEL
    mask = np.zeros((2, 3), np.uint32)
    mask[1, 2] = F.DO_NOT_USE | F.DEAD
    mask[0, 0] = F.HOT
    assert dq_init.run(ramp, mask) == "COMPLETE"
    assert ramp.pixeldq[1, 2] == F.DO_NOT_USE | F.DEAD
    assert ramp.pixeldq[0, 0] == F.HOT | F.REFERENCE_PIXEL
    assert np.all(ramp.groupdq[:, :, 1, 2] == F.DO_NOT_USE)
    # only DO_NOT_USE reaches GROUPDQ; HOT stays a pixel flag
    assert np.count_nonzero(ramp.groupdq) == 2 * 3


def test_shape_mismatch_is_an_error(make_ramp):
    ramp = make_ramp(np.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError, match="shape"):
        dq_init.run(ramp, np.zeros((3, 3), np.uint32))
