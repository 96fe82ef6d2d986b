"""Stage-2 references of a simulated grism time series, selectable by crds for NRC_TSGRISM.

Beside the stage-1 references under ``refs/``, a grism time series needs SPECWCS,
WAVELENGTHRANGE, PHOTOM (grism table) and EXTRACT1D (:func:`webbflow.simulate.grism.write_grism_references`),
plus FLAT (PUPIL GRISMR, at the subarray), DISTORTION and AREA
(:func:`webbflow.simulate.stage2_refs.write_stage2_references`).

The local CRDS cache (:mod:`webbflow.refs.crds_cache`) matches EXP_TYPE literally for the
types whose rules use it (dark, area, distortion), so the imaging values the stage-2 and stage-1
writers put there (NRC_IMAGE) would leave a TSGRISM exposure without a match; here they are
re-targeted to NRC_TSGRISM (P_EXP_TY says the same).  The imaging PHOTOM is not kept: the grism
PHOTOM (NrcWfssPhotomModel) is the one for this mode, and two PHOTOM files with the same DETECTOR
and USEAFTER would be an ambiguous selection.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


from webbflow.io.files import atomic_output
from webbflow.simulate import grism, optics, stage2_refs
from webbflow.simulate.stage2_refs import write_stage2_references
from webbflow.simulate.writers import reference_path

__all__ = ["TSGRISM_P_EXP_TYPE", "retarget_exp_type", "write_tso_grism_references"]

TSGRISM_P_EXP_TYPE = "NRC_TSGRISM|"


def retarget_exp_type(path, exp_type="NRC_TSGRISM", p_exp_type=TSGRISM_P_EXP_TYPE):
    """:func:`webbflow.simulate.stage2_refs.retarget_exp_type`, to NRC_TSGRISM by default."""
    return stage2_refs.retarget_exp_type(path, exp_type, p_exp_type)


def write_tso_grism_references(outdir, spec):
    """Write the stage-2 references of a grism time series ``spec`` into ``<outdir>/refs``.

    Parameters
    ----------
    outdir : path-like
        Simulation folder (the stage-1 references of ``spec`` are already in ``refs/``).
    spec : ExposureSpec
        An NRC_TSGRISM exposure (its detector, subarray, filter, pupil and ``ref_seed``).

    Returns
    -------
    dict
        reftype -> Path: specwcs, wavelengthrange, photom (grism), extract1d, flat, area, distortion.
    """
    outdir = Path(outdir)
    refs = outdir / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    paths = dict(grism.write_grism_references(outdir, spec.detector, spec.filter,
                                              optics.pixar_sr(spec.detector), optics.pixar_a2(spec.detector)))
    # The stage-2 writer puts an imaging PHOTOM beside the others: write into a scratch folder and
    # keep only the flat, the area and the distortion.
    stage = Path(tempfile.mkdtemp(prefix=".stage2.", suffix=".part", dir=outdir))
    try:
        extra = {"WFSEED": spec.ref_seed, "EXP_TYPE": "NRC_TSGRISM", "P_EXP_TY": TSGRISM_P_EXP_TYPE}
        written = write_stage2_references(stage, spec.detector, spec.geometry, spec.filter, spec.pupil,
                                          spec.ref_seed, extra_keywords=extra)
        for reftype in ("flat", "area", "distortion"):
            src = written[reftype]
            dest = refs / src.name
            retarget_exp_type(src)  # the distortion (ASDF) does not take extra keywords
            with atomic_output(dest) as tmp:
                shutil.copyfile(src, tmp)
            paths[reftype] = dest
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    # stage 1: the dark's rule matches EXP_TYPE too
    retarget_exp_type(reference_path(outdir, spec.detector, "dark", spec.geometry.name))
    return paths
