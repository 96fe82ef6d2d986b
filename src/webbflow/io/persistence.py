"""Reading and writing the persistence step's per-exposure summaries (``<root>_highpix.ecsv``).

The step itself (:mod:`webbflow.steps.persistence`) is pure; this module is its file edge.  astropy's
table machinery is imported inside the functions: detector1 jobs that do not use persistence skip it.
"""

from __future__ import annotations

import numpy as np

from webbflow.io.errors import InputError
from webbflow.io.files import write_ecsv
from webbflow.steps.persistence import HighPixels

__all__ = ["read_high_pixels", "write_high_pixels"]


def write_high_pixels(path, record):
    """Write ``record`` as an ECSV coordinate list (atomically).

    Parameters
    ----------
    path : path-like
        ``<root>_highpix.ecsv``.
    record : webbflow.steps.persistence.HighPixels
    """
    from astropy.table import Table

    table = Table({"x": record.x, "y": record.y},
                  meta={"DETECTOR": record.detector, "EXPSTART": record.expstart, "EXPEND": record.expend,
                        "comment": "0-based full-frame science-grid coordinates of pixels saturated or above "
                                   "the persistence threshold"})
    write_ecsv(path, table)


def read_high_pixels(path):
    """Read a summary written by :func:`write_high_pixels`.

    Raises
    ------
    webbflow.io.errors.InputError
        When the file lacks DETECTOR, EXPSTART, EXPEND or the x/y columns.
    """
    from astropy.table import Table

    table = Table.read(path, format="ascii.ecsv")
    missing = [k for k in ("DETECTOR", "EXPSTART", "EXPEND") if k not in table.meta]
    missing += [c for c in ("x", "y") if c not in table.colnames]
    if missing:
        raise InputError(path, f"not a high-pixels summary: {', '.join(missing)} missing",
                         "regenerate it with webbflow.io.persistence.write_high_pixels")
    return HighPixels(str(table.meta["DETECTOR"]), float(table.meta["EXPSTART"]), float(table.meta["EXPEND"]),
                      np.asarray(table["x"], np.int32), np.asarray(table["y"], np.int32))
