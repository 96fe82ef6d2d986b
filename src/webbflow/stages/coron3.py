"""Stage 3 for coronagraphy (calwebb_coron3): one coron3 association -> psfstack, psfalign, psfsub,
crfints, i2d.

As jwst 3.0's Coron3Pipeline, including its in-place semantics (which matter for parity):

1. outlier_detection (mode "coron": median over integrations) on each PSF-reference exposure, in
   association order -> ``<root>_<asn_id>_crfints.fits``;
2. stack_refs: every PSF integration in one cube -> ``<product>_psfstack.fits`` (written as it is,
   NaNs and DQ of the crfints kept);
3. for each science exposure: outlier_detection -> its crfints; align_refs: median replacement of
   bad pixels **in place** in the shared PSF stack and in the science cube, then every PSF plane
   registered on the first science integration with the PSFMASK weights -> ``_psfalign`` (a 3-D
   CubeModel, DQ zero); klip on the median-replaced science cube -> ``_psfsub``;
4. resample of every psfsub integration of every science exposure (both rolls, on the sky) ->
   ``<product>_i2d.fits`` (ivm weights, DO_NOT_USE and NON_SCIENCE pixels excluded).

Everything is read and checked before anything is written; each product is written atomically.

Entry point for the workflow: :func:`run` ``(asn, refs, params, out_dir)``:

- ``asn``: the coron3 association (JSON path or the parsed dict): ``asn_id``, ``products[0].name``
  and its members ``{"expname": <calints>, "exptype": "science" | "psf"}`` (expname relative to
  the JSON's folder);
- ``refs``: ``{"psfmask": path}`` (the PSFMASK reference selected with the science exposure);
- ``params``: step -> parameters (``outlier_detection``, ``align_refs``, ``klip``, ``resample``;
  see :data:`DEFAULTS` and ``config/schema.yaml``);
- ``out_dir``: where the products go.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np

from webbflow import dqflags
from webbflow.config import CORON3_STEPS
from webbflow.io import unvalidated
from webbflow.io.cal import CalArrays, open_product
from webbflow.io.errors import InputError, ReferenceFileError
from webbflow.io.image3 import save_model
from webbflow.jobmode import blas_limit, cpus, fork_safe, run_forked
from webbflow.jobmode import threads as job_thread_count
from webbflow.stages import coron3_beyond as beyond
from webbflow.steps import align_refs as align_step
from webbflow.steps import klip as klip_step
from webbflow.steps import median_replace as median_step
from webbflow.steps import outlier_detection as outlier_step
from webbflow.steps import stack_refs as stack_step

__all__ = ["CORON3_STEPS", "DEFAULTS", "bad_bits_value", "read_association", "run"]

log = logging.getLogger(__name__)

DEFAULTS = {
    "outlier_detection": dict(skip=False, maskpt=0.7, snr=[5.0, 4.0]),
    "align_refs": dict(median_box_length=3, bad_bits="DO_NOT_USE", precision="jwst"),
    "klip": dict(truncate=50, **beyond.DEFAULTS),
    "resample": dict(pixfrac=1.0, kernel="square", weight_type="ivm", pixel_scale=None, pixel_scale_ratio=1.0,
                     rotation=None, crval=None, output_shape=None),
}
"""jwst 3.0 defaults of the coron3 step parameters (``precision`` is webbflow's: ``jwst`` is the
parity line, ``float64`` the correct sub-pixel alignment; the klip keys beyond ``truncate`` are
webbflow's sector KLIP, contrast curve and companions, all off: :mod:`webbflow.stages.coron3_beyond`)."""


def job_threads():
    """The threads this job may use: ``OMP_NUM_THREADS`` (Snakemake exports the rule's ``threads`` as
    it) or, outside Snakemake, the CPUs this process may run on (as numba's own default)."""
    n = job_thread_count()
    return n if n is not None else cpus()


def _params(params):
    out = {step: dict(values) for step, values in DEFAULTS.items()}
    for step, values in (params or {}).items():
        if step in out:
            out[step].update(values or {})
    return out


def bad_bits_value(bad_bits):
    """jwst's ``bad_bits`` as an integer: flag names joined by ``,`` or ``+`` (``"DO_NOT_USE, HOT"``),
    an integer, or empty/None (0: only NaNs are bad)."""
    if bad_bits is None:
        return 0
    if isinstance(bad_bits, (int, np.integer)):
        return int(bad_bits)
    value = 0
    for name in str(bad_bits).replace("+", ",").split(","):
        name = name.strip().upper()
        if not name:
            continue
        if name.isdigit():
            value |= int(name)
        elif name in dqflags.PIXEL:
            value |= dqflags.PIXEL[name]
        else:
            raise ValueError(f"align_refs.bad_bits: unknown DQ flag {name!r} (one of {', '.join(dqflags.PIXEL)})")
    return value


def read_association(asn):
    """The coron3 association's id, product name and members by role.

    Parameters
    ----------
    asn : path-like or dict

    Returns
    -------
    dict
        ``path`` (the JSON, or None), ``asn_id``, ``product``, ``science`` and ``psf`` (lists of
        paths in association order), ``pool``.

    Raises
    ------
    InputError
        Unreadable JSON, no product, or no science or no PSF member.
    """
    path, base = None, Path(".")
    if not isinstance(asn, dict):
        path = Path(asn)
        base = path.parent
        try:
            asn = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot be read as an association JSON ({exc})",
                             "give the coron3 association written by the association step") from None
    where = path or "<coron3 association>"
    products = asn.get("products") or []
    if not products:
        raise InputError(where, "has no products", "give a coron3 association with one product and its members")
    members = {"science": [], "psf": []}
    for member in products[0].get("members", []):
        role = str(member.get("exptype", "")).lower()
        if role in members:
            members[role].append(base / member["expname"])
    for role, what in (("psf", "PSF reference"), ("science", "science target")):
        if not members[role]:
            raise InputError(where, f"has no {what} members (exptype '{role}')",
                             "coron3 needs both science and PSF-reference calints: rebuild the association from "
                             "exposures with IS_PSF = F and IS_PSF = T")
    return {"path": path, "asn_id": asn.get("asn_id", "a3001"), "product": products[0].get("name", "coron3"),
            "pool": asn.get("asn_pool", "none"), **members}


