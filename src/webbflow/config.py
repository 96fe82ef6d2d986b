"""Workflow configuration helpers: defaults from the schema, modes, digests.

The Snakefile validates ``config/config.yaml`` against ``config/schema.yaml``
(which fills defaults); the helpers here merge the per-EXP_TYPE mode presets
of ``config/modes/*.yaml`` and compute the digest recorded in each product.
Precedence, lowest first: schema defaults < mode preset < the user's config.
"""

import copy
import hashlib
import json
from pathlib import Path

import yaml

__all__ = [
    "DETECTOR1_STEPS",
    "ConfigError",
    "canonical_json",
    "config_digest",
    "deep_merge",
    "load_modes",
    "mode_for",
    "step_parameters",
    "validate_config",
]

DETECTOR1_STEPS = (
    "dq_init", "saturation", "superbias", "refpix", "linearity",
    "dark_current", "jump", "ramp_fit", "gain_scale",
)
"""detector1 steps in the order they run."""


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


def load_modes(modes_dir):
    """Read the mode presets.

    Parameters
    ----------
    modes_dir : str or os.PathLike
        Folder of ``<mode>.yaml`` files, each with ``exp_types`` (list) and
        ``steps`` (step -> parameter overrides).

    Returns
    -------
    dict
        Mode name -> preset dict.
    """
    modes = {}
    for path in sorted(Path(modes_dir).glob("*.yaml")):
        with open(path) as fh:
            modes[path.stem] = yaml.safe_load(fh) or {}
    return modes


def mode_for(exp_type, modes, enabled=None):
    """Name of the enabled mode that handles ``exp_type``, or None."""
    for name, preset in modes.items():
        if enabled is not None and name not in enabled:
            continue
        if exp_type in preset.get("exp_types", []):
            return name
    return None


def step_parameters(defaults, mode_preset=None, user_steps=None, steps=DETECTOR1_STEPS):
    """Effective parameters of each step for one exposure.

    Parameters
    ----------
    defaults : dict
        ``steps`` section with every default filled (the validated config).
    mode_preset : dict, optional
        The exposure's mode preset; its ``steps`` override the defaults.
    user_steps : dict, optional
        The ``steps`` section as the user wrote it (before defaults were
        filled); it overrides the mode.
    steps : sequence of str
        Steps to return.

    Returns
    -------
    dict
        step -> {parameter: value}, including ``skip``.
    """
    merged = deep_merge(defaults or {}, (mode_preset or {}).get("steps", {}))
    merged = deep_merge(merged, user_steps or {})
    return {step: dict(merged.get(step, {})) for step in steps}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


def validate_config(config, schema_path):
    """Check ``config`` against the JSON schema, naming the offending key.

    Parameters
    ----------
    config : dict
        The configuration as the user wrote it (defaults need not be filled).
    schema_path : str or os.PathLike
        ``config/schema.yaml``.

    Raises
    ------
    ConfigError
        For the first invalid value, e.g. ``config key steps.jump.rejection_threshold:
        'high' is not of type 'number'``.
    """
    import jsonschema

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
        raise ConfigError(
            f"config key {key}: {error.message}. Fix: correct it in your config file "
            f"(see {Path(schema_path).name} for the allowed values)"
        )
