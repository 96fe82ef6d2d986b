"""Tiny hand-built ramps for the stage-1 step tests."""

import numpy as np
import pytest

from webbflow.ramp import Ramp, Readout


def make_ramp(groups, zeroframe=None):
    """Ramp from a (nints, ngroups, ny, nx) nested list/array, empty DQ."""
    data = np.array(groups, dtype=np.float32)
    nints, ngroups, ny, nx = data.shape
    zf = None if zeroframe is None else np.array(zeroframe, dtype=np.float32)
    return Ramp(data=data, pixeldq=np.zeros((ny, nx), np.uint32),
                groupdq=np.zeros(data.shape, np.uint8), zeroframe=zf)


def readout_for(ramp, **kw):
    nints, ngroups = ramp.data.shape[:2]
    return Readout(nints=nints, ngroups=ngroups, **kw)


@pytest.fixture(name="make_ramp")
def make_ramp_fixture():
    """The :func:`make_ramp` helper, as a fixture (tests/ is not a package)."""
    return make_ramp


@pytest.fixture(name="readout_for")
def readout_for_fixture():
    """The :func:`readout_for` helper, as a fixture."""
    return readout_for
