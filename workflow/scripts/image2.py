"""Snakemake adapter: run webbflow's image2 stage (rate -> cal) on one exposure."""

import json
import logging
import sys
from pathlib import Path

logging.basicConfig(
    filename=snakemake.log[0],  # noqa: F821 (injected by Snakemake)
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    force=True,
)
log = logging.getLogger("webbflow.image2")

try:
    import webbflow
except ImportError:  # a clone used without `pip install -e .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821
    import webbflow

from webbflow.config import config_digest
from webbflow.io.errors import InputError
from webbflow.stages import image2

steps = json.loads(snakemake.params.steps)  # noqa: F821
references = json.loads(snakemake.params.references)  # noqa: F821
provenance = {
    "webbflow_version": webbflow.__version__,
    "step_parameters": steps,
    "config_digest": config_digest(
        {"steps": steps, "references": {t: Path(p).name for t, p in references.items() if p}}
    ),
}
try:
    image2.run(snakemake.input.rate, snakemake.output.cal, references, steps, provenance)  # noqa: F821
except InputError as exc:
    log.error("%s", exc)
    sys.exit(f"webbflow image2 failed: {exc}")
except Exception:
    log.exception("image2 failed")
    raise
