"""Parse ASDF's YAML faster: manifests with libyaml, and every manifest and schema document once per
installation (a persistent cache of the parsed documents).

The first stdatamodels open or write in a process makes asdf build its extension list, and asdf 6
parses each of the ~50 manifests YAML with ``yaml.safe_load``: PyYAML's pure-Python parser, ~0.25 s
of CPU per job (the schemas themselves are already read with libyaml through
``asdf.yamlutil.AsdfLoader``).  :func:`use_libyaml_manifests` points that one call at
``yaml.CSafeLoader`` (same ``SafeConstructor``, so the same Python objects;
``tests/test_io.py`` compares every registered manifest both ways).  Nothing asdf writes depends on
how a manifest was parsed, so products are byte-identical.

Even with libyaml's parser, building the Python objects (PyYAML's ``SafeConstructor``) is pure
Python, and every job process repeats it for the same ~50 manifests and the ~60-130 schema documents
its datamodels validate against.  :class:`ParsedYamlCache` keeps the parsed documents, pickled, in one
file (:func:`default_cache_path`), keyed by a hash of each document's bytes: a job then unpickles
what an earlier job parsed (see :func:`use_libyaml_manifests`, :func:`cache_schema_documents`).
"""

import atexit
import contextlib
import hashlib
import os
import pickle
import sys
import tempfile
from pathlib import Path

__all__ = ["CACHE_ENV", "ParsedYamlCache", "cache_schema_documents", "default_cache_path",
           "memoize_extension_selection", "parsed_yaml_cache", "use_libyaml_manifests"]

CACHE_ENV = "WEBBFLOW_YAML_CACHE"
"""The cache file's path (``off`` or an empty value: no persistent cache)."""

_FORMAT = 1
_MAX_ENTRIES = 4000
"""More entries than this (documents of many asdf/stdatamodels versions): keep only this process's."""


def default_cache_path():
    """Where the parsed-YAML cache lives: ``$WEBBFLOW_YAML_CACHE``, else
    ``$XDG_CACHE_HOME/webbflow/asdf-yaml.pickle`` (``~/.cache/webbflow/...``).

    Returns
    -------
    pathlib.Path or None
        None when the environment turns the cache off.
    """
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "no", "false") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "webbflow" / "asdf-yaml.pickle"


def _stamp():
    """What, besides a document's bytes, decides the objects a parse gives: the interpreter, PyYAML
    (and whether libyaml is in) and asdf (its loader's constructors and tagged types)."""
    import asdf
    import yaml

    return (_FORMAT, sys.version, yaml.__version__, bool(getattr(yaml, "__with_libyaml__", False)),
            asdf.__version__)


