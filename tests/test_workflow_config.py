"""Configuration helpers: precedence of defaults, modes and the user's config; digests; validation."""

from pathlib import Path

import pytest
import yaml

from webbflow.config import (ConfigError, config_digest, load_modes, mode_for, step_parameters,
                             validate_config)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"


def test_user_beats_mode_beats_default():
    defaults = {"jump": {"rejection_threshold": 4.0, "minimum_groups": 3, "skip": False},
                "refpix": {"skip": False, "side_gain": 1.0}}
    mode = {"steps": {"jump": {"rejection_threshold": 6.0}, "refpix": {"skip": True}}}
    user = {"jump": {"rejection_threshold": 5.0}}
    params = step_parameters(defaults, mode, user, steps=("jump", "refpix", "ramp_fit"))
    assert params["jump"] == {"rejection_threshold": 5.0, "minimum_groups": 3, "skip": False}
    assert params["refpix"] == {"skip": True, "side_gain": 1.0}
    assert params["ramp_fit"] == {}
    assert defaults["jump"]["rejection_threshold"] == 4.0  # inputs are not modified


def test_digest_ignores_key_order_but_not_values():
    a = {"steps": {"jump": {"rejection_threshold": 4.0, "skip": False}}, "references": {"gain": "g.fits"}}
    b = {"references": {"gain": "g.fits"}, "steps": {"jump": {"skip": False, "rejection_threshold": 4.0}}}
    assert config_digest(a) == config_digest(b)
    b["steps"]["jump"]["rejection_threshold"] = 4.5
    assert config_digest(a) != config_digest(b)


def test_modes_map_exp_types():
    modes = load_modes(REPO / "config" / "modes")
    assert mode_for("NRC_IMAGE", modes) == "imaging"
    assert mode_for("NRC_CORON", modes) is None
    assert mode_for("NRC_IMAGE", modes, enabled=[]) is None


def test_schema_defaults_are_jwst_defaults_and_described():
    schema = yaml.safe_load(SCHEMA.read_text())
    steps = schema["properties"]["steps"]["properties"]
    assert steps["jump"]["properties"]["rejection_threshold"]["default"] == 4.0
    assert steps["jump"]["properties"]["three_group_rejection_threshold"]["default"] == 6.0
    assert steps["saturation"]["properties"]["n_pix_grow_sat"]["default"] == 1
    assert steps["refpix"]["properties"]["side_smoothing_length"]["default"] == 11
    for step, spec in steps.items():
        for name, param in spec["properties"].items():
            assert {"type", "default", "description"} <= set(param), f"steps.{step}.{name}"


@pytest.mark.parametrize("config, key", [
    ({"steps": {"jump": {"rejection_threshold": "high"}}}, "steps.jump.rejection_threshold"),
    ({"steps": {"refpix": {"skip": "yes"}}}, "steps.refpix.skip"),
    ({"inputs": {"on_unsupported": "ignore"}}, "inputs.on_unsupported"),
    ({"overrides": {"flatt": "x.fits"}}, "overrides"),  # flat is a type; flatt is not
])
def test_validation_names_the_key(config, key):
    with pytest.raises(ConfigError, match=rf"^config key {key}: "):
        validate_config(config, SCHEMA)
    validate_config({"steps": {"jump": {"rejection_threshold": 5}}}, SCHEMA)  # valid: no error
