"""Workflow configuration helpers: defaults from the schema, modes, digests.

The Snakefile validates the user's config against ``config/schema.yaml`` (which
fills defaults) and every mode preset ``config/modes/<mode>.yaml`` against a
preset schema built here from the same step definitions.  A preset names the
EXP_TYPEs its mode reduces, the stages it runs (:data:`STAGES`; its products
are those of its stages) and step parameters per stage.  Step parameters,
lowest precedence first: schema defaults < mode preset < the user's ``steps``
(all modes) < the user's ``mode_steps.<mode>`` (that mode only); see
:func:`step_parameters`.
"""

import copy
import functools
import hashlib
import json
import math
from pathlib import Path
from typing import NamedTuple

import yaml

from webbflow.refs.select import (CORON3_REFTYPES, DETECTOR1_REFTYPES, IMAGE2_REFTYPES, IMAGE3_REFTYPES, SPEC2_REFTYPES,
                                  TSO3_REFTYPES)

__all__ = [
    "DETECTOR1_STEPS",
    "DETECTOR1_EXTRA_STEPS",
    "SKIPPED_BY_DEFAULT",
    "SKIPPED_EXP_TYPES",
    "IMAGE2_STEPS",
    "CORON3_STEPS",
    "IMAGE3_STEPS",
    "SPEC2_STEPS",
    "TSO3_STEPS",
    "STAGES",
    "VARIANT_KEYS",
    "ConfigError",
    "Stage",
    "canonical_json",
    "config_digest",
    "config_schema",
    "deep_merge",
    "variant_configs",
    "enabled_modes",
    "fill_defaults",
    "load_modes",
    "mode_for",
    "preset_schema",
    "stage_reftypes",
    "step_kwargs",
    "step_skipped",
    "step_parameters",
    "validate_config",
]

DETECTOR1_STEPS = (
    "dq_init", "saturation", "superbias", "refpix", "linearity",
    "dark_current", "charge_migration", "jump", "clean_flicker_noise", "ramp_fit", "gain_scale",
)
"""detector1 steps in the order they run."""

DETECTOR1_EXTRA_STEPS = ("persistence",)
"""detector1 options outside :data:`DETECTOR1_STEPS` (beyond jwst, off unless ``skip: false``): the stage
runs them around its steps, and their parameters reach a job only when they are on
(:func:`step_parameters`' ``extra_steps``), so that off the products are as before."""

SKIPPED_BY_DEFAULT = ("charge_migration", "clean_flicker_noise", "destripe")
"""Steps that run only when asked (``skip: false``), as jwst's step specs have them."""


def step_skipped(params, step):
    """Whether ``step`` is skipped under ``params`` (step -> {parameter: value}).

    An explicit ``skip`` wins; otherwise the steps of :data:`SKIPPED_BY_DEFAULT` are skipped,
    so callers that pass no parameters (tests, benchmarks) get jwst's behaviour too.
    """
    return bool((params.get(step) or {}).get("skip", step in SKIPPED_BY_DEFAULT))

SKIPPED_EXP_TYPES = {
    "NRC_TACQ": "EXP_TYPE NRC_TACQ is a target-acquisition image (not coronagraphic: jwst's associations "
                "treat it as target_acquisition); the coronagraphy mode does not reduce it",
    "NRC_TACONFIRM": "EXP_TYPE NRC_TACONFIRM is an astrometric confirmation image of target acquisition "
                     "(not coronagraphic); the coronagraphy mode does not reduce it",
}
"""EXP_TYPEs of a coronagraphic program that are skipped with a reason (never an error)."""

IMAGE2_STEPS = ("destripe", "assign_wcs", "flat_field", "photom", "wisps")
"""image2 imaging steps in the order they run."""

SPEC2_STEPS = ("assign_wcs", "flat_field", "extract_2d", "srctype", "photom", "extract_1d")
"""spec2 steps for grism time series (NRC_TSGRISM) in the order they run."""

TSO3_STEPS = ("outlier_detection", "extract_1d", "white_light", "tso_photometry")
"""tso3 steps in the order they run: grism time series (NRC_TSGRISM) extract_1d and white_light,
imaging ones (NRC_TSIMAGE) tso_photometry."""

CORON3_STEPS = ("outlier_detection", "stack_refs", "align_refs", "klip", "resample")
"""coron3 steps (coronagraphy, NRC_CORON) in the order jwst 3.0's Coron3Pipeline runs them."""

