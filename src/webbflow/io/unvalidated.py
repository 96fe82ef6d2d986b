"""stdatamodels models without its schema validation of every assignment, in one place.

stdatamodels checks each value assigned to a model (and each keyword and array of a file it opens)
against the model's schema: it converts the value to an ASDF tree and validates it -- a whole gwcs
for ``meta.wcs``, which the write then does again -- which is often the larger part of a warm job's
work on a small product (~0.025 s CPU of a SUB160 image2 job's cal, an eighth of it; ~0.1 s of a
spec2 job, ~0.2 s of a grism tso3 job; half of a warm open of a small product).  The ways
webbflow does without it (and without asdf's validation of the ASDF tree where it reads and writes
one):

* :func:`assignments`: a context manager around assignments to an existing model (cal products,
  image3's WCS);
* :func:`new_model`: a new, empty model that never validates its assignments (spec2 and tso3
  products);
* :func:`open_model`: a model opened from a FITS file without the check (nor asdf's of its ASDF
  tree), its tree then that of a validated open (:func:`drop_unset`);
* :func:`ordered_writes`: asdf writes a model's ASDF tree without validating it against the ASDF
  schemas first (~0.03 s CPU a grism calints or crfints), yet with the key order that validation
  gives it, so the YAML is the same byte for byte.

Why it is safe: the values are webbflow's own, valid by construction (arrays of the schema's
dtype and shape -- stdatamodels still casts them on assignment --, gwcs WCSs, floats, step
statuses, file names and version strings), or copied from a product stdatamodels validated when it
opened it (or wrote it).  Validation would find nothing, and a valid value is stored the same way
either way: the products are byte-identical (``tests/test_io.py``, ``test_image2.py`` (which
validates a written cal strictly), ``test_image3.py``, ``test_spec2*.py``, ``test_tso3*.py``,
``test_tso_imaging*.py`` and the parity tests), and they are validated again whenever they are
opened.  What is given up: an invalid value would be kept and written, where validation would have
warned and dropped it -- so these are for values valid by construction only.
"""

from __future__ import annotations

from contextlib import contextmanager

__all__ = ["assignments", "drop_unset", "new_model", "open_model", "ordered_writes"]


@contextmanager
def assignments(model):
    """Assign ``model``'s attributes without stdatamodels' validation of each value.

    The model's own setting is restored on leaving.  For values valid by construction only (see
    the module's docstring).

    Parameters
    ----------
    model : stdatamodels DataModel

    Yields
    ------
    stdatamodels DataModel
        ``model``.
    """
    previous = model._validate_on_assignment
    model._validate_on_assignment = False
    try:
        yield model
    finally:
        model._validate_on_assignment = previous


def new_model(cls):
    """A new, empty ``cls`` that does not validate its assignments.

    Set on the instance, not through the constructor's ``validate_on_assignment`` keyword:
    SlitModel and TSOSpecModel take their keyword arguments as attributes (it would land in the
    product's tree).

    Parameters
    ----------
    cls : type
        A JWST datamodel class.

    Returns
    -------
    stdatamodels DataModel
    """
    model = cls()
    model._validate_on_assignment = False
    return model


def open_model(cls, source):
    """``cls(source)`` without the schema checks of a validated open, and the same model.

    Neither stdatamodels' check of each keyword and array as it is read (about half of a warm
    open of a small product) nor asdf's validation of the ASDF extension's tree against the ASDF
    schemas (asdf's ``validate_on_read``; ~0.05 s CPU a grism calints).  The model is then the one
    a validated open (``cls(source, validate_on_assignment=True)``) gives for a file that
    stdatamodels wrote: the ``None`` leaves the unchecked read adds are dropped
    (:func:`drop_unset`), and a SlitModel (or SlitDataModel), which keeps its constructor's keyword arguments in its
    tree, holds ``validate_on_assignment: true`` there as a validated open leaves it (a product
    written from the model records it).  ``validate_on_assignment=False`` holds for the model's
    later assignments.

    Parameters
    ----------
    cls : type
        A JWST datamodel class.
    source : astropy.io.fits.HDUList or str
        What ``cls`` opens.

    Returns
    -------
    stdatamodels DataModel
        The model (caller closes it).
    """
    import asdf

    with asdf.config_context() as config:
        config.validate_on_read = False
        model = cls(source, validate_on_assignment=False)
    drop_unset(model._instance)
    if _keeps_keyword_arguments(cls):
        model._instance["validate_on_assignment"] = True
    return model


def _keeps_keyword_arguments(cls):
    """Whether ``cls``'s constructor sets its keyword arguments as attributes (so in the tree):
    stdatamodels' SlitModel and SlitDataModel (``tests/test_unvalidated_writes.py`` checks every
    class)."""
    from stdatamodels.jwst.datamodels import SlitDataModel, SlitModel

    return issubclass(cls, (SlitDataModel, SlitModel))


