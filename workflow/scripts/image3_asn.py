"""Snakemake adapter: write one image3 association as JWST association JSON (atomically)."""

import json
import logging
import os
from pathlib import Path

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO,  # noqa: F821 (injected by Snakemake)
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)

content = json.loads(snakemake.params.content)  # noqa: F821
path = Path(snakemake.output.asn)  # noqa: F821
path.parent.mkdir(parents=True, exist_ok=True)
tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
tmp.write_text(json.dumps(content, indent=2) + "\n")
os.replace(tmp, path)
logging.getLogger("webbflow.asn").info("%s: %d members", content["products"][0]["name"],
                                       len(content["products"][0]["members"]))
