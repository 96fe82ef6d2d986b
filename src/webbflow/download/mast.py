"""List a JWST NIRCam program's uncal products at MAST with astroquery.

``astroquery.mast.Observations``: ``query_criteria`` (collection JWST,
proposal id, instrument/mode, filters) → ``get_product_list`` →
``filter_products`` (``productSubGroupDescription='UNCAL'``), then our own
selection by the observation number and detector in the JWST file name.
Downloads use MAST's file endpoint ``<mast_url>/api/v0.1/Download/file?uri=``
(what ``Observations.download_file`` builds), through :func:`webbflow.download.download`.
"""

import re
from dataclasses import asdict, dataclass
from urllib.parse import quote

import numpy as np

__all__ = ["MAST_URL", "Product", "download_url", "list_products", "products_from_table"]

MAST_URL = "https://mast.stsci.edu"

# EXP_TYPE -> MAST instrument_name (instrument/mode) of the observations holding it.
INSTRUMENT_NAMES = {
    "NRC_IMAGE": "NIRCAM/IMAGE", "NRC_TSIMAGE": "NIRCAM/IMAGE", "NRC_TSGRISM": "NIRCAM/GRISM",
    "NRC_WFSS": "NIRCAM/GRISM", "NRC_CORON": "NIRCAM/CORON",
}
_NAME = re.compile(r"^jw(\d{5})(\d{3})(\d{3})_(\d{5})_(\d{5})(?:-seg\d{3})?_([a-z0-9]+)_uncal\.fits$")


@dataclass(frozen=True)
class Product:
    """One file to download: name, MAST data URI, size in bytes (None if unknown), sha256 (or None)."""

    filename: str
    uri: str
    size: int | None = None
    sha256: str | None = None

    def as_dict(self):
        """JSON-ready dict."""
        return asdict(self)


def download_url(uri, mast_url=MAST_URL):
    """MAST download URL of a data URI (as ``Observations.download_file`` escapes it)."""
    return f"{mast_url.rstrip('/')}/api/v0.1/Download/file?uri={quote(uri, safe=':/')}"


def products_from_table(table, program=None, observations=(), detectors=()):
    """Uncal products of a MAST product table, selected by file name; one per file name.

    Parameters
    ----------
    table : astropy.table.Table
        ``get_product_list``/``filter_products`` output (productFilename, dataURI, size).
    program : str, optional
        5-digit program; others are dropped.
    observations : sequence of str or int
        Observation numbers to keep (empty: all).
    detectors : sequence of str
        Detectors to keep, e.g. ``nrca1`` (empty: all).

    Returns
    -------
    list of Product
        Sorted by file name.
    """
    obs = {f"{int(o):03d}" for o in observations or ()}
    dets = {d.lower() for d in detectors or ()}
    out = {}
    for row in table:
        name = str(row["productFilename"])
        match = _NAME.match(name)
        if not match:
            continue
        prog, ob, _, _, _, det = match.groups()
        if (program and prog != f"{int(program):05d}") or (obs and ob not in obs) or (dets and det not in dets):
            continue
        size = row["size"] if "size" in row.colnames and not np.ma.is_masked(row["size"]) else None
        sha = row["sha256"] if "sha256" in row.colnames and not np.ma.is_masked(row["sha256"]) else None
        out[name] = Product(name, str(row["dataURI"]), None if size is None else int(size), str(sha) if sha else None)
    return [out[k] for k in sorted(out)]


def list_products(program, observations=(), filters=(), detectors=(), exp_types=(), observations_api=None):
    """Query MAST for a program's NIRCam uncal files.

    Parameters
    ----------
    program : str or int
        Proposal id, e.g. ``1345``.
    observations, detectors : sequence
        See :func:`products_from_table`.
    filters : sequence of str
        Filter names (MAST ``filters`` criterion), e.g. ``F200W``.
    exp_types : sequence of str
        EXP_TYPEs; mapped to MAST ``instrument_name`` (NIRCAM/IMAGE, ...).
    observations_api : object, optional
        Stand-in for ``astroquery.mast.Observations`` (tests).

    Returns
    -------
    list of Product
    """
    if observations_api is None:
        from astroquery.mast import Observations as observations_api
    criteria = {"obs_collection": "JWST", "proposal_id": str(int(program)), "calib_level": [1, 2, 3]}
    names = sorted({INSTRUMENT_NAMES[t] for t in exp_types or () if t in INSTRUMENT_NAMES})
    criteria["instrument_name"] = names or ["NIRCAM/IMAGE", "NIRCAM/GRISM", "NIRCAM/CORON", "NIRCAM"]
    if filters:
        criteria["filters"] = list(filters)
    obs_table = observations_api.query_criteria(**criteria)
    if len(obs_table) == 0:
        return []
    products = observations_api.get_product_list(obs_table)
    products = observations_api.filter_products(products, productSubGroupDescription="UNCAL")
    return products_from_table(products, program, observations, detectors)
