"""Snakemake adapter: the previews of a mode's mosaics with their catalogs (webbflow.report.jobs.qa_mosaics)."""

import logging
import sys
from pathlib import Path

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO,  # noqa: F821 (injected by Snakemake)
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
sys.path.append(str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821 (a clone without pip install)
from webbflow.report import jobs  # noqa: E402

jobs.qa_mosaics(list(snakemake.input.i2ds), list(snakemake.input.cats), snakemake.output.previews)  # noqa: F821
