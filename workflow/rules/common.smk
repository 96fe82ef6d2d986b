"""Exposure table, wildcard constraints, and input/param functions of the rules."""

import logging
import os
import re
from pathlib import Path

from webbflow.config import canonical_json, load_modes, mode_for, step_parameters
from webbflow.exposures import exposure_table
from webbflow.io.errors import InputError
from webbflow.io.uncal import read_uncal_headers
from webbflow.refs import DETECTOR1_REFTYPES, select_references

logger = logging.getLogger("webbflow.workflow")

RESULTS = config["results_dir"]
UNCAL_DIR = config["inputs"]["uncal_dir"]
DEMO_DIR = config["demo"]["outdir"]
DEMO_MANIFEST = f"{DEMO_DIR}/manifest.json"
# The demo is simulated only when it is what the user asked to reduce.
USE_DEMO = Path(UNCAL_DIR) == Path(DEMO_DIR) / "uncal"
REFS_DIR = config["references"]["dir"] or (f"{DEMO_DIR}/refs" if USE_DEMO else None)
MODES = {name: preset for name, preset in load_modes(Path(workflow.basedir) / "config" / "modes").items()
         if name in config["modes"]}
EXP_TYPES = sorted({t for preset in MODES.values() for t in preset.get("exp_types", [])})
OVERRIDES = {k: v for k, v in config["overrides"].items() if v}


def _supported(table):
    """Drop (or refuse) exposures that no enabled mode reduces."""
    unsupported = [e for e in table if e.exp_type not in EXP_TYPES]
    if unsupported and config["inputs"]["on_unsupported"] == "error":
        raise InputError(unsupported[0].path, f"EXP_TYPE {unsupported[0].exp_type} is not reduced by modes "
                         f"{config['modes']} (supported: {', '.join(EXP_TYPES)})",
                         "remove it from inputs.uncal_dir or set inputs.on_unsupported: skip")
    for e in unsupported:
        logger.warning("skipping %s: EXP_TYPE %s is not supported by modes %s", e.path, e.exp_type, config["modes"])
    return {e.rootname: e for e in table if e.exp_type in EXP_TYPES}


def _parse_time_table():
    """The table when the inputs already exist (for tight wildcard constraints)."""
    if Path(UNCAL_DIR).is_dir():
        return _supported(exposure_table(UNCAL_DIR))
    if not USE_DEMO:
        raise InputError(UNCAL_DIR, "input folder not found", "set inputs.uncal_dir to the folder of *_uncal.fits files")
    return {}


_TABLE = _parse_time_table()
_KNOWN = list(_TABLE.values())


def get_exposures():
    """Reducible exposures by root name (after the demo is written, when reducing the demo)."""
    if USE_DEMO:
        checkpoints.demo.get()
        if not _TABLE:  # the demo was just written: read its headers now
            _TABLE.update(_supported(exposure_table(UNCAL_DIR)))
    return _TABLE


def _constraint(values, fallback):
    """Alternation of the table's values, so that no product path is ambiguous."""
    return "|".join(re.escape(v) for v in sorted(values)) if values else fallback


wildcard_constraints:
    filter=_constraint({e.filter.lower() for e in _KNOWN}, r"f\d{3}[wmn]2?|[a-z0-9]+"),
    detector=_constraint({e.detector.lower() for e in _KNOWN}, r"nrc(?:a[1-4]|b[1-4]|along|blong)"),
    exposure=_constraint({e.exposure_id for e in _KNOWN}, r"jw\d{11}_\d{3}[0-9a-z]{2}_\d{5}"),


def product_path(exposure, suffix):
    """Path of an exposure's product: <results>/detector1/<filter>/<rootname>_<suffix>.fits."""
    return f"{RESULTS}/detector1/{exposure.filter.lower()}/{exposure.rootname}_{suffix}.fits"


def all_products(wildcards):
    """Every rate and rateints product of the reducible exposures."""
    return [product_path(e, s) for e in get_exposures().values() for s in ("rate", "rateints")]


def exposure_of(wildcards):
    """The table row of the job's exposure."""
    return get_exposures()[f"{wildcards.exposure}_{wildcards.detector}"]


_REFS = {}


def chosen_references(wildcards):
    """reftype -> reference path chosen for the job's exposure (None when none matches)."""
    exposure = exposure_of(wildcards)
    if exposure.rootname not in _REFS:
        primary = read_uncal_headers(exposure.path).primary
        _REFS[exposure.rootname] = select_references(primary, REFS_DIR, OVERRIDES, DETECTOR1_REFTYPES)
    return _REFS[exposure.rootname]


def detector1_inputs(wildcards):
    """The uncal file and the reference files it is reduced with."""
    inputs = {"uncal": exposure_of(wildcards).path,
              "references": sorted({p for p in chosen_references(wildcards).values() if p})}
    if USE_DEMO:
        inputs["demo"] = DEMO_MANIFEST
    return inputs


def detector1_steps(wildcards):
    """Effective step parameters of the exposure as canonical JSON (a params change reruns the job)."""
    exposure = exposure_of(wildcards)
    mode = mode_for(exposure.exp_type, MODES)
    return canonical_json(step_parameters(config["steps"], MODES.get(mode), USER_CONFIG.get("steps")))


def detector1_references(wildcards):
    """Chosen reference paths as canonical JSON."""
    return canonical_json(chosen_references(wildcards))


def detector1_mem_mb(wildcards, input):
    """Memory from the uncal size: float32 ramp (2x), group DQ (0.5x), fit work arrays, plus the interpreter."""
    return int(800 + 6 * os.path.getsize(input.uncal) / 1e6)


def detector1_runtime(wildcards, input):
    """Minutes: generous, scaled on the uncal size (full frame, 10 groups is about 170 MB)."""
    return int(5 + os.path.getsize(input.uncal) / 20e6)
