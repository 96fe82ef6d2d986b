"""Snakemake adapter: a mode's mosaics against the demo's truth (webbflow.report.jobs.qa_truths)."""

import logging
import sys
from pathlib import Path

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO,  # noqa: F821 (injected by Snakemake)
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
sys.path.append(str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821 (a clone without pip install)
from webbflow.report import jobs  # noqa: E402

jobs.qa_truths(list(snakemake.input.i2ds), list(snakemake.input.cats), snakemake.input.truth,  # noqa: F821
               snakemake.output.residuals)  # noqa: F821
