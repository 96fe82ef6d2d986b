"""Snakemake adapter: download the configured MAST program's uncal files, then write the manifest."""

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

logging.basicConfig(
    filename=snakemake.log[0],  # noqa: F821 (injected by Snakemake)
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    force=True,
)
log = logging.getLogger("webbflow.download")

try:
    import webbflow  # noqa: F401
except ImportError:  # a clone used without `pip install -e .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from webbflow.download import download, download_url, list_products, products_from_table
from webbflow.io.errors import InputError

cfg = snakemake.params.download  # noqa: F821
outdir = Path(snakemake.params.uncal_dir)  # noqa: F821
try:
    if cfg["product_list"]:
        from astropy.table import Table

        products = products_from_table(Table.read(cfg["product_list"]), cfg["program"], cfg["observations"],
                                       cfg["detectors"])
    else:
        products = list_products(cfg["program"], cfg["observations"], cfg["filters"], cfg["detectors"],
                                 cfg["exp_types"])
    if not products:
        raise InputError(f"program {cfg['program']}", "MAST lists no NIRCam uncal files for this selection",
                         "check download.program, observations, filters and detectors")
    for i, product in enumerate(products, 1):
        log.info("[%d/%d] %s (%s bytes)", i, len(products), product.filename, product.size)
        download(download_url(product.uri, cfg["mast_url"]), outdir / product.filename, size=product.size,
                 sha256=product.sha256, retries=cfg["retries"])
except InputError as exc:
    log.error("%s", exc)
    sys.exit(f"webbflow download failed: {exc}")

manifest = Path(snakemake.output.manifest)  # noqa: F821
manifest.parent.mkdir(parents=True, exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=manifest.parent, prefix=".manifest.", suffix=".part")
with os.fdopen(fd, "w") as fh:
    json.dump({"program": str(cfg["program"]), "files": [p.as_dict() for p in products]}, fh, indent=1)
os.replace(tmp, manifest)
log.info("downloaded %d files into %s", len(products), outdir)
