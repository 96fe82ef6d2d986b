"""Write ``rate`` (ImageModel) and ``rateints`` (CubeModel) products.

The products are built by stdatamodels from an in-memory HDUList holding the
uncal's primary and SCI keywords, so every keyword the schema knows lands in
its ``meta`` path and the rest travels in ``extra_fits``; stdatamodels then
writes the FITS file with its ASDF extension, exactly as jwst would.

Files are written under a temporary name in the destination folder and moved
into place with :func:`os.replace`, so an interrupted job never leaves a file
that looks finished.
"""

import json
import os
from pathlib import Path

import numpy as np
from astropy.io import fits

import webbflow
from webbflow.config import config_digest

__all__ = ["CAL_STEP_KEYS", "REFTYPES", "atomic_path", "write_rate", "write_rateints"]

CAL_STEP_KEYS = {
    "dq_init": "dq_init",
    "saturation": "saturation",
    "superbias": "superbias",
    "refpix": "refpix",
    "linearity": "linearity",
    "dark_current": "dark_sub",
    "jump": "jump",
    "ramp_fit": "ramp_fit",
    "gain_scale": "gain_scale",
}
"""webbflow step name -> ``meta.cal_step`` attribute (``S_<STEP>`` keyword)."""

REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")
"""Reference types detector1 uses; each gets an ``R_<TYPE>`` keyword."""

# Keywords describing the uncal's own layout: never copied to a product.
_STRUCTURAL = {
    "SIMPLE", "BITPIX", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "BZERO", "BSCALE",
    "EXTNAME", "EXTVER", "CHECKSUM", "DATASUM", "DATAMODL", "FILENAME", "BUNIT",
    "CAL_VER", "CAL_VCS", "DATE", "TFIELDS",
}


def _carried(header, primary=True):
    """Cards of ``header`` that a product inherits (no layout or commentary cards)."""
    cards = []
    for card in header.cards:
        key = card.keyword
        if not key or key in ("COMMENT", "HISTORY") or key in _STRUCTURAL:
            continue
        if key.startswith(("NAXIS", "TTYPE", "TFORM", "TUNIT", "TDIM")):
            continue
        if primary and key.startswith(("S_", "R_", "WF_")) and key != "S_REGION":
            continue  # step status and references are set from this run only
        cards.append((key, card.value, card.comment))
    return cards


def atomic_path(path):
    """Temporary sibling of ``path`` used until the product is complete."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.part")


def _provenance_cards(ref_files, provenance):
    provenance = provenance or {}
    params = provenance.get("step_parameters", {})
    digest = provenance.get("config_digest") or config_digest(
        {"steps": params, "references": {k: Path(v).name for k, v in (ref_files or {}).items() if v}}
    )
    return [
        ("WF_VER", webbflow.__version__, "webbflow version"),
        ("WF_CFGD", digest, "sha256 of the product's config (canonical JSON)"),
        ("WF_PARS", json.dumps(params, sort_keys=True, separators=(",", ":")), "webbflow step parameters (JSON)"),
    ]


def _build_model(model_cls, model_type, arrays, headers, int_times, cal_steps, ref_files, provenance):
    primary = fits.Header()
    primary["DATAMODL"] = model_type
    for key, value, comment in _carried(headers.primary) + _provenance_cards(ref_files, provenance):
        primary.append((key, value, comment))
    sci_header = fits.Header()
    for key, value, comment in _carried(headers.sci, primary=False):
        sci_header.append((key, value, comment))
    hdus = [fits.PrimaryHDU(header=primary), fits.ImageHDU(np.asarray(arrays.data, np.float32), sci_header, name="SCI")]
    if int_times is not None:
        hdus.append(fits.BinTableHDU(np.asarray(int_times), name="INT_TIMES"))
    # Built from an HDUList so stdatamodels maps every schema keyword to meta.* and keeps the rest.
    model = model_cls(fits.HDUList(hdus))
    model.dq = np.asarray(arrays.dq, np.uint32)
    model.err = np.asarray(arrays.err, np.float32)
    model.var_poisson = np.asarray(arrays.var_poisson, np.float32)
    model.var_rnoise = np.asarray(arrays.var_rnoise, np.float32)
    model.meta.bunit_data = "DN/s"
    model.meta.bunit_err = "DN/s"
    model.meta.calibration_software_version = webbflow.__version__
    for step, attr in CAL_STEP_KEYS.items():
        status = (cal_steps or {}).get(step)
        if status is not None:
            setattr(model.meta.cal_step, attr, status)
    for reftype in REFTYPES:
        ref = (ref_files or {}).get(reftype)
        getattr(model.meta.ref_file, reftype).name = Path(ref).name if ref else "N/A"
    return model


def _save(model, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(path)
    model.meta.filename = path.name
    try:
        model.to_fits(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_rate(path, rate, headers, *, cal_steps=None, ref_files=None, provenance=None):
    """Write a ``rate`` product (ImageModel) atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, e.g. ``..._nrca1_rate.fits``.
    rate : object
        2-D arrays ``data``, ``dq``, ``err``, ``var_poisson``, ``var_rnoise``
        (``RampFitResult.rate``), in DN/s.
    headers : UncalHeaders
        Headers of the uncal exposure; all its primary and SCI keywords are
        carried over except those describing the uncal's layout.
    cal_steps : dict, optional
        webbflow step name -> ``"COMPLETE"``/``"SKIPPED"``, written as ``S_<STEP>``.
    ref_files : dict, optional
        Reference type -> path (or None); written as ``R_<TYPE>`` (``N/A`` when unused).
    provenance : dict, optional
        ``step_parameters`` (dict) and ``config_digest`` (str), written as
        ``WF_PARS`` (JSON) and ``WF_CFGD``; ``WF_VER`` is the webbflow version.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    from stdatamodels.jwst.datamodels import ImageModel

    model = _build_model(ImageModel, "ImageModel", rate, headers, None, cal_steps, ref_files, provenance)
    try:
        return _save(model, path)
    finally:
        model.close()


def write_rateints(path, rateints, headers, *, cal_steps=None, ref_files=None, provenance=None):
    """Write a ``rateints`` product (CubeModel, with INT_TIMES) atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, e.g. ``..._nrca1_rateints.fits``.
    rateints : object
        3-D (nints, ny, nx) arrays ``data``, ``dq``, ``err``, ``var_poisson``,
        ``var_rnoise`` (``RampFitResult.rateints``), in DN/s.
    headers, cal_steps, ref_files, provenance
        As for :func:`write_rate`; ``headers.int_times`` becomes INT_TIMES.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    from stdatamodels.jwst.datamodels import CubeModel

    model = _build_model(CubeModel, "CubeModel", rateints, headers, headers.int_times, cal_steps, ref_files,
                         provenance)
    try:
        return _save(model, path)
    finally:
        model.close()
