"""Run STScI's jwst pipeline (the oracle) in its own virtual environment.

webbflow never imports jwst: it pins older libraries.  The oracle lives in a
separate venv (``.oracle/`` at the repository root, made by
``benchmarks/setup_oracle.sh``, or ``$WEBBFLOW_ORACLE``) and is driven through
``jwst_offline.py`` (``../shared/oracle/`` beside the clone, or
``$WEBBFLOW_ORACLE_SCRIPT``), which runs a pipeline with no CRDS server and
every reference file given explicitly.  Parity tests and benchmarks use this.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["DETECTOR1_OVERRIDES", "DETECTOR1_SKIPS", "OracleUnavailable", "oracle_paths", "product_agreement",
           "detector1_tolerance_failures",
           "detector1_command", "run_detector1", "IMAGE3_OVERRIDES", "image3_command", "run_image3",
           "SPEC2_OVERRIDES", "spec2_command", "run_spec2", "run_tso3", "image2_command", "coron3_command",
           "run_coron3"]

REPO = Path(__file__).resolve().parents[2]

DETECTOR1_OVERRIDES = {
    "dq_init": ("mask",), "saturation": ("saturation", "superbias"), "superbias": ("superbias",),
    "linearity": ("linearity",), "dark_current": ("dark",), "jump": ("gain", "readnoise"),
    "ramp_fit": ("gain", "readnoise"), "gain_scale": ("gain",), "refpix": ("sirskernel",),
}
"""jwst step -> reference types it is given (as ``--override step.reftype=path``)."""

DETECTOR1_SKIPS = ("ipc", "persistence", "charge_migration", "clean_flicker_noise")
"""jwst detector1 steps webbflow does not run (no reference files for them offline)."""

INTERMEDIATE_STEPS = ("dq_init", "saturation", "superbias", "refpix", "linearity", "dark_current", "jump")
"""Steps whose intermediate RampModel jwst saves as ``<root>_<step>.fits``."""


class OracleUnavailable(RuntimeError):
    """The oracle environment or its driver script is missing."""


def oracle_paths():
    """(python, script) of the oracle; raise :class:`OracleUnavailable` with the fix if absent."""
    python = Path(os.environ.get("WEBBFLOW_ORACLE", REPO / ".oracle")) / "bin" / "python"
    script = Path(os.environ.get("WEBBFLOW_ORACLE_SCRIPT",
                                 REPO.parent / "shared" / "oracle" / "jwst_offline.py"))
    if not python.exists():
        raise OracleUnavailable(f"no oracle environment at {python.parent.parent}: "
                                "run benchmarks/setup_oracle.sh (makes .oracle with jwst==3.0.0)")
    if not script.exists():
        raise OracleUnavailable(f"oracle driver {script} not found: set WEBBFLOW_ORACLE_SCRIPT")
    return python, script


def _run(cmd, cwd, what, timeout):
    """Run an oracle command in ``cwd``; return its wall time, raise (with its stderr tail) on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode})")
    return wall


PRODUCT_ARRAYS = ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE")
"""Arrays of a rate/rateints product that :func:`product_agreement` compares."""


