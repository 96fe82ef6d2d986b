"""Best references through the ``crds`` client, from a server or a local cache.

The real client code path is used everywhere: ``crds.getrecommendations``
(names only) when the workflow plans its jobs, ``crds.getreferences``
(names + files, downloading what a configured server has and the cache
lacks) in the one prefetch step that runs before the per-exposure jobs.
Parameters are ``get_crds_parameters()`` of a datamodel built from the
exposure's primary header, exactly what jwst's stpipe passes.

crds reads its configuration from the environment and keeps module-level
state (server URL, cache layout, loaded mappings), so :func:`configure`
sets the environment and clears that state; call it before any lookup.
"""

import datetime
import logging
import os
from pathlib import Path

from webbflow.io.errors import ReferenceFileError

__all__ = ["SERVERLESS_URL", "CrdsSetup", "best_references", "configure", "crds_parameters",
           "crds_version", "locate", "planning_parameters", "resolve_context"]

log = logging.getLogger(__name__)

SERVERLESS_URL = "https://jwst-serverless-mode.stsci.edu"
"""A server URL containing ``serverless``: crds then never touches the network."""

URI_PREFIX = "crds://"


class CrdsSetup:
    """Where and how crds finds references.

    Parameters
    ----------
    cache : path-like
        ``CRDS_PATH``: the cache root (mappings/, references/, config/).
    context : str
        ``jwst_NNNN.pmap`` or ``latest``.
    server_url : str, optional
        A CRDS server; None means serverless (local cache only).
    readonly : bool
        ``CRDS_READONLY_CACHE``: never write into the cache.
    """

    def __init__(self, cache, context="latest", server_url=None, readonly=False):
        self.cache = str(Path(cache).resolve())
        self.context = context or "latest"
        self.server_url = server_url or SERVERLESS_URL
        self.readonly = readonly

    @property
    def serverless(self):
        """True when no server is configured."""
        return "serverless" in self.server_url

    def environment(self):
        """The CRDS_* environment variables of this setup."""
        env = {"CRDS_PATH": self.cache, "CRDS_SERVER_URL": self.server_url,
               "CRDS_MODE": "local", "CRDS_OBSERVATORY": "jwst",
               "CRDS_READONLY_CACHE": "1" if self.readonly else "0",
               # Several processes share the cache: serialise crds's own writes.
               "CRDS_USE_LOCKING": "1", "CRDS_LOCKING_MODE": "filelock"}
        if self.context != "latest":
            env["CRDS_CONTEXT"] = self.context
        return env


def configure(setup):
    """Point the crds client of this process at ``setup`` (environment + state reset).

    Parameters
    ----------
    setup : CrdsSetup

    Raises
    ------
    ReferenceFileError
        When serverless and the cache has no ``config/jwst/server_config``
        (crds cannot work offline without it).
    """
    import crds  # noqa: F401  (reads CRDS_* at import; reset below)
    from crds.client import api
    from crds.core import config, utils

    # crds wrote its own CRDS_* defaults at import: keep those, replace ours, and forget
    # state derived from a previous setup (cache layout, memoised lookups).
    os.environ.pop("CRDS_CONTEXT", None)
    os.environ.update(setup.environment())
    # crds reads these as "none" when it set them at import; unset, some code paths crash on None.
    for item in (config.CRDS_CONFIG_URI, config.CRDS_MAPPING_URI, config.CRDS_REFERENCE_URI,
                 config.CRDS_PICKLE_URI):
        os.environ.setdefault(item.env_var, "none")
    config.CRDS_REF_SUBDIR_MODE = "None"
    utils.clear_function_caches()
    server_config = Path(setup.cache) / "config" / "jwst" / "server_config"
    if setup.serverless and not server_config.is_file():
        raise ReferenceFileError(
            setup.cache, "no CRDS server is configured and this is not a CRDS cache (no config/jwst/server_config)",
            "set crds.cache to a cache built by webbflow (webbflow crds build) or exported from a lockfile "
            "(webbflow crds export), or set crds.server_url to a reachable CRDS server")
    api.set_crds_server(setup.server_url)
    config.set_cache_readonly(setup.readonly)


