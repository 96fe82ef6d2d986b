"""webbflow.io.unvalidated: asdf writes without validating the tree (ordered_writes) give the same
bytes as validated writes; open_model gives the model of a validated open."""

import numpy as np
import pytest
from astropy.io import fits


def _slit_with_gwcs():
    """A small grism-like SlitModel: cube, wavelength, INT_TIMES and a spectral gwcs (tags of asdf's
    core, gwcs and astropy.modeling, some with a propertyOrder)."""
    from stdatamodels.jwst import datamodels

    from webbflow.jobserver import _tiny_gwcs

    model = datamodels.SlitModel()
    model.data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    model.dq = np.zeros((2, 3, 4), np.uint32)
    model.wavelength = np.linspace(3.0, 4.0, 12, dtype=np.float32).reshape(3, 4)
    model.int_times = np.array([(1, 60000.0, 60000.1, 60000.2, 0.0, 0.0, 0.0)] * 2, dtype=[
        ("integration_number", "i4"), ("int_start_MJD_UTC", "f8"), ("int_mid_MJD_UTC", "f8"),
        ("int_end_MJD_UTC", "f8"), ("int_start_BJD_TDB", "f8"), ("int_mid_BJD_TDB", "f8"),
        ("int_end_BJD_TDB", "f8")])
    model.meta.exposure.type = "NRC_TSGRISM"
    model.meta.date = "2026-01-01T00:00:00.000"
    model.meta.wcs = _tiny_gwcs()[1]
    model.source_xpos = 1.5
    return model


def _spy_tree_validation(monkeypatch):
    """The calls of ``asdf.schema.validate`` made for asdf's YAML writer (directly, or through
    ordered_writes' fallback), not those of stdatamodels' own validation of a model."""
    import sys

    from asdf import schema

    calls = []
    real = schema.validate

    def validate(*args, **kwargs):
        callers = {sys._getframe(1).f_code.co_name, sys._getframe(2).f_code.co_name}
        if "dump_tree" in callers:
            calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(schema, "validate", validate)
    return calls


def _asdf_yaml(path):
    with fits.open(path) as hdul:
        return bytes(hdul["ASDF"].data["ASDF_METADATA"][0])


@pytest.mark.parametrize("kind", ["slit", "cube"])
def test_ordered_writes_are_the_validated_writes_byte_for_byte(tmp_path, monkeypatch, kind):
    """Within ordered_writes the ASDF tree is not validated (schema.validate is not called) and the
    file is the validated write's: the same YAML bytes (propertyOrder applied: asdf_library and
    history first, an ndarray's source first) and the same HDUs."""
    from asdf import schema, yamlutil
    from stdatamodels.jwst import datamodels

    from webbflow.io import unvalidated
    from webbflow.io.cal import write_model

    if kind == "slit":
        model = _slit_with_gwcs()
    else:
        slit = _slit_with_gwcs()
        model = datamodels.CubeModel(slit.data)
        model.int_times = slit.int_times
        model.meta.exposure.type = "NRC_TSIMAGE"
        model.meta.date = slit.meta.date
    monkeypatch.setattr(type(model), "on_save", lambda self, path: None)  # no write time
    (tmp_path / "v").mkdir()
    (tmp_path / "u").mkdir()
    write_model(model, tmp_path / "v" / "a.fits")
    calls = _spy_tree_validation(monkeypatch)
    write_model(model, tmp_path / "v" / "b.fits")
    assert calls == [1]  # the spy sees a validated write's
    calls.clear()
    with unvalidated.ordered_writes():
        assert isinstance(yamlutil.schema, unvalidated._OrderOnly)
        write_model(model, tmp_path / "u" / "a.fits")
    assert yamlutil.schema is schema and calls == []
    validated, ordered = _asdf_yaml(tmp_path / "v" / "a.fits"), _asdf_yaml(tmp_path / "u" / "a.fits")
    assert validated == ordered
    keys = [line.split(b":")[0] for line in validated.split(b"\n") if line[:1].isalpha() or line[:1] == b"_"]
    assert keys[:2] == [b"asdf_library", b"history"] and b"_fits_hash" in keys  # not sorted first
    assert b"source: fits:" in validated
    with fits.open(tmp_path / "v" / "a.fits") as a, fits.open(tmp_path / "u" / "a.fits") as b:
        assert [h.name for h in a] == [h.name for h in b]
        for ha, hb in zip(a, b):
            cards = lambda h: [tuple(c) for c in h.header.cards if c.keyword not in ("CHECKSUM", "DATASUM")]
            assert cards(ha) == cards(hb), ha.name
            if ha.name != "ASDF" and ha.data is not None:
                assert ha.data.tobytes() == hb.data.tobytes(), ha.name


