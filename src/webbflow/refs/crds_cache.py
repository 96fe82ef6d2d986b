"""Write reference files into a CRDS-layout cache with hand-made mappings.

No CRDS server is reachable from our machines, so the simulator's reference
files (and any other folder of CRDS-format files) are turned into a local
cache that the real ``crds`` client selects from with no server
(jwst-formats.md §4.3)::

    <cache>/mappings/jwst/jwst_<NNNN>.pmap
    <cache>/mappings/jwst/jwst_nircam_<NNNN>.imap
    <cache>/mappings/jwst/jwst_nircam_<reftype>_<NNNN>.rmap
    <cache>/references/jwst/nircam/<reference files>
    <cache>/config/jwst/server_config

The rules are built generically from each reference file's primary header:
its ``REFTYPE`` picks the rmap and the selection keywords of that type
(:data:`SELECTORS`, after jwst-formats.md §4.4) become the ``Match`` tuple;
``USEAFTER`` becomes the ``UseAfter`` date.  Values that mean "any"
(``ANY``, ``GENERIC``, ``N/A``, and ``FULL`` for SUBARRAY, since a full
frame reference is cut to any subarray) become CRDS's zero-weight ``N/A``,
so an exact match always outranks them.  Every type the pipeline may ask for
and that has no file gets an ``N/A`` line in the imap (CRDS would otherwise
raise "Unknown reference type").

Reference files in a cache are immutable, as in CRDS: a second file with an
existing name but different content is refused.  A new context (e.g.
``jwst_9001.pmap`` with a new gain) is added next to the old ones, and
unchanged files are shared between contexts.
"""

import logging
import os
import pprint
import re
import shutil
from pathlib import Path

from webbflow.io.errors import ReferenceFileError
from webbflow.io.files import atomic_output, atomic_write_text, file_digests
from webbflow.refs.select import reference_header

__all__ = ["KEYWORD_PATHS", "SELECTORS", "build_cache", "context_name", "scan_references",
           "write_server_config"]

log = logging.getLogger(__name__)

OBSERVATORY = "jwst"
INSTRUMENT = "nircam"

SELECTORS = {
    "dark": ("DETECTOR", "EXP_TYPE", "NOUTPUTS", "SUBARRAY"),
    "superbias": ("DETECTOR", "READPATT", "SUBARRAY"),
    "readnoise": ("DETECTOR", "READPATT", "SUBARRAY"),
    "gain": ("DETECTOR", "SUBARRAY"),
    "linearity": ("DETECTOR", "SUBARRAY"),
    "mask": ("DETECTOR", "SUBARRAY"),
    "saturation": ("DETECTOR",),
    "sirskernel": ("DETECTOR",),
    "ipc": ("DETECTOR",),
    "persat": ("DETECTOR",),
    "trapdensity": ("DETECTOR",),
    "trappars": ("DETECTOR",),
    "photom": ("DETECTOR",),
    "flat": ("DETECTOR", "FILTER", "PUPIL"),
    "area": ("DETECTOR", "FILTER", "PUPIL", "EXP_TYPE"),
    "distortion": ("DETECTOR", "EXP_TYPE", "FILTER", "PUPIL"),
    "filteroffset": ("DETECTOR",),
    "extract1d": ("EXP_TYPE", "FILTER"),
    "wavelengthrange": ("EXP_TYPE",),
    "apcorr": ("EXP_TYPE",),
    "abvegaoffset": ("EXP_TYPE",),
    "psfmask": ("FILTER", "CORONMSK", "SUBARRAY"),
}
"""NIRCam reference type -> header keywords its rules match on (besides the date)."""

