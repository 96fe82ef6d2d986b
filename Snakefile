"""webbflow: JWST NIRCam uncal ramps -> rate/rateints products.

Run `snakemake --cores all`; see README.md for the configuration keys.
"""

import copy
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # a clone used without `pip install -e .`
from webbflow.config import ConfigError, validate_config

min_version("9.0")


# The defaults ship with the workflow; a user --configfile overrides them (also with --directory).
configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


# `snakemake --report report.html` (after the run): the QA figures and tables of workflow/rules/report.smk.
report: "workflow/report/workflow.rst"


# What the user wrote, before the schema fills defaults: it must win over mode presets.
USER_CONFIG = copy.deepcopy(config)


try:
    validate_config(USER_CONFIG, Path(workflow.basedir) / "config" / "schema.yaml")
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
# Fills every default (nested ones included).
validate(config, "config/schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/references.smk"
include: "workflow/rules/detector1.smk"
include: "workflow/rules/image2.smk"
include: "workflow/rules/image3.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    stage1,
    stage2,
    stage3,


rule all:
    input:
        all_products,
        all_report_products,
    default_target: True


# Targets that stop at a stage, e.g. `snakemake --cores all stage1` for rate/rateints only.
rule stage1:
    input:
        all_rate_products,


rule stage2:
    input:
        all_cal_products,


rule stage3:
    input:
        all_image3_products,
