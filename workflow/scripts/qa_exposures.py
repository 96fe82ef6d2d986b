"""Snakemake adapter: the QA rows, thumbnails and table of a mode's exposures (webbflow.report.jobs.qa_exposures)."""

import logging
import sys
from pathlib import Path

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO,  # noqa: F821 (injected by Snakemake)
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
sys.path.append(str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821 (a clone without pip install)
from webbflow.report import jobs  # noqa: E402

out = snakemake.output  # noqa: F821
jobs.qa_exposures(list(snakemake.input.rates), list(snakemake.input.cals), out.rate, out.cal, out.rows,  # noqa: F821
                  out.html, out.csv, mode=snakemake.wildcards.mode)  # noqa: F821