def drop_unset(node):
    """Remove the ``None`` leaves of a model's tree, and the dicts and lists left empty by it.

    stdatamodels' reading puts a ``None`` in the tree for each schema keyword absent from the file
    when it does not validate on assignment (validating, it skips them): without them the tree, and
    so the products written from it, are those of a validated open.

    Parameters
    ----------
    node : dict or list
        A model's ``_instance``, or a node of it (changed in place).

    Returns
    -------
    bool
        Whether anything was removed from ``node`` (a list only when all its dicts were emptied).
    """
    removed = False
    if isinstance(node, dict):
        for key in list(node):
            value = node[key]
            if value is None or (isinstance(value, (dict, list)) and drop_unset(value) and not value):
                del node[key]
                removed = True
    elif isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        emptied = [drop_unset(v) and not v for v in node]
        if all(emptied):
            node.clear()
            removed = True
    return removed


_FALLBACK = object()
""":func:`_schema_order`'s answer for a schema whose effect on the YAML the shortcut does not know."""

_COMBINERS = ("allOf", "anyOf", "oneOf")


def _find_layout_keys(node, path, found):
    """Every ``propertyOrder`` and ``flowStyle`` in a schema document (not following ``$ref``):
    (path, key, value) into ``found``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("propertyOrder", "flowStyle"):
                found.append((path, key, value))
            else:
                _find_layout_keys(value, (*path, key), found)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _find_layout_keys(value, (*path, i), found)


_ORDERS = {}


def _schema_order(tag, ctx):
    """The ``propertyOrder`` that validating a node tagged ``tag`` would give it: None (its schemas
    have none), a list, or :data:`_FALLBACK` (a ``flowStyle``, an order for nodes below it or more
    than one order: only validation knows).  Cached per tag."""
    if tag in _ORDERS:
        return _ORDERS[tag]
    from asdf import schema as asdf_schema

    manager = ctx.extension_manager
    found = []
    if manager.handles_tag_definition(tag):
        load = getattr(asdf_schema, "_load_schema_cached", None)  # asdf's cache, not a deep copy each time
        for uri in manager.get_tag_definition(tag).schema_uris:
            try:
                document = load(uri, False) if load is not None else asdf_schema.load_schema(uri)
            except Exception:  # noqa: BLE001 - validation warns of a schema it cannot find; let it
                _ORDERS[tag] = _FALLBACK
                return _FALLBACK
            _find_layout_keys(document, (), found)
    # an order applies to the tagged node itself only at the schema's top or in a combiner's
    # branch there: (), ("anyOf", 1), ("allOf", 0, "anyOf", 2), ...
    own = [value for path, key, value in found if key == "propertyOrder"
           and all(p in _COMBINERS if i % 2 == 0 else isinstance(p, int) for i, p in enumerate(path))]
    orders = {tuple(v) for v in own if v}
    if len(own) != len(found) or len(orders) > 1:
        result = _FALLBACK
    else:
        result = list(next(iter(orders))) if orders else None
    _ORDERS[tag] = result
    return result


class _OrderOnly:
    """``asdf.schema`` as asdf's YAML writer (``dump_tree``) sees it within :func:`ordered_writes`:
    its ``validate`` only gives each tagged mapping of the tree the ``propertyOrder`` of its tag's
    schemas (what validation sets on it for the YAML writer); a tree with a tag whose layout that
    cannot tell is validated as before."""

    def __init__(self, schema):
        self._schema = schema

    def validate(self, instance, ctx=None, *args, **kwargs):
        from asdf.tagged import Tagged

        stack, ordered = [instance], []
        while stack:
            node = stack.pop()
            tag = node._tag if isinstance(node, Tagged) else None
            if tag is not None and isinstance(node, (dict, list)):
                order = _schema_order(tag, ctx)
                if order is _FALLBACK:
                    return self._schema.validate(instance, ctx, *args, **kwargs)
                if order is not None and isinstance(node, dict):
                    ordered.append((node, order))
            if isinstance(node, dict):
                stack.extend(node.data.values() if isinstance(node, Tagged) else node.values())
            elif isinstance(node, (list, tuple)):
                stack.extend(node.data if isinstance(node, Tagged) else node)
        for node, order in ordered:
            node.property_order = order
        return None

    def __getattr__(self, name):
        return getattr(self._schema, name)


@contextmanager
def ordered_writes():
    """Within: asdf writes each ASDF tree without validating it against the ASDF schemas, but
    with the key order validation gives it (the schemas' ``propertyOrder``: ``asdf_library`` and
    ``history`` first, an ndarray's ``source`` before its ``datatype``...), so the file is the one a
    validated write makes.  A tree holding a tag whose schemas say more about the layout (a
    ``flowStyle``, an order for nodes below the tagged one) is validated as before.

    For trees valid by construction (see the module's docstring): what is given up is asdf's
    check of the tree (a wrong value would be written, where validation would raise).  Only
    asdf's YAML writer is affected (``asdf.yamlutil``'s reference to ``asdf.schema``, restored on
    leaving); reading and stdatamodels' own validation are not.  A no-op for an asdf whose
    writer no longer validates through ``asdf.yamlutil.schema``, or inside another such context.

    Yields
    ------
    None
    """
    from asdf import schema, yamlutil

    if getattr(yamlutil, "schema", None) is not schema:
        yield
        return
    yamlutil.schema = _OrderOnly(schema)
    try:
        yield
    finally:
        yamlutil.schema = schema
