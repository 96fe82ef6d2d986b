"""Snakemake adapter: the report's comparison of the parameter variants (webbflow.report.variants.qa_variants)."""

import json
import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))  # a clone used without `pip install -e .`
from webbflow.jobclient import snakemake_object  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

sm = snakemake_object(globals())  # Snakemake's object (script:), or the job file's (shell:)
out = sm.output
run_job(sm, "qa_variants", "webbflow.report.variants:qa_variants",
        list(sm.input.rates), sm.params.labels, out.html, out.csv, out.rows,
        out.png, truths=list(sm.input.truths), overrides=json.loads(sm.params.overrides))
