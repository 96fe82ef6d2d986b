"""Sorting networks shared by the vectorised jump and ramp_fit kernels.

Both kernels take medians of many small columns at once by applying a fixed
sequence of compare-exchanges to whole rows of a buffer (branch-free, so LLVM
vectorises it); the sequence depends only on the number of values.
"""

import numpy as np

__all__ = ["sorting_network"]


def sorting_network(n):
    """Comparator pairs ``(lo, hi)`` of a sorting network for ``n`` elements.

    Batcher's odd-even merge sort for the next power of two, with every
    comparator that touches an index >= ``n`` dropped: that is valid when the
    missing elements are taken as +inf, since such a comparator never moves
    anything. Applying ``a, b = min(a, b), max(a, b)`` for each pair in order
    sorts ``n`` values ascending.

    Parameters
    ----------
    n : int
        Number of elements.

    Returns
    -------
    ndarray, int64, (ncomparators, 2)
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        lo, hi = i + j, i + j + k
                        if hi < n:
                            pairs.append((lo, hi))
            k //= 2
        p *= 2
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)