KEYWORD_PATHS = {
    "INSTRUME": "META.INSTRUMENT.NAME",
    "DETECTOR": "META.INSTRUMENT.DETECTOR",
    "FILTER": "META.INSTRUMENT.FILTER",
    "PUPIL": "META.INSTRUMENT.PUPIL",
    "CHANNEL": "META.INSTRUMENT.CHANNEL",
    "CORONMSK": "META.INSTRUMENT.CORONAGRAPH",
    "EXP_TYPE": "META.EXPOSURE.TYPE",
    "READPATT": "META.EXPOSURE.READPATT",
    "NOUTPUTS": "META.EXPOSURE.NOUTPUTS",
    "SUBARRAY": "META.SUBARRAY.NAME",
    "DATE-OBS": "META.OBSERVATION.DATE",
    "TIME-OBS": "META.OBSERVATION.TIME",
}
"""FITS keyword -> datamodel path (the parameter names CRDS rules use for JWST)."""

# Selection values that mean "any": CRDS's N/A matches everything with zero weight.
_ANY = {"ANY", "GENERIC", "N/A", "NONE", ""}
_ANY_BY_KEY = {"SUBARRAY": {"FULL"}}
_FIRST_CONTEXT = 9000


def context_name(number):
    """``jwst_<NNNN>.pmap`` for a context number."""
    return f"{OBSERVATORY}_{int(number):04d}.pmap"


def _match_value(key, value):
    text = "" if value is None else str(value).strip().upper()
    if text in _ANY or text in _ANY_BY_KEY.get(key, ()):
        return "N/A"
    return text


def _useafter(value):
    """CRDS UseAfter date ``YYYY-MM-DD hh:mm:ss`` from a USEAFTER keyword."""
    text = str(value or "2000-01-01T00:00:00").replace("T", " ")
    match = re.match(r"(\d{4}-\d{2}-\d{2})(?: (\d{2}:\d{2}:\d{2}))?", text)
    if not match:
        raise ValueError(f"USEAFTER {value!r} is not a date")
    return f"{match.group(1)} {match.group(2) or '00:00:00'}"


def scan_references(paths):
    """Selection rows of reference files, from their primary headers.

    Parameters
    ----------
    paths : iterable of path-like
        Reference files (CRDS format: REFTYPE, INSTRUME, DETECTOR, ... and
        USEAFTER in the primary header).  Files without REFTYPE are skipped.

    Returns
    -------
    list of dict
        ``reftype`` (lower case), ``match`` (tuple of rule values in the
        order of :data:`SELECTORS`), ``useafter``, ``path`` and ``name``.

    Raises
    ------
    ReferenceFileError
        For a file that cannot be read, or of another instrument.
    """
    rows = []
    for path in sorted(Path(p) for p in paths):
        try:
            header = reference_header(path)
        except (OSError, ValueError) as exc:
            raise ReferenceFileError(path, f"cannot read the reference header ({exc})",
                                     "replace or remove the file") from None
        if "REFTYPE" not in header:
            continue
        instrument = str(header.get("INSTRUME", "NIRCAM")).upper()
        if instrument != INSTRUMENT.upper():
            raise ReferenceFileError(path, f"INSTRUME={instrument}: only NIRCAM references are cached",
                                     "remove the file from the reference folder")
        reftype = str(header["REFTYPE"]).strip().lower()
        keys = SELECTORS.get(reftype) or tuple(k for k in ("DETECTOR", "FILTER", "PUPIL") if k in header)
        try:
            useafter = _useafter(header.get("USEAFTER"))
        except ValueError as exc:
            raise ReferenceFileError(path, str(exc), "write USEAFTER as YYYY-MM-DDThh:mm:ss") from None
        rows.append({"reftype": reftype, "keys": keys,
                     "match": tuple(_match_value(k, header.get(k)) for k in keys),
                     "useafter": useafter, "path": str(path), "name": path.name})
    return rows


def _write_mapping(path, text):
    """Write a mapping with the sha1sum computed by crds itself (``Mapping.write``)."""
    from crds.core import rmap

    path = Path(path)
    with atomic_output(path) as draft:  # the draft keeps the mapping's name and suffix, which crds reads
        draft.write_text(text)
        mapping = rmap.Mapping.from_file(str(draft), ignore_checksum=True)
        mapping.header["name"] = path.name
        mapping.write(str(draft))


