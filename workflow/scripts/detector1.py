"""Snakemake adapter: run webbflow's detector1 stage on one exposure."""

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
log = logging.getLogger("webbflow.detector1")

try:
    import webbflow
except ImportError:  # a clone used without `pip install -e .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821
    import webbflow

from webbflow.config import config_digest
from webbflow.io.errors import InputError
from webbflow.stages import detector1

steps = json.loads(snakemake.params.steps)  # noqa: F821
references = json.loads(snakemake.params.references)  # noqa: F821
provenance = {
    "webbflow_version": webbflow.__version__,
    "step_parameters": steps,
    "config_digest": config_digest(
        {"steps": steps, "references": {t: Path(p).name for t, p in references.items() if p}}
    ),
}
if "crds_lock" in snakemake.input.keys():  # noqa: F821
    # References chosen through CRDS: this job only reads the cache, and refuses a file that
    # differs from what the prefetch locked.
    import os

    from webbflow.refs.lockfile import locked_provenance

    os.environ["CRDS_READONLY_CACHE"] = "1"
    try:
        provenance.update(locked_provenance(snakemake.input.crds_lock, references))  # noqa: F821
    except InputError as exc:
        log.error("%s", exc)
        sys.exit(f"webbflow detector1 failed: {exc}")
try:
    detector1.run(
        snakemake.input.uncal,  # noqa: F821
        snakemake.output.rate,  # noqa: F821
        snakemake.output.rateints,  # noqa: F821
        references,
        steps,
        provenance,
        exp_types=tuple(snakemake.params.exp_types),  # noqa: F821
    )
except InputError as exc:
    # One clear line for the user, no traceback from deep inside the library.
    log.error("%s", exc)
    sys.exit(f"webbflow detector1 failed: {exc}")
except Exception:
    log.exception("detector1 failed")
    raise
