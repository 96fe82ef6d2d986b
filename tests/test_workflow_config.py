"""Configuration helpers: precedence of defaults, modes and the user's config; digests; validation."""

import json
import re
from pathlib import Path

import pytest
import yaml

from webbflow.config import (DETECTOR1_EXTRA_STEPS, STAGES, ConfigError, config_digest, config_schema,
                             enabled_modes, fill_defaults, load_modes, mode_for, step_parameters, validate_config)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"


def test_precedence_default_mode_user_all_modes_user_this_mode():
    defaults = {"jump": {"rejection_threshold": 4.0, "minimum_groups": 3, "skip": False},
                "refpix": {"skip": False, "side_gain": 1.0}, "saturation": {"n_pix_grow_sat": 1},
                "tweakreg": {"minobj": 15}}
    mode = {"steps": {"detector1": {"jump": {"rejection_threshold": 6.0, "minimum_groups": 4},
                                    "refpix": {"skip": True}, "saturation": {"n_pix_grow_sat": 2}},
                      "image3": {"tweakreg": {"minobj": 4}}}}
    user = {"jump": {"rejection_threshold": 5.0}, "refpix": {"side_gain": 2.0}}
    this_mode = {"jump": {"rejection_threshold": 7.0}, "saturation": {"n_pix_grow_sat": 0}}
    params = step_parameters(defaults, "detector1", mode, user, this_mode)
    assert set(params) == set(STAGES["detector1"].steps)
    assert params["jump"] == {"rejection_threshold": 7.0, "minimum_groups": 4, "skip": False}  # each layer wins
    assert params["refpix"] == {"skip": True, "side_gain": 2.0}  # preset, then user (all modes)
    assert params["saturation"] == {"n_pix_grow_sat": 0}  # this mode beats the preset
    assert params["ramp_fit"] == {}
    # without a per-mode override, the user's all-modes value wins over the preset
    assert step_parameters(defaults, "detector1", mode, user)["jump"]["rejection_threshold"] == 5.0
    assert step_parameters(defaults, "detector1", mode)["jump"]["rejection_threshold"] == 6.0
    assert step_parameters(defaults, "detector1")["jump"]["rejection_threshold"] == 4.0
    # a preset's parameters apply to their own stage only
    assert step_parameters(defaults, "image3", mode, user, this_mode)["tweakreg"] == {"minobj": 4}
    assert "jump" not in step_parameters(defaults, "image3", mode, user, this_mode)
    assert defaults["jump"]["rejection_threshold"] == 4.0 and user["jump"]["rejection_threshold"] == 5.0


def test_recommended_layer_sits_above_jwst_values_and_step_defaults_jwst_drops_it():
    defaults = {"jump": {"rejection_threshold": 4.0, "skip": False}, "refpix": {"skip": False}}
    mode = {"steps": {"detector1": {"jump": {"rejection_threshold": 5.0}}},
            "recommended": {"detector1": {"jump": {"rejection_threshold": 6.0}, "refpix": {"skip": True}}}}
    recommended = step_parameters(defaults, "detector1", mode)
    assert recommended["jump"]["rejection_threshold"] == 6.0 and recommended["refpix"]["skip"] is True
    jwst = step_parameters(defaults, "detector1", mode, recommended=False)
    assert jwst["jump"]["rejection_threshold"] == 5.0 and jwst["refpix"]["skip"] is False
    # the user's values win over both layers
    user = {"jump": {"rejection_threshold": 4.5}}
    assert step_parameters(defaults, "detector1", mode, user)["jump"]["rejection_threshold"] == 4.5
    assert step_parameters(defaults, "detector1", mode, user, recommended=False)["jump"]["rejection_threshold"] == 4.5


def test_a_recommended_section_for_a_stage_the_mode_does_not_run_is_refused(tmp_path):
    (tmp_path / "m.yaml").write_text("exp_types: [NRC_IMAGE]\nstages: [detector1]\n"
                                     "recommended: {image3: {tweakreg: {minobj: 4}}}\n")
    with pytest.raises(ConfigError, match=r"m\.yaml: key recommended\.image3: the mode does not run stage image3"):
        load_modes(tmp_path, SCHEMA)