IMAGE3_STEPS = ("tweakreg", "skymatch", "outlier_detection", "resample", "source_catalog")
"""image3 imaging steps in the order they run."""


class Stage(NamedTuple):
    """A stage a mode can run.

    Attributes
    ----------
    target : str
        The Snakefile target its products belong to (``stage1``, ``stage2``, ``stage3``).
    steps : tuple of str
        Its steps in the order they run (each one a ``steps.<step>`` of the schema).
    reftypes : tuple of str
        The reference types its steps read: what CRDS chooses (and the lockfile records) for an
        exposure whose mode runs the stage.
    exp_types_of : dict
        reftype -> the EXP_TYPEs that read it, for a type only some of the stage's exposures need
        (tso3's EXTRACT1D: grism time series, not imaging ones).
    """

    target: str
    steps: tuple
    reftypes: tuple = ()
    exp_types_of: dict = {}


STAGES = {
    "detector1": Stage("stage1", DETECTOR1_STEPS, DETECTOR1_REFTYPES),
    "image2": Stage("stage2", IMAGE2_STEPS, IMAGE2_REFTYPES),
    "spec2": Stage("stage2", SPEC2_STEPS, SPEC2_REFTYPES),
    "image3": Stage("stage3", IMAGE3_STEPS, IMAGE3_REFTYPES),
    "tso3": Stage("stage3", TSO3_STEPS, TSO3_REFTYPES, {"extract1d": ("NRC_TSGRISM",)}),
    "coron3": Stage("stage3", CORON3_STEPS, CORON3_REFTYPES),
}
"""Every stage by name (a preset's ``stages`` and ``steps.<stage>`` use these names).
A new stage is added here, with its rules and a target function in ``workflow/rules``."""


def stage_reftypes(stages, exp_type=None):
    """Reference types of ``stages`` (:data:`STAGES` names): the union, in stage order, each once.

    An exposure asks CRDS for exactly these, its mode's ``stages``: an imaging exposure for the
    detector1, image2 and image3 types (image3's APCORR and ABVEGAOFFSET are chosen with its
    association's first member, as coron3's PSFMASK), a grism time-series segment for detector1's, spec2's and tso3's,
    an imaging time-series segment for detector1's and image2's (tso3's gain is detector1's).

    Parameters
    ----------
    stages : iterable of str
    exp_type : str, optional
        The exposure's EXP_TYPE: types that only other EXP_TYPEs read (``Stage.exp_types_of``) are
        left out.

    Returns
    -------
    tuple of str
    """
    return tuple(dict.fromkeys(t for stage in stages for t in STAGES[stage].reftypes
                               if exp_type is None or exp_type in STAGES[stage].exp_types_of.get(t, (exp_type,))))