def _open_calints(path, need_wcs):
    """Open a member's calints (image2's, written by stdatamodels) without the per-value schema
    check (:func:`webbflow.io.unvalidated.open_model`: about half of each open); the crfints and
    psfsub assign only this stage's arrays and step statuses to it."""
    from stdatamodels.jwst import datamodels

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "calints file not found", "run image2 on the exposure's rateints first")

    def check(model):
        if not isinstance(model, datamodels.CubeModel) or model.data.ndim != 3:
            return (f"is a {type(model).__name__}, not a 3-D CubeModel calints",
                    "give the *_calints.fits of a coronagraphic exposure (image2 on its rateints)")
        if need_wcs and model.meta.wcs is None:
            return ("has no gwcs (meta.wcs) for the i2d resample", "run image2 (assign_wcs) on it")
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_product(path, "calints", "image2", check, native=True, validate=False)


def _read_psfmask(path, shape):
    from stdatamodels.jwst import datamodels

    path = Path(path)
    if not path.is_file():
        raise ReferenceFileError(path, "PSFMASK reference not found", "select references again (crds) or fix the "
                                 "psfmask override")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with unvalidated.open_model(datamodels.PsfMaskModel, str(path)) as model:  # only its array is read
                mask = np.array(model.data, np.float32)
    except Exception as exc:  # noqa: BLE001
        raise ReferenceFileError(path, f"cannot be opened as a PSFMASK reference ({exc})",
                                 "give a CRDS-format PSFMASK (PsfMaskModel)") from None
    if mask.shape != tuple(shape):
        raise ReferenceFileError(path, f"PSFMASK is {mask.shape[::-1] if mask.ndim == 2 else mask.shape} "
                                 f"(x, y) but the science images are {tuple(shape)[::-1]}",
                                 "select the PSFMASK of the exposures' SUBARRAY, FILTER and CORONMSK")
    if not np.all(np.isfinite(mask)) or not np.any(mask != 0):
        raise ReferenceFileError(path, "PSFMASK has no finite non-zero weight (nothing to align on)",
                                 "give a PSFMASK whose weights are finite and 1 away from the occulter")
    return mask


