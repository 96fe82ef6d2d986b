"""charge_migration (jwst 3.0) on hand-built ramps, and the ramp fit's read-noise recomputation for it."""

import numpy as np
import pytest

from webbflow import dqflags as F
from webbflow.ramp import Readout
from webbflow.steps import charge_migration, ramp_fit

CHLO_DNU = F.CHARGELOSS | F.DO_NOT_USE
THR = 25000.0


def _cross(ny, nx, y, x):
    """The pixel and its four edge neighbours, clipped at the frame."""
    m = np.zeros((ny, nx), bool)
    for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
        if 0 <= y + dy < ny and 0 <= x + dx < nx:
            m[y + dy, x + dx] = True
    return m


def test_crossing_at_group_k_flags_it_later_groups_and_the_four_neighbours(make_ramp):
    ramp = make_ramp(np.full((1, 6, 5, 5), 1000.0))
    ramp.data[0, :, 2, 2] = [5000, 15000, 24000, 26000, 24500, 30000]  # above at group 3, dips below at 4
    assert charge_migration.run(ramp, THR) == "COMPLETE"
    cross = _cross(5, 5, 2, 2)
    for g in range(6):
        expect = np.where(cross, CHLO_DNU if g >= 3 else 0, 0)
        np.testing.assert_array_equal(ramp.groupdq[0, g], expect, err_msg=f"group {g}")
    # diagonals are not neighbours here (unlike saturation's box)
    assert not ramp.groupdq[0, :, 1, 1].any() and not ramp.groupdq[0, :, 3, 3].any()


def test_threshold_is_strict_and_edges_are_clipped(make_ramp):
    ramp = make_ramp(np.full((2, 4, 4, 6), 100.0))
    ramp.data[0, 1:, 0, 0] = 25000.0        # equal: not above
    ramp.data[1, 2:, 0, 5] = 25000.5        # corner, second integration only
    charge_migration.run(ramp, THR)
    assert not ramp.groupdq[0].any()
    q = ramp.groupdq[1]
    cross = _cross(4, 6, 0, 5)
    assert cross.sum() == 3
    for g in range(4):
        np.testing.assert_array_equal(q[g], np.where(cross, CHLO_DNU if g >= 2 else 0, 0))


def test_do_not_use_groups_do_not_trigger_but_other_flags_do_and_flags_are_kept(make_ramp):
    ramp = make_ramp(np.full((1, 5, 5, 5), 100.0))
    ramp.data[0, 1:, 1, 1] = 30000.0
    ramp.groupdq[0, 1:, 1, 1] = F.DO_NOT_USE                 # exactly DNU: ignored
    ramp.data[0, 3:, 3, 3] = 30000.0
    ramp.groupdq[0, 3:, 3, 3] = F.SATURATED | F.DO_NOT_USE   # DNU plus another flag: counts, as in jwst
    ramp.groupdq[0, 4, 3, 4] = F.JUMP_DET
    charge_migration.run(ramp, THR)
    assert (ramp.groupdq[0, 1:, 1, 1] == F.DO_NOT_USE).all()
    assert not ramp.groupdq[0, :, 0, 1].any()
    assert (ramp.groupdq[0, 3:, 3, 3] == F.SATURATED | CHLO_DNU).all()
    assert ramp.groupdq[0, 3, 3, 4] == CHLO_DNU and ramp.groupdq[0, 4, 3, 4] == F.JUMP_DET | CHLO_DNU
    assert not (ramp.groupdq[0, :3] & F.CHARGELOSS).any()


def test_fewer_than_three_groups_is_skipped(make_ramp):
    ramp = make_ramp(np.full((1, 2, 3, 3), 40000.0))
    assert charge_migration.run(ramp, THR) == "SKIPPED"
    assert not ramp.groupdq.any()


def _fit(ramp, gain=2.0, rn_cds=10.0, tg=10.0):
    ny, nx = ramp.data.shape[-2:]
    ro = Readout(nints=ramp.data.shape[0], ngroups=ramp.data.shape[1], nframes=1, tframe=tg, tgroup=tg)
    return ramp_fit.run(ramp, ro, np.full((ny, nx), gain, np.float32), np.full((ny, nx), rn_cds, np.float32))[1]


def test_ramp_fit_drops_the_flagged_groups_but_recomputes_read_noise_without_them(make_ramp):
    """stcal: slope and ERR from the usable groups, VAR_RNOISE from the ramp as if unflagged."""
    ngroups, tg = 8, 10.0
    data = np.zeros((2, ngroups, 3, 3))
    data[:] = (4000.0 * np.arange(ngroups))[None, :, None, None]   # 400 DN/s: crosses 25000 at group 7
    ramp = make_ramp(data)
    charge_migration.run(ramp, THR)
    assert (ramp.groupdq[:, 7] == CHLO_DNU).all() and not ramp.groupdq[:, :7].any()
    res = _fit(ramp, tg=tg)
    # single-read noise 10*2/sqrt(2) e- -> 50 DN^2; 12 rn^2 / ((n^3 - n) tg^2)
    var_r = lambda n: 12.0 * 50.0 / ((n**3 - n) * tg**2)  # noqa: E731
    assert res.rate.data[1, 1] == pytest.approx(400.0, rel=1e-6)
    assert res.rateints.var_rnoise[:, 1, 1] == pytest.approx(var_r(ngroups), rel=1e-5)
    assert res.rate.var_rnoise[1, 1] == pytest.approx(var_r(ngroups) / 2, rel=1e-5)
    # ERR stays that of the 7 groups fitted
    vp = 400.0 / (tg * 2.0 * 6)
    assert res.rate.err[1, 1] == pytest.approx(np.sqrt((vp + var_r(7)) / 2), rel=1e-5)