def test_ordered_writes_validate_a_tree_whose_layout_they_cannot_tell(tmp_path, monkeypatch):
    """A tag whose schemas have a flowStyle or an order for nodes below it: the tree is validated
    as before; and an order found in a combiner's branch at the schema's top is the node's own."""
    from webbflow.io import unvalidated
    from webbflow.io.cal import write_model

    found = []
    unvalidated._find_layout_keys({"anyOf": [{"type": "string"}, {"propertyOrder": ["a", "b"]}],
                                   "properties": {"x": {"flowStyle": "block"}}}, (), found)
    assert found == [(("anyOf", 1), "propertyOrder", ["a", "b"]), (("properties", "x"), "flowStyle", "block")]

    model = _slit_with_gwcs()
    monkeypatch.setitem(unvalidated._ORDERS, "tag:stsci.edu:asdf/core/ndarray-1.1.0", unvalidated._FALLBACK)
    calls = _spy_tree_validation(monkeypatch)
    with unvalidated.ordered_writes():
        write_model(model, tmp_path / "a.fits")
    assert calls == [1]


def test_keyword_keeping_classes_are_known():
    """open_model sets ``validate_on_assignment: true`` in the tree of exactly the classes that keep
    their constructor's keyword arguments there (as a validated open's keyword leaves it)."""
    from stdatamodels.jwst import datamodels

    from webbflow.io import unvalidated

    classes = {getattr(datamodels, n) for n in dir(datamodels) if isinstance(getattr(datamodels, n), type)}
    classes = [c for c in classes if issubclass(c, datamodels.JwstDataModel) and c.schema_url]
    assert len(classes) > 50
    for cls in classes:
        with cls(validate_on_assignment=False) as probe:
            assert ("validate_on_assignment" in probe._instance) == unvalidated._keeps_keyword_arguments(cls), cls


def test_open_model_is_the_validated_open(tmp_path):
    """A SlitModel opened with open_model has the tree of a validated open (``validate_on_assignment:
    true`` included) and does not validate its later assignments."""
    from stdatamodels.jwst import datamodels

    from webbflow.io import unvalidated

    path = tmp_path / "a_calints.fits"
    _slit_with_gwcs().save(path)
    with fits.open(path) as hdul:
        model = unvalidated.open_model(datamodels.SlitModel, hdul)
    with fits.open(path) as hdul:
        checked = datamodels.SlitModel(hdul, validate_on_assignment=True)
    assert model._validate_on_assignment is False and checked._validate_on_assignment is True
    assert model._instance["validate_on_assignment"] is True
    assert checked._instance["validate_on_assignment"] is True

    def plain(node):
        if isinstance(node, dict):
            return {k: plain(v) for k, v in node.items() if k != "wcs"}
        if isinstance(node, list):
            return [plain(v) for v in node]
        if isinstance(node, np.ndarray):
            return (node.dtype.str, node.tobytes())
        return node

    assert plain(model._instance) == plain(checked._instance)
    assert model.meta.wcs(1.0, 1.0) == checked.meta.wcs(1.0, 1.0)
    model.close()
    checked.close()