def _exposure_name(path, asn_id, suffix):
    name = Path(path).name
    root = name[: -len("_calints.fits")] if name.endswith("_calints.fits") else Path(name).stem
    return f"{root}_{asn_id}_{suffix}.fits"


def _set_arrays(model, arrays):
    for name in ("data", "dq", "err", "var_poisson", "var_rnoise", "var_flat"):
        value = getattr(arrays, name, None)
        if value is not None:
            setattr(model, name, value)


def _wcsinfo(model):
    info = model.meta.wcsinfo
    return {k: getattr(info, k, None) for k in ("ra_ref", "dec_ref", "roll_ref", "v3yangle", "vparity")}


def run(asn, refs, params=None, out_dir=".", provenance=None):
    """Reduce one coron3 association.

    Parameters
    ----------
    asn : path-like or dict
        The coron3 association (see :func:`read_association`).
    refs : dict
        ``psfmask`` -> path of the PSFMASK reference.
    params : dict, optional
        step -> parameters: ``outlier_detection`` (``skip``, ``maskpt``, ``snr``), ``align_refs``
        (``median_box_length``, ``bad_bits``, ``precision``: ``jwst`` | ``float64``), ``klip``
        (``truncate``; beyond jwst, off by default: ``sectors``, ``contrast``, ``companions`` and their
        settings, :data:`webbflow.stages.coron3_beyond.DEFAULTS`), ``resample`` (as image3's, plus
        ``skip``: no i2d).
    out_dir : path-like
        Folder of every product.
    provenance : dict, optional
        ``step_parameters`` and ``config_digest`` recorded in the products.

    Returns
    -------
    dict
        Paths written: ``psfstack``, ``i2d`` (absent when resample is skipped), and lists
        ``crfints`` (PSF exposures first, then science), ``psfalign``, ``psfsub``; ``shifts``: per
        science exposure the (npsf, 3) fitted (dx, dy, beta); ``cal_steps``; with the beyond-jwst klip
        options ``contrast`` and ``contrast_plot`` (``<product>_contrast.ecsv`` / ``.png``) and
        ``companions`` (``<product>_companions.ecsv``).

    Raises
    ------
    InputError
        An association without science or PSF members, a member that is not a calints cube, members
        of different image sizes, a PSFMASK of the wrong shape or without weights (ReferenceFileError).
        Nothing is written then.
    """
    t0 = time.perf_counter()
    p = _params(params)
    info = read_association(asn)
    out_dir = Path(out_dir)
    do_resample = not p["resample"].get("skip", False)
    if not refs or not refs.get("psfmask"):
        raise ReferenceFileError(info["path"] or "<coron3 association>", "no PSFMASK reference given",
                                 "pass refs={'psfmask': path} (CRDS selects it with the science exposure)")
    try:
        bad_bits = bad_bits_value(p["align_refs"]["bad_bits"])
    except ValueError as exc:
        raise InputError(info["path"] or "<config>", str(exc), "use DQ flag names such as DO_NOT_USE, HOT") from None
    if p["align_refs"]["precision"] not in align_step.PRECISIONS:
        raise InputError(info["path"] or "<config>", f"align_refs.precision {p['align_refs']['precision']!r} "
                         "is unknown", f"use one of {align_step.PRECISIONS}")

    models = {"psf": [], "science": []}
    # One OpenBLAS thread whatever the job's threads: the full-rank KL projection's residuals (the
    # psfsub ERR: round-off) depend on how OpenBLAS splits np.dot's sums, so the products would
    # otherwise change with threads.coron3 (which parallelises align_refs and the contrast curve).
    with blas_limit(1):
        try:
            for role in ("psf", "science"):
                for path in info[role]:
                    models[role].append(_open_calints(path, need_wcs=do_resample and role == "science"))
            shape = models["science"][0].data.shape[-2:]
            for role in ("psf", "science"):
                for path, model in zip(info[role], models[role]):
                    if model.data.shape[-2:] != shape:
                        raise InputError(path, f"images are {model.data.shape[-2:]}, the first science member's "
                                         f"{shape}", "give members of one subarray in the association")
            mask = _read_psfmask(refs["psfmask"], shape)
            result = _reduce(info, models, mask, p, bad_bits)
            if do_resample:  # before anything is written: a failure here leaves no product behind
                images = [im for model, path, sci in zip(models["science"], info["science"], result["science"])
                          for im in _resample_inputs(model, sci["psfsub"], Path(path).name)]
                result["i2d"] = _resample(images, models["science"][0], p["resample"])
                result["cal_steps"]["resample"] = "COMPLETE"
            if beyond.enabled(p["klip"]):  # before anything is written, as the i2d
                result["beyond"] = beyond.reduce_beyond(models["science"], result["science"], mask, p["klip"])
            written = _write(info, models, result, p, refs, out_dir, provenance)
            if "beyond" in result:
                written.update(beyond.write_beyond(result["beyond"], info["product"], out_dir,
                                                   {"asn_id": info["asn_id"], "star_flux": p["klip"]["star_flux"]},
                                                   models["science"][0], p["klip"]["sectors"], provenance))
        finally:
            for model in models["psf"] + models["science"]:
                model.close()
    log.info("coron3 %s done in %.1f s", info["product"], time.perf_counter() - t0)
    return written


