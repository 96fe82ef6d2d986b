"""File plumbing shared by every writer, reader and checksum: atomic outputs, digests, reads/writes at offsets.

Every product, table, lockfile and cache file webbflow writes goes through
:func:`atomic_output`, so an interrupted job never leaves a truncated file
under a final name (Snakemake, a re-run or another job would take it for
complete).  Its temporary folders, detector1's streamed scratch and a
download's partial file are :func:`part_folder` folders named for their
writer (host and pid), so the next writer of the same name removes what a
killed one left (:func:`remove_stale_parts`).  Every checksum (the CRDS lockfile, the cache's "never replace"
check, a downloaded file's sha256) is :func:`file_digests`.  Arrays read or written piecewise at byte offsets of a file (planes of a
FITS cube, rows of every plane of a scratch file) go through
:func:`read_at` and :func:`write_at`.  A FITS file cut short is told before it is opened
(:func:`fits_truncation`).

Standard library only: job adapters import this before any science code.
"""

import contextvars
import glob
import hashlib
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_group", "atomic_output", "atomic_write_text", "file_digests", "fits_truncation", "part_folder",
           "read_at", "remove_stale_parts", "write_at"]

_BLOCK = 1 << 20


@contextmanager
def atomic_output(path):
    """Yield a temporary path for ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file sits in a fresh hidden folder next to ``path``
    (``.<name>.<host>-<pid>.<random>.part/<name>``): the same file system, so the final
    :func:`os.replace` is atomic; the same base name, which stdatamodels
    records as FILENAME and crds reads the mapping type from; and a folder of
    its own, so concurrent writers of one name never share a temporary file.
    Whatever happens, the temporary folder is removed; one left by a writer
    killed with SIGKILL is removed by the next write of the same name
    (:func:`remove_stale_parts`).  Inside :func:`atomic_group` the move waits
    for the end of the group.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination; its folder is created if missing.

    Yields
    ------
    pathlib.Path
        Where to write.  Not writing it is an error on exit (FileNotFoundError).

    Examples
    --------
    >>> with atomic_output("out/table.ecsv") as tmp:  # doctest: +SKIP
    ...     table.write(tmp, format="ascii.ecsv")
    """
    path = Path(path)
    tmpdir = part_folder(path)
    group = _GROUP.get()
    deferred = False
    try:
        yield tmpdir / path.name
        if group is None:
            os.replace(tmpdir / path.name, path)
        elif not (tmpdir / path.name).is_file():
            raise FileNotFoundError(f"{path.name} was not written")
        else:
            group.append((tmpdir, path))
            deferred = True
    finally:
        if not deferred:
            shutil.rmtree(tmpdir, ignore_errors=True)


_GROUP = contextvars.ContextVar("webbflow_atomic_group", default=None)


@contextmanager
def atomic_group():
    """Every :func:`atomic_output` inside the block moves its file into place only when the block ends
    without an error, all of them together; otherwise none (the products of one job, all or nothing).

    The files wait in their temporary folders until the end, then are moved one after another (the
    only moment a kill could leave some of them: a few renames).  Within the block a file written is
    not yet under its final name.

    Examples
    --------
    >>> with atomic_group():  # doctest: +SKIP
    ...     write_rateints(rateints_path, ...)
    ...     write_rate(rate_path, ...)  # a failure here leaves no rateints either
    """
    if _GROUP.get() is not None:  # inside another group: that one commits
        yield
        return
    pending = []
    token = _GROUP.set(pending)
    try:
        yield
        _GROUP.reset(token)
        token = None
        for tmpdir, path in pending:
            os.replace(tmpdir / path.name, path)
    finally:
        if token is not None:
            _GROUP.reset(token)
        for tmpdir, _ in pending:
            shutil.rmtree(tmpdir, ignore_errors=True)


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"
"""The host in a temporary folder's name (with the writer's pid), so that a writer on
another node of a shared file system is never judged by this host's process table."""


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def part_folder(path, folder=None, resume=False):
    """Create the temporary folder of this process's writer of ``path``, after removing stale ones.

    The folder is ``.<name>.<host>-<pid>.<random>.part`` (``name`` is ``path``'s), so that
    :func:`remove_stale_parts` can tell, on the next write of the same name, whether its writer
    is gone.  Used for :func:`atomic_output`'s temporary file, detector1's streamed scratch and a
    download's partial file.

    Parameters
    ----------
    path : str or os.PathLike
        What the folder is for (its final destination, or a name standing for a scratch area).
    folder : str or os.PathLike, optional
        Where the folder goes (created if missing); default ``path``'s own folder.
    resume : bool
        Move the largest ``<name>`` file that a killed writer left in its folder into the new one
        (a partial download to continue) before the stale folders are removed.

    Returns
    -------
    pathlib.Path
        The new, empty (or, with ``resume``, holding the adopted file) folder.
    """
    path = Path(path)
    folder = Path(folder) if folder is not None else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".part", dir=folder))
    try:
        remove_stale_parts(path, folder, adopt=tmpdir / path.name if resume else None)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    return tmpdir


