"""Decode reference files into the arrays the steps take.

Each loader returns a dict whose keys are the step keyword names of
``docs/contracts.md`` (``mask_dq``, ``sat_thresh``, ``bias``, ``coeffs`` ...).
Arrays are cut to the science subarray, reference DQ is mapped to JWST flag
values through the file's DQ_DEF table, and the result is cached per process
(read-only, so a step cannot corrupt the cache by modifying it in place).
"""

import functools
import os

import numpy as np
from astropy.io import fits

from webbflow import dqflags
from webbflow.io.errors import ReferenceFileError

__all__ = ["load_reference", "load_references", "map_dq"]


def map_dq(dq, dq_def):
    """Map a reference DQ array to JWST flag values through its DQ_DEF table.

    Parameters
    ----------
    dq : ndarray of int
        Reference DQ as stored in the file.
    dq_def : mapping or structured array or None
        Columns VALUE and NAME (values already unsigned, i.e. TZERO applied);
        None returns ``dq`` as uint32 unchanged.

    Returns
    -------
    ndarray of uint32
        The same pixels flagged with :mod:`webbflow.dqflags` values; bits whose
        name JWST does not know are dropped (as stdatamodels' dynamic mask does).
    """
    dq = np.asarray(dq)
    if dq_def is None or len(dq_def["NAME"]) == 0:
        return dq.astype(np.uint32)
    out = np.zeros(dq.shape, np.uint32)
    names = [(n.decode() if isinstance(n, bytes) else str(n)).strip().upper() for n in dq_def["NAME"]]
    for value, name in zip(dq_def["VALUE"], names, strict=True):
        flag = dqflags.PIXEL.get(name)
        if flag is None or int(value) == 0:
            continue
        out[(dq & np.uint32(value)) != 0] |= np.uint32(flag)
    return out


def _dq_def(hdul):
    """DQ_DEF as {"VALUE": int64 array, "NAME": list}, or None.

    Field access applies the column's TZERO: VALUE is usually stored as int32
    with TZERO=2**31 (unsigned), which ``np.array(table)`` would silently drop.
    """
    if "DQ_DEF" not in hdul or hdul["DQ_DEF"].data is None:
        return None
    table = hdul["DQ_DEF"].data
    return {"VALUE": np.asarray(table["VALUE"], np.int64), "NAME": list(table["NAME"])}


def _cut(path, reftype, array, header, readout, shape):
    """Cut a reference array to the science subarray, or say why it cannot be."""
    ny, nx = shape
    if array.shape[-2:] == (ny, nx):
        return array
    rx = int(header.get("SUBSTRT1", 1))
    ry = int(header.get("SUBSTRT2", 1))
    x0 = readout.substrt1 - rx
    y0 = readout.substrt2 - ry
    if x0 < 0 or y0 < 0 or y0 + ny > array.shape[-2] or x0 + nx > array.shape[-1]:
        raise ReferenceFileError(
            path,
            f"{reftype} reference has shape {array.shape[-2:]} (SUBARRAY={header.get('SUBARRAY')}), "
            f"which does not contain the science data's {(ny, nx)} at "
            f"SUBSTRT1={readout.substrt1}, SUBSTRT2={readout.substrt2} ({readout.subarray})",
            f"give a matching file with overrides.{reftype} in the config",
        )
    return array[..., y0:y0 + ny, x0:x0 + nx]


def _read(path, reftype):
    try:
        hdul = fits.open(path, memmap=False)
        hdul.readall()
    except (OSError, ValueError, TypeError, EOFError) as exc:
        raise ReferenceFileError(path, f"{reftype} reference cannot be read ({exc})",
                                 f"replace the file or set overrides.{reftype}") from None
    return hdul


def _extension(hdul, path, reftype, name):
    if name not in hdul or hdul[name].data is None:
        raise ReferenceFileError(path, f"{reftype} reference has no {name} extension",
                                 f"give a CRDS-format {reftype} file with overrides.{reftype}")
    return hdul[name].data


@functools.lru_cache(maxsize=16)
def _load_cached(path, mtime, reftype, substrt1, substrt2, ny, nx, subarray):
    class _R:  # the fields of Readout that cutting needs
        pass

    ro = _R()
    ro.substrt1, ro.substrt2, ro.subarray = substrt1, substrt2, subarray
    with _read(path, reftype) as hdul:
        header = hdul[0].header
        dq_def = _dq_def(hdul)

        def arr(name, dtype=np.float32):
            return _cut(path, reftype, np.asarray(_extension(hdul, path, reftype, name), dtype), header, ro, (ny, nx))

        def dq():
            if "DQ" not in hdul or hdul["DQ"].data is None:
                return np.zeros((ny, nx), np.uint32)
            return map_dq(_cut(path, reftype, np.asarray(hdul["DQ"].data), header, ro, (ny, nx)), dq_def)

        if reftype == "mask":
            out = {"mask_dq": dq()}
        elif reftype == "saturation":
            out = {"sat_thresh": arr("SCI"), "sat_dq": dq()}
        elif reftype == "superbias":
            out = {"bias": arr("SCI"), "bias_dq": dq()}
        elif reftype == "linearity":
            out = {"coeffs": arr("COEFFS"), "lin_dq": dq()}
        elif reftype == "dark":
            frames = arr("SCI")
            if frames.ndim == 2:
                frames = frames[np.newaxis]
            out = {"dark_frames": frames, "dark_dq": dq(),
                   "dark_nframes": int(header.get("NFRAMES", 1)),
                   "dark_groupgap": int(header.get("GROUPGAP", 0))}
        elif reftype == "gain":
            gainfact = header.get("GAINFACT")
            out = {"gain": arr("SCI"), "gain_factor": None if gainfact is None else float(gainfact)}
        elif reftype == "readnoise":
            out = {"readnoise": arr("SCI")}
        else:
            raise ValueError(f"unknown reference type {reftype!r}")
    for value in out.values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return out


def load_reference(reftype, path, readout, shape):
    """Read one reference file, cut to the science subarray.

    Parameters
    ----------
    reftype : str
        ``mask``, ``saturation``, ``superbias``, ``linearity``, ``dark``,
        ``gain`` or ``readnoise``.
    path : str or os.PathLike
        The reference file (CRDS format).
    readout : Readout
        The exposure's readout (SUBSTRT1/2 locate the subarray).
    shape : tuple of int
        Science (ny, nx).

    Returns
    -------
    dict
        Step keyword -> value (read-only arrays); see the module docstring.

    Raises
    ------
    ReferenceFileError
        If the file cannot be read, lacks an array, or its shape cannot be
        cut to the science data (names the file, both shapes and the fix).
    """
    path = os.fspath(path)
    try:
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise ReferenceFileError(path, f"{reftype} reference not found",
                                 f"check references.dir or overrides.{reftype}") from None
    return _load_cached(path, mtime, reftype, readout.substrt1, readout.substrt2,
                        int(shape[0]), int(shape[1]), readout.subarray)


def load_references(paths, readout, shape):
    """Load every reference in ``paths`` (reftype -> path or None).

    Returns
    -------
    dict
        reftype -> decoded dict from :func:`load_reference`; types whose path
        is None are left out.
    """
    return {t: load_reference(t, p, readout, shape) for t, p in paths.items() if p}
