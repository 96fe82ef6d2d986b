"""Read cal images and write the image3 products (crf, i2d, segm, cat).

Every product is written with stdatamodels (``ImageModel`` for crf and i2d,
``SegmentationMapModel`` for segm) under a temporary name and renamed into
place; the catalog is ECSV, also written atomically.  Products carry the
``S_*`` status of the image3 steps, ``CAL_VER`` and webbflow's provenance
keywords ``WF_VER``, ``WF_CFGD`` and ``WF_PARS`` in the primary header.
"""

import json
import warnings
from pathlib import Path

import numpy as np
from stdatamodels.jwst import datamodels

import webbflow
from webbflow.config import config_digest
from webbflow.io import unvalidated
from webbflow.io.cal import _asdf_write_validation, _open_native
from webbflow.io.errors import InputError
from webbflow.io.files import atomic_output, write_ecsv
from webbflow.steps.resample import ImageInput

__all__ = [
    "IMAGE3_CAL_STEPS",
    "image_input",
    "read_cal",
    "save_model",
    "write_catalog",
    "write_crf",
    "write_i2d",
    "write_segm",
]

IMAGE3_CAL_STEPS = {
    "tweakreg": "tweakreg",
    "skymatch": "skymatch",
    "outlier_detection": "outlier_detection",
    "resample": "resample",
    "source_catalog": "source_catalog",
}
"""webbflow step -> ``meta.cal_step`` attribute (``S_TWKREG``, ``S_SKYMAT``, ``S_OUTLIR``, ``S_RESAMP``, ``S_SRCCAT``)."""


def read_cal(path):
    """Open a calibrated image (``_cal.fits``) for image3.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    stdatamodels.jwst.datamodels.ImageModel

    Raises
    ------
    InputError
        If the file is not a 2-D image with a gwcs in MJy/sr.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found", "run image2 first or fix the association's expname")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Native byte order on reading, and no schema check of each value as it is read (half
            # the CPU of a warm open of a small cal; the tree is that of a validated open,
            # io.cal._open_native).  Image3's own assignments are validated as before.
            model = _open_native(path, validate=False)
            model._validate_on_assignment = True
    except Exception as exc:  # astropy / asdf raise many kinds
        raise InputError(path, f"cannot be opened as a JWST datamodel ({exc})",
                         "give a cal file written by image2 (jwst or webbflow)") from None
    if not isinstance(model, datamodels.ImageModel):
        kind = type(model).__name__
        model.close()
        raise InputError(path, f"is a {kind}, image3 needs an ImageModel (_cal.fits)",
                         "give the image2 _cal.fits products")
    if model.meta.wcs is None:
        model.close()
        raise InputError(path, "has no gwcs (meta.wcs)", "run assign_wcs (image2) on it before image3")
    unit = (model.meta.bunit_data or "").strip()
    if unit.lower() != "mjy/sr":
        model.close()
        raise InputError(path, f"SCI is in {unit or 'no unit'!r}, not MJy/sr", "run photom (image2) before image3")
    _native_byte_order(model)
    return model


def _native_byte_order(model, attrs=("data", "err", "var_rnoise", "var_poisson", "var_flat")):
    """Swap FITS's big-endian float arrays to native order in place, in the model.

    :func:`image_input` needs them native; converting there (or assigning converted copies, which
    the open FITS file still holds the originals of) would keep two copies alive, 64 MiB more per
    full-frame cal while image3 runs.  Same values; the crf written from the model stores them
    big-endian again.
    """
    for attr in attrs:
        if not model.hasattr(attr):
            continue
        arr = getattr(model, attr)
        if arr is not None and arr.dtype.kind == "f" and not arr.dtype.isnative and arr.flags.writeable:
            setattr(model, attr, arr.byteswap(inplace=True).view(arr.dtype.newbyteorder("=")))


def _fits_byte_order(model, attrs=("data", "err", "var_rnoise", "var_poisson", "var_flat")):
    """Swap the model's native float arrays back to FITS's big-endian order in place, before its
    write: astropy then neither swaps each one for its DATASUM and its write nor swaps it back
    (the same values and file).  The model's arrays are given up (their old views read wrong)."""
    from webbflow.io.cal import fits_order

    for attr in attrs:
        if model.hasattr(attr) and getattr(model, attr) is not None:
            setattr(model, attr, fits_order(getattr(model, attr)))