def crds_version():
    """The crds client version (recorded as ``CRDS_VER``)."""
    import crds

    return crds.__version__


def resolve_context(setup):
    """The ``.pmap`` name ``setup.context`` means now (``latest`` resolved once).

    Returns
    -------
    str
        e.g. ``jwst_9000.pmap``.
    """
    from crds.core import heavy_client

    configure(setup)
    if setup.context != "latest":
        name = setup.context
    else:
        name = heavy_client.get_final_context(heavy_client.get_config_info("jwst"), "latest")
    if not name.endswith(".pmap"):
        raise ReferenceFileError(setup.cache, f"crds.context {setup.context!r} is not a .pmap name",
                                 "set crds.context to jwst_NNNN.pmap or latest")
    if setup.serverless and not (Path(setup.cache) / "mappings" / "jwst" / name).is_file():
        raise ReferenceFileError(Path(setup.cache) / "mappings" / "jwst" / name,
                                 f"context {name} is not in the CRDS cache",
                                 "choose a context the cache holds (crds.context), or build it "
                                 "(webbflow crds build), or configure crds.server_url")
    return name


def crds_parameters(primary):
    """``get_crds_parameters()`` of a datamodel built from a primary header.

    Parameters
    ----------
    primary : astropy.io.fits.Header
        The exposure's primary header.

    Returns
    -------
    dict
        Flattened ``meta.*`` parameters (lower-case datamodel paths), as
        stpipe passes them to ``crds.getreferences``.
    """
    import warnings

    from astropy.io import fits
    from stdatamodels.jwst.datamodels import JwstDataModel

    header = fits.Header(primary)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an uncal's primary holds keywords the base schema does not know
        with JwstDataModel(fits.HDUList([fits.PrimaryHDU(header=header)])) as model:
            return dict(model.get_crds_parameters())


def _primary_keyword_paths():
    """FITS keyword -> [(datamodel path, its schema)] of every PRIMARY-header keyword of JwstDataModel."""
    if not _KEYWORD_PATHS:
        from stdatamodels.jwst.datamodels import JwstDataModel
        from stdatamodels.schema import walk_schema

        def collect(subschema, path, combiner, ctx, recurse):
            if "fits_keyword" in subschema and subschema.get("fits_hdu", "PRIMARY") == "PRIMARY":
                _KEYWORD_PATHS.setdefault(subschema["fits_keyword"], []).append((".".join(path), subschema))

        with JwstDataModel() as model:
            walk_schema(model.schema, collect)
    return _KEYWORD_PATHS


_KEYWORD_PATHS = {}
_JSON_TYPES = {"string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
               "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
               "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
               "null": lambda v: v is None}


def _valid(value, schema):
    """Whether ``value`` passes a keyword's schema (``type``, ``enum``, ``anyOf``: all that the
    datamodel keyword schemas use; ``_planning_parameters`` checks that no other key appears)."""
    kinds = schema.get("type")
    if kinds is not None and not any(_JSON_TYPES[k](value) for k in ([kinds] if isinstance(kinds, str) else kinds)):
        return False
    if "enum" in schema and not any(value == e and type(value) is type(e) or (  # noqa: E721
            isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(e, (int, float))
            and not isinstance(e, bool) and value == e) for e in schema["enum"]):
        return False
    return "anyOf" not in schema or any(_valid(value, s) for s in schema["anyOf"])


_SCHEMA_KEYS = {"anyOf", "blend_rule", "blend_table", "default", "enum", "fits_hdu", "fits_keyword", "title", "type"}


