"""Parse ASDF's extension manifests with libyaml: the same dicts, a quarter of a second less per job.

The first stdatamodels open or write in a process makes asdf build its extension list, and asdf 6
parses each of the ~50 manifests YAML with ``yaml.safe_load``: PyYAML's pure-Python parser, ~0.25 s
of CPU per job (the schemas themselves are already read with libyaml through
``asdf.yamlutil.AsdfLoader``).  :func:`use_libyaml_manifests` points that one call at
``yaml.CSafeLoader`` (same ``SafeConstructor``, so the same Python objects;
``tests/test_io.py`` compares every registered manifest both ways).  Nothing asdf writes depends on
how a manifest was parsed, so products are byte-identical.
"""

__all__ = ["cache_schema_documents", "use_libyaml_manifests"]


class _CSafeYaml:
    """The part of the ``yaml`` module asdf's manifest loader uses, with libyaml's parser."""

    def __init__(self, yaml):
        self._yaml = yaml

    def safe_load(self, stream):
        return self._yaml.load(stream, Loader=self._yaml.CSafeLoader)

    def __getattr__(self, name):
        return getattr(self._yaml, name)


def use_libyaml_manifests():
    """Make asdf parse its extension manifests with libyaml (idempotent; a no-op without libyaml or
    if asdf's manifest module no longer reads them through ``yaml.safe_load``).

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
    _manifest.yaml = _CSafeYaml(yaml)
    return True


def cache_schema_documents():
    """Make asdf parse each schema document it validates against once per process (idempotent).

    asdf 6 builds a new jsonschema resolver for every validation -- each stdatamodels attribute
    assignment, open and write -- and its loader parses every ``$ref``'d schema from its YAML again
    each time (``cache_remote=False``: asdf caches only the schemas it loads by file URL).  An image2
    job validates ~10 times and re-parsed ~130 schema documents per product (~0.15 s of CPU).  Here
    the loader keeps each parsed document, as asdf's own file-URL path does; validation reads
    schemas and never changes them, so the results, and the products, are the same
    (``tests/test_io.py`` checks both).

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
