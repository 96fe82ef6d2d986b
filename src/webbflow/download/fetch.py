"""Download one file over HTTP(S): retries, resume with HTTP Range, size and checksum checks.

The file is written in a hidden folder beside ``<dest>`` named for its writer
(``.<name>.<host>-<pid>.<random>.part/<name>``, :func:`webbflow.io.files.part_folder`)
and renamed only once verified, so a reader never sees a partial file.  A
download that failed or was killed leaves its partial file there; the next
download of the same name, once that process is gone, takes it over and resumes
from its bytes (``Range: bytes=N-``; a server that ignores the Range header and
answers 200 makes us start over) and removes the folder, so nothing is left
behind once the file has arrived; a concurrent download of the same name keeps
its own.  A file whose size or checksum is wrong is deleted and refused.
"""

import http.client
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from webbflow.io.errors import InputError
from webbflow.io.files import file_digests, part_folder, remove_stale_parts

__all__ = ["DownloadError", "download", "verify_file"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class DownloadError(InputError):
    """A file could not be downloaded, or what arrived is not the file listed."""


def verify_file(path, size=None, sha256=None, fits_checksum=True):
    """Check a downloaded file; return None when good, else the reason (str).

    Parameters
    ----------
    path : path-like
    size : int, optional
        Expected size in bytes (MAST's product list ``size``).
    sha256 : str, optional
        Expected sha256 hex digest.
    fits_checksum : bool
        For ``.fits`` files, verify the FITS ``DATASUM``/``CHECKSUM`` keywords
        of every HDU that has them (MAST products carry them).
    """
    path = Path(path)
    actual = path.stat().st_size
    if size is not None and actual != int(size):
        return f"size {actual} bytes, expected {int(size)}"
    if sha256:
        digest = file_digests(path)["sha256"]
        if digest != sha256.lower():
            return f"sha256 {digest[:12]}…, expected {sha256[:12]}…"
    if fits_checksum and path.name.endswith((".fits", ".fits.part")):
        from astropy.io import fits

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with fits.open(path, checksum=True, memmap=False) as hdul:
                    hdul.readall()
            except (OSError, ValueError) as exc:
                return f"not a readable FITS file ({exc})"
        bad = [str(w.message) for w in caught if "checksum" in str(w.message).lower()
               or "datasum" in str(w.message).lower()]
        if bad:
            return f"FITS checksum mismatch ({bad[0]})"
    return None


def _fetch(url, part, timeout):
    """Append the rest of ``url`` to ``part``.

    Returns
    -------
    status : int
        HTTP status.
    total : int or None
        The size of the whole file as the server announced it (Content-Range
        total, or Content-Length of a 200), None when it did not say.
    """
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # asked past the end: what we have is the whole file
            return 416, offset
        raise
    with response:
        status = response.status
        total = None
        if status == 206 and "/" in (response.headers.get("Content-Range") or ""):
            tail = response.headers["Content-Range"].rsplit("/", 1)[1]
            total = int(tail) if tail.isdigit() else None
        elif status == 200 and response.headers.get("Content-Length", "").isdigit():
            total = int(response.headers["Content-Length"])
        mode = "ab" if offset and status == 206 else "wb"  # 200 to a Range request: whole file again
        with open(part, mode) as fh:
            while block := response.read(_CHUNK):
                fh.write(block)
    return status, total


def download(url, dest, size=None, sha256=None, retries=3, timeout=60, backoff=2.0):
    """Download ``url`` to ``dest`` (resuming the partial file an earlier, ended try left).

    Parameters
    ----------
    url : str
    dest : path-like
        Final path; written only when verified.
    size : int, optional
        Expected size (bytes).
    sha256 : str, optional
        Expected checksum.
    retries : int
        Further attempts after a network failure (each resumes); bounded.
    timeout : float
        Seconds per connection.
    backoff : float
        Seconds before the first retry, doubled after each.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    DownloadError
        When every attempt failed, or the file's size or checksum is wrong
        (the bad file is deleted).
    """
    dest = Path(dest)
    if dest.exists() and verify_file(dest, size, sha256) is None:
        remove_stale_parts(dest)
        log.info("%s already present and verified", dest.name)
        return dest
    tmpdir = part_folder(dest, resume=True)
    part = tmpdir / dest.name
    legacy = dest.with_name(dest.name + ".part")  # where earlier versions kept it
    if legacy.is_file() and not part.exists():
        os.replace(legacy, part)
    if size is not None and part.exists() and part.stat().st_size > int(size):
        part.unlink()  # longer than the file: not a prefix of it
    try:
        return _download(url, dest, part, size, sha256, retries, timeout, backoff)
    finally:
        if not part.exists() or not part.stat().st_size:
            shutil.rmtree(tmpdir, ignore_errors=True)
        # else a partial transfer stays for the next run to resume (this process will be gone by then)


def _download(url, dest, part, size, sha256, retries, timeout, backoff):
    last = None
    for attempt in range(int(retries) + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            status, total = _fetch(url, part, timeout)
            log.info("%s: HTTP %s, %d bytes", dest.name, status, part.stat().st_size if part.exists() else 0)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            last = exc
            log.warning("%s: attempt %d of %d failed (%s)", dest.name, attempt + 1, int(retries) + 1, exc)
            if isinstance(exc, urllib.error.HTTPError) and exc.code in (401, 403, 404):
                break  # retrying will not make it appear
            continue
        have = part.stat().st_size
        complete = total is not None and have >= total  # the server has nothing more to send
        if size is not None and have < int(size) and not complete:
            last = f"connection closed after {have} of {int(size)} bytes"
            log.warning("%s: %s; resuming", dest.name, last)
            continue
        problem = verify_file(part, size, sha256)
        if problem:
            part.unlink()
            raise DownloadError(dest, f"downloaded file refused: {problem}",
                                f"download it again; if it persists the listing ({url}) or the archive is wrong")
        os.replace(part, dest)
        return dest
    raise DownloadError(dest, f"download of {url} failed after {int(retries) + 1} attempts ({last})",
                        "check the network or download.mast_url, then run again (partial data is resumed)")