def planning_parameters(primary):
    """:func:`crds_parameters` without building a datamodel per exposure (planning thousands of them).

    The datamodel's keyword map (FITS keyword -> ``meta.*`` path, from its schema) is walked once
    per process; a header value goes in when it passes the keyword's schema, as the datamodel's
    validate-on-assignment load keeps it.  ``meta.model_type`` and ``meta.date`` (the time of
    creation) are added as the datamodel adds them.  The datamodel's other entries (``extra_fits``:
    the cards its schema does not know; ``history``) are left out: CRDS rules select on ``META.*``
    parameters only.  ~1 ms per exposure instead of ~200 ms; the tests compare the ``meta.*``
    parameters with :func:`crds_parameters` on the header forms of every mode.
    A keyword schema using a validator this does not know falls back to :func:`crds_parameters`.

    Parameters
    ----------
    primary : Mapping
        The exposure's primary header.

    Returns
    -------
    dict
    """
    from astropy.io.fits.card import Undefined

    keywords = _primary_keyword_paths()
    params = {}
    for key in primary.keys() if hasattr(primary, "keys") else primary:
        for path, schema in keywords.get(key, ()):
            if not schema.keys() <= _SCHEMA_KEYS:
                return crds_parameters(primary)
            value = primary[key]
            if not isinstance(value, Undefined) and _valid(value, schema):
                params[path] = value
    params["meta.model_type"] = "JwstDataModel"
    if not _PLANNED_AT:  # the planning's time (the datamodel's meta.date is its creation time; crds ignores it)
        _PLANNED_AT.append(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")[:23])
    params["meta.date"] = _PLANNED_AT[0]
    return params


_PLANNED_AT = []


class MissingReferenceError(ReferenceFileError):
    """crds has no reference of a type for one exposure (in this context and cache)."""


# Types with no overrides.<type> key (config/schema.yaml): stage 3's, chosen with an association's first
# member.  Their fix names no override that the config would refuse.
_NO_OVERRIDE = {"apcorr", "abvegaoffset", "psfmask"}


def _missing_error(source, reftype, detail, setup, context):
    override = "" if reftype in _NO_OVERRIDE else f"give a file with overrides.{reftype}, "
    return MissingReferenceError(
        source, f"no {reftype} reference in CRDS context {context} ({detail})",
        f"add it to the CRDS cache {setup.cache} (webbflow crds build), {override}choose another "
        "crds.context, configure crds.server_url, or set references.dir to a folder of reference files")


def best_references(parameters, reftypes, setup, context, fetch=False, source="exposure"):
    """Best reference per type for one dataset, through crds.

    Parameters
    ----------
    parameters : dict
        :func:`crds_parameters` of the exposure.
    reftypes : sequence of str
        Types to choose (lower case).
    setup : CrdsSetup
        Already applied with :func:`configure`.
    context : str
        Resolved ``.pmap`` name.
    fetch : bool
        False: ``crds.getrecommendations`` (names only, nothing written).
        True: ``crds.getreferences`` (downloads missing files when a server
        is configured; offline it resolves and checks the local cache).
    source : str
        Named in error messages (the exposure file).

    Returns
    -------
    dict
        reftype -> file name, or None where the rules say N/A.

    Raises
    ------
    MissingReferenceError
        When a type has no match (names the type, the context and the fixes).
    """
    import crds
    from crds.core.exceptions import CrdsError

    call = crds.getreferences if fetch else crds.getrecommendations
    try:
        found = call(parameters, reftypes=list(reftypes), context=context, observatory="jwst")
    except CrdsError as exc:
        text = str(exc)
        reftype = next((t for t in reftypes if t in text.lower()), ", ".join(reftypes))
        raise _missing_error(source, reftype, text, setup, context) from None
    chosen = {}
    for reftype in reftypes:
        value = found.get(reftype)
        if value is None or (isinstance(value, str) and value.upper().startswith("NOT FOUND")):
            if value and "n/a" in value.lower():
                chosen[reftype] = None
                continue
            raise _missing_error(source, reftype, value or "not returned", setup, context)
        chosen[reftype] = Path(value).name
        if fetch and not Path(value).is_file():
            raise _missing_error(source, reftype, f"{Path(value).name} is not in the cache", setup, context)
    return chosen


def locate(name, setup):
    """Path of reference ``name`` in ``setup``'s cache (whether or not it is there yet)."""
    return str(Path(setup.cache) / "references" / "jwst" / "nircam" / name)
