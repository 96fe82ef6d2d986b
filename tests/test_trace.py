"""The trace's row and width per integration (webbflow.steps.trace) against a known moving trace."""

import numpy as np

from webbflow import dqflags
from webbflow.steps.trace import trace_positions


def _cube(shifts, sigma=1.3, tilt=0.002, rows=64, cols=400, level=500.0, noise=5.0, seed=0):
    """A dispersed Gaussian trace, slightly tilted, moved by ``shifts`` rows per integration."""
    rng = np.random.default_rng(seed)
    y = np.arange(rows)[:, None]
    x = np.arange(cols)[None, :]
    centre = 30.0 + tilt * (x - cols / 2)
    spectrum = level * (1 + 0.5 * np.sin(x / 40.0))
    cube = np.empty((len(shifts), rows, cols), np.float32)
    for i, s in enumerate(shifts):
        cube[i] = spectrum * np.exp(-0.5 * ((y - centre - s) / sigma) ** 2) + 20.0 + rng.normal(0, noise, (rows, cols))
    return cube


def test_recovers_the_shift_of_every_integration_to_its_error():
    rng = np.random.default_rng(3)
    shifts = np.cumsum(rng.normal(0, 0.02, 50))
    cube = _cube(shifts)
    dq = np.zeros(cube.shape, np.uint32)
    dq[:, 28:33, 100:110] = dqflags.DO_NOT_USE  # a hole in the trace must not pull the centroid
    cube[dq != 0] = 1e6
    out = trace_positions(cube, dq, slice(10, 390))
    moved = out["y"] - out["y"][0]
    pull = (moved - (shifts - shifts[0])) / np.hypot(out["y_err"], out["y_err"][0])
    assert np.max(np.abs(moved - (shifts - shifts[0]))) < 0.01
    assert np.all(np.abs(pull) < 5) and 0.3 < np.std(pull) < 3, np.std(pull)
    # the tilt across the 380 columns broadens the collapsed profile a little
    expected = np.sqrt(1.3**2 + (0.002 * 380) ** 2 / 12)
    assert np.all(np.abs(out["width"] - expected) < 0.02), (out["width"].mean(), expected)


def test_no_signal_gives_nan_not_an_error():
    cube = np.full((3, 20, 30), np.nan, np.float32)
    out = trace_positions(cube)
    assert all(np.all(np.isnan(v)) for v in out.values())