def _reduce(info, models, mask, p, bad_bits):
    """All of coron3 in memory; returns the arrays of every product."""
    od, ar = p["outlier_detection"], p["align_refs"]
    snr = tuple(float(v) for v in (od["snr"].split() if isinstance(od["snr"], str) else od["snr"]))
    status = {}

    def outliers(model):
        # the model's own (native) arrays, not copies: the crfints written from the model are these
        # arrays after the outlier flags anyway, and nothing reads the calints' values again (a
        # science exposure's crfints is copied below before the median replacement changes it)
        arrays = CalArrays.from_model(model, var_flat=True, share=True)
        if od.get("skip"):
            status["outlier_detection"] = "SKIPPED"
        else:
            outlier_step.coron_outlier_detection(arrays, maskpt=float(od["maskpt"]), snr=snr)
            status["outlier_detection"] = "COMPLETE"
        return arrays

    psf_arrays = [outliers(m) for m in models["psf"]]
    stack_data, stack_err, stack_dq = stack_step.stack_refs(psf_arrays)
    psfstack = (stack_data.copy(), stack_err.copy(), stack_dq.copy())  # written before any replacement
    status["stack_refs"] = "COMPLETE"

    prepared, targets = [], []
    for i, model in enumerate(models["science"]):
        arrays = outliers(model)
        crf = CalArrays(**{k: None if v is None else v.copy() for k, v in vars(arrays).items()})
        # jwst's align_refs replaces bad pixels in the shared PSF stack and in the science model that
        # klip then uses, in place, again for every science exposure: so do we (the stack as this
        # exposure's alignment sees it kept apart, so that all of them are aligned together below)
        median_step.median_replace(stack_data, stack_dq, ar["median_box_length"], bad_bits)
        median_step.median_replace(arrays.data, arrays.dq, ar["median_box_length"], bad_bits)
        last = i == len(models["science"]) - 1
        targets.append((arrays.data[0], stack_data if last else stack_data.copy(), stack_err))
        prepared.append((arrays, crf))
    # every science exposure's PSF planes fitted by one set of workers (align_many: the same numbers)
    alignments = align_step.align_many(targets, mask, precision=ar["precision"], workers=job_threads())
    science = []
    for (arrays, crf), (aligned, aligned_err, shifts), path in zip(prepared, alignments, info["science"]):
        basis = klip_step.kl_basis(aligned, int(p["klip"]["truncate"]))
        sub, sub_err = klip_step.klip(arrays.data, basis)
        replaced = arrays.data
        arrays.data, arrays.err = sub, sub_err
        science.append({"crf": crf, "aligned": (aligned, aligned_err), "shifts": shifts, "psfsub": arrays,
                        "replaced": replaced})
        log.info("%s: %d PSF planes aligned, %d KL modes", Path(path).name, len(aligned), len(basis.vectors))
    status.update(align_psfs="COMPLETE", klip="COMPLETE")
    return {"psf": psf_arrays, "psfstack": psfstack, "science": science, "cal_steps": status}


