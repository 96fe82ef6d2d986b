import numpy as np

from webbflow import dqflags as F
from webbflow.steps import saturation

SAT, DNU, ADF = F.SATURATED, F.DO_NOT_USE, F.AD_FLOOR


def _flat(make_ramp, ngroups=5, ny=7, nx=7, value=10.0, zeroframe=None):
    return make_ramp(np.full((1, ngroups, ny, nx), value), zeroframe=zeroframe)


def _ref(ny=7, nx=7, thresh=1000.0):
    return np.full((ny, nx), thresh, np.float32), np.zeros((ny, nx), np.uint32)


def test_crossing_at_group_2_flags_it_later_groups_and_neighbours(make_ramp, readout_for):
    ramp = _flat(make_ramp)
    ramp.data[0, :, 3, 3] = [100, 500, 1200, 900, 1600]  # crosses at group 2, stays flagged
    thr, sdq = _ref()
    assert saturation.run(ramp, readout_for(ramp), thr, sdq) == "COMPLETE"
    gdq = ramp.groupdq[0]
    box = np.zeros((7, 7), bool)
    box[2:5, 2:5] = True
    for g in range(5):
        expect = np.where(box, SAT if g >= 2 else 0, 0)
        np.testing.assert_array_equal(gdq[g], expect, err_msg=f"group {g}")


def test_grow_two_is_a_5x5_box_clipped_at_the_corner(make_ramp, readout_for):
    ramp = _flat(make_ramp, ngroups=2)
    ramp.data[0, 1, 0, 0] = 2000
    thr, sdq = _ref()
    saturation.run(ramp, readout_for(ramp), thr, sdq, n_pix_grow_sat=2)
    flagged = ramp.groupdq[0, 1] == SAT
    assert flagged[:3, :3].all() and flagged.sum() == 9 and not ramp.groupdq[0, 0].any()


def test_ad_floor_only_in_that_group(make_ramp, readout_for):
    ramp = _flat(make_ramp, ngroups=3)
    ramp.data[0, 1, 1, 1] = 0.0
    ramp.data[0, 2, 5, 5] = -4.0
    thr, sdq = _ref()
    saturation.run(ramp, readout_for(ramp), thr, sdq)
    assert ramp.groupdq[0, 1, 1, 1] == ADF | DNU and ramp.groupdq[0, 2, 5, 5] == ADF | DNU
    assert np.count_nonzero(ramp.groupdq) == 2  # AD floor is not grown


def test_no_sat_check_and_nan_threshold(make_ramp, readout_for):
    ramp = _flat(make_ramp, ngroups=2, value=5000.0)  # everything above 1000 ...
    thr, sdq = _ref()
    thr[1:, :] = np.nan                      # ... except NaN thresholds
    sdq[0, :] = F.NO_SAT_CHECK               # ... and NO_SAT_CHECK pixels
    saturation.run(ramp, readout_for(ramp), thr, sdq)
    assert not ramp.groupdq.any()
    assert np.all(ramp.pixeldq == F.NO_SAT_CHECK)
    assert np.isnan(thr[1:]).all() and not sdq[1:].any()  # references untouched


def test_backward_pass_flags_group_hiding_saturation(make_ramp, readout_for):
    # nframes=4: group 3 averages frames 13..16, dilution 14.5/16 = 0.90625
    ramp = _flat(make_ramp, ngroups=5, value=10.0)
    ramp.data[0, :, 3, 3] = [100, 200, 300, 950, 1100]   # 950 >= 906.25 -> DNU
    ramp.data[0, :, 0, 6] = [100, 200, 300, 900, 1100]   # 900 <  906.25 -> nothing
    thr, sdq = _ref()
    saturation.run(ramp, readout_for(ramp, nframes=4), thr, sdq)
    g3 = ramp.groupdq[0, 3]
    assert np.all(g3[2:5, 2:5] == DNU)                   # grown like saturation
    assert g3[0, 6] == 0 and g3[1, 5] == 0
    assert ramp.groupdq[0, 4, 3, 3] == SAT and ramp.groupdq[0, 4, 0, 6] == SAT
    # without the read pattern there is no backward pass
    ramp2 = _flat(make_ramp, ngroups=5, value=10.0)
    ramp2.data[0, :, 3, 3] = [100, 200, 300, 950, 1100]
    saturation.run(ramp2, readout_for(ramp2, nframes=4), thr, sdq, use_readpatt=False)
    assert ramp2.groupdq[0, 3, 3, 3] == 0


def test_group2_rule_is_bias_aware(make_ramp, readout_for):
    # nframes=4: mean(frames of group 0) = 2.5, last frame of group 2 = 12
    thr, sdq = _ref()
    ramp = _flat(make_ramp, ngroups=4)
    ramp.data[0, :, 3, 3] = [300, 800, 1100, 1200]
    bias = np.zeros((7, 7), np.float32)
    # without bias: 300 / 2.5 * 12 = 1440 >= 1000 -> group 2 "expected" to saturate
    saturation.run(ramp, readout_for(ramp, nframes=4), thr, sdq, bias=bias)
    assert ramp.groupdq[0, 1, 3, 3] == 0
    # bias 250: (50 / 2.5) * 12 + 250 = 490 < 1000 and 800 - 300 > 700 / 4 -> DNU
    ramp = _flat(make_ramp, ngroups=4)
    ramp.data[0, :, 3, 3] = [300, 800, 1100, 1200]
    bias[3, 3] = 250.0
    saturation.run(ramp, readout_for(ramp, nframes=4), thr, sdq, bias=bias)
    assert ramp.groupdq[0, 1, 3, 3] == DNU
    assert np.count_nonzero(ramp.groupdq[0, 1]) == 1  # neighbours: no jump, no flag


def test_zeroframe_saturated_grown_and_floor_zeroed(make_ramp, readout_for):
    zf = np.full((1, 7, 7), 20.0)
    zf[0, 3, 3] = 1500.0
    zf[0, 0, 6] = -1.0
    ramp = _flat(make_ramp, ngroups=2, zeroframe=zf)
    thr, sdq = _ref()
    saturation.run(ramp, readout_for(ramp), thr, sdq)
    z = ramp.zeroframe[0]
    assert np.all(z[2:5, 2:5] == 0.0) and z[0, 6] == 0.0
    assert np.count_nonzero(z == 20.0) == 49 - 10
