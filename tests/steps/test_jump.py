"""Two-point-difference jump detection on hand-built ramps and a simulated cube."""

import numpy as np
import pytest

from webbflow import dqflags as F
from webbflow.ramp import Ramp, Readout
from webbflow.steps import jump

# gain 1 and CDS read noise 10 DN: on a flat ramp sigma of a difference is 10,
# so a difference of J DN has ratio J / 10.
RN = 10.0


def _run(data, gdq=None, gain=1.0, **kw):
    data = np.asarray(data, np.float32)
    nints, ngroups, ny, nx = data.shape
    ramp = Ramp.from_uncal(data)
    if gdq is not None:
        ramp.groupdq[...] = gdq
    ro = Readout(nints=nints, ngroups=ngroups, tframe=10.0, tgroup=10.0)
    g = np.broadcast_to(np.asarray(gain, np.float32), (ny, nx))
    status = jump.run(ramp, ro, g, np.full((ny, nx), RN, np.float32), **kw)
    return status, ramp


def _step_ramp(ngroups, jump_group, size):
    d = np.zeros(ngroups, np.float32)
    d[jump_group:] += size
    return d


@pytest.mark.parametrize("n_sat, size, flagged", [
    (0, 45.0, True),    # 5 usable diffs -> 4 sigma
    (2, 45.0, False),   # 3 usable diffs -> 5 sigma (four_group_rejection_threshold)
    (2, 55.0, True),
    (3, 55.0, False),   # 2 usable diffs -> 6 sigma (three_group_rejection_threshold)
    (3, 65.0, True),
])
def test_thresholds_follow_number_of_usable_differences(n_sat, size, flagged):
    ngroups = 6
    data = _step_ramp(ngroups, 2, size)[None, :, None, None]
    gdq = np.zeros(data.shape, np.uint8)
    if n_sat:
        gdq[0, ngroups - n_sat:] = F.SATURATED
    status, ramp = _run(data, gdq, flag_4_neighbors=False)
    assert status == "COMPLETE"
    expected = np.zeros(ngroups, np.uint8)
    expected[ngroups - n_sat:] = F.SATURATED if n_sat else 0
    if flagged:
        expected[2] |= F.JUMP_DET                     # flag on the later group of the difference
    np.testing.assert_array_equal(ramp.groupdq[0, :, 0, 0], expected)


def test_two_jumps_found_iteratively_and_data_untouched():
    d = np.zeros(8, np.float32)
    d[3:] += 300.0
    d[6:] += 80.0
    data = d[None, :, None, None]
    _, ramp = _run(data.copy(), flag_4_neighbors=False)
    assert list(np.flatnonzero(ramp.groupdq[0, :, 0, 0] & F.JUMP_DET)) == [3, 6]
    np.testing.assert_array_equal(ramp.data, data)


def test_neighbours_flagged_not_onto_saturated():
    data = np.zeros((1, 6, 5, 5), np.float32)
    data[0, 3:, 2, 2] = 500.0                         # ratio 50: neighbours flagged
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, 3:, 1, 2] = F.SATURATED                    # the pixel above is saturated
    _, ramp = _run(data, gdq)
    j = (ramp.groupdq[0, 3] & F.JUMP_DET) != 0
    expected = np.zeros((5, 5), bool)
    expected[2, 2] = expected[3, 2] = expected[2, 1] = expected[2, 3] = True
    np.testing.assert_array_equal(j, expected)
    assert ramp.groupdq[0, 3, 1, 2] == F.SATURATED
    assert not (ramp.groupdq[0, [0, 1, 2, 4, 5]] & F.JUMP_DET).any()


@pytest.mark.parametrize("size", [80.0, 20000.0])   # ratio 8 (<10) and 2000 (>1000)
def test_no_neighbours_outside_ratio_window(size):
    data = np.zeros((1, 6, 3, 3), np.float32)
    data[0, 3:, 1, 1] = size
    _, ramp = _run(data)
    j = (ramp.groupdq & F.JUMP_DET) != 0
    assert j.sum() == 1 and j[0, 3, 1, 1]


def test_existing_jump_on_saturated_group_removed_and_bad_gain_flagged():
    data = np.zeros((1, 5, 1, 2), np.float32)
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, 4, 0, 0] = F.SATURATED | F.JUMP_DET
    ramp_gain = np.array([[1.0, 0.0]], np.float32)
    _, ramp = _run(data, gdq, gain=ramp_gain)
    assert ramp.groupdq[0, 4, 0, 0] == F.SATURATED
    assert ramp.pixeldq[0, 1] == F.NO_GAIN_VALUE | F.DO_NOT_USE
    assert ramp.pixeldq[0, 0] == 0


def test_skipped_with_two_groups():
    status, ramp = _run(np.zeros((1, 2, 2, 2), np.float32) + [[[[0]], [[500]]]])
    assert status == "SKIPPED"
    assert not ramp.groupdq.any()


def test_after_jump_flagging():
    d = np.zeros(8, np.float32)
    d[2:] += 1000.0
    _, ramp = _run(d[None, :, None, None], flag_4_neighbors=False,
                   after_jump_flag_dn1=500.0, after_jump_flag_time1=25.0)  # 2 groups of 10 s
    assert list(np.flatnonzero(ramp.groupdq[0, :, 0, 0] & F.JUMP_DET)) == [2, 3, 4]


def test_detection_rate_and_false_positives_on_simulated_ramps():
    rng = np.random.default_rng(7)
    nints, ngroups, n = 1, 10, 64
    tg, gain, rn_cds, rate = 10.73677, 2.0, 10.0, 1.0
    elec = rng.poisson(rate * tg * gain, (nints, ngroups, n, n)).cumsum(axis=1) / gain
    data = (elec + rng.normal(0, rn_cds / np.sqrt(2), elec.shape)).astype(np.float32)
    sigma_dn = np.sqrt(rn_cds**2 + rate * tg / gain)   # noise of one difference in DN
    hit = rng.random((n, n)) < 0.05
    grp = rng.integers(1, ngroups, (n, n))
    amp = rng.uniform(10.5, 100.0, (n, n)) * sigma_dn  # every jump > 10 sigma
    for g in range(1, ngroups):
        data[0, g:][:, hit & (grp == g)] += amp[hit & (grp == g)]
    ramp = Ramp.from_uncal(data)
    ro = Readout(nints=nints, ngroups=ngroups, tframe=tg, tgroup=tg)
    jump.run(ramp, ro, np.full((n, n), gain, np.float32), np.full((n, n), rn_cds, np.float32))
    j = (ramp.groupdq[0] & F.JUMP_DET) != 0
    ys, xs = np.nonzero(hit)
    found = j[grp[ys, xs], ys, xs].mean()
    # clean: no jump in the pixel nor in its 4 neighbours (which may be flagged on purpose)
    near = hit.copy()
    near[1:] |= hit[:-1]; near[:-1] |= hit[1:]; near[:, 1:] |= hit[:, :-1]; near[:, :-1] |= hit[:, 1:]
    false_rate = j[:, ~near].any(axis=0).mean()
    assert found >= 0.99
    assert false_rate < 0.005
