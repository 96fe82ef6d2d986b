"""JWST data-quality bit values (stdatamodels ``dqflags``), as plain integers.

PIXELDQ/DQ arrays are uint32 and use all of these; GROUPDQ arrays are uint8 and
use only the group flags (bits 0-7).
"""

DO_NOT_USE = 1
SATURATED = 2
JUMP_DET = 4
DROPOUT = 8
OUTLIER = 16
PERSISTENCE = 32
AD_FLOOR = 64
CHARGELOSS = 128
UNRELIABLE_ERROR = 256
NON_SCIENCE = 512
DEAD = 1024
HOT = 2048
WARM = 4096
LOW_QE = 8192
RC = 16384
TELEGRAPH = 32768
NONLINEAR = 65536
BAD_REF_PIXEL = 131072
NO_FLAT_FIELD = 262144
NO_GAIN_VALUE = 524288
NO_LIN_CORR = 1048576
NO_SAT_CHECK = 2097152
UNRELIABLE_BIAS = 4194304
UNRELIABLE_DARK = 8388608
UNRELIABLE_SLOPE = 16777216
UNRELIABLE_FLAT = 33554432
OPEN = 67108864
ADJ_OPEN = 134217728
FLUX_ESTIMATED = 268435456
MSA_FAILED_OPEN = 536870912
OTHER_BAD_PIXEL = 1073741824
REFERENCE_PIXEL = 2147483648

PIXEL = {
    name: value
    for name, value in globals().items()
    if name.isupper() and isinstance(value, int)
}
"""Mnemonic -> value for every pixel flag."""

GROUP = {
    name: PIXEL[name]
    for name in ("DO_NOT_USE", "SATURATED", "JUMP_DET", "DROPOUT",
                 "PERSISTENCE", "AD_FLOOR", "CHARGELOSS")
}
"""Mnemonic -> value for the flags allowed in GROUPDQ."""


def to_mnemonics(value):
    """Return the list of flag names set in an integer DQ value."""
    return [name for name, bit in PIXEL.items() if value & bit]


def good_pixel_mask(dq, good_bits=None):
    """True where a pixel may be used: none of the *bad* bits (complement of ``good_bits``) is set.

    jwst's ``good_bits='~DO_NOT_USE+NON_SCIENCE'`` means "every flag is fine
    except DO_NOT_USE and NON_SCIENCE", i.e. ``good_bits`` here as an integer
    whose cleared bits are the bad ones (default: that).
    """
    import numpy as np

    if good_bits is None:
        good_bits = ~np.uint32(DO_NOT_USE | NON_SCIENCE)
    bad = ~np.uint32(good_bits)
    return (np.asarray(dq, np.uint32) & bad) == 0