def _header_text(header):
    lines = ["header = {"]
    for key in sorted(header):
        lines.append(f"    {key!r} : {header[key]!r},")
    lines.append("}")
    return "\n".join(lines) + "\n\n"


def _rmap_text(reftype, rows, name, derived_from):
    keys = rows[0]["keys"]
    header = {
        "classes": ("Match", "UseAfter"),
        "derived_from": derived_from,
        "filekind": reftype.upper(),
        "instrument": INSTRUMENT.upper(),
        "mapping": "REFERENCE",
        "name": name,
        "observatory": OBSERVATORY.upper(),
        "parkey": (tuple(KEYWORD_PATHS[k] for k in keys), (KEYWORD_PATHS["DATE-OBS"], KEYWORD_PATHS["TIME-OBS"])),
        "sha1sum": "x",
    }
    tree = {}
    for row in rows:
        dates = tree.setdefault(row["match"], {})
        other = dates.get(row["useafter"])
        if other is not None and other["name"] != row["name"]:
            raise ReferenceFileError(row["path"], f"{reftype} reference has the same selection {row['match']} and "
                                     f"USEAFTER {row['useafter']} as {other['path']}",
                                     "remove one of them or give it a later USEAFTER")
        dates[row["useafter"]] = row
    lines = ["selector = Match({"]
    for match in sorted(tree):
        lines.append(f"    {match!r} : UseAfter({{")
        for date in sorted(tree[match]):
            lines.append(f"        {date!r} : {tree[match][date]['name']!r},")
        lines.append("    }),")
    lines.append("})")
    return _header_text(header) + "\n".join(lines) + "\n"


def _imap_text(selector, name, derived_from):
    header = {"derived_from": derived_from, "instrument": INSTRUMENT.upper(), "mapping": "INSTRUMENT",
              "name": name, "observatory": OBSERVATORY.upper(), "parkey": ("REFTYPE",), "sha1sum": "x"}
    lines = ["selector = {"] + [f"    {k.upper()!r} : {v!r}," for k, v in sorted(selector.items())] + ["}"]
    return _header_text(header) + "\n".join(lines) + "\n"


def _pmap_text(imap, name, derived_from):
    header = {"derived_from": derived_from, "mapping": "PIPELINE", "name": name, "observatory": OBSERVATORY.upper(),
              "parkey": (KEYWORD_PATHS["INSTRUME"],), "sha1sum": "x"}
    return _header_text(header) + f"selector = {{\n    {INSTRUMENT.upper()!r} : {imap!r},\n}}\n"


def write_server_config(cache, operational_context, latest_context=None):
    """Write ``config/jwst/server_config``, which crds needs to work with no server.

    Parameters
    ----------
    cache : path-like
        The cache root (``CRDS_PATH``).
    operational_context, latest_context : str
        ``jwst_NNNN.pmap`` names (``latest`` resolves to ``latest_context``).
    """
    info = {"observatory": OBSERVATORY, "operational_context": operational_context,
            "latest_context": latest_context or operational_context, "bad_files_list": [],
            "bad_files": "", "force_remote_mode": 0, "last_synced": "never (webbflow local cache)",
            "reference_url": {}, "mapping_url": {}, "effective_mode": "local"}
    cfg = Path(cache) / "config" / OBSERVATORY
    atomic_write_text(cfg / "server_config", pprint.pformat(info) + "\n")
    atomic_write_text(cfg / "ref_cache_subdir_mode", "instrument\n")


def _existing_contexts(cache):
    folder = Path(cache) / "mappings" / OBSERVATORY
    return sorted(int(m.group(1)) for p in folder.glob(f"{OBSERVATORY}_*.pmap")
                  if (m := re.fullmatch(rf"{OBSERVATORY}_(\d+)\.pmap", p.name)))


