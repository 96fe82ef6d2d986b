import numpy as np
import pytest

from webbflow import dqflags as F
from webbflow.steps import dark_current


def _dark(nplanes, ny=1, nx=2):
    # plane k holds k + 1 everywhere: averages are easy to do by hand
    return np.broadcast_to(np.arange(1, nplanes + 1, dtype=np.float32)[:, None, None],
                           (nplanes, ny, nx)).copy()


def test_averaging_nframes2_groupgap1_by_hand(make_ramp, readout_for):
    ramp = make_ramp(np.full((2, 3, 1, 2), 100.0))
    ro = readout_for(ramp, nframes=2, groupgap=1)
    dark_dq = np.array([[0, F.HOT]], np.uint32)
    assert dark_current.run(ramp, ro, _dark(10), dark_dq) == "COMPLETE"
    # groups use frames (1,2), (4,5), (7,8): means 1.5, 4.5, 7.5
    np.testing.assert_array_equal(ramp.data[1, :, 0, 0], [98.5, 95.5, 92.5])
    np.testing.assert_array_equal(ramp.data[0, :, 0, 1], [98.5, 95.5, 92.5])
    assert ramp.pixeldq[0, 1] == F.HOT and ramp.pixeldq[0, 0] == 0
    assert np.all(ramp.average_dark_current == 0.0)


def test_matching_readout_subtracts_planes_directly_nan_as_zero(make_ramp, readout_for):
    ramp = make_ramp(np.full((1, 3, 1, 2), 10.0))
    dark = _dark(5)
    dark[1, 0, 1] = np.nan
    dark_current.run(ramp, readout_for(ramp), dark, np.zeros((1, 2), np.uint32),
                     average_dark_current=0.25)
    np.testing.assert_array_equal(ramp.data[0, :, 0, 0], [9.0, 8.0, 7.0])
    np.testing.assert_array_equal(ramp.data[0, :, 0, 1], [9.0, 10.0, 7.0])
    assert np.all(ramp.average_dark_current == np.float32(0.25))


def test_short_dark_is_extrapolated_like_stcal(make_ramp, readout_for):
    ramp = make_ramp(np.zeros((1, 5, 1, 2)))
    dark = _dark(3)
    dark[:, 0, 1] = [1.0, 3.0, 6.0]  # last slope 3 -> 9, 12
    dark_current.run(ramp, readout_for(ramp), dark, np.zeros((1, 2), np.uint32))
    np.testing.assert_array_equal(ramp.data[0, :, 0, 0], [-1, -2, -3, -4, -5])
    np.testing.assert_array_equal(ramp.data[0, :, 0, 1], [-1, -3, -6, -9, -12])


def test_one_plane_dark_too_short_raises(make_ramp, readout_for):
    ramp = make_ramp(np.zeros((1, 3, 1, 2)))
    with pytest.raises(ValueError, match="too few"):
        dark_current.run(ramp, readout_for(ramp), _dark(1), np.zeros((1, 2), np.uint32))


def test_dark_with_more_frames_per_group_is_skipped(make_ramp, readout_for):
    ramp = make_ramp(np.full((1, 2, 1, 2), 7.0))
    st = dark_current.run(ramp, readout_for(ramp, nframes=1), _dark(8), np.full((1, 2), 4, np.uint32),
                          dark_nframes=2)
    assert st == "SKIPPED"
    assert np.all(ramp.data == 7.0) and not ramp.pixeldq.any()


def test_average_dark_current_priorities():
    arr = np.array([[0.1, 0.2]], np.float32)
    np.testing.assert_array_equal(dark_current.resolve_average_dark_current((1, 2), 0.5, arr, 9.0),
                                  [[0.5, 0.5]])
    np.testing.assert_array_equal(dark_current.resolve_average_dark_current((1, 2), None, arr, 9.0), arr)
    np.testing.assert_array_equal(
        dark_current.resolve_average_dark_current((1, 2), None, np.zeros((1, 2)), 9.0), [[9.0, 9.0]])
    assert not dark_current.resolve_average_dark_current((1, 2)).any()
