"""numba kernel of the uncal reader: a raw SCI plane (big-endian int16, BZERO = 32768) to float32 in one pass.

numpy needs three (the byte swap of the sign-bit flip, the flip, then the byte swap of the cast), each
over the whole plane: for a full frame 10 x 2048^2 that is ~0.4 s of a ~2 s detector1 job.  Here each
pixel is swapped, flipped and converted once; the values are the same integers, so the float32 ramp is
identical.
"""

import sys

import numpy as np

from webbflow.steps._jit import njit

__all__ = ["NATIVE_LITTLE", "uint16_be_to_float32"]

NATIVE_LITTLE = sys.byteorder == "little"
"""The kernel reads the big-endian bytes as native little-endian uint16 and swaps them itself."""


@njit(cache=True)
def uint16_be_to_float32(swapped, out):
    """``out[...] = (byteswap(swapped) ^ 0x8000)`` as float32 (a little-endian host's view of the raw bytes).

    Parameters
    ----------
    swapped : ndarray, uint16, (ny, nx)
        The plane's bytes as stored (big-endian int16 with BZERO = 32768), viewed as native uint16.
    out : ndarray, float32, (ny, nx)
        Filled with the plane's uint16 values.
    """
    ny, nx = swapped.shape
    for y in range(ny):
        for x in range(nx):
            v = swapped[y, x]
            # int16 + 32768 as uint16 is the int16's bit pattern with the sign bit flipped
            out[y, x] = np.float32(np.uint16((v >> np.uint16(8)) | (v << np.uint16(8))) ^ np.uint16(0x8000))