class ParsedYamlCache:
    """Parsed YAML documents kept on disk between processes, keyed by the hash of each document's bytes.

    The file is one pickle, ``{"stamp": ..., "entries": {key: pickled document}}``, read on first use
    and ignored (then rewritten) when it is unreadable, not ours or from another interpreter, PyYAML or
    asdf (:func:`_stamp`).  A hit unpickles a new object each time, so a caller that changes its
    document changes no other caller's.  New entries are written by :meth:`save` (at the process's
    exit once installed): merged with what the file holds then, into a temporary file renamed over it,
    so two jobs saving at once leave one complete file (the other's new entries are parsed again by a
    later job).

    Parameters
    ----------
    path : path-like
        The cache file (its folder is made, mode 0700, on the first save).
    stamp : hashable, optional
        The cache's version key (default :func:`_stamp`).
    """

    def __init__(self, path, stamp=None):
        self.path = Path(path)
        self.stamp = _stamp() if stamp is None else stamp
        self._entries = None
        self._new = {}
        self._used = set()
        self.hits = self.misses = 0

    def _read(self):
        """The entries of the file on disk ({} when missing, unreadable, stale or not the user's)."""
        try:
            with open(self.path, "rb") as fd:
                if os.fstat(fd.fileno()).st_uid != os.getuid():  # unpickle only what this user wrote
                    return {}
                data = pickle.load(fd)
            if data["stamp"] == self.stamp and isinstance(data["entries"], dict):
                return data["entries"]
        except Exception:  # noqa: BLE001 (a missing, partial or foreign file is only a cache miss)
            pass
        return {}

    @property
    def entries(self):
        """key -> pickled document: what the file held at first use, plus this process's parses."""
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def parse(self, kind, content, parse):
        """The document ``parse()`` gives for ``content``, unpickled from the cache when it holds it.

        Parameters
        ----------
        kind : str
            The loader (a document parses differently with another loader).
        content : bytes or str
            The document's text (anything else, a stream, is parsed and not cached).
        parse : callable
            Parses ``content`` (no arguments).

        Returns
        -------
        object
            The parsed document (a new object on every call).
        """
        if isinstance(content, str):
            data, kind = content.encode("utf-8", "surrogatepass"), kind + ":str"
        elif isinstance(content, bytes):
            data = content
        else:
            return parse()
        key = f"{kind}:{hashlib.blake2b(data, digest_size=16).hexdigest()}"
        blob = self.entries.get(key)
        if blob is not None:
            try:
                found = pickle.loads(blob)
            except Exception:  # noqa: BLE001 (a damaged entry: parse again, and replace it)
                pass
            else:
                self._used.add(key)
                self.hits += 1
                return found
        found = parse()
        self.misses += 1
        try:
            blob = pickle.dumps(found, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 (a document pickle cannot hold is parsed every time)
            return found
        self.entries[key] = self._new[key] = blob
        self._used.add(key)
        return found

    def save(self):
        """Write this process's new entries, merged with the file's current ones (atomically).

        Returns
        -------
        bool
            Whether the file was written (False: nothing new, or it could not be written).
        """
        if not self._new:
            return False
        entries = self._read()
        entries.update(self._new)
        if len(entries) > _MAX_ENTRIES:
            entries = {key: blob for key, blob in self.entries.items() if key in self._used}
        tmp = None
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "wb") as out:
                pickle.dump({"stamp": self.stamp, "entries": entries}, out, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.path)
        except OSError:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return False
        self._new = {}
        return True

    def forget_new(self):
        """Leave the new entries to the process that parsed them (a forked child does not save them)."""
        self._new = {}


_CACHE = []  # the process's ParsedYamlCache, once made (or None: turned off)


def parsed_yaml_cache():
    """The process's :class:`ParsedYamlCache` at :func:`default_cache_path`, saved at exit.

    Returns
    -------
    ParsedYamlCache or None
        None when the environment turns the cache off.
    """
    if not _CACHE:
        path = default_cache_path()
        cache = None if path is None else ParsedYamlCache(path)
        _CACHE.append(cache)
        if cache is not None:
            atexit.register(cache.save)
            # a job server's child inherits the server's unsaved parses: the server saves those
            os.register_at_fork(after_in_child=cache.forget_new)
    return _CACHE[0]


class _CSafeYaml:
    """The part of the ``yaml`` module asdf's manifest loader uses, with libyaml's parser (and the
    persistent cache, if any)."""

    def __init__(self, yaml, cache=None):
        self._yaml = yaml
        self._cache = cache

    def safe_load(self, stream):
        def parse():
            return self._yaml.load(stream, Loader=self._yaml.CSafeLoader)

        return parse() if self._cache is None else self._cache.parse("csafe", stream, parse)

    def __getattr__(self, name):
        return getattr(self._yaml, name)


def use_libyaml_manifests():
    """Make asdf parse its extension manifests with libyaml (idempotent; a no-op without libyaml or
    if asdf's manifest module no longer reads them through ``yaml.safe_load``), each manifest through
    the persistent :func:`parsed_yaml_cache` (~50 manifests: ~0.05 s of CPU per process).

    Returns
    -------
    bool
        Whether manifests are now parsed with libyaml.
    """
    import yaml

    try:
        from asdf.extension import _manifest
    except ImportError:  # another asdf layout: leave it as it is
        return False
    if isinstance(_manifest.yaml, _CSafeYaml):
        return True
    if not getattr(yaml, "__with_libyaml__", False) or getattr(_manifest, "yaml", None) is not yaml:
        return False
    _manifest.yaml = _CSafeYaml(yaml, parsed_yaml_cache())
    return True


