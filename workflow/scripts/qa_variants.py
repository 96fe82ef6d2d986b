"""Snakemake adapter: the report's comparison of the parameter variants (webbflow.report.variants.qa_variants)."""

import json
import sys
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.append(str(Path(sm.scriptdir).parents[1] / "src"))  # a clone used without `pip install -e .`
from webbflow.report import variants  # noqa: E402
from webbflow.workflow import run_job  # noqa: E402

out = sm.output
run_job(sm, "qa_variants", variants.qa_variants, list(sm.input.rates), sm.params.labels, out.html, out.csv, out.rows,
        out.png, truths=list(sm.input.truths), overrides=json.loads(sm.params.overrides))
