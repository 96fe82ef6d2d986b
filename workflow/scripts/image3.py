"""Snakemake adapter: run webbflow's image3 stage on one association."""

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
log = logging.getLogger("webbflow.image3")

try:
    import webbflow
except ImportError:  # a clone used without `pip install -e .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821
    import webbflow

from webbflow.associations import read_asn
from webbflow.config import config_digest
from webbflow.io.errors import InputError
from webbflow.stages import image3

steps = json.loads(snakemake.params.steps)  # noqa: F821
asn = read_asn(snakemake.input.asn)  # noqa: F821
provenance = {
    "webbflow_version": webbflow.__version__,
    "step_parameters": steps,
    "config_digest": config_digest({"steps": steps, "members": [Path(m).name for m in asn["members"]]}),
}
try:
    image3.run(
        asn["members"],
        i2d=snakemake.output.i2d,  # noqa: F821
        cat=snakemake.output.cat,  # noqa: F821
        segm=snakemake.output.segm,  # noqa: F821
        crf_dir=snakemake.output.crf,  # noqa: F821
        asn_id=asn["asn_id"],
        product=asn["product"],
        params=steps,
        provenance=provenance,
        pool=asn["asn_pool"],
    )
except InputError as exc:
    # One clear line for the user, no traceback from deep inside the library.
    log.error("%s", exc)
    sys.exit(f"webbflow image3 failed: {exc}")
except Exception:
    log.exception("image3 failed")
    raise
