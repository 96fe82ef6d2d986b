"""outlier_detection for time series (jwst 3.0 mode "tso"): a rolling median in time.

Truth: cosmic-ray hits injected into a noisy cube with a transit-like trend are flagged and
nothing else is (at 5 sigma on ~1e5 pixels, Gaussian noise gives < 1 false flag).  Parity: the
same cube through jwst 3.0's ``jwst.outlier_detection.tso.detect_outliers`` in the oracle venv
gives identical DQ and NaNs (both the rolling-window and the whole-cube-median branches).
"""

import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from webbflow import dqflags
from webbflow.steps.outlier_detection import moving_median, tso_outlier_detection


def _cube(seed=3, nints=60, ny=12, nx=40, n_hits=25):
    rng = np.random.default_rng(seed)
    t = np.linspace(-1, 1, nints)
    trend = 1.0 - 0.01 * (np.abs(t) < 0.3)  # a 1 % transit: the rolling median follows it
    signal = 100.0 + 50.0 * rng.random((ny, nx))
    err = np.sqrt(signal)[None] * np.ones((nints, 1, 1))
    data = signal[None] * trend[:, None, None] + rng.normal(0, 1, (nints, ny, nx)) * err
    dq = np.zeros(data.shape, np.uint32)
    hits = (rng.integers(0, nints, n_hits), rng.integers(0, ny, n_hits), rng.integers(0, nx, n_hits))
    data[hits] += 40 * err[hits]
    dead = (slice(None), 5, 7)  # a bad pixel through the whole series: NaN and DO_NOT_USE
    data[dead] = np.nan
    dq[dead] = dqflags.DO_NOT_USE
    arrays = SimpleNamespace(data=data.astype(np.float32), err=err.astype(np.float32), dq=dq,
                             var_poisson=(err ** 2).astype(np.float32), var_rnoise=np.zeros_like(data, np.float32))
    return arrays, hits


def test_moving_median_matches_numpy_with_edges_and_nan_propagation():
    rng = np.random.default_rng(1)
    cube = rng.normal(size=(17, 3, 4)).astype(np.float32)
    cube[6, 1, 2] = np.nan
    for w in (4, 5):
        got = moving_median(cube, w)
        hw = w // 2
        for s in range(17 - w + 1):
            want = np.empty(cube.shape[1:])  # float64, as jwst stores np.median into it
            np.median(cube[s:s + w], axis=0, out=want)
            np.testing.assert_array_equal(got[s + hw], want)
        np.testing.assert_array_equal(got[:hw], np.broadcast_to(got[hw], got[:hw].shape))
        assert got.dtype == np.float64
        # the window holding the NaN has no median
        assert np.isnan(got[6, 1, 2]) and np.isfinite(got[0, 1, 2])


@pytest.mark.parametrize("w", [4, 5, 25])
def test_moving_median_numpy_path_is_the_numba_kernel_bit_for_bit(w, monkeypatch):
    # small cubes take the numpy sort (no numba import), big ones the kernel: the same numbers,
    # with NaN windows, infinities and ties
    from webbflow.steps import outlier_detection as od

    rng = np.random.default_rng(5)
    cube = rng.normal(size=(31, 9, 11)).astype(np.float32)
    cube[3, 2, 4] = cube[20, 8, 0] = np.nan
    cube[10, 1, 1], cube[12, 1, 1] = np.inf, -np.inf
    cube[:, 4, 5] = np.round(cube[:, 4, 5])  # ties
    small = moving_median(cube, w)
    monkeypatch.setattr(od, "_NUMPY_MEDIAN_VALUES", 0)
    kernel = moving_median(cube, w)
    assert np.isnan(small).any() and np.isfinite(small).any()
    np.testing.assert_array_equal(small, kernel)


def test_injected_hits_are_flagged_and_nothing_else():
    arrays, hits = _cube()
    n = tso_outlier_detection(arrays, rolling_window_width=25)
    flagged = (arrays.dq & dqflags.OUTLIER) != 0
    truth = np.zeros_like(flagged)
    truth[hits] = True
    truth[:, 5, 7] = False  # the dead pixel has no median: never flagged as an outlier
    assert n == flagged.sum()
    assert np.array_equal(flagged, truth), f"{(flagged & ~truth).sum()} false, {(truth & ~flagged).sum()} missed"
    assert np.all(np.isnan(arrays.data[flagged])) and np.all((arrays.dq[flagged] & dqflags.DO_NOT_USE) != 0)