def test_stages_and_schema_name_the_same_steps():
    schema_steps = set(yaml.safe_load(SCHEMA.read_text())["properties"]["steps"]["properties"])
    stage_steps = [step for stage in STAGES.values() for step in stage.steps]
    assert set(stage_steps) | set(DETECTOR1_EXTRA_STEPS) == schema_steps
    assert all(len(set(stage.steps)) == len(stage.steps) for stage in STAGES.values())
    # a step two stages share (image2 and spec2: assign_wcs, flat_field, photom) is one schema entry
    assert set(STAGES["image2"].steps) & set(STAGES["spec2"].steps) == {"assign_wcs", "flat_field", "photom"}
    assert {name: s.target for name, s in STAGES.items()} == {
        "detector1": "stage1", "image2": "stage2", "spec2": "stage2", "image3": "stage3", "tso3": "stage3",
        "coron3": "stage3"}


def test_digest_ignores_key_order_but_not_values():
    a = {"steps": {"jump": {"rejection_threshold": 4.0, "skip": False}}, "references": {"gain": "g.fits"}}
    b = {"references": {"gain": "g.fits"}, "steps": {"jump": {"skip": False, "rejection_threshold": 4.0}}}
    assert config_digest(a) == config_digest(b)
    b["steps"]["jump"]["rejection_threshold"] = 4.5
    assert config_digest(a) != config_digest(b)


def test_modes_map_exp_types():
    modes = load_modes(REPO / "config" / "modes", SCHEMA)
    assert mode_for("NRC_IMAGE", modes) == "imaging"
    assert mode_for("NRC_CORON", modes) == "coronagraphy"
    assert mode_for("NRC_TACQ", modes) is None  # target acquisition: skipped with a reason
    assert mode_for("NRC_IMAGE", modes, enabled=[]) is None
    assert modes["imaging"]["stages"] == ["detector1", "image2", "image3"]
    assert modes["imaging"]["steps"] == {"detector1": {}, "image2": {}, "image3": {}}


IMAGING = {"exp_types": ["NRC_IMAGE"], "stages": ["detector1", "image2", "image3"],
           "steps": {"detector1": {"jump": {"rejection_threshold": 5}}, "image3": {"tweakreg": {"minobj": 4}}}}


@pytest.mark.parametrize("change, key", [
    ({"steps": {"image3": {"tweakreg": {"minobjj": 4}}}}, "steps.image3.tweakreg.minobjj"),
    ({"steps": {"image3": {"tweakreg": {"minobj": "four"}}}}, "steps.image3.tweakreg.minobj"),
    ({"steps": {"detector1": {"jump": {"rejection_threshold": -1}}}}, "steps.detector1.jump.rejection_threshold"),
    ({"steps": {"detector1": {"tweakreg": {"minobj": 4}}}}, "steps.detector1.tweakreg"),  # a step of image3
    ({"steps": {"image4": {}}}, "steps.image4"),
    ({"stages": ["detector1", "image4"]}, "stages.1"),
    ({"exp_types": "NRC_IMAGE"}, "exp_types"),
    ({"exp_type": ["NRC_IMAGE"]}, "exp_type"),
    ({"stages": ["detector1"]}, "steps.image3"),  # parameters for a stage the mode does not run
])
def test_preset_typo_names_the_file_and_key(tmp_path, change, key):
    (tmp_path / "modes").mkdir()
    (tmp_path / "modes" / "good.yaml").write_text(yaml.safe_dump(IMAGING))
    assert load_modes(tmp_path / "modes", SCHEMA)["good"]["steps"]["image2"] == {}
    bad = tmp_path / "modes" / "imaging.yaml"
    bad.write_text(yaml.safe_dump({**IMAGING, **change}))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(bad))}: key {key}: "):
        load_modes(tmp_path / "modes", SCHEMA)


@pytest.mark.parametrize("config, key", [
    ({"mode_steps": {"imagin": {"jump": {"rejection_threshold": 5}}}}, "mode_steps.imagin"),
    ({"mode_steps": {"imaging": {"jump": {"rejection_treshold": 5}}}}, "mode_steps.imaging.jump.rejection_treshold"),
    ({"mode_steps": {"imaging": {"jump": {"rejection_threshold": "high"}}}},
     "mode_steps.imaging.jump.rejection_threshold"),
    ({"modes": ["imaging", "tso"]}, "modes.1"),
])
def test_per_mode_keys_are_validated(config, key):
    schema = config_schema(SCHEMA, ["imaging", "testmode"])
    with pytest.raises(ConfigError, match=rf"^config key {key}: "):
        validate_config(config, schema)
    validate_config({"modes": ["imaging", "testmode"], "mode_steps": {"testmode": {"jump": {"skip": True}}}}, schema)