def canonical_json(obj):
    """JSON text with sorted keys and no spaces: equal configs give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_digest(obj):
    """sha256 hex digest of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def deep_merge(base, override):
    """Return ``base`` updated recursively with ``override`` (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# libyaml's parser where PyYAML has it: the same documents, ~8x less CPU than the pure-Python one (the
# schema is ~55 kB: 0.08 s each time it is read, and planning reads it several times).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _safe_load(fh):
    return yaml.load(fh, Loader=_SAFE_LOADER)


@functools.lru_cache(maxsize=8)
def _schema_file(path, stamp):
    """The parsed content of the schema file ``path`` as of ``stamp`` (its mtime and size): read once per
    process, however often planning asks for it."""
    with open(path) as fh:
        return _safe_load(fh)


def _load_schema(schema):
    """The schema dict of ``schema`` (a dict, or the path of a YAML/JSON file: a fresh copy each time)."""
    if isinstance(schema, dict):
        return schema
    path = Path(schema).resolve()
    stat = path.stat()
    return copy.deepcopy(_schema_file(str(path), (stat.st_mtime_ns, stat.st_size)))


def fill_defaults(config, schema):
    """Fill the defaults of ``schema`` into ``config``, in place, as ``snakemake.utils.validate`` does.

    The same algorithm as Snakemake's (Draft 2020-12, every ``properties`` keyword first sets the
    missing keys that have a ``default``, then validates), on the schema this module has read already:
    Snakemake's re-reads the file with its pure-Python YAML parser (~0.1 s of CPU per call).

    Parameters
    ----------
    config : dict
        The configuration (already checked by :func:`validate_config`).
    schema : dict or str or os.PathLike
        ``config/schema.yaml`` (or its content).

    Returns
    -------
    dict
        ``config``, with every default filled (nested ones included).

    Raises
    ------
    jsonschema.ValidationError
        When ``config`` does not match the schema.
    """
    import jsonschema

    base = jsonschema.Draft202012Validator
    properties = base.VALIDATORS["properties"]

    def set_defaults(validator, props, instance, subschema):
        if validator.is_type(instance, "object"):
            for name, sub in props.items():
                if "default" in sub:
                    instance.setdefault(name, sub["default"])
        yield from properties(validator, props, instance, subschema)

    jsonschema.validators.extend(base, {"properties": set_defaults})(_load_schema(schema)).validate(config)
    return config


def preset_schema(schema):
    """JSON schema of a mode preset, built from the config schema's step definitions.

    Parameters
    ----------
    schema : dict or str or os.PathLike
        ``config/schema.yaml`` (or its content); its ``steps.<step>`` definitions are reused,
        so a preset accepts exactly the parameters (names, types, ranges) a user's config does.

    Returns
    -------
    dict
        Schema of ``{description, exp_types, stages, steps: {<stage>: {<step>: {<param>: value}}},
        recommended: {...}}``: ``steps`` holds jwst's own values for the mode, ``recommended`` the
        NIRCam team's workarounds on top of them (dropped by ``step_defaults: jwst``).
    """
    step_defs = _load_schema(schema)["properties"]["steps"]["properties"]
    stage_steps = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            name: {"type": ["object", "null"], "additionalProperties": False,
                   "properties": {step: step_defs[step] for step in stage.steps}}
            for name, stage in STAGES.items()
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["exp_types", "stages"],
        "properties": {
            "description": {"type": "string"},
            "exp_types": {"type": "array", "items": {"type": "string", "pattern": "^[A-Z0-9_]+$"},
                          "minItems": 1, "uniqueItems": True},
            "stages": {"type": "array", "items": {"enum": list(STAGES)}, "minItems": 1, "uniqueItems": True},
            "steps": stage_steps,
            "recommended": stage_steps,
        },
    }


def config_schema(schema, modes=None):
    """The config schema; with ``modes``, ``modes`` and ``mode_steps`` accept only those names.

    Parameters
    ----------
    schema : dict or str or os.PathLike
        ``config/schema.yaml`` (or its content).
    modes : iterable of str, optional
        Names of the presets found (``config/modes/<name>.yaml``).

    Returns
    -------
    dict
        A copy of the schema.
    """
    out = copy.deepcopy(_load_schema(schema))
    if modes is not None:
        names = sorted(modes)
        out["properties"]["modes"]["items"] = {"enum": names}
        out["properties"]["mode_steps"]["propertyNames"] = {"enum": names}
    return out


def load_modes(modes_dir, schema=None):
    """Read (and, given the config schema, validate) the mode presets.

    Parameters
    ----------
    modes_dir : str or os.PathLike
        Folder of ``<mode>.yaml`` files, each with ``exp_types`` (list), ``stages`` (list of
        :data:`STAGES` names) and ``steps`` (stage -> step -> parameter overrides).
    schema : dict or str or os.PathLike, optional
        ``config/schema.yaml``: each preset is checked against :func:`preset_schema`.

    Returns
    -------
    dict
        Mode name -> preset dict (``steps`` holds every stage of the mode, empty when not set).

    Raises
    ------
    ConfigError
        Naming the preset file and the key, e.g. ``config/modes/imaging.yaml: key
        steps.image3.tweakreg.minobjj: ...``.
    """
    modes = {}
    check = preset_schema(schema) if schema is not None else None
    for path in sorted(Path(modes_dir).glob("*.yaml")):
        with open(path) as fh:
            preset = _safe_load(fh) or {}
        if check is not None:
            validate_config(preset, check, source=path)
            for section in ("steps", "recommended"):
                unused = [stage for stage in preset.get(section) or {} if stage not in preset["stages"]]
                if unused:
                    raise ConfigError(f"{path}: key {section}.{unused[0]}: the mode does not run stage "
                                      f"{unused[0]} (stages: {', '.join(preset['stages'])}). Fix: add it to "
                                      f"stages or remove its parameters")
        for section in ("steps", "recommended"):
            steps = preset.get(section) or {}
            preset[section] = {stage: steps.get(stage) or {} for stage in preset.get("stages", steps)}
        modes[path.stem] = preset
    return modes


def check_mode_names(enabled, presets):
    """Refuse a config whose ``modes`` would reduce nothing, in one line naming the key and the fix.

    ``modes: []`` enables nothing; a name that is not a preset (``config/modes/<name>.yaml``) is
    refused, with the preset it differs from only in case (``Imaging``: did you mean imaging).

    Raises
    ------
    ConfigError
    """
    names = sorted(presets)
    if enabled is None:
        return
    if isinstance(enabled, str):
        enabled = [enabled]
    if not enabled:
        raise ConfigError(f"config key modes: no mode is enabled (modes: []), so nothing would be reduced. "
                          f"Fix: enable at least one of {', '.join(names)}, e.g. modes: [imaging]")
    for name in enabled:
        if not isinstance(name, str) or name in presets:
            continue
        near = [p for p in names if p.lower() == name.lower()]
        hint = f"did you mean {near[0]}? " if near else ""
        raise ConfigError(f"config key modes: unknown mode {name!r} (no config/modes/{name}.yaml). "
                          f"Fix: {hint}use one of {', '.join(names)}")


def enabled_modes(modes, enabled):
    """The presets of the enabled modes, each EXP_TYPE claimed by one of them only.

    Parameters
    ----------
    modes : dict
        Mode name -> preset (:func:`load_modes`).
    enabled : sequence of str
        The config's ``modes``.

    Returns
    -------
    dict
        Mode name -> preset, for the enabled modes.

    Raises
    ------
    ConfigError
        When two enabled modes take the same EXP_TYPE (an exposure would have two reductions).
    """
    out, owner = {}, {}
    for name in enabled:
        for exp_type in modes[name].get("exp_types", []):
            if exp_type in owner and owner[exp_type] != name:
                raise ConfigError(f"config key modes: modes {owner[exp_type]} and {name} both take EXP_TYPE "
                                  f"{exp_type}. Fix: enable only one of them")
            owner[exp_type] = name
        out[name] = modes[name]
    return out


def mode_for(exp_type, modes, enabled=None):
    """Name of the enabled mode that handles ``exp_type``, or None."""
    for name, preset in modes.items():
        if enabled is not None and name not in enabled:
            continue
        if exp_type in preset.get("exp_types", []):
            return name
    return None


def step_kwargs(params, step):
    """The keyword arguments of ``step``'s function: its parameters less ``skip``.

    Parameters
    ----------
    params : dict
        step -> {parameter: value}.
    step : str

    Returns
    -------
    dict
    """
    return {k: v for k, v in (params.get(step) or {}).items() if k != "skip"}


def step_parameters(defaults, stage, mode_preset=None, user_steps=None, user_mode_steps=None,
                    recommended=True, extra_steps=()):
    """Effective parameters of each step of ``stage`` for one exposure (or association).

    Precedence, lowest first: ``defaults`` < the mode preset's ``steps.<stage>`` (jwst's values
    for the mode) < its ``recommended.<stage>`` (unless ``recommended`` is False: config
    ``step_defaults: jwst``) < ``user_steps`` (all modes) < ``user_mode_steps`` (this mode only).

    Parameters
    ----------
    defaults : dict
        ``steps`` section with every default filled (the validated config).
    stage : str
        A :data:`STAGES` name; its steps are returned.
    mode_preset : dict, optional
        The mode preset of the exposure; its ``steps.<stage>`` override the defaults.
    user_steps : dict, optional
        The ``steps`` section as the user wrote it (before defaults were filled).
    user_mode_steps : dict, optional
        The user's ``mode_steps.<mode>`` of the exposure's mode, as written.
    recommended : bool
        Apply the preset's ``recommended`` layer (the NIRCam team's workarounds); False
        reproduces jwst 3.0's defaults for the mode.
    extra_steps : sequence of str
        Further steps to return, read from the same layers (e.g. ``persistence``, which
        detector1 runs only when asked, outside :data:`DETECTOR1_STEPS`).

    Returns
    -------
    dict
        step -> {parameter: value}, including ``skip``.
    """
    preset = mode_preset or {}
    preset_steps = (preset.get("steps") or {}).get(stage) or {}
    advice = ((preset.get("recommended") or {}).get(stage) or {}) if recommended else {}
    merged = defaults or {}
    for layer in (preset_steps, advice, user_steps, user_mode_steps):
        merged = deep_merge(merged, layer or {})
    return {step: dict(merged.get(step) or {}) for step in (*STAGES[stage].steps, *extra_steps)}


VARIANT_KEYS = ("steps", "mode_steps", "step_defaults")
"""What a variant (config ``variants.<name>``) may change: the reduction's parameters, not what is
reduced (inputs, modes, references) nor where (results_dir), so every variant reduces the same exposures."""


def variant_configs(user_config, schema):
    """The user's config of each variant: the config as written, deep-merged with the variant's overrides.

    Parameters
    ----------
    user_config : dict
        The configuration as the user wrote it (its ``variants`` section included).
    schema : dict or str or os.PathLike
        The config schema (:func:`config_schema`, with the mode names).

    Returns
    -------
    dict
        variant name -> its config as written (no ``variants`` section; defaults not filled),
        in the order of the user's section.

    Raises
    ------
    ConfigError
        Naming the variant and the key: a key a variant may not change (outside
        :data:`VARIANT_KEYS`) or a value the schema refuses (e.g. an unknown step parameter).
    """
    base = {k: v for k, v in user_config.items() if k != "variants"}
    out = {}
    for name, overrides in (user_config.get("variants") or {}).items():
        if name == "main":
            raise ConfigError("config key variants.main: 'main' names the main config in the report's comparison. "
                              "Fix: give the variant another name")
        extra = sorted(set(overrides or {}) - set(VARIANT_KEYS))
        if extra:
            raise ConfigError(f"config key variants.{name}.{extra[0]}: a variant may change only "
                              f"{', '.join(VARIANT_KEYS)} (every variant reduces the same exposures into "
                              f"<results_dir>/variants/{name}/). Fix: remove it from variants.{name}, or "
                              "run another config for it")
        merged = deep_merge(base, overrides or {})
        try:
            validate_config(merged, schema)
        except ConfigError as exc:
            raise ConfigError(f"variants.{name}: {exc}".replace("Fix: correct it in your config file",
                                                               f"Fix: correct it under variants.{name}")) from None
        out[name] = merged
    return out


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


def _error_key(error):
    """Dotted key of a jsonschema error, down to the unexpected or misnamed key itself."""
    path = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = error.schema.get("properties", {})
        extra = sorted(str(k) for k in error.instance if k not in allowed)
        path += extra[:1]
    elif "propertyNames" in error.schema_path:
        path.append(str(error.instance))
    return ".".join(path) or "<top level>"


def _finite_validator():
    """Draft 2020-12 with ``number`` meaning a finite number: YAML's ``.nan`` and ``.inf`` are floats,
    and a NaN threshold compares false with everything (a step that silently does nothing)."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "number", lambda checker, value: (base.TYPE_CHECKER.is_type(value, "number")
                                          and not (isinstance(value, float) and not math.isfinite(value))))
    return jsonschema.validators.extend(base, type_checker=checker)


