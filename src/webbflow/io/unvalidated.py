"""stdatamodels models without its schema validation of every assignment, in one place.

stdatamodels checks each value assigned to a model (and each keyword and array of a file it opens)
against the model's schema: it converts the value to an ASDF tree and validates it -- a whole gwcs
for ``meta.wcs``, which the write then does again -- which is often the larger part of a warm job's
work on a small product (~0.025 s CPU of a SUB160 image2 job's cal, an eighth of it; ~0.1 s of a
spec2 job, ~0.2 s of a grism tso3 job; half of a warm open of a small product).  The three ways
webbflow does without it:

* :func:`assignments`: a context manager around assignments to an existing model (cal products,
  image3's WCS);
* :func:`new_model`: a new, empty model that never validates its assignments (spec2 and tso3
  products);
* :func:`open_model`: a model opened from a FITS file without the check, its tree then that of a
  validated open (:func:`drop_unset`).

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

__all__ = ["assignments", "new_model", "open_model", "drop_unset"]


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
    """``cls(source)`` without the schema check of each keyword and array as it is read.

    ``validate_on_assignment=False`` then also holds for the model's later assignments.  About half
    of a warm open of a small product; the model is the same as a validated open's for a file
    that stdatamodels wrote (:func:`drop_unset`).

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
    model = cls(source, validate_on_assignment=False)
    drop_unset(model._instance)
    return model


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
