"""Snakemake adapter: write the demo program with webbflow's simulator."""

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
log = logging.getLogger("webbflow.demo")

try:
    import webbflow  # noqa: F401
except ImportError:  # a clone used without `pip install -e .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from webbflow.simulate import run_preset

outdir = Path(snakemake.params.outdir)  # noqa: F821
uncal_dir = outdir / "uncal"
existing = sorted(uncal_dir.glob("*_uncal.fits")) if uncal_dir.is_dir() else []
if existing:
    # Never overwrite someone's files: the demo is only written into an empty folder.
    log.info("%s already holds %d uncal files; not simulating", uncal_dir, len(existing))
    paths = existing
else:
    log.info("writing demo preset %s to %s", snakemake.params.preset, outdir)  # noqa: F821
    paths = run_preset(snakemake.params.preset, outdir, seed=snakemake.params.seed)  # noqa: F821
    log.info("wrote %d exposures", len(paths))

# The demo's references are selected through crds from a local cache (no server): build it from the
# reference files' headers (a new type written into refs/ is picked up automatically).
refs_dir = outdir / "refs"
crds_context = None
if refs_dir.is_dir() and any(refs_dir.glob("*.fits")):
    from webbflow.refs.crds_cache import build_cache

    crds_context = build_cache(refs_dir, outdir / "crds_cache", context="jwst_9000.pmap")
    log.info("CRDS cache %s written with context %s", outdir / "crds_cache", crds_context)

manifest = {
    "preset": snakemake.params.preset,  # noqa: F821
    "seed": snakemake.params.seed,  # noqa: F821
    "uncal": sorted(str(Path(p).name) for p in paths),
    "crds_context": crds_context,
}
Path(snakemake.output.manifest).write_text(json.dumps(manifest, indent=1))  # noqa: F821