class _CachedAsdfYaml:
    """The ``yaml`` module as asdf's schema loader sees it: documents given as text and parsed with
    asdf's own loader go through the persistent cache."""

    def __init__(self, yaml, cache, loader):
        self._yaml, self._cache, self._loader = yaml, cache, loader

    def load(self, stream, Loader=None):  # noqa: N803 (yaml.load's signature)
        def parse():
            return self._yaml.load(stream, Loader=Loader)

        if Loader is not self._loader:
            return parse()
        return self._cache.parse("asdf", stream, parse)

    def __getattr__(self, name):
        return getattr(self._yaml, name)


def _cache_schema_parses(schema):
    """Route asdf's schema loader's ``yaml.load(content, Loader=AsdfLoader)`` through the persistent
    cache (a no-op without one, or with another asdf layout)."""
    import yaml

    from asdf import yamlutil

    cache = parsed_yaml_cache()
    if cache is None or isinstance(schema.yaml, _CachedAsdfYaml) or schema.yaml is not yaml:
        return
    schema.yaml = _CachedAsdfYaml(yaml, cache, yamlutil.AsdfLoader)


def cache_schema_documents():
    """Make asdf parse each schema document it validates against once per process (idempotent).

    asdf 6 builds a new jsonschema resolver for every validation -- each stdatamodels attribute
    assignment, open and write -- and its loader parses every ``$ref``'d schema from its YAML again
    each time (``cache_remote=False``: asdf caches only the schemas it loads by file URL).  An image2
    job validates ~10 times and re-parsed ~130 schema documents per product (~0.15 s of CPU).  Here
    the loader keeps each parsed document, as asdf's own file-URL path does; validation reads
    schemas and never changes them, so the results, and the products, are the same
    (``tests/test_io.py`` checks both).  The documents themselves come from the persistent
    :func:`parsed_yaml_cache` when an earlier process parsed them (~60 documents for a job's
    first open and write).

    Returns
    -------
    bool
        Whether the cache is in place (False if asdf's schema module has another layout).
    """
    try:
        from asdf import schema
    except ImportError:
        return False
    make_loader = getattr(schema, "_make_schema_loader", None)
    if make_loader is None:
        return False
    if getattr(make_loader, "_webbflow_cached", False):
        return True
    _cache_schema_parses(schema)
    documents = {}

    def _make_schema_loader():
        load = make_loader()

        def load_schema(url):
            try:
                return documents[url]
            except KeyError:
                documents[url] = found = load(url)
                return found

        return load_schema

    _make_schema_loader._webbflow_cached = True
    _make_schema_loader._webbflow_original = make_loader  # for tests/test_io.py
    _make_schema_loader._webbflow_documents = documents
    schema._make_schema_loader = _make_schema_loader
    return True


def memoize_extension_selection():
    """Make asdf choose the installed extensions that suit a file's ASDF Standard version once per
    version and extension list, not once per file (idempotent).

    Every ``AsdfFile`` asdf makes -- each datamodel open, write and validation -- tests each of
    the ~56 extensions' ``asdf_standard_requirement`` against its version with ``packaging``,
    parsing the version string again each time (~4,000 parses to build and write nine datamodels).
    The answer depends only on the version and on the extension list, which asdf replaces, never
    changes, when an extension is added or removed: it is kept per (version, list) and each file
    gets its own copy of the same list of extensions.

    Returns
    -------
    bool
        Whether the memo is in place (False if asdf has another layout).
    """
    try:
        from asdf import _asdf
    except ImportError:
        return False
    select = getattr(getattr(_asdf, "AsdfFile", None), "_process_plugin_extensions", None)
    if select is None or not hasattr(_asdf, "get_config"):
        return False
    if getattr(select, "_webbflow_memo", False):
        return True
    memo = {}

    def _process_plugin_extensions(self):
        extensions = _asdf.get_config().extensions
        key = (self.version_string, id(extensions))
        found = memo.get(key)
        if found is None or found[0] is not extensions:  # the list holds its id while it is kept here
            found = memo[key] = (extensions, select(self))
        return list(found[1])

    _process_plugin_extensions._webbflow_memo = True
    _process_plugin_extensions._webbflow_original = select  # for tests/test_io.py
    _process_plugin_extensions.__doc__ = select.__doc__
    _asdf.AsdfFile._process_plugin_extensions = _process_plugin_extensions
    return True
