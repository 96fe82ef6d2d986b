"""Decode reference files into the arrays the steps take.

Each loader returns a dict whose keys are the step keyword names of
``docs/contracts.md`` (``mask_dq``, ``sat_thresh``, ``bias``, ``coeffs`` ...).
Arrays are cut to the science subarray, reference DQ is mapped to JWST flag
values through the file's DQ_DEF table, and the result is cached per process
(read-only, so a step cannot corrupt the cache by modifying it in place).
Only what the exposure needs is read: the subarray's rows, and of the dark
only the planes the ramp reaches, handed over as a :class:`PlaneStack` that
the dark step streams group by group.
"""

import functools
import os

import numpy as np
from astropy.io import fits

from webbflow import dqflags
from webbflow.io.errors import ReferenceFileError
from webbflow.io.files import fits_truncation, read_at
from webbflow.refs.check import Exposure, check_reference

__all__ = ["PlaneStack", "load_reference", "load_references", "map_dq"]


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
        When the mapping is the identity this is ``dq`` itself if it already
        is uint32.
    """
    dq = np.asarray(dq)
    if dq_def is None or len(dq_def["NAME"]) == 0:
        return dq.astype(np.uint32)
    names = [(n.decode() if isinstance(n, bytes) else str(n)).strip().upper() for n in dq_def["NAME"]]
    entries = [(int(value), dqflags.PIXEL.get(name)) for value, name in zip(dq_def["VALUE"], names, strict=True)]
    entries = [(value, flag) for value, flag in entries if value != 0 and flag]
    present = int(np.bitwise_or.reduce(dq.astype(np.uint32, copy=False), axis=None)) if dq.size else 0
    used = [(value, flag) for value, flag in entries if value & present]
    if (all(value == flag and value & (value - 1) == 0 for value, flag in used)
            and sum(value for value, _ in used) == present):
        # Every bit in use is defined, alone, with its JWST value (CRDS
        # references are written so): the mapping is the identity, and a
        # full-frame pass per definition would cost ~50 ms per reference.
        return dq.astype(np.uint32, copy=False)
    out = np.zeros(dq.shape, np.uint32)
    flat = np.flatnonzero(dq)  # flagged pixels are few: map only those
    vals = dq.reshape(-1)[flat]
    mapped = np.zeros(vals.shape, np.uint32)
    for value, flag in entries:
        mapped[(vals & np.uint32(value)) != 0] |= np.uint32(flag)
    out.reshape(-1)[flat] = mapped
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


def open_reference(path, reftype, unreadable_fix, missing=None):
    """Open a FITS reference file: every header now, each array when it is asked for.

    The one opener of the FITS references (detector1's here, stage 2's in :mod:`webbflow.io.cal`): a
    truncated file is refused before astropy opens it (:func:`webbflow.io.files.fits_truncation`).

    Parameters
    ----------
    path : str or os.PathLike
        The reference file.
    reftype : str
        Its reference type (``dark``, ``flat`` ...), named in the messages.
    unreadable_fix : str
        The fix a file that cannot be read is told with.
    missing : tuple of str, optional
        (problem, fix) for a file that does not exist; None: it is told as one that cannot be read.

    Returns
    -------
    astropy.io.fits.HDUList
        The open file (the caller closes it), read rather than memory-mapped.

    Raises
    ------
    ReferenceFileError
        If the file is missing, cannot be read or is truncated, naming the file and the fix.
    """
    try:
        # astropy only warns about a truncated file (a VerifyWarning for a cut header): told before it
        # opens the file, with no warning filter (they are process-wide; references load in threads)
        truncated = fits_truncation(path)
        # read, not memory-mapped: no file pages add to the job's memory, and an array astropy reads
        # is the caller's own (io.cal swaps it to native order in place instead of copying it)
        hdul = None if truncated else fits.open(path, memmap=False, lazy_load_hdus=False)
    except (OSError, ValueError, TypeError, EOFError) as exc:
        if missing is not None and isinstance(exc, FileNotFoundError):
            raise ReferenceFileError(path, *missing) from None
        raise ReferenceFileError(path, f"{reftype} reference cannot be read ({exc})", unreadable_fix) from None
    if truncated:
        raise ReferenceFileError(path, f"{reftype} reference is {truncated}",
                                 f"replace it or name another with overrides.{reftype}")
    return hdul


# BITPIX -> (big-endian on-disk dtype, native dtype, BZERO that means "unsigned")
_RAW = {-32: (">f4", np.float32, 0), -64: (">f8", np.float64, 0),
        32: (">u4", np.uint32, 2**31), 16: (">u2", np.uint16, 2**15)}


class PlaneStack:
    """Planes of a reference cube, read from disk on demand.

    Indexing with an integer or a unit-step slice of planes reads just those
    planes (the science subarray's rows only) into a new native-endian
    array, so a step can stream a 20-frame dark plane by plane instead of
    holding it all; ``np.asarray(stack)`` reads every plane.  Each read
    returns a fresh array, so the cached stack cannot be modified.

    Parameters
    ----------
    path : str
        The FITS file.
    offset : int
        Byte offset of the extension's data.
    disk_dtype : str
        Big-endian dtype on disk (``>f4``, ``>u4`` ...).
    full_shape : tuple of int
        (nplanes, NY, NX) of the extension.
    window : tuple of int
        (y0, x0, ny, nx) of the science subarray.
    nplanes : int
        Planes exposed (the first ``nplanes`` of the file).
    unsigned_zero : int
        BZERO that maps signed storage to unsigned values (0 when unscaled).
    dtype : numpy dtype, optional
        Type of the arrays returned (default: the native form of ``disk_dtype``).
    """

    ndim = 3

    def __init__(self, path, offset, disk_dtype, full_shape, window, nplanes, unsigned_zero=0, dtype=None):
        self.path, self.offset = path, int(offset)
        self.disk_dtype = np.dtype(disk_dtype)
        self.dtype = np.dtype(dtype) if dtype is not None else self.disk_dtype.newbyteorder("=")
        self.full_shape = tuple(full_shape)
        self.window = tuple(window)
        self.unsigned_zero = unsigned_zero
        self.shape = (int(nplanes),) + self.window[2:]

    def __len__(self):
        return self.shape[0]

    def read(self, start, stop, out=None):
        """Planes ``start`` to ``stop - 1`` as an (n, ny, nx) native-endian array.

        ``out``, if given, is filled and returned instead of a new array (a
        streaming reader reuses one buffer: fresh memory is not free).
        """
        _, fy, fx = self.full_shape
        y0, x0, ny, nx = self.window
        row_bytes = fx * self.disk_dtype.itemsize
        shape = (max(stop - start, 0), ny, nx)
        if out is None:
            out = np.empty(shape, self.dtype)
        elif out.shape != shape or out.dtype != self.dtype:
            raise ValueError(f"out must be {shape} {self.dtype}, got {out.shape} {out.dtype}")
        native = self.dtype == self.disk_dtype.newbyteorder("=")
        # Whole rows of the file's own type go straight into ``out`` and are
        # byte-swapped in place; otherwise through one row buffer per call.
        direct = native and nx == fx and out.flags.c_contiguous
        raw = None if direct else np.empty((ny, fx), self.disk_dtype)
        # direct: the plane's own bytes, read as stored
        reads = ((self.offset + (k * fy + y0) * row_bytes, out[k - start].view(self.disk_dtype) if direct else raw)
                 for k in range(start, stop))
        with open(self.path, "rb") as f:
            for plane, disk in zip(out, read_at(f, reads)):
                if direct:
                    disk.byteswap(inplace=True)  # now native: plane holds the values
                else:
                    rows = disk[:, x0:x0 + nx]
                    if self.unsigned_zero and not native:
                        rows = rows ^ rows.dtype.type(self.unsigned_zero)
                    plane[...] = rows  # byte swap (and cast) on copy
                if self.unsigned_zero and native:
                    # unsigned integers stored signed with BZERO = 2**(n-1): flip the
                    # sign bit, in place and in native order (no temporary plane)
                    np.bitwise_xor(plane, plane.dtype.type(self.unsigned_zero), out=plane)
        return out

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            k = range(self.shape[0])[key]
            return self.read(k, k + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step == 1:
                return self.read(start, max(start, stop))
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None):
        data = self.read(0, self.shape[0])
        return data if dtype is None else data.astype(dtype, copy=False)


def _read_cut(hdul, name, window, shape, nplanes=None, lazy=False, dtype=None):
    """Read extension ``name`` cut to the science subarray, in native byte order.

    Only the subarray's rows (and, for cubes, the first ``nplanes`` planes)
    are read, straight into native byte order: decoding a whole full-frame
    reference and byte-swapping it cost seconds and hundreds of MiB.  With
    ``lazy`` a cube comes back as a :class:`PlaneStack`.  Scaled or unusual
    layouts fall back to astropy.  ``window`` is the (y0, x0) that
    :func:`webbflow.refs.check.check_reference` found; it has also checked
    the shapes and that the file holds all the data, so a lazily read dark
    cannot fail half-way through the steps.
    """
    hdu = hdul[name]
    hdr = hdu.header
    hdu_shape = tuple(int(hdr[f"NAXIS{k}"]) for k in range(hdr["NAXIS"], 0, -1))
    y0, x0 = window
    path = hdul.filename()
    ny, nx = shape
    lead = hdu_shape[:-2]
    if nplanes is not None and lead:
        lead = (min(int(nplanes), lead[0]),) + lead[1:]
    raw = _RAW.get(hdr["BITPIX"])
    bzero, bscale = hdr.get("BZERO", 0), hdr.get("BSCALE", 1)
    if raw is None or bscale != 1 or bzero not in (0, raw[2]) or len(lead) > 1:
        data = np.asarray(hdu.data)
        if nplanes is not None and lead:
            data = data[:lead[0]]
        return np.ascontiguousarray(data[..., y0:y0 + ny, x0:x0 + nx])
    offset = hdul.fileinfo(hdul.index_of(name))["datLoc"]
    stack = PlaneStack(path, offset, raw[0],
                       (lead[0] if lead else 1,) + hdu_shape[-2:], (y0, x0, ny, nx),
                       lead[0] if lead else 1, raw[2] if bzero else 0, dtype)
    if lazy and lead:
        return stack
    data = np.asarray(stack)
    return data if lead else data[0]


def _dark_planes(header, readout):
    """Number of dark planes the science ramp uses (all when the step would skip or extrapolate)."""
    dnf, dgap = int(header.get("NFRAMES", 1)), int(header.get("GROUPGAP", 0))
    if readout is None or getattr(readout, "ngroups", None) is None:
        return None
    if dnf > readout.nframes or dgap > readout.groupgap:
        return None
    sci_frames = readout.ngroups * readout.nframes + (readout.ngroups - 1) * readout.groupgap
    return -(-(sci_frames + dgap) // (dnf + dgap))


@functools.lru_cache(maxsize=16)
def _load_cached(path, mtime, reftype, detector, substrt1, substrt2, ny, nx, subarray, ngroups, nframes,
                 groupgap):
    class _R:  # the fields of Readout that cutting needs
        pass

    ro = _R()
    ro.substrt1, ro.substrt2, ro.subarray = substrt1, substrt2, subarray
    ro.ngroups, ro.nframes, ro.groupgap = ngroups, nframes, groupgap
    with open_reference(path, reftype, f"replace the file or set overrides.{reftype}") as hdul:
        header = hdul[0].header
        # REFTYPE, INSTRUME, DETECTOR, completeness, extensions, shapes and the subarray
        # region, from the headers and the file size alone (nothing is read yet).
        window = check_reference(path, hdul, reftype, Exposure(detector, substrt1, substrt2, ny, nx))
        dq_def = _dq_def(hdul)

        def arr(name, dtype=np.float32, nplanes=None, lazy=False):
            try:
                data = _read_cut(hdul, name, window, (ny, nx), nplanes, lazy, dtype)
            except (OSError, ValueError, TypeError, EOFError) as exc:
                raise ReferenceFileError(path, f"{reftype} reference {name} cannot be read ({exc})",
                                         f"replace it or name another with overrides.{reftype}") from None
            return data if isinstance(data, PlaneStack) else data.astype(dtype, copy=False)

        def dq():
            return map_dq(arr("DQ", dtype=np.uint32), dq_def)

        if reftype == "mask":
            out = {"mask_dq": dq()}
        elif reftype == "saturation":
            out = {"sat_thresh": arr("SCI"), "sat_dq": dq()}
        elif reftype == "superbias":
            out = {"bias": arr("SCI"), "bias_dq": dq()}
        elif reftype == "linearity":
            out = {"coeffs": arr("COEFFS"), "lin_dq": dq()}
        elif reftype == "dark":
            # Only the planes the science ramp reaches, read as the dark step
            # streams them (a full-frame 20-frame dark is 336 MB of SCI alone).
            frames = arr("SCI", nplanes=_dark_planes(header, ro if ngroups is not None else None),
                         lazy=True)
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


@functools.lru_cache(maxsize=8)
def _load_sirs_kernel(path, mtime, detector):
    """``{"gamma", "zeta"}`` of ``detector`` from a SIRSKERNEL reference (FITS or ASDF), None where
    it has no entry for the detector (jwst then uses the running median); as jwst's
    ``get_conv_kernel_coeffs``."""
    from stdatamodels.jwst import datamodels

    out = {"gamma": None, "zeta": None}
    try:
        with datamodels.SIRSKernelModel(path) as model:
            for key, value in model.to_flat_dict().items():
                det, _, name = key.partition(".")
                if det.lower() == str(detector).lower() and name in out:
                    out[name] = np.array(value, dtype=np.float64)  # read before the file closes
                    out[name].flags.writeable = False
    except Exception as exc:  # stdatamodels raises many kinds for a bad file
        raise ReferenceFileError(path, f"sirskernel reference cannot be read ({exc})",
                                 "replace the file or set overrides.sirskernel") from None
    return out if out["gamma"] is not None and out["zeta"] is not None else None


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
    if reftype == "sirskernel":
        return _load_sirs_kernel(path, mtime, readout.detector)
    # Only the dark depends on the readout beyond the subarray (how many planes to read).
    timing = ((readout.ngroups, readout.nframes, readout.groupgap) if reftype == "dark"
              else (None, None, None))
    return _load_cached(path, mtime, reftype, readout.detector, readout.substrt1, readout.substrt2,
                        int(shape[0]), int(shape[1]), readout.subarray, *timing)


def load_references(paths, readout, shape, workers=2):
    """Load every reference in ``paths`` (reftype -> path or None).

    Parameters
    ----------
    paths : dict
        reftype -> path or None.
    readout : Readout
    shape : tuple of int
        Science (ny, nx).
    workers : int
        References read at once: reading is mostly file reads and byte-order
        conversions that release the GIL, so two threads overlap well.

    Returns
    -------
    dict
        reftype -> decoded dict from :func:`load_reference`; types whose path
        is None are left out.
    """
    todo = [(t, p) for t, p in paths.items() if p]
    if workers <= 1 or len(todo) <= 1:
        return {t: load_reference(t, p, readout, shape) for t, p in todo}
    from concurrent.futures import ThreadPoolExecutor

    # Biggest first, so the long reads start early and the pool ends together.
    order = sorted(todo, key=lambda tp: -_size(tp[1]))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refs") as pool:
        futures = {t: pool.submit(load_reference, t, p, readout, shape) for t, p in order}
        # .result() re-raises a reader's ReferenceFileError in this thread
        return {t: futures[t].result() for t, _ in todo}


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