def _write(info, models, result, p, refs, out_dir, provenance):
    from stdatamodels.jwst import datamodels

    asn_id, product = info["asn_id"], info["product"]
    status = result["cal_steps"]
    written = {"crfints": [], "psfalign": [], "psfsub": [], "shifts": [], "cal_steps": status}
    mask_name = Path(refs["psfmask"]).name

    def save(model, path):
        model.meta.asn.pool_name = info["pool"]
        model.meta.asn.table_name = info["path"].name if info["path"] else asn_id
        # the trees are valid by construction (this stage's arrays and statuses on validated models'
        # metadata): asdf's validation of each before it is written finds nothing
        return save_model(model, path, provenance, validate_asdf=False)

    def crfints(model, arrays, path):
        _set_arrays(model, arrays)
        model.meta.cal_step.outlier_detection = status["outlier_detection"]
        return save(model, out_dir / _exposure_name(path, asn_id, "crfints"))

    def psf_products():
        # Exposure crfints are written before the association's products, as jwst does (each atomically).
        for model, arrays, path in zip(models["psf"], result["psf"], info["psf"]):
            crfints(model, arrays, path)
        data, err, dq = result["psfstack"]
        stack = unvalidated.new_model(datamodels.CubeModel)
        stack.data, stack.err, stack.dq = data, err, dq
        stack.update(models["psf"][0])  # after its crfints' changes, as they were
        stack.meta.cal_step.outlier_detection = status["outlier_detection"]
        stack.meta.cal_step.stack_psfs = "COMPLETE"
        save(stack, out_dir / f"{product}_psfstack.fits")
        for path, sci in zip(info["science"], result["science"]):
            aligned = unvalidated.new_model(datamodels.CubeModel)
            aligned.update(stack)
            aligned.data = sci["aligned"][0]
            aligned.dq = np.zeros(aligned.data.shape, np.uint32)  # jwst's psfalign: DQ all zero
            if sci["aligned"][1] is not None:
                aligned.err = sci["aligned"][1]
            aligned.meta.cal_step.align_psfs = "COMPLETE"
            aligned.meta.ref_file.psfmask.name = mask_name
            save(aligned, out_dir / _exposure_name(path, asn_id, "psfalign"))

    def science_products():
        for model, path, sci in zip(models["science"], info["science"], result["science"]):
            crfints(model, sci["crf"], path)
            # The psfsub is the science model again (no copy of it): the crfints' changes to it are all
            # made again here (every array the crfints set, S_OUTLIR, the asn names, the file name and date).
            _set_arrays(model, sci["psfsub"])
            model.meta.cal_step.outlier_detection = status["outlier_detection"]
            model.meta.cal_step.klip = "COMPLETE"  # jwst's psfsub has S_KLIP and S_OUTLIR, not S_PSFALI
            save(model, out_dir / _exposure_name(path, asn_id, "psfsub"))
        if "i2d" in result:
            models["science"][0].meta.cal_step.klip = "COMPLETE"  # the i2d's blended science headers have it
            _write_i2d(result["i2d"], models["science"][0], info, p, status, out_dir, provenance)

    # The two groups share no model: with a second CPU a forked helper writes the PSF references'
    # products while this process writes the science exposures' (each product's bytes the same;
    # ~0.3 s less of a demo-coron job's ~0.65 s of writes).  Either way every product is written atomically.
    if job_threads() > 1 and fork_safe():
        run_forked([science_products, psf_products])
    else:
        psf_products()
        science_products()
    written["crfints"] = [out_dir / _exposure_name(path, asn_id, "crfints") for path in info["psf"] + info["science"]]
    written["psfstack"] = out_dir / f"{product}_psfstack.fits"
    written["psfalign"] = [out_dir / _exposure_name(path, asn_id, "psfalign") for path in info["science"]]
    written["psfsub"] = [out_dir / _exposure_name(path, asn_id, "psfsub") for path in info["science"]]
    written["shifts"] = [sci["shifts"] for sci in result["science"]]
    if "i2d" in result:
        written["i2d"] = out_dir / f"{product}_i2d.fits"
    return written