def image_input(model, name=None):
    """The arrays and WCS of a cal model as a :class:`~webbflow.steps.resample.ImageInput` (no copies of VAR_*)."""

    def opt(attr):
        if model.hasattr(attr) and getattr(model, attr) is not None and getattr(model, attr).shape == model.data.shape:
            return np.asarray(getattr(model, attr), np.float32)
        return None

    err = opt("err")
    if err is None:
        err = np.zeros(model.data.shape, np.float32)
    obs = model.meta.observation
    group = f"jw{obs.program_number}{obs.observation_number}{obs.visit_number}_{obs.visit_group}" \
            f"{obs.sequence_id}{obs.activity_id}_{obs.exposure_number}"
    return ImageInput(
        data=np.array(model.data, np.float32),
        err=err,
        dq=np.array(model.dq, np.uint32) if model.dq is not None and model.dq.shape == model.data.shape
        else np.zeros(model.data.shape, np.uint32),
        wcs=model.meta.wcs,
        var_rnoise=opt("var_rnoise"),
        var_poisson=opt("var_poisson"),
        var_flat=opt("var_flat"),
        exptime=float(model.meta.exposure.exposure_time or model.meta.exposure.measurement_time or 1.0),
        name=name or model.meta.filename or "image",
        group=group,
    )


def _provenance(provenance):
    provenance = provenance or {}
    params = provenance.get("step_parameters", {})
    digest = provenance.get("config_digest") or config_digest({"steps": params})
    return [
        ("WF_VER", webbflow.__version__, "webbflow version"),
        ("WF_CFGD", digest, "sha256 of the product's config (canonical JSON)"),
        ("WF_PARS", json.dumps(params, sort_keys=True, separators=(",", ":")), "webbflow step parameters (JSON)"),
    ]


def save_model(model, path, provenance=None, cards=(), validate_asdf=True):
    """Write a datamodel atomically, with webbflow's provenance keywords in its primary header.

    Parameters
    ----------
    model : stdatamodels DataModel
    path : str or os.PathLike
    provenance : dict, optional
        As for :func:`_provenance`.
    cards : sequence of (str, object, str or None)
        More primary keywords (keyword, value, comment), written inside the same atomic write.
    validate_asdf : bool
        False: asdf does not validate the ASDF extension's tree against the ASDF schemas before
        writing it (:func:`webbflow.io.cal.write_model`), for a caller whose tree is valid by
        construction.  The tree and every other HDU are the same; the YAML of the ASDF extension
        lists the same lines with ``asdf_library`` and ``history`` where they fall instead of first
        (the core schema's ``propertyOrder``, which only validation applies).

    Returns
    -------
    pathlib.Path

    Notes
    -----
    The file is the one stdatamodels' ``to_fits`` would write followed by a reopen in update mode
    that appends the keywords after its CHECKSUM/DATASUM cards (how the products were first
    made), without the reopen (which read and checksummed the whole file again: ~0.1 s per
    product): the HDU list ``to_fits`` builds (its ASDF tree and ``_fits_hash`` made before any of
    these keywords, as before) gets the two checksum cards first, then the keywords, and astropy's
    write fills in the checksums where they stand.
    """
    from stdatamodels import fits_support

    path = Path(path)
    with unvalidated.assignments(model):  # two names and (on_save) the write's date: strings
        model.meta.filename = path.name
        model.meta.calibration_software_version = webbflow.__version__
    with atomic_output(path) as tmp, warnings.catch_warnings(), _asdf_write_validation(validate_asdf):
        warnings.simplefilter("ignore")
        # stdatamodels' DataModel.to_fits, with the keywords added before the one write
        with unvalidated.assignments(model):
            model.on_save(tmp)
        hdulist = fits_support.to_fits(model._instance, model._schema)
        if getattr(model, "_no_asdf_extension", False) and "ASDF" in hdulist:
            del hdulist["ASDF"]
        primary = hdulist[0]
        primary.add_checksum()  # CHECKSUM, DATASUM where the write (and the reopen) put them
        for key, value, comment in [*_provenance(provenance), *cards]:
            # A long value (the JSON of WF_PARS) leaves no room for a comment; CONTINUE cards carry it.
            primary.header[key] = (value, comment) if comment and len(str(value)) < 40 else value
        hdulist.writeto(tmp, overwrite=True, checksum=True)
    return path


def _set_wcs(model, wcs):
    """``model.meta.wcs = wcs`` without stdatamodels' validation on assignment
    (:mod:`webbflow.io.unvalidated`).

    That validation serialises the whole gwcs to check it against its schema (~16 ms for a
    NIRCam imaging WCS); a valid WCS is stored the same way either way, so the product is the same.
    The WCSs image3 assigns are gwcs objects (the cal's, tweakreg's correction of it, resample's
    grid) that asdf's converters serialise to valid trees, so the products are also written without
    asdf's write-time validation (``save_model(validate_asdf=False)``).
    """
    with unvalidated.assignments(model):
        model.meta.wcs = wcs


