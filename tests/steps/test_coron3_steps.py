"""coron3 step functions on small arrays: median replacement quirks, coron outlier detection, stack_refs.

The values follow jwst 3.0's code (coron-algorithms.md §3.2-3.4); the whole chain is compared with
jwst itself in tests/test_parity_coron3.py.
"""

import numpy as np
import pytest

from webbflow import dqflags
from webbflow.io.cal import CalArrays
from webbflow.steps.median_replace import median_replace
from webbflow.steps.outlier_detection import coron_outlier_detection
from webbflow.steps.stack_refs import stack_refs


def test_median_replace_follows_jwst_quirks():
    rng = np.random.default_rng(1)
    data = rng.normal(100, 5, (1, 6, 6)).astype(np.float32)
    dq = np.zeros(data.shape, np.uint32)
    dq[0, 0, 3] = dqflags.DO_NOT_USE  # row 0: empty window in jwst -> 0
    dq[0, 5, 5] = dqflags.DO_NOT_USE  # last row and column: a true median
    data[0, 2, 2] = np.nan  # NaN without a flag, replaced first ...
    dq[0, 3, 3] = dqflags.DO_NOT_USE  # ... then counts as good in this pixel's window
    dq[0, 4, 1] = dqflags.HOT  # not a bad bit: kept
    before = data.copy()
    assert median_replace(data, dq, 3, dqflags.DO_NOT_USE) == 4
    assert data[0, 0, 3] == 0.0
    assert data[0, 5, 5] == np.median(before[0, 4:6, 4:6][[0, 0, 1], [0, 1, 0]])
    first = np.median(np.delete(before[0, 1:4, 1:4].ravel(), [4, 8]))  # (2,2) itself and flagged (3,3) out
    assert data[0, 2, 2] == first
    # (3,3)'s window holds the replaced (2,2) as a good pixel (write-through), not (3,3) itself
    assert data[0, 3, 3] == np.median(np.delete(data[0, 2:5, 2:5].ravel(), 4))
    assert data[0, 4, 1] == before[0, 4, 1]
    assert dq[0, 0, 3] == dqflags.DO_NOT_USE  # DQ unchanged


def test_coron_outliers_flag_the_cosmic_ray_only():
    rng = np.random.default_rng(2)
    shape = (5, 20, 20)
    sigma = 1.0
    data = (50 + rng.normal(0, sigma, shape)).astype(np.float32)
    data[3, 7, 9] += 40.0  # a cosmic ray
    dq = np.zeros(shape, np.uint32)
    dq[:, 2, 2] = dqflags.DO_NOT_USE  # a dead pixel: NaN afterwards, not an outlier
    arrays = CalArrays(data=data, dq=dq, err=np.full(shape, sigma, np.float32),
                       var_poisson=np.zeros(shape, np.float32), var_rnoise=np.ones(shape, np.float32))
    assert coron_outlier_detection(arrays) == 1
    outliers = (arrays.dq & dqflags.OUTLIER) != 0
    assert outliers[3, 7, 9] and outliers.sum() == 1
    assert np.isnan(arrays.data[3, 7, 9]) and np.isnan(arrays.var_rnoise[3, 7, 9])
    assert np.all(np.isnan(arrays.data[:, 2, 2]))


def test_stack_refs_concatenates_in_order_and_refuses_other_sizes():
    class Member:
        def __init__(self, n, value, shape=(4, 5)):
            self.data = np.full((n, *shape), value, np.float32)
            self.err = np.full((n, *shape), value / 10, np.float32)
            self.dq = np.full((n, *shape), n, np.uint32)

    data, err, dq = stack_refs([Member(2, 1.0), Member(3, 2.0)])
    assert data.shape == (5, 4, 5) and data.dtype == np.float32 and dq.dtype == np.uint32
    assert np.all(data[:2] == 1.0) and np.all(data[2:] == 2.0) and np.all(err[2:] == np.float32(0.2))
    with pytest.raises(ValueError, match="same|must be"):
        stack_refs([Member(2, 1.0), Member(1, 1.0, (4, 6))])