_ORACLE_SCRIPT = """
import sys, numpy as np
from stdatamodels.jwst.datamodels import CubeModel
from jwst.outlier_detection.tso import detect_outliers
d = np.load(sys.argv[1])
m = CubeModel(data=d["data"], err=d["err"], dq=d["dq"], var_poisson=d["var_poisson"], var_rnoise=d["var_rnoise"])
detect_outliers(m, False, "~DO_NOT_USE", 0.7, int(sys.argv[3]), 5.0, None)
np.savez(sys.argv[2], data=m.data, dq=m.dq, err=m.err)
"""


@pytest.mark.parity
@pytest.mark.parametrize("window", [25, 100])  # rolling median; window >= nints: whole-cube median
def test_parity_with_jwst_tso_outlier_detection(tmp_path, window, oracle):
    python, _ = oracle
    arrays, _ = _cube(seed=11)
    np.savez(tmp_path / "in.npz", **vars(arrays))
    script = tmp_path / "oracle.py"
    script.write_text(_ORACLE_SCRIPT)
    subprocess.run([str(python), str(script), str(tmp_path / "in.npz"), str(tmp_path / "out.npz"), str(window)],
                   check=True, capture_output=True, timeout=300)
    theirs = np.load(tmp_path / "out.npz")
    tso_outlier_detection(arrays, rolling_window_width=window)
    np.testing.assert_array_equal(arrays.dq, theirs["dq"])
    np.testing.assert_array_equal(np.isnan(arrays.data), np.isnan(theirs["data"]))
    np.testing.assert_array_equal(arrays.data, theirs["data"])


def test_whole_cube_median_is_numpys_nanmedian():
    """The whole-cube median (windows not narrower than the cube) is np.nanmedian(axis=0) bit for bit
    but the sign of a zero median: NaN lanes, all-NaN lanes, ties, +-inf, odd and even counts."""
    import warnings

    from webbflow.steps.outlier_detection import _nanmedian_axis0

    rng = np.random.default_rng(5)
    for trial in range(60):
        dtype = np.float32 if trial % 3 else np.float64
        a = rng.normal(size=(int(rng.integers(1, 40)), int(rng.integers(1, 9)), int(rng.integers(1, 50))))
        a = (np.round(a * 2) / 2 if trial % 2 else a).astype(dtype)
        for value, share in ((np.nan, 0.3 * rng.random()), (np.inf, 0.05), (-np.inf, 0.05), (-0.0, 0.1)):
            a[rng.random(a.shape) < share] = value
        a[:, rng.random(a.shape[1:]) < 0.1] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(a, axis=0)
        got = _nanmedian_axis0(a)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        zero = expected == 0
        assert np.array_equal(got[zero], expected[zero]), trial
        assert got[~zero].tobytes() == expected[~zero].tobytes(), trial


@pytest.mark.parametrize("w", [7, 60])
def test_blocks_of_rows_flag_as_the_whole_cube(w, monkeypatch):
    """The whole-cube median and the flagging run on blocks of rows to bound their temporaries: with
    blocks of one row, three rows, and the whole cube, the DQ, data and counts are the same."""
    from copy import deepcopy

    from webbflow.steps import outlier_detection as od

    results = []
    for values in (60 * 40, 60 * 40 * 3, 1 << 30):  # rows per block: 1, 3 (a short last block), all 12
        monkeypatch.setattr(od, "_BLOCK_VALUES", values)
        arrays, _ = _cube()
        arrays = deepcopy(arrays)
        count = tso_outlier_detection(arrays, rolling_window_width=w)
        results.append((count, arrays.dq.copy(), arrays.data.tobytes(), arrays.err.tobytes()))
    assert len(od._row_blocks((60, 12, 40))) == 1 and len(results) == 3
    assert results[0][0] > 20  # the hits are found
    for count, dq, data, err in results[1:]:
        assert count == results[0][0]
        np.testing.assert_array_equal(dq, results[0][1])
        assert data == results[0][2] and err == results[0][3]