def remove_stale_parts(path, folder=None, adopt=None):
    """Remove the temporary folders of ``path`` that a writer killed with SIGKILL left (:func:`part_folder`).

    Only folders of this very name (``.<name>.<host>-<pid>.<random>.part``)
    written on this host by a process that no longer exists: another live
    writer's folder, another host's, another name's and any folder without a
    writer in its name are kept.

    Parameters
    ----------
    path : str or os.PathLike
        The final destination (or scratch name) whose leftovers to remove.
    folder : str or os.PathLike, optional
        Where to look; default ``path``'s own folder.
    adopt : str or os.PathLike, optional
        Before removing, move the largest file named ``path``'s name found in a stale folder
        here (nothing is moved when none holds one).

    Returns
    -------
    list of pathlib.Path
        The folders removed.
    """
    path = Path(path)
    folder = Path(folder) if folder is not None else path.parent
    prefix = f".{path.name}.{_HOST}-"
    stale = []
    for part in folder.glob(f"{glob.escape(prefix)}*.part"):
        pid, dot, random = part.name[len(prefix):-len(".part")].partition(".")
        # mkdtemp's random part has no dot: a longer name is another target's (".<name>.x.<host>-...")
        if pid.isdigit() and dot and random and "." not in random and not _pid_alive(int(pid)):
            stale.append(part)
    if adopt is not None:
        left = [f for f in (part / path.name for part in stale) if f.is_file()]
        if left:
            os.replace(max(left, key=lambda f: f.stat().st_size), adopt)
    for part in stale:
        shutil.rmtree(part, ignore_errors=True)
    return stale


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_output`).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_ecsv(path, table):
    """Write an astropy table to ``path`` as ECSV, atomically (:func:`atomic_output`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder is created if missing, an existing file is replaced.
    table : astropy.table.Table

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_output(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return Path(path)


def file_digests(path, algorithms=("sha256",)):
    """Hex digests of a file under several hash algorithms, and its size, from one read.

    Parameters
    ----------
    path : str or os.PathLike
    algorithms : sequence of str
        :mod:`hashlib` names (``sha1``, ``sha256``, ...).

    Returns
    -------
    dict
        ``{algorithm: hexdigest, ..., "size": bytes}``.
    """
    digests = {name: hashlib.new(name) for name in algorithms}
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            for digest in digests.values():
                digest.update(block)
            size += len(block)
    return {**{name: digest.hexdigest() for name, digest in digests.items()}, "size": size}


def read_at(file, reads):
    """Fill buffers from an open binary file, each from its own byte offset; yield each once filled.

    Parameters
    ----------
    file : binary file object
        Open for reading.
    reads : iterable of (int, buffer)
        Byte offset and a writable, C-contiguous buffer (a numpy array) to fill from there.  It may
        be lazy and hand the same buffer again once the caller has used what the last read put in it.

    Yields
    ------
    buffer
        Each buffer of ``reads``, filled, in order.

    Raises
    ------
    EOFError
        When the file ends before a buffer is full.

    Examples
    --------
    >>> with open(path, "rb") as f:  # doctest: +SKIP
    ...     for plane in read_at(f, ((base + k * plane.nbytes, plane) for k in range(n))):
    ...         total += plane
    """
    for offset, buffer in reads:
        file.seek(offset)
        nbytes = memoryview(buffer).nbytes
        if file.readinto(buffer) != nbytes:
            raise EOFError(f"{getattr(file, 'name', 'the file')} is truncated: it ends before byte {offset + nbytes}")
        yield buffer


def write_at(file, writes):
    """Write buffers into an open binary file, each at its own byte offset.

    Parameters
    ----------
    file : binary file object
        Open for writing (``r+b`` to write into an existing file).
    writes : iterable of (int, buffer)
        Byte offset and a C-contiguous buffer (a numpy array or its ``.data``) to write there.
    """
    for offset, buffer in writes:
        file.seek(offset)
        file.write(buffer)


_FITS_BLOCK = 2880
_SIZE_KEYS = re.compile(r"(BITPIX|NAXIS\d*|PCOUNT|GCOUNT)$")


def fits_truncation(path):
    """How the FITS file ``path`` is cut short, or None: every HDU's header, and its data as the header
    declares it (BITPIX, NAXISn, PCOUNT, GCOUNT; padded to whole 2880-byte blocks), against the size
    of the file.

    astropy opens such a file with only a warning ("File may have been truncated", or a VerifyWarning
    for a cut header), and a warning can be made an error only with the process-wide, not thread-safe,
    warning filters: the readers (:mod:`webbflow.io.uncal`, :mod:`webbflow.refs.load`) ask this first
    and open only a complete file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    str or None
        ``"truncated: its SCI data needs N bytes but the file has M"``, or ``"truncated or damaged after
        byte N (a header cannot be read; the file has M bytes)"``; None for a file whose HDUs end
        where it ends, or one this check cannot judge (no ``SIMPLE`` card first, a size keyword that
        is not a plain integer): astropy's open then judges it.

    Raises
    ------
    OSError
        When the file cannot be read (FileNotFoundError when it does not exist).
    """
    size = os.path.getsize(path)
    offset, index = 0, 0
    with open(path, "rb") as f:
        while offset < size:
            start, cards, end = offset, {}, False
            f.seek(offset)
            while not end:
                block = f.read(_FITS_BLOCK)
                if index == 0 and offset == 0 and not block.startswith(b"SIMPLE"):
                    return None  # not FITS: astropy says so
                if len(block) < _FITS_BLOCK or (index and offset == start and not block.startswith(b"XTENSION")):
                    return (f"truncated or damaged after byte {start} (a header cannot be read; the file has "
                            f"{size} bytes)")
                offset += _FITS_BLOCK
                for i in range(0, _FITS_BLOCK, 80):
                    key = block[i:i + 8].rstrip().decode("ascii", "replace")
                    if key == "END":
                        end = True
                        break
                    if block[i + 8:i + 10] == b"= " and (key == "EXTNAME" or _SIZE_KEYS.match(key)):
                        cards.setdefault(key, block[i + 10:i + 80].decode("ascii", "replace").split("/")[0].strip())
            try:
                naxis = int(cards.get("NAXIS", 0))
                count = 1 if naxis else 0
                for k in range(1, naxis + 1):
                    count *= int(cards[f"NAXIS{k}"])
                nbytes = abs(int(cards["BITPIX"])) // 8 * int(cards.get("GCOUNT", 1)) * (int(cards.get("PCOUNT", 0))
                                                                                       + count)
            except (KeyError, ValueError):
                return None
            name = cards.get("EXTNAME", "").strip("' ") or ("PRIMARY" if index == 0 else f"HDU {index}")
            if offset + nbytes > size:
                return f"truncated: its {name} data needs {offset + nbytes} bytes but the file has {size}"
            offset += -(-nbytes // _FITS_BLOCK) * _FITS_BLOCK
            if offset > size:
                return f"truncated: its {name} data needs {offset} bytes with its padding but the file has {size}"
            index += 1
    return None