def product_agreement(ours, theirs):
    """How a rate or rateints product agrees with jwst's, in the terms of issue #5.

    Parameters
    ----------
    ours, theirs : dict
        Extension name (:data:`PRODUCT_ARRAYS`) -> array.

    Returns
    -------
    dict
        ``dz``: |SCI difference| / jwst ERR where both are finite and ERR > 0;
        ``dq_key_same``: fraction of pixels whose DO_NOT_USE, SATURATED and
        JUMP_DET bits agree; ``max_rel``: per ERR/VAR_POISSON/VAR_RNOISE the
        largest relative difference where the whole DQ agrees; ``identical``:
        per array the fraction of bit-identical values (NaN equal to NaN).
    """
    from webbflow import dqflags

    o = {e: np.asarray(ours[e]) for e in PRODUCT_ARRAYS}
    j = {e: np.asarray(theirs[e]) for e in PRODUCT_ARRAYS}
    key = dqflags.DO_NOT_USE | dqflags.SATURATED | dqflags.JUMP_DET
    both = np.isfinite(o["SCI"]) & np.isfinite(j["SCI"]) & (j["ERR"] > 0)
    agree = (o["DQ"] == j["DQ"]) & both
    max_rel = {}
    for e in ("ERR", "VAR_POISSON", "VAR_RNOISE"):
        a, b = o[e][agree].astype(np.float64), j[e][agree].astype(np.float64)
        max_rel[e] = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30))) if a.size else 0.0
    identical = {e: float(np.mean((o[e] == j[e]) | (np.isnan(o[e]) & np.isnan(j[e]))
                                  if o[e].dtype.kind == "f" else o[e] == j[e])) for e in PRODUCT_ARRAYS}
    return {"dz": np.abs(o["SCI"] - j["SCI"])[both] / j["ERR"][both],
            "dq_key_same": float(np.mean((o["DQ"] & key) == (j["DQ"] & key))),
            "max_rel": max_rel, "identical": identical}


def detector1_tolerance_failures(agreement):
    """The detector1 parity tolerances (issue #5) that a :func:`product_agreement` result breaks.

    SCI median |Δ|/ERR ≤ 0.01 and 99.9th percentile ≤ 0.1; DO_NOT_USE, SATURATED and JUMP_DET
    identical on ≥ 99.9 % of pixels; ERR, VAR_POISSON, VAR_RNOISE within 1e-4 relative where DQ
    agrees.  Returns a list of short descriptions, empty when everything is within tolerance.
    """
    z = agreement["dz"]
    failures = []
    if z.size and (np.median(z) > 0.01 or np.percentile(z, 99.9) > 0.1):
        failures.append(f"SCI |Δ|/ERR median {np.median(z):.3g}, 99.9th pct {np.percentile(z, 99.9):.3g}")
    if agreement["dq_key_same"] < 0.999:
        failures.append(f"DQ (DNU/SAT/JUMP) same on only {agreement['dq_key_same']:.4%}")
    failures += [f"{ext} max relative difference {rel:.3g}" for ext, rel in agreement["max_rel"].items()
                 if rel > 1e-4]
    return failures


def detector1_command(uncal, references, outdir, save_steps=False, skip=(), settings=None):
    """The command line that runs jwst's detector1 on ``uncal`` with our references.

    Parameters
    ----------
    uncal : path-like
    references : dict
        reftype -> path (mask, saturation, superbias, linearity, dark, gain, readnoise).
    outdir : path-like
    save_steps : bool
        Also save every stage-1 step's intermediate ramp.
    skip : iterable of str
        jwst steps to skip besides :data:`DETECTOR1_SKIPS`.
    settings : dict, optional
        ``{"jump.rejection_threshold": 5.0, ...}`` step parameters.
    """
    python, script = oracle_paths()
    cmd = [str(python), str(script)]
    if str((settings or {}).get("clean_flicker_noise.skip", True)).lower() == "false":
        # the step's draft rate is a RampFitStep of its own, which no --override reaches
        cmd = [str(python), "-c", _FLICKER_BOOTSTRAP, str(script), str(references["gain"]),
               str(references["readnoise"])]
    cmd += ["detector1", str(uncal), str(outdir)]
    for step, reftypes in DETECTOR1_OVERRIDES.items():
        cmd += [f"--override={step}.{t}={references[t]}" for t in reftypes if references.get(t)]
    cmd += [f"--skip={s}" for s in (*DETECTOR1_SKIPS, *skip)]
    if save_steps:
        cmd += [f"--set={s}.save_results=true" for s in INTERMEDIATE_STEPS]
    cmd += [f"--set={k}={v}" for k, v in (settings or {}).items()]
    return cmd