def test_two_enabled_modes_cannot_take_one_exp_type():
    modes = {"imaging": {"exp_types": ["NRC_IMAGE"]}, "other": {"exp_types": ["NRC_TSIMAGE", "NRC_IMAGE"]},
             "tso": {"exp_types": ["NRC_TSIMAGE"]}}
    assert list(enabled_modes(modes, ["imaging", "tso"])) == ["imaging", "tso"]
    with pytest.raises(ConfigError, match="^config key modes: modes imaging and other both take EXP_TYPE NRC_IMAGE"):
        enabled_modes(modes, ["imaging", "other"])


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


@pytest.mark.parametrize("config", ["config.yaml", "demo-coron.yaml", "demo-tso-grism.yaml",
                                    {"steps": {"jump": {"rejection_threshold": 5}}, "variants": {"a": {}}}])
def test_fill_defaults_fills_what_snakemakes_validate_fills(config):
    """The Snakefile fills defaults with fill_defaults, not snakemake.utils.validate (which re-reads the
    schema): the same config comes out, key order included (the config digests hash it)."""
    from snakemake.utils import validate

    if isinstance(config, str):
        config = yaml.safe_load((REPO / "config" / config).read_text())
    theirs = yaml.safe_load(yaml.safe_dump(config))
    validate(theirs, str(SCHEMA))
    ours = fill_defaults(yaml.safe_load(yaml.safe_dump(config)), SCHEMA)
    assert ours == theirs
    assert json.dumps(ours) == json.dumps(theirs)
    assert ours["steps"]["jump"]["rejection_threshold"] == config.get("steps", {}).get("jump", {}).get(
        "rejection_threshold", 4.0)


@pytest.mark.parametrize("config, key", [
    ({"steps": {"jump": {"rejection_threshold": "high"}}}, "steps.jump.rejection_threshold"),
    ({"steps": {"refpix": {"skip": "yes"}}}, "steps.refpix.skip"),
    ({"inputs": {"on_unsupported": "ignore"}}, "inputs.on_unsupported"),
    ({"overrides": {"flatt": "x.fits"}}, "overrides.flatt"),  # flat is a type; flatt is not
    ({"steps": {"jump": {"rejection_threshold": float("nan")}}}, "steps.jump.rejection_threshold"),
    ({"steps": {"jump": {"max_jump_to_flag_neighbors": float("inf")}}}, "steps.jump.max_jump_to_flag_neighbors"),
    ({"max_memory_mb": {"detector1": float("-inf")}}, "max_memory_mb.detector1"),
])
def test_validation_names_the_key(config, key):
    with pytest.raises(ConfigError, match=rf"^config key {key}: "):
        validate_config(config, SCHEMA)
    validate_config({"steps": {"jump": {"rejection_threshold": 5}}}, SCHEMA)  # valid: no error


def test_non_finite_numbers_are_refused_as_yaml_writes_them(tmp_path):
    """``.nan`` / ``.inf`` (YAML floats) are not numbers a threshold may take: one line naming the key."""
    config = yaml.safe_load("steps:\n  jump:\n    rejection_threshold: .nan\n")
    with pytest.raises(ConfigError, match=r"^config key steps\.jump\.rejection_threshold: nan is not a finite "
                       r"number\. Fix: "):
        validate_config(config, SCHEMA)
    config = yaml.safe_load("steps:\n  jump:\n    rejection_threshold: .inf\n")
    with pytest.raises(ConfigError, match=r"rejection_threshold: inf is not a finite number"):
        validate_config(config, SCHEMA)


