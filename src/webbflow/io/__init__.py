"""Reading uncal exposures and writing stage-1 products (stdatamodels-compatible FITS).

The readers and writers are imported on first use: a job adapter that only needs
:class:`InputError` or :mod:`webbflow.io.files` does not pay for numpy and astropy.
"""

import importlib

from webbflow.io.errors import InputError, ReferenceFileError

__all__ = [
    "InputError",
    "ReferenceFileError",
    "SUPPORTED_EXP_TYPES",
    "UncalHeaders",
    "read_uncal",
    "read_uncal_headers",
    "write_fitopt",
    "write_rate",
    "write_rateints",
]

_LAZY = {"write_fitopt": "products", "write_rate": "products", "write_rateints": "products", "SUPPORTED_EXP_TYPES": "uncal",
         "UncalHeaders": "uncal", "read_uncal": "uncal", "read_uncal_headers": "uncal"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"webbflow.io.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'webbflow.io' has no attribute {name!r}")