def _set_steps(model, cal_steps):
    for step, status in (cal_steps or {}).items():
        attr = IMAGE3_CAL_STEPS.get(step)
        if attr and status:
            setattr(model.meta.cal_step, attr, status)


def _set_wcsinfo(model, wcs, shape):
    """FITS SIP/TAN WCS of the gwcs in the SCI header, so plain astropy reads the same sky."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The lowest SIP degree good to 0.01 pixel (jwst's accuracy): 1 for a plain TAN grid.
            header = wcs.to_fits_sip(bounding_box=((-0.5, shape[1] - 0.5), (-0.5, shape[0] - 0.5)),
                                     degree=range(1, 7), max_pix_error=0.01, max_inv_pix_error=0.01, npoints=16)
    except Exception:  # a gwcs that cannot be approximated keeps only the ASDF copy
        return
    items = [(key.lower().replace("-", "_"), value) for key, value in header.items()]
    info = model.meta.wcsinfo
    if _assign_all_valid(model, info, items):
        return
    for k, value in items:
        try:
            setattr(info, k, value)
        except Exception:  # a value the schema refuses stays out (a warning, or strict validation's error)
            pass


def _assign_all_valid(model, node, items):
    """Assign every (attribute, value) of ``items`` to ``node`` (a model's ObjectNode) without
    validating each, then validate the node once; True if it is valid.  Otherwise the node is put
    back as it was and False returned (the caller assigns them one by one, validated).

    One validation of the node instead of one per value (~45 SIP keywords a WCS, each building an
    asdf validator: ~5 ms a product); a node valid as a whole holds each value as the validated
    assignments would have stored it, in the same order.
    """
    before = dict(node.instance)
    with unvalidated.assignments(model):
        for k, value in items:
            setattr(node, k, value)
    if _valid_node(model, node):
        return True
    node.instance.clear()  # any refusal: the values are assigned one by one instead
    node.instance.update(before)
    return False


def write_crf(model, image, path, *, asn_id, cal_steps=None, provenance=None):
    """Write a ``_crf`` product: the cal model with outlier DQ, the aligned WCS and the sky level.

    Parameters
    ----------
    model : ImageModel
        The cal model (updated in place, then saved; its float arrays, and the ``image`` arrays
        that share them, are byte-swapped in place to FITS order: neither is usable afterwards).
    image : ImageInput
        Its image3 state (dq, wcs, sky).
    path : str or os.PathLike
        ``<exposure root>_<asn id>_crf.fits``.
    asn_id : str
    cal_steps : dict
        webbflow image3 step -> status.
    provenance : dict
    """
    # Values valid by construction (the cal's own DQ array updated, a float, a flag, names and step
    # statuses; the same arrays in FITS's byte order), assigned without stdatamodels' check of each
    # (~8 ms a crf, most of it the five float arrays): the stored values and the file are the same.
    with unvalidated.assignments(model):
        model.dq = image.dq
        _set_wcs(model, image.wcs)
    _set_wcsinfo(model, image.wcs, model.data.shape)  # validated as a whole (_assign_all_valid)
    with unvalidated.assignments(model):
        model.meta.background.level = float(image.sky)
        model.meta.background.subtracted = False
        model.meta.asn.table_name = f"{asn_id}"
        _set_steps(model, cal_steps)
        _fits_byte_order(model)
    return save_model(model, path, provenance, validate_asdf=False)


def _model_from_template(cls, data, template, validate=True):
    """A new ``cls`` holding ``data`` and ``template``'s primary metadata (``update(only="PRIMARY")``),
    that does not validate its later assignments (:func:`webbflow.io.unvalidated.new_model`).

    ``validate``: the metadata copied is checked against the schema as a whole, once: valid (a
    product stdatamodels wrote), the model is the one a validated ``cls(data)`` and ``update`` make
    (each value valid alone, so each kept as assigned; ~10 ms less a product than a check per
    keyword); otherwise the model is made that way, each invalid value then warned of and left
    out as before.
    """
    model = unvalidated.new_model(cls)
    model.data = data
    model.update(template, only="PRIMARY")
    # the metadata trees (``meta``: where the primary keywords are), not the array
    if not validate or all(_valid_node(model, getattr(model, key)) for key, value in model._instance.items()
                           if isinstance(value, dict)):
        return model
    model.close()
    model = cls(data)
    model.update(template, only="PRIMARY")
    model._validate_on_assignment = False  # its later values are this module's own, as above
    return model


def _valid_node(model, node):
    """Whether a model's ObjectNode ``node`` is valid against its schema (stdatamodels' check of an
    assigned value, on the whole node); False where stdatamodels has no such check."""
    try:
        from stdatamodels.validate import _check_value
    except ImportError:
        return False
    try:
        _check_value(node.instance, node._schema, model)
        return True
    except Exception:  # noqa: BLE001 (any refusal: the caller takes the checked path)
        return False


def write_i2d(result, path, template, *, members, asn, cal_steps=None, params=None, provenance=None, keep=False,
              validate=True):
    """Write the ``_i2d`` product (ImageModel: SCI, ERR, CON, WHT, VAR_*; gwcs + FITS TAN WCS).

    Parameters
    ----------
    result : webbflow.steps.resample.ResampleResult
    path : str or os.PathLike
    template : ImageModel
        First member: its exposure-level metadata is carried over.
    members : list of str
        File names of the inputs.
    asn : dict
        ``asn_id``, ``product`` (name) and ``pool``.
    cal_steps, params, provenance :
        Step status, resample parameters (pixfrac, kernel, weight_type) and provenance.
    keep : bool
        Also return the model as written (the segm's template, :func:`write_segm`), instead of
        letting it go.
    validate : bool
        True: the metadata copied from ``template`` is checked against the schema
        (:func:`_model_from_template`: at once, or one value at a time if it is not all valid).
        False: not checked, for a caller whose ``template`` is valid.  Either way the model's other
        values, this module's own (``result``'s arrays, a gwcs, numbers and names), are assigned
        without stdatamodels' validation of each (:func:`webbflow.io.unvalidated.new_model`),
        and it is written without asdf's validation of its tree (:func:`save_model`).

    Returns
    -------
    pathlib.Path or (pathlib.Path, ImageModel)
        The product's path; with ``keep``, and the model.
    """
    model = _model_from_template(datamodels.ImageModel, result.data, template, validate)
    model.err = result.err
    model.con = result.con
    model.wht = result.wht
    for name, var in result.variances.items():
        setattr(model, name, var)
    _set_wcs(model, result.wcs)
    _set_wcsinfo(model, result.wcs, result.data.shape)
    model.meta.bunit_data = "MJy/sr"
    model.meta.bunit_err = "MJy/sr"
    area_sr = (result.pixel_scale / 206264.80624709636) ** 2
    model.meta.photometry.pixelarea_steradians = area_sr
    model.meta.photometry.pixelarea_arcsecsq = result.pixel_scale**2
    model.meta.exposure.exposure_time = float(result.exptime)
    params = params or {}
    model.meta.resample.pixfrac = float(params.get("pixfrac", 1.0))
    model.meta.resample.pixel_scale_ratio = float(params.get("pixel_scale_ratio", 1.0))
    model.meta.resample.weight_type = str(params.get("weight_type", "ivm"))
    model.meta.resample.pointings = len(members)
    model.meta.resample.product_exposure_time = float(result.exptime)
    model.meta.asn.pool_name = asn.get("pool", "none")
    model.meta.asn.table_name = asn.get("table", asn.get("product", ""))
    model.meta.filetype = "resampled"
    _set_steps(model, cal_steps)
    model.meta.cal_step.resample = "COMPLETE"
    # every input file in WF_MEMB (long-string CONTINUE cards)
    path = save_model(model, path, provenance, cards=[("NDRIZ", len(members), "number of drizzled inputs"),
                                                       ("WF_MEMB", ",".join(members), None)],
                      validate_asdf=False)
    return (path, model) if keep else path


def write_segm(segmentation, path, template, provenance=None):
    """Write the ``_segm`` product (SegmentationMapModel; 0 = background, else catalog label)."""
    model = _model_from_template(datamodels.SegmentationMapModel, np.asarray(segmentation, np.int32), template)
    _set_wcs(model, template.meta.wcs)
    model.meta.cal_step.source_catalog = "COMPLETE"
    return save_model(model, path, provenance, validate_asdf=False)


def write_catalog(table, path, meta=None):
    """Write the source catalog as ECSV atomically (``meta`` added to the table's metadata)."""
    path = Path(path)
    table = table.copy()
    table.meta.update(meta or {})
    table.meta["webbflow_version"] = webbflow.__version__
    write_ecsv(path, table)
    return path