def _install(src, dest):
    """Copy ``src`` into the cache as ``dest`` atomically (hard link when possible); never replace."""
    if dest.exists():
        if file_digests(dest, ("sha1",)) != file_digests(src, ("sha1",)):
            raise ReferenceFileError(src, f"the cache already holds a different file named {dest.name} ({dest})",
                                     "cached references are immutable: give the new file a new name")
        return
    with atomic_output(dest) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o444)


def build_cache(references, cache, context=None, na_types=None, make_latest=True):
    """Add a context selecting ``references`` to the local CRDS cache ``cache``.

    Parameters
    ----------
    references : path-like or iterable of path-like
        A folder of ``*.fits``/``*.asdf``/``*.json`` reference files, or the files themselves.
    cache : path-like
        The cache root (the ``CRDS_PATH`` to use later); created if needed.
    context : str or int, optional
        ``jwst_NNNN.pmap`` (or NNNN) to write; default the next free number
        from 9000.  An existing context of that name is rewritten.
    na_types : iterable of str, optional
        Further reference types to list as ``N/A`` (besides every type of
        :data:`SELECTORS` that has no file).
    make_latest : bool
        Record the context as ``latest_context`` (and ``operational_context``)
        in ``server_config``.

    Returns
    -------
    str
        The context name, e.g. ``jwst_9000.pmap``.

    Raises
    ------
    ReferenceFileError
        For an unreadable reference, two references with the same selection
        and date, or a name already cached with different content.
    """
    cache = Path(cache)
    if isinstance(references, (str, os.PathLike)):
        folder = Path(references)
        if not folder.is_dir():
            raise ReferenceFileError(folder, "reference folder not found", "give the folder of *.fits references")
        references = sorted([*folder.glob("*.fits"), *folder.glob("*.asdf"), *folder.glob("*.json")])
    rows = scan_references(references)
    if not rows:
        raise ReferenceFileError(cache, "no reference files (with REFTYPE) to cache", "check the reference folder")
    existing = _existing_contexts(cache)
    if context is None:
        number = max(existing + [_FIRST_CONTEXT - 1]) + 1
    else:
        number = int(re.sub(r"\D", "", str(context)) or _FIRST_CONTEXT)
    pmap = context_name(number)
    derived_from = context_name(max(existing)) if existing else "webbflow handmade"
    refdir = cache / "references" / OBSERVATORY / INSTRUMENT
    mapdir = cache / "mappings" / OBSERVATORY
    by_type = {}
    for row in rows:
        by_type.setdefault(row["reftype"], []).append(row)
    for row in rows:
        _install(Path(row["path"]), refdir / row["name"])
    selector = {t: "N/A" for t in set(SELECTORS) | {t.lower() for t in (na_types or ())}}
    for reftype, type_rows in sorted(by_type.items()):
        if len({r["keys"] for r in type_rows}) != 1:
            raise ReferenceFileError(type_rows[0]["path"], f"{reftype} references differ in selection keywords",
                                     "give every file of the type the same keywords")
        name = f"{OBSERVATORY}_{INSTRUMENT}_{reftype}_{number:04d}.rmap"
        _write_mapping(mapdir / name, _rmap_text(reftype, type_rows, name, derived_from))
        selector[reftype] = name
    imap = f"{OBSERVATORY}_{INSTRUMENT}_{number:04d}.imap"
    _write_mapping(mapdir / imap, _imap_text(selector, imap, derived_from))
    _write_mapping(mapdir / pmap, _pmap_text(imap, pmap, derived_from))
    if make_latest or not (cache / "config" / OBSERVATORY / "server_config").exists():
        write_server_config(cache, pmap, pmap)
    log.info("CRDS cache %s: context %s with %d references of %d types", cache, pmap, len(rows), len(by_type))
    return pmap