_FLICKER_BOOTSTRAP = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("jwst_offline", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
from jwst.clean_flicker_noise import clean_flicker_noise as cfn
from jwst.ramp_fitting import RampFitStep
def draft_step(*args, **kwargs):
    step = RampFitStep(*args, **kwargs)
    step.override_gain, step.override_readnoise = sys.argv[2], sys.argv[3]
    return step
cfn.RampFitStep = draft_step
mod.main(sys.argv[4:])
"""
"""Runs the driver with clean_flicker_noise's draft ramp fit given the gain and read-noise references."""


def run_detector1(uncal, references, outdir, save_steps=False, skip=(), settings=None, timeout=900):
    """Run jwst detector1; return ``{suffix: path}`` of what it wrote and its wall time.

    Returns
    -------
    products : dict
        ``rate``, ``rateints`` and, with ``save_steps``, one entry per step in
        :data:`INTERMEDIATE_STEPS`.
    wall : float
        Wall time of the whole oracle process, seconds.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = detector1_command(uncal, references, outdir, save_steps, skip, settings)
    wall = _run(cmd, outdir, f"jwst detector1 on {uncal}", timeout)
    root = Path(uncal).name.removesuffix("_uncal.fits")
    products = {p.stem.removeprefix(root + "_"): p for p in outdir.glob(f"{root}_*.fits")}
    return products, wall


IMAGE3_OVERRIDES = {"source_catalog": ("apcorr", "abvegaoffset")}
"""jwst image3 step -> reference types it needs (the other image3 steps use none)."""


def image3_command(asn, references, outdir, skip=(), settings=None):
    """The command line that runs jwst's calwebb_image3 on the association ``asn``.

    Parameters
    ----------
    asn : path-like
        Level-3 association JSON; its members are found relative to it.
    references : dict
        reftype -> path (``apcorr``, ``abvegaoffset``); source_catalog must be
        skipped when they are not given.
    outdir : path-like
    skip : iterable of str
        jwst image3 steps to skip (``tweakreg``, ``skymatch``, ...).
    settings : dict, optional
        ``{"resample.crval": [53.1, -27.8], "tweakreg.minobj": 4, ...}`` (lists for
        list parameters such as ``resample.crpix``/``crval``/``output_shape``).
    """
    python, script = oracle_paths()
    settings = dict(settings or {})
    lists = any(isinstance(v, (list, tuple)) for v in settings.values())
    # The driver's --set takes scalars only; list parameters (crpix, crval, output_shape) go through
    # a bootstrap that loads the driver and lets its value parser split comma lists.
    cmd = [str(python), "-c", _LIST_BOOTSTRAP, str(script)] if lists else [str(python), str(script)]
    cmd += ["image3", str(asn), str(outdir)]
    settings = {k: ",".join(repr(float(x)) if isinstance(x, float) else str(x) for x in v)
                if isinstance(v, (list, tuple)) else v for k, v in settings.items()}
    for step, reftypes in IMAGE3_OVERRIDES.items():
        if step not in skip:
            cmd += [f"--override={step}.{t}={references[t]}" for t in reftypes if references.get(t)]
    cmd += [f"--skip={s}" for s in skip]
    cmd += [f"--set={k}={v}" for k, v in settings.items()]
    return cmd


_LIST_BOOTSTRAP = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("jwst_offline", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
scalar = mod.parse_value
mod.parse_value = lambda text: [scalar(t) for t in text.split(",")] if "," in text else scalar(text)
mod.main(sys.argv[2:])
"""


def run_image3(asn, references, outdir, skip=(), settings=None, timeout=900):
    """Run jwst image3; return ``{suffix: path}`` of the product files and the wall time.

    Returns
    -------
    products : dict
        ``i2d``, ``cat`` (ECSV), ``segm`` where written, and ``crf`` (list of paths).
    wall : float
        Wall time of the oracle process, seconds.
    """
    import json

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = image3_command(Path(asn).resolve(), references, outdir.resolve(), skip, settings)
    wall = _run(cmd, outdir, f"jwst image3 on {asn}", timeout)
    product = json.loads(Path(asn).read_text())["products"][0]["name"]
    products = {"crf": sorted(outdir.glob("*_crf.fits"))}
    for suffix, ext in (("i2d", "fits"), ("segm", "fits"), ("cat", "ecsv")):
        path = outdir / f"{product}_{suffix}.{ext}"
        if path.exists():
            products[suffix] = path
    return products, wall


SPEC2_OVERRIDES = {"assign_wcs": ("specwcs", "distortion"), "flat_field": ("flat",),
                   "extract_2d": ("wavelengthrange",), "photom": ("photom",), "extract_1d": ("extract1d",)}
"""jwst spec2 step -> reference types given for a grism time series (filteroffset, area and
apcorr stay N/A: PIXAR_SR then comes from the photom reference, as in ours)."""


def spec2_command(rateints, references, outdir, skip=(), settings=None):
    """The command line that runs jwst's calwebb_spec2 on a NRC_TSGRISM ``rateints``.

    Parameters
    ----------
    rateints : path-like
    references : dict
        reftype -> path (specwcs, distortion, flat, wavelengthrange, photom, extract1d).
    outdir : path-like
    skip : iterable of str
        jwst spec2 steps to skip (``flat_field``, ``photom`` ...).
    settings : dict, optional
        ``{"extract_2d.tsgrism_extract_height": 64, ...}``.
    """
    python, script = oracle_paths()
    cmd = [str(python), str(script), "spec2", str(rateints), str(outdir)]
    for step, reftypes in SPEC2_OVERRIDES.items():
        if step not in skip:
            cmd += [f"--override={step}.{t}={references[t]}" for t in reftypes if references.get(t)]
    cmd += [f"--skip={s}" for s in skip]
    cmd += [f"--set={k}={v}" for k, v in (settings or {}).items()]
    return cmd


IMAGE2_OVERRIDES = {"distortion": "assign_wcs", "flat": "flat_field", "photom": "photom", "area": "photom"}
"""Reference type -> the jwst image2 step whose ``--override`` takes it."""


def image2_command(rate, references, outdir, skip=()):
    """The command line that runs jwst's calwebb_image2 on one rate or rateints (arguments as
    :func:`run_image2`)."""
    python, script = oracle_paths()
    cmd = [str(python), str(script), "image2", str(Path(rate).resolve()), str(Path(outdir).resolve())]
    cmd += [f"--override={IMAGE2_OVERRIDES[t]}.{t}={p}" for t, p in references.items() if p]
    return cmd + [f"--skip={s}" for s in skip]


def run_image2(rate, references, outdir, skip=(), timeout=600):
    """Run jwst's calwebb_image2 on one rate or rateints with explicit references.

    Parameters
    ----------
    rate : path-like
        ``_rate.fits`` (gives ``_cal.fits``) or ``_rateints.fits`` (gives ``_calints.fits``).
    references : dict
        Reference type (``distortion``, ``flat``, ``photom``, ``area``) -> path; ``None`` values are
        left to jwst.
    outdir : path-like
    skip : iterable of str
        jwst image2 steps to skip (``resample``, ``bkg_subtract`` ...).

    Returns
    -------
    cal : Path
        The calibrated product jwst wrote.
    """
    rate, outdir = Path(rate).resolve(), Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    _run(image2_command(rate, references, outdir, skip), outdir, f"jwst image2 on {rate}", timeout)
    root, kind = rate.name.rsplit("_", 1)
    suffix = "calints" if kind == "rateints.fits" else "cal"
    return outdir / f"{root}_{suffix}.fits"


def run_spec2(rateints, references, outdir, skip=(), settings=None, timeout=900):
    """Run jwst spec2 on one rateints; return ``{suffix: path}`` (``calints``, ``x1dints``) and the wall time."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = spec2_command(Path(rateints).resolve(), references, outdir.resolve(), skip, settings)
    wall = _run(cmd, outdir, f"jwst spec2 on {rateints}", timeout)
    root = Path(rateints).name.removesuffix("_rateints.fits")
    products = {p.stem.removeprefix(root + "_"): p for p in outdir.glob(f"{root}_*.fits")}
    return products, wall


def tso3_command(asn, references, outdir, skip=(), settings=None):
    """The command line that runs jwst's calwebb_tso3 on a tso3 association of calints (arguments as
    :func:`run_tso3`)."""
    python, script = oracle_paths()
    cmd = [str(python), str(script), "tso3", str(Path(asn).resolve()), str(Path(outdir).resolve())]
    if references.get("extract1d") and "extract_1d" not in skip:
        cmd.append(f"--override=extract_1d.extract1d={references['extract1d']}")
    if references.get("gain") and "tso_photometry" not in skip:  # imaging: DN/s -> electrons
        cmd.append(f"--override=tso_photometry.gain={references['gain']}")
    cmd += [f"--skip={s}" for s in skip]
    return cmd + [f"--set={k}={v}" for k, v in (settings or {}).items()]


def run_tso3(asn, references, outdir, skip=(), settings=None, timeout=900):
    """Run jwst's calwebb_tso3 on a tso3 association of calints.

    Returns
    -------
    products : dict
        ``crfints`` (list), ``x1dints``, ``whtlt``, ``phot`` (paths; absent when not written) and ``all``
        (every file written).
    wall : float
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    wall = _run(tso3_command(asn, references, outdir, skip, settings), outdir, f"jwst tso3 on {asn}", timeout)
    files = sorted(p for p in outdir.iterdir() if p.is_file() and p.suffix in (".fits", ".ecsv"))
    products = {"crfints": [p for p in files if p.name.endswith("_crfints.fits")], "all": files}
    for suffix, ext in (("x1dints", "fits"), ("whtlt", "ecsv"), ("phot", "ecsv")):
        found = [p for p in files if p.name.endswith(f"_{suffix}.{ext}")]
        if found:
            products[suffix] = found[0]
    return products, wall