def _resample_inputs(model, arrays, name):
    """One :class:`~webbflow.steps.resample.ImageInput` per psfsub integration (jwst's ``to_container``)."""
    from webbflow.steps.resample import ImageInput

    exptime = float(model.meta.exposure.integration_time or model.meta.exposure.exposure_time or 1.0)
    out = []
    variances = {v: getattr(arrays, v, None) for v in ("var_rnoise", "var_poisson", "var_flat")}
    for i in range(arrays.data.shape[0]):
        out.append(ImageInput(data=arrays.data[i], err=arrays.err[i], dq=arrays.dq[i], wcs=model.meta.wcs,
                              exptime=exptime, name=f"{name}[{i}]", group=name,
                              **{v: None if a is None else a[i] for v, a in variances.items()}))
    return out


def _resample(images, first, rs):
    """Drizzle every psfsub integration onto one grid (jwst's resample of the coron3 ModelLibrary)."""
    from webbflow.steps import resample as resample_step

    out_wcs, out_shape, pscale = resample_step.make_output_wcs(
        [im.wcs for im in images], [im.data.shape for im in images], pixel_scale=rs["pixel_scale"],
        pixel_scale_ratio=rs["pixel_scale_ratio"], rotation=rs["rotation"], crval=rs["crval"],
        output_shape=tuple(rs["output_shape"]) if rs["output_shape"] else None, ref_wcsinfo=_wcsinfo(first))
    log.info("resample: %d integrations onto %s at %.4f arcsec/pixel", len(images), out_shape, pscale)
    return resample_step.drizzle_images(images, out_wcs, out_shape, pscale, pixfrac=rs["pixfrac"],
                                        kernel=rs["kernel"], weight_type=rs["weight_type"])


def _write_i2d(resampled, first, info, p, status, out_dir, provenance):
    from webbflow.io.image3 import write_i2d

    members = [Path(x).name for x in info["science"]]
    asn = {"asn_id": info["asn_id"], "product": info["product"], "pool": info["pool"],
           "table": info["path"].name if info["path"] else info["product"]}
    steps = {k: v for k, v in status.items() if k in ("outlier_detection", "resample")}
    return write_i2d(resampled, out_dir / f"{info['product']}_i2d.fits", first, members=members, asn=asn,
                     cal_steps=steps, params=p["resample"], provenance=provenance, validate=False)
