"""Portable names of reference files, for the rules' params and inputs (issue 12).

Snakemake re-runs a job when its params or its set of input paths change.  What identifies a
job's references must therefore not depend on where the project lies: a copied or moved
project re-runs nothing, while another file (a new override, another context's choice) re-runs
exactly the jobs that read it.  A file from the CRDS cache is named ``crds://<name>`` (CRDS names
are unique and their bytes are checked against the lockfile by the job); any other file (an
override, a folder of references) by its name and sha256, read once and then remembered by
(path, size, mtime) in a small digest cache, so planning does not re-read big references.
"""

import json
import os
from pathlib import Path

from webbflow.io.files import atomic_write_text, file_digests

__all__ = ["DigestCache", "portable_path", "reference_identity"]


def portable_path(path, root=None):
    """``path`` relative to ``root`` (default: the working folder) when it lies under it, else absolute."""
    if not path:
        return path
    root = os.path.abspath(root or os.getcwd())
    absolute = os.path.abspath(path)
    if absolute == root or absolute.startswith(root.rstrip(os.sep) + os.sep):
        return os.path.relpath(absolute, root)
    return absolute


class DigestCache:
    """sha256 of files, remembered by (portable path, size, mtime) in a JSON file."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._entries = {}

    def sha256(self, path):
        """The file's sha256 (hex), read only when its size or mtime changed since last time."""
        stat = os.stat(path)
        key = portable_path(path)
        entry = self._entries.get(key)
        if isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns]:
            return entry[2]
        digest = file_digests(path)["sha256"]
        self._entries[key] = [stat.st_size, stat.st_mtime_ns, digest]
        try:
            atomic_write_text(self.path, json.dumps(self._entries, indent=0, sort_keys=True) + "\n")
        except OSError:
            pass  # only a cache: the next planning reads the file again
        return digest


def reference_identity(references, crds_cache=None, digests=None):
    """reftype -> portable identity of the chosen file (None where none applies).

    Parameters
    ----------
    references : dict
        reftype -> path (or None).
    crds_cache : path-like, optional
        The CRDS cache: its files are named ``crds://<name>`` without being read.
    digests : DigestCache, optional
        Where other files' sha256 are remembered (default: read every time).
    """
    refdir = os.path.abspath(Path(crds_cache) / "references") + os.sep if crds_cache else None
    identity = {}
    for reftype, path in sorted(references.items()):
        if not path:
            identity[reftype] = None
        elif refdir and os.path.abspath(path).startswith(refdir):
            identity[reftype] = f"crds://{Path(path).name}"
        else:
            sha256 = digests.sha256(path) if digests else file_digests(path)["sha256"]
            identity[reftype] = {"file": Path(path).name, "sha256": sha256}
    return identity
