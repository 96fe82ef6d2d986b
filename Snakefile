"""webbflow: JWST NIRCam uncal ramps -> rate/rateints products.

Run `snakemake --cores all`; see README.md for the configuration keys.
"""

import copy
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # a clone used without `pip install -e .`
from webbflow.config import (ConfigError, check_mode_names, config_schema, enabled_modes, fill_defaults,
                             load_modes, validate_config, variant_configs)

min_version("9.0")


# The defaults ship with the workflow; a user --configfile overrides them (also with --directory).
configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


# `snakemake --report report.html` (after the run): the QA figures and tables of workflow/rules/report.smk.
report: "workflow/report/workflow.rst"


# What the user wrote, before the schema fills defaults: it must win over mode presets.
USER_CONFIG = copy.deepcopy(config)
SCHEMA = Path(workflow.basedir) / "config" / "schema.yaml"


try:
    # The mode presets first (a typo there names the preset file), then the user's config, whose
    # modes and mode_steps may name only the presets found.
    PRESETS = load_modes(Path(workflow.basedir) / "config" / "modes", SCHEMA)
    # A run that would reduce nothing (modes: [], a misspelt or wrong-case name) says so first.
    check_mode_names(USER_CONFIG.get("modes"), PRESETS)
    validate_config(USER_CONFIG, config_schema(SCHEMA, PRESETS))
    # Each variant's config (variants.<name> merged in), checked the same way: the error names the variant.
    VARIANT_USER_CONFIGS = variant_configs(USER_CONFIG, config_schema(SCHEMA, PRESETS))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
# Fills every default (nested ones included): snakemake.utils.validate's algorithm on the schema read
# above (Snakemake's own would parse the file again, ~0.1 s per call).
fill_defaults(config, SCHEMA)
# variant name -> (its config as written, the same with every default filled): workflow/rules/variants.smk
VARIANTS = {}
for _name, _user in VARIANT_USER_CONFIGS.items():
    _full = copy.deepcopy(_user)
    fill_defaults(_full, SCHEMA)
    VARIANTS[_name] = (_user, _full)
try:
    MODES = enabled_modes(PRESETS, config["modes"])
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None


include: "workflow/rules/common.smk"
include: "workflow/rules/bad_input.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/references.smk"
include: "workflow/rules/detector1.smk"
include: "workflow/rules/image2.smk"
include: "workflow/rules/spec2.smk"
include: "workflow/rules/image3.smk"
include: "workflow/rules/tso3.smk"
include: "workflow/rules/coron3.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/lightcurves.smk"
include: "workflow/rules/variants.smk"


# A stage that a preset runs but no rules make (a mode added without its rules) would make nothing.
for _mode, _preset in MODES.items():
    for _stage in _preset["stages"]:
        if _stage not in STAGE_PRODUCTS:
            raise WorkflowError(f"config/modes/{_mode}.yaml: key stages: stage {_stage} has no rules that "
                                f"register its products (STAGE_PRODUCTS in workflow/rules). Fix: add its rules")


localrules:
    all,
    stage1,
    stage2,
    stage3,
    variants,


# Targets: every product of every stage of every enabled mode, or those of one stage level, e.g.
# `snakemake --cores all stage1` for rate/rateints only (webbflow.config.STAGES maps stages to targets).
rule all:
    input:
        products_of(None),
        all_report_products,
        all_variant_products,
    default_target: True


rule stage1:
    input:
        products_of("stage1"),


rule stage2:
    input:
        products_of("stage2"),


rule stage3:
    input:
        products_of("stage3"),


# The variants of config `variants` (their own products, those they share with the main tree, and the
# report's comparison): `snakemake --cores all variants`.
rule variants:
    input:
        all_variant_products,