def coron3_command(asn, references, outdir, skip=(), settings=None):
    """The command line that runs jwst's calwebb_coron3 on a coron3 association (arguments as
    :func:`run_coron3`)."""
    python, script = oracle_paths()
    cmd = [str(python), str(script), "coron3", str(Path(asn).resolve()), str(Path(outdir).resolve())]
    if references.get("psfmask") and "align_refs" not in skip:
        cmd.append(f"--override=align_refs.psfmask={Path(references['psfmask']).resolve()}")
    cmd += [f"--skip={s}" for s in skip]
    return cmd + [f"--set={k}={v}" for k, v in (settings or {}).items()]


def run_coron3(asn, references, outdir, skip=(), settings=None, timeout=900):
    """Run jwst's calwebb_coron3 on a coron3 association of calints.

    Parameters
    ----------
    asn : path-like
        The association JSON (members beside it).
    references : dict
        ``psfmask`` -> path (given to align_refs).
    outdir : path-like
    skip : iterable of str
        jwst coron3 steps to skip (``resample`` for inputs without a full WCS ...).
    settings : dict, optional
        ``{"klip.truncate": 5, ...}``.

    Returns
    -------
    products : dict
        ``psfstack``, ``i2d`` (paths; absent when not written), ``crfints``, ``psfalign``,
        ``psfsub`` (lists of paths, sorted) and ``all`` (every FITS file written).
    wall : float
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    wall = _run(coron3_command(asn, references, outdir, skip, settings), outdir, f"jwst coron3 on {asn}", timeout)
    files = sorted(p for p in outdir.iterdir() if p.is_file() and p.suffix == ".fits")
    products = {"all": files}
    for suffix in ("crfints", "psfalign", "psfsub"):
        products[suffix] = [p for p in files if p.name.endswith(f"_{suffix}.fits")]
    for suffix in ("psfstack", "i2d"):
        found = [p for p in files if p.name.endswith(f"_{suffix}.fits")]
        if len(found) == 1:
            products[suffix] = found[0]
    return products, wall
