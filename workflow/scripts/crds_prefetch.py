"""Snakemake adapter: fetch every reference of the run into the CRDS cache and write the lockfile."""

import logging
import sys
from pathlib import Path

logging.basicConfig(
    filename=snakemake.log[0],  # noqa: F821 (injected by Snakemake)
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    force=True,
)
log = logging.getLogger("webbflow.crds_prefetch")

try:
    import webbflow  # noqa: F401
except ImportError:  # a clone used without `pip install -e .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from webbflow.io.errors import InputError
from webbflow.refs.crds_select import CrdsSetup
from webbflow.refs.prefetch import prefetch

params = snakemake.params  # noqa: F821
uncals = {Path(p).name.removesuffix("_uncal.fits"): p for p in snakemake.input.uncal}  # noqa: F821
# The only writer of the cache in this run: not read-only.
crds_config = snakemake.config["crds"]  # noqa: F821
setup = CrdsSetup(params.cache, crds_config["context"], crds_config["server_url"], readonly=False)
try:
    prefetch(uncals, params.reftypes, setup, setup.context, snakemake.output.lock,  # noqa: F821
             overrides=params.overrides)
except InputError as exc:
    log.error("%s", exc)
    sys.exit(f"webbflow crds_prefetch failed: {exc}")
except Exception:
    log.exception("crds_prefetch failed")
    raise
