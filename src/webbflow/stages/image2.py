"""Stage 2 imaging (calwebb_image2): a ``rate`` to a ``cal`` product, a ``rateints`` to ``calints``.

An imaging time series (NRC_TSIMAGE) gives its rateints (a CubeModel): the same steps run on every
integration and the calints keeps the cube and its INT_TIMES (jwst's image2 does not resample 3-D
data).

assign_wcs -> flat_field -> photom, in memory on the rate's arrays, with the
jwst 3.0 algorithms (``webbflow.steps.*``).  Before them, off unless asked
(``steps.destripe.skip: false``; not in jwst): the survey teams' 1/f destriping
of the rate, a masked median per row and amplifier
(:func:`webbflow.steps.roeba.destripe_image`).  After them, when
``steps.wisps.template_dir`` names the NIRCam team's wisp templates (not in jwst):
the exposure's template scaled to it on the source-masked background and
subtracted (:mod:`webbflow.steps.wisps`).  Everything that can fail on bad
input (reading the rate, the references, the pointing keywords) happens
before the first step; the product is written once, atomically.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from webbflow.config import IMAGE2_STEPS, step_kwargs, step_skipped
from webbflow.provenance import reference_names, stage_provenance
from webbflow.io.cal import (load_area, load_distortion, load_flat, load_photom, load_wisp_template,
                             read_rate, write_cal)
from webbflow.io.errors import InputError, ReferenceFileError
from webbflow.ramp import Readout, StepStatus
from webbflow.refs.check import check_exposure_geometry
from webbflow.steps import assign_wcs, flat_field, photom

# destripe and wisps (off unless asked, not in jwst) import their modules where they run: both pull in
# numba and scipy.ndimage (~0.4 s CPU), which a default image2 job never uses.

__all__ = ["IMAGE2_STEPS", "STEP_REFTYPES", "run"]

log = logging.getLogger(__name__)

STEP_REFTYPES = {"destripe": (), "assign_wcs": ("distortion",), "flat_field": ("flat",), "photom": ("photom", "area"),
                 "wisps": ()}
"""Reference types each step needs (area is optional for photom, as in jwst)."""

def _check(rate_path, model, references, params):
    missing = []
    for step in IMAGE2_STEPS:
        if step_skipped(params, step):
            continue
        missing += [t for t in STEP_REFTYPES[step] if t != "area" and not references.get(t)]
    if missing:
        inst = model.meta.instrument
        raise ReferenceFileError(
            rate_path, f"no {', '.join(missing)} reference for DETECTOR={inst.detector} "
            f"FILTER={inst.filter} PUPIL={inst.pupil} SUBARRAY={model.meta.subarray.name}",
            "set references.dir to a folder holding them, name them with overrides.<reftype>, "
            "or skip the step with steps.<step>.skip: true")


def _subtract_wisps(arrays, template, template_path, kwargs, fastaxis, noutputs):
    """Fit and subtract the wisp template from every integration; -> (status, header cards).

    No template for the exposure's detector, filter and pupil (wisps appear on a few SW
    detectors only) or no background to fit: SKIPPED, the image left as it is.  The error
    arrays are kept: the subtracted model is a fit over ~10^5 pixels, its noise negligible.
    """
    from webbflow.steps import refpix, wisps

    kwargs = {k: v for k, v in kwargs.items() if k != "template_dir"}
    # FASTAXIS +-1: the readout runs along x, so each row has its 1/f offset (numpy axis 1)
    kwargs["stripe_axis"] = (1 if abs(int(fastaxis or 1)) == 1 else 0) if kwargs.pop("fit_stripes", True) else None
    # a full-width 4-output array: each amplifier's quarter of a line has its own 1/f offset
    fast_length = arrays.data.shape[-1] if kwargs["stripe_axis"] != 0 else arrays.data.shape[-2]
    kwargs["amplifiers"] = int(noutputs or 1) if fast_length == refpix.DETECTOR_SIZE else 1
    if template is None:
        log.info("wisps         SKIPPED  (no %s)", template_path.name)
        return StepStatus.SKIPPED, [("S_WISPS", StepStatus.SKIPPED, "wisp template subtraction")]
    data = arrays.data.reshape((-1,) + arrays.data.shape[-2:])
    dq = np.broadcast_to(arrays.dq, arrays.data.shape).reshape(data.shape)
    fits = [wisps.fit_wisp(frame, template, frame_dq, **kwargs) for frame, frame_dq in zip(data, dq)]
    if any(f is None for f in fits):
        log.warning("wisps         SKIPPED  (too few background pixels to fit %s)", template_path.name)
        return StepStatus.SKIPPED, [("S_WISPS", StepStatus.SKIPPED, "wisp template subtraction")]
    for frame, fit in zip(data, fits):
        wisps.subtract_wisp(frame, template, fit)
    if not np.shares_memory(data, arrays.data):  # reshape copied a non-contiguous array
        arrays.data[...] = data.reshape(arrays.data.shape)
    scale = float(np.median([f.scale for f in fits]))
    log.info("wisps         COMPLETE  %s x %.4g (background %.4g, %d pixels)", template_path.name, scale,
             np.median([f.constant for f in fits]), min(f.npix for f in fits))
    return StepStatus.COMPLETE, [
        ("S_WISPS", StepStatus.COMPLETE, "wisp template subtraction"),
        ("R_WISP", template_path.name, "wisp template (NIRCam team format)"),
        ("WISPSCL", scale, "wisp template scale subtracted (median of integrations)"),
        ("WISPBKG", float(np.median([f.constant for f in fits])), "background fitted with the wisp (kept)"),
        ("WISPNPIX", min(f.npix for f in fits), "background pixels of the wisp fit")]


def run(rate_path, cal_path, references, params, provenance=None):
    """Calibrate one rate product into a cal product.

    Parameters
    ----------
    rate_path, cal_path : path-like
    references : dict
        reftype -> path for distortion, flat, photom, area (None when absent;
        area is optional).
    params : dict
        step -> {parameter: value} for destripe, assign_wcs, flat_field, photom, wisps;
        ``skip: true`` skips a step (wisps runs only with a ``template_dir``).
    provenance : dict, optional
        ``step_parameters`` and ``config_digest`` recorded in the product.

    Returns
    -------
    dict
        step -> status.

    Raises
    ------
    webbflow.io.InputError
        For an unreadable rate, missing or mismatched references, or missing
        pointing keywords; nothing is written then.
    """
    t0 = time.perf_counter()
    params = {s: dict(params.get(s) or {}) for s in IMAGE2_STEPS}
    references = {t: (str(p) if p else None) for t, p in (references or {}).items()}
    model, arrays = read_rate(rate_path)
    try:
        _check(rate_path, model, references, params)
        inst = model.meta.instrument
        sci = {"shape": arrays.data.shape[-2:], "xstart": int(model.meta.subarray.xstart or 1),
               "ystart": int(model.meta.subarray.ystart or 1), "detector": inst.detector}
        check_exposure_geometry(rate_path, {"SUBSIZE1": model.meta.subarray.xsize,
                                            "SUBSIZE2": model.meta.subarray.ysize}, sci["shape"])
        wisp = None  # (template, path): read before the first step, as every input
        if params["wisps"].get("template_dir") and not step_skipped(params, "wisps"):
            wisp = load_wisp_template(params["wisps"]["template_dir"], inst.detector, inst.filter,
                                      inst.pupil, sci)
        log.info("%s: %s %s/%s %s %dx%d", Path(rate_path).name, inst.detector, inst.filter,
                 inst.pupil, model.meta.subarray.name, *sci["shape"][::-1])
        statuses, used, wcs, wcsinfo, phot = {}, {}, None, {}, {}

        # destripe (beyond jwst): on the rate, where the 1/f stripes are still additive DN/s
        if step_skipped(params, "destripe"):
            statuses["destripe"] = StepStatus.SKIPPED
        else:
            sub = model.meta.subarray
            readout = Readout(nints=1, ngroups=1, detector=inst.detector, fastaxis=int(sub.fastaxis),
                              slowaxis=int(sub.slowaxis), noutputs=int(model.meta.exposure.noutputs or 4),
                              substrt1=sci["xstart"], substrt2=sci["ystart"], subarray=str(sub.name))
            from webbflow.steps import roeba

            dq = arrays.dq if arrays.dq.ndim == 2 else np.bitwise_or.reduce(arrays.dq, axis=0)
            borrowed, skipped = roeba.destripe_image(arrays.data, dq, readout, **step_kwargs(params, "destripe"))
            statuses["destripe"] = StepStatus.COMPLETE
            log.info("destripe      %s  (%d amplifier rows borrowed the other amplifiers' stripe, %d left)",
                     statuses["destripe"], borrowed, skipped)

        # assign_wcs
        if step_skipped(params, "assign_wcs"):
            statuses["assign_wcs"] = StepStatus.SKIPPED
        else:
            distortion = load_distortion(references["distortion"], sci)
            pointing = assign_wcs.model_pointing(model)
            try:
                statuses["assign_wcs"], wcs, wcsinfo = assign_wcs.run(
                    distortion, pointing, (sci["xstart"], sci["ystart"]), sci["shape"],
                    **step_kwargs(params, "assign_wcs"))
            except ValueError as exc:
                raise InputError(rate_path, f"cannot build the WCS ({exc})",
                                 "give a rate whose SCI header has the pointing keywords "
                                 "V2_REF, V3_REF, ROLL_REF, RA_REF, DEC_REF") from None
            used["distortion"] = references["distortion"]
            log.info("assign_wcs    %s  S_REGION %s", statuses["assign_wcs"], wcsinfo.get("s_region"))

        # flat_field
        if params["flat_field"].get("skip"):
            statuses["flat_field"] = StepStatus.SKIPPED
        else:
            flat, flat_dq, flat_err = load_flat(references["flat"], sci)
            statuses["flat_field"] = flat_field.run(arrays, flat, flat_dq, flat_err, copy=False)
            del flat, flat_dq, flat_err  # not held through the write
            used["flat"] = references["flat"]
            log.info("flat_field    %s", statuses["flat_field"])

        # photom
        if params["photom"].get("skip"):
            statuses["photom"] = StepStatus.SKIPPED
        else:
            table, pixar_sr, pixar_a2 = load_photom(references["photom"], sci)
            used["photom"] = references["photom"]
            if references.get("area"):
                arrays.area, area_sr, area_a2 = load_area(references["area"], sci)
                pixar_sr = area_sr if area_sr is not None else pixar_sr
                pixar_a2 = area_a2 if area_a2 is not None else pixar_a2
                used["area"] = references["area"]
            conv, _ = photom.find_conversion(table, inst.filter, inst.pupil, model.meta.subarray.name)
            if conv is None:
                log.warning("photom: no PHOTOM row for FILTER=%s PUPIL=%s; data left in DN/s",
                            inst.filter, inst.pupil)
            statuses["photom"] = photom.run(arrays, conv)
            if statuses["photom"] == StepStatus.COMPLETE:
                phot = {"conversion_megajanskys": conv,
                        # float32 like jwst (PHOTMJSR is a float32 table value)
                        "conversion_microjanskys": conv * photom.MJSR_TO_UJA2,
                        "pixelarea_steradians": pixar_sr, "pixelarea_arcsecsq": pixar_a2}
            else:
                phot = {"pixelarea_steradians": pixar_sr, "pixelarea_arcsecsq": pixar_a2}
            log.info("photom        %s  PHOTMJSR %s", statuses["photom"], conv)

        ref_files = {t: used.get(t) for t in ("distortion", "flat", "photom", "area")}
        # wisps (beyond jwst): on the calibrated image, where the template's shape is the sky's
        keywords = []
        if wisp is not None:
            statuses["wisps"], keywords = _subtract_wisps(arrays, *wisp, step_kwargs(params, "wisps"),
                                                          model.meta.subarray.fastaxis,
                                                          model.meta.exposure.noutputs)

        provenance = stage_provenance(params, provenance, references=reference_names(used))
        write_cal(cal_path, model, arrays, wcs=wcs, wcsinfo=wcsinfo, photometry=phot,
                  cal_steps=statuses, ref_files=ref_files, provenance=provenance, keywords=keywords)
    finally:
        model.close()
    log.info("image2 done in %.2f s: %s", time.perf_counter() - t0, Path(cal_path).name)
    return statuses