def test_tso_grism_preset_recommends_roeba_and_jwst_line_drops_it():
    presets = load_modes(REPO / "config" / "modes", SCHEMA)
    preset = presets["tso_grism"]
    assert preset["exp_types"] == ["NRC_TSGRISM"]
    assert mode_for("NRC_TSGRISM", {"tso_grism": preset}) == "tso_grism"
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]["steps"]["properties"]
    defaults = {step: {k: v["default"] for k, v in schema[step]["properties"].items()}
                for step in STAGES["detector1"].steps}
    assert step_parameters(defaults, "detector1", preset)["refpix"]["roeba"] is True
    assert step_parameters(defaults, "detector1", preset, recommended=False)["refpix"]["roeba"] is False
    # ROEBA's rows relative to each integration's mean frame, by clipped means (README, "Grism time series")
    recommended = step_parameters(defaults, "detector1", preset)["refpix"]
    assert recommended["roeba_relative"] is True and recommended["roeba_estimator"] == "mean"
    jwst = step_parameters(defaults, "detector1", preset, recommended=False)["refpix"]
    assert jwst["roeba_relative"] is False and jwst["roeba_estimator"] == "median"
    # a user line still wins over the recommendation
    user = {"refpix": {"roeba": False}}
    assert step_parameters(defaults, "detector1", preset, user)["refpix"]["roeba"] is False
    # optimal extraction is recommended in spec2 and tso3; jwst's line keeps the box sum (schema default)
    for stage in ("spec2", "tso3"):
        defaults = {step: {k: v["default"] for k, v in schema[step]["properties"].items()}
                    for step in STAGES[stage].steps}
        assert step_parameters(defaults, stage, preset)["extract_1d"]["method"] == "optimal"
        jwst = step_parameters(defaults, stage, preset, recommended=False)["extract_1d"]
        assert jwst["method"] == "box" and jwst["optimal_sigma"] == 5.0


def test_tso_imaging_preset_recommends_jump_per_integration_and_jwst_line_drops_it():
    preset = load_modes(REPO / "config" / "modes", SCHEMA)["tso_imaging"]
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]["steps"]["properties"]
    defaults = {step: {k: v["default"] for k, v in schema[step]["properties"].items()}
                for step in STAGES["detector1"].steps}
    assert step_parameters(defaults, "detector1", preset)["jump"]["per_integration"] is True
    assert step_parameters(defaults, "detector1", preset, recommended=False)["jump"]["per_integration"] is False
    # and ROEBA with one level per integration (the donut's 1/f), ROEBA off on the jwst line
    rec, jwst = (step_parameters(defaults, "detector1", preset, recommended=r)["refpix"] for r in (True, False))
    assert (rec["roeba"], rec["roeba_level"], rec["roeba_min_pixels"], rec["roeba_grow"]) == (True, "integration", 4, 1)
    assert (jwst["roeba"], jwst["roeba_level"]) == (False, "group")


def test_imaging_preset_recommends_snowball_flagging_and_jwst_line_drops_it():
    preset = load_modes(REPO / "config" / "modes", SCHEMA)["imaging"]
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]["steps"]["properties"]
    defaults = {step: {k: v["default"] for k, v in schema[step]["properties"].items()}
                for step in STAGES["detector1"].steps}
    rec = step_parameters(defaults, "detector1", preset)["jump"]
    assert rec["expand_large_events"] is True
    # beyond jwst: cosmic rays near the edges and saturating stars are not snowballs
    assert rec["edge_contact"] == 4 and rec["sat_core_in_snowball"] is True
    jwst = step_parameters(defaults, "detector1", preset, recommended=False)["jump"]
    # jwst 3.0's jump step defaults (jwst/jump/jump_step.py spec), and stcal's behaviour for ours
    assert jwst["expand_large_events"] is False
    assert jwst["edge_contact"] is None and jwst["sat_core_in_snowball"] is False
    assert (jwst["min_jump_area"], jwst["min_sat_area"], jwst["expand_factor"], jwst["min_sat_radius_extend"],
            jwst["sat_expand"], jwst["edge_size"], jwst["max_extended_radius"],
            jwst["snowball_time_masked_next_int"]) == (5.0, 1.0, 2.0, 2.5, 2, 25, 200, 4000)


def test_imaging_preset_recommends_proper_motions_and_jwst_line_drops_it():
    preset = load_modes(REPO / "config" / "modes", SCHEMA)["imaging"]
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]["steps"]["properties"]
    defaults = {step: {k: v["default"] for k, v in schema[step]["properties"].items()}
                for step in STAGES["image3"].steps}
    recommended = step_parameters(defaults, "image3", preset)["tweakreg"]
    assert recommended["abs_proper_motion"] is True and recommended["abs_merge_sources"] is True
    jwst = step_parameters(defaults, "image3", preset, recommended=False)["tweakreg"]
    assert jwst["abs_proper_motion"] is False and jwst["abs_refcat"] is None  # jwst 3.0: relative only
    assert jwst["abs_merge_sources"] is False  # jwst fits the concatenated catalogs
