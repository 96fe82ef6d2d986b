"""Reading uncal exposures and writing stage-1 products (stdatamodels-compatible FITS)."""

from webbflow.io.errors import InputError, ReferenceFileError
from webbflow.io.products import write_rate, write_rateints
from webbflow.io.uncal import (
    SUPPORTED_EXP_TYPES,
    UncalHeaders,
    read_uncal,
    read_uncal_headers,
)

__all__ = [
    "InputError",
    "ReferenceFileError",
    "SUPPORTED_EXP_TYPES",
    "UncalHeaders",
    "read_uncal",
    "read_uncal_headers",
    "write_rate",
    "write_rateints",
]
