"""A trivial compiled function whose first call initialises numba.

numba's first jitted call in a process, even one served from the on-disk cache,
loads its typing and lowering registries (importing scipy.linalg among others):
about a second that does not depend on the data.  The detector1 stage calls
:func:`touch` in a background thread while the main thread reads the exposure
and its references, so that this second overlaps I/O instead of adding to it.
"""

from numba import njit

__all__ = ["touch"]


@njit(cache=True)
def touch(x):
    """Return ``x + 1`` (the call is what matters)."""
    return x + 1