def validate_config(config, schema, source=None):
    """Check ``config`` against a JSON schema, naming the offending key.

    Parameters
    ----------
    config : dict
        The configuration as the user wrote it (defaults need not be filled), or a mode preset.
    schema : dict or str or os.PathLike
        ``config/schema.yaml`` (or a schema dict, e.g. :func:`config_schema`, :func:`preset_schema`).
    source : str or os.PathLike, optional
        The file ``config`` was read from, named in the message (a mode preset); None for the
        user's config (which may come from several ``--configfile`` files).

    Raises
    ------
    ConfigError
        For the first invalid value, e.g. ``config key steps.jump.rejection_threshold:
        'high' is not of type 'number'`` or ``config/modes/imaging.yaml: key
        steps.image3.tweakreg.minobjj: Additional properties are not allowed ...``.
    """
    validator = _finite_validator()(_load_schema(schema))
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        error = errors[0]
        key = _error_key(error)
        message = error.message
        if error.validator == "type" and isinstance(error.instance, float) and not math.isfinite(error.instance):
            message = f"{error.instance} is not a finite number"
        if source is None:
            where = "your config file"
            schema_name = Path(schema).name if not isinstance(schema, dict) else "schema.yaml"
            raise ConfigError(f"config key {key}: {message}. Fix: correct it in {where} "
                              f"(see {schema_name} for the allowed values)")
        raise ConfigError(f"{source}: key {key}: {message}. Fix: correct it in {source} (stages and "
                          f"steps are listed in webbflow.config.STAGES, step parameters in config/schema.yaml)")
