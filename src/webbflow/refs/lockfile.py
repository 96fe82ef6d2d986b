"""The CRDS lockfile: which reference files each exposure used, with checksums.

``results/crds.lock.json`` is written by the prefetch step, before any
per-exposure job runs.  It holds the context, the crds version, every
mapping of the context (sha1) and every reference file (sha1, sha256, size)
and, per exposure, the file chosen for each reference type.  That is enough
to rebuild the exact cache on an air-gapped node (:func:`export_cache`) and
to refuse a reference whose bytes changed since (:func:`verify_reference`).
"""

import json
import shutil
from pathlib import Path

from webbflow.io.errors import ReferenceFileError
from webbflow.io.files import atomic_output, atomic_write_text, file_digests

__all__ = ["FORMAT", "build_lockfile", "export_cache", "file_checksums", "locked_provenance", "read_lockfile",
           "verify_reference", "write_lockfile"]

FORMAT = "webbflow-crds-lock/1"


def file_checksums(path):
    """sha1, sha256 (hex) and size of a file, read once."""
    return file_digests(path, ("sha1", "sha256"))


def build_lockfile(selections, context, cache, crds_version, mappings=(), reftypes=None):
    """The lockfile content for a run.

    Parameters
    ----------
    selections : dict
        Exposure root name -> {reftype: reference path or None}.
    context : str
        The resolved ``.pmap``.
    cache : path-like
        The CRDS cache the files are in (mappings under ``mappings/jwst``).
    crds_version : str
    mappings : iterable of str
        Mapping names of the context (pmap, imaps, rmaps).
    reftypes : dict, optional
        Reference file name -> reftype (else taken from the selections).

    Returns
    -------
    dict
        JSON-ready: ``format``, ``observatory``, ``context``, ``crds_version``,
        ``mappings`` {name: sha1}, ``references`` {name: {reftype, sha1,
        sha256, size[, override path]}}, ``exposures`` {root: {context, references: {reftype:
        {file, sha256} or null}}}.
    """
    files = {}
    exposures = {}
    refdir = (Path(cache) / "references" / "jwst" / "nircam").resolve()
    for root in sorted(selections):
        refs = {}
        for reftype, path in sorted(selections[root].items()):
            if not path:
                refs[reftype] = None
                continue
            name = Path(path).name
            if name not in files:
                files[name] = {"reftype": reftype, **file_checksums(path)}
                if Path(path).resolve().parent != refdir:
                    files[name]["override"] = str(Path(path).resolve())  # a user file, not from CRDS
            refs[reftype] = {"file": name, "sha256": files[name]["sha256"]}
        exposures[root] = {"context": context, "references": refs}
    mapdir = Path(cache) / "mappings" / "jwst"
    maps = {name: file_checksums(mapdir / name)["sha1"] for name in sorted(mappings)}
    return {"format": FORMAT, "observatory": "jwst", "context": context, "crds_version": crds_version,
            "cache": str(Path(cache).resolve()),
            "mappings": maps, "references": dict(sorted(files.items())), "exposures": exposures}


def write_lockfile(path, lock):
    """Write ``lock`` as JSON atomically (temp file + rename)."""
    return atomic_write_text(path, json.dumps(lock, indent=1, sort_keys=True) + "\n")


def read_lockfile(path):
    """Read and check a lockfile; raise ReferenceFileError naming the file if it is not one."""
    try:
        lock = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ReferenceFileError(path, f"cannot read the CRDS lockfile ({exc})",
                                 "give the crds.lock.json written by a webbflow run") from None
    if not isinstance(lock, dict) or lock.get("format") != FORMAT:
        raise ReferenceFileError(path, f"not a webbflow CRDS lockfile (format {FORMAT} expected)",
                                 "give the crds.lock.json written by a webbflow run")
    return lock


def verify_reference(path, lock, name=None):
    """Refuse a reference file whose checksum differs from the lockfile's.

    Parameters
    ----------
    path : path-like
        The file to check.
    lock : dict
        :func:`read_lockfile` content.
    name : str, optional
        The name the lockfile knows it by (default the file's name).

    Raises
    ------
    ReferenceFileError
        If the lockfile does not list the file, or its sha256 differs.
    """
    name = name or Path(path).name
    entry = lock["references"].get(name)
    if entry is None:
        raise ReferenceFileError(path, f"{name} is not in the CRDS lockfile (context {lock['context']})",
                                 "re-run the prefetch (delete the lockfile) or restore the locked cache")
    if not Path(path).is_file():
        raise ReferenceFileError(path, f"locked reference {name} is missing",
                                 "restore it with `webbflow crds export LOCKFILE OUTDIR` from a complete cache")
    actual = file_checksums(path)["sha256"]
    if actual != entry["sha256"]:
        raise ReferenceFileError(path, f"sha256 {actual[:12]}… does not match the lockfile's {entry['sha256'][:12]}…; "
                                 "the reference changed since it was locked",
                                 "restore the original file, or delete the lockfile to re-select and re-lock")


def _copy_verified(src, dest, checksum, kind):
    if not Path(src).is_file():
        raise ReferenceFileError(src, f"{kind} {Path(src).name} listed in the lockfile is missing from the cache",
                                 "export from the cache the lockfile was written with (--cache)")
    if file_checksums(src)[kind_key(kind)] != checksum:
        raise ReferenceFileError(src, f"{kind} {Path(src).name} does not match its lockfile checksum",
                                 "export from the cache the lockfile was written with (--cache)")
    with atomic_output(dest) as tmp:
        shutil.copyfile(src, tmp)


def kind_key(kind):
    """The checksum field the lockfile keeps for ``kind`` (mapping: sha1, reference: sha256)."""
    return "sha1" if kind == "mapping" else "sha256"


def export_cache(lockfile, outdir, cache=None):
    """Copy exactly the locked mappings and references into a new CRDS cache.

    Parameters
    ----------
    lockfile : path-like
        ``crds.lock.json``.
    outdir : path-like
        New cache root; use it as ``CRDS_PATH`` (serverless, ``CRDS_MODE=local``).
    cache : path-like, optional
        The cache to copy from; default the one the lockfile was written from.

    Returns
    -------
    pathlib.Path
        ``outdir``.

    Raises
    ------
    ReferenceFileError
        For a listed file that is missing or whose checksum differs.
    """
    from webbflow.refs.crds_cache import write_server_config

    lock = read_lockfile(lockfile)
    if not (cache or lock.get("cache")):
        raise ReferenceFileError(lockfile, "the lockfile does not name the cache it was written from",
                                 "give the cache to copy from (--cache)")
    cache, outdir = Path(cache or lock["cache"]), Path(outdir)
    for name, sha1 in lock["mappings"].items():
        _copy_verified(cache / "mappings" / "jwst" / name, outdir / "mappings" / "jwst" / name, sha1, "mapping")
    for name, entry in lock["references"].items():
        _copy_verified(Path(entry["override"]) if entry.get("override") else cache / "references" / "jwst" / "nircam" / name,
                       outdir / "references" / "jwst" / "nircam" / name, entry["sha256"], "reference")
    write_server_config(outdir, lock["context"], lock["context"])
    return outdir


def locked_provenance(lock_path, references):
    """Check a job's references against the lockfile; return what its products record.

    Parameters
    ----------
    lock_path : path-like
        ``crds.lock.json``.
    references : dict
        reftype -> path (or None) the job reads.

    Returns
    -------
    dict
        ``crds_context``, ``crds_version`` and ``reference_names`` (reftype ->
        ``crds://<file>`` for files from CRDS, the file name for overrides), as
        :func:`webbflow.io.products.write_rate` takes them in ``provenance``.

    Raises
    ------
    ReferenceFileError
        For a reference missing from the lockfile or whose checksum differs.
    """
    lock = read_lockfile(lock_path)
    names = {}
    for reftype, path in references.items():
        if not path:
            continue
        verify_reference(path, lock)
        name = Path(path).name
        names[reftype] = name if lock["references"][name].get("override") else f"crds://{name}"
    return {"crds_context": lock["context"], "crds_version": lock["crds_version"], "reference_names": names}
