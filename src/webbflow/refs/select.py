"""Choose reference files for an exposure from a local folder (until CRDS lands).

A file is a candidate for reference type ``t`` when its primary header has
``REFTYPE == t`` and the exposure's ``INSTRUME`` and ``DETECTOR``.  Among the
candidates an exact ``SUBARRAY`` match wins, then a full-frame (or larger)
file that covers the science subarray and is cut with SUBSTRT/SUBSIZE; ties
go to the latest ``USEAFTER`` not after the exposure's ``DATE-OBS``.  A path
given in ``overrides`` always wins.
"""

import functools
import os
from pathlib import Path

from astropy.io import fits

from webbflow.io.errors import ReferenceFileError

__all__ = ["CORON3_REFTYPES", "DETECTOR1_REFTYPES", "IMAGE2_REFTYPES", "IMAGE3_REFTYPES", "SPEC2_REFTYPES", "TSO3_REFTYPES", "scan_reference_dir",
           "select_references"]

DETECTOR1_REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")
"""Reference types detector1 reads."""

IMAGE2_REFTYPES = ("distortion", "flat", "photom", "area")
"""Reference types image2 (assign_wcs, flat_field, photom) reads."""

IMAGE3_REFTYPES = ("apcorr", "abvegaoffset")
"""Reference types image3 (source_catalog: aperture radii and corrections, AB-to-Vega offsets) reads,
the ``reference_file_types`` of jwst's SourceCatalogStep."""

SPEC2_REFTYPES = ("specwcs", "distortion", "flat", "wavelengthrange", "photom", "extract1d")
"""Reference types spec2 (grism time series) reads."""

TSO3_REFTYPES = ("extract1d",)
"""Reference types tso3 (grism time series) reads."""

CORON3_REFTYPES = ("psfmask",)
"""Reference types coron3 (coronagraphy) reads."""

_HEADER_KEYS = ("REFTYPE", "INSTRUME", "DETECTOR", "SUBARRAY", "SUBSTRT1", "SUBSTRT2",
                "SUBSIZE1", "SUBSIZE2", "USEAFTER", "READPATT", "FILTER", "PUPIL", "EXP_TYPE",
                "P_EXP_TY", "P_PUPIL", "P_FILTER", "CHANNEL")

# Optical-element and mode selectors per type (CRDS NIRCam rmaps); other types ignore them.
_SELECTORS = {
    "flat": ("FILTER", "PUPIL"),
    "area": ("FILTER", "PUPIL", "EXP_TYPE"),
    "distortion": ("EXP_TYPE", "CHANNEL", "FILTER", "PUPIL"),
    "photom": ("EXP_TYPE",),
    "specwcs": ("EXP_TYPE", "FILTER", "PUPIL"),
    "wavelengthrange": ("EXP_TYPE",),
    "extract1d": ("EXP_TYPE",),
    "psfmask": ("FILTER",),
}
_WILDCARDS = {"", "ANY", "N/A", "NONE", "GENERIC"}
_PATTERN_KEY = {"EXP_TYPE": "P_EXP_TY", "PUPIL": "P_PUPIL", "FILTER": "P_FILTER"}


def reference_header(path):
    """Primary header of a FITS reference, or the header-like summary of an ASDF or JSON one."""
    path = Path(path)
    if path.suffix == ".json":
        return _json_header(path)
    return _asdf_header(path) if path.suffix == ".asdf" else fits.getheader(path, 0)


_JSON_KEYS = {"reftype": "REFTYPE", "instrument": "INSTRUME", "instrume": "INSTRUME", "detector": "DETECTOR",
              "exp_type": "EXP_TYPE", "p_exp_ty": "P_EXP_TY", "filter": "FILTER", "pupil": "PUPIL",
              "useafter": "USEAFTER", "subarray": "SUBARRAY"}


def _json_header(path):
    """Header-like summary of a JSON reference (EXTRACT1D): its top-level keywords, any case."""
    import json

    tree = json.loads(Path(path).read_text())
    return {_JSON_KEYS[k.lower()]: v for k, v in tree.items() if k.lower() in _JSON_KEYS}


def _asdf_header(path):
    """Header-like summary of an ASDF reference (DISTORTION): the tree's ``meta``.

    Only the YAML tree is parsed (libyaml, tags ignored, no blocks): ``asdf.open`` would first load
    every installed asdf extension, ~1 s of CPU per planning process for the same plain ``meta``.
    """
    from asdf.util import load_yaml

    return asdf_summary(load_yaml(path))


def asdf_summary(tree):
    """Header-like summary (REFTYPE, INSTRUME, DETECTOR, ...) of an ASDF reference's tree."""
    meta = tree.get("meta", {}) or {}
    inst = meta.get("instrument", {}) or {}
    return {
        "REFTYPE": meta.get("reftype"), "INSTRUME": inst.get("name"),
        "DETECTOR": inst.get("detector"), "CHANNEL": inst.get("channel"),
        "FILTER": inst.get("filter"), "PUPIL": inst.get("pupil"),
        "P_PUPIL": inst.get("p_pupil"), "P_FILTER": inst.get("p_filter"),
        "P_DETECT": inst.get("p_detector"),
        "EXP_TYPE": (meta.get("exposure") or {}).get("type"),
        "P_EXP_TY": (meta.get("exposure") or {}).get("p_exptype"),
        "SUBARRAY": (meta.get("subarray") or {}).get("name"),
        "USEAFTER": meta.get("useafter"),
    }


def _matches_selectors(row, primary, reftype):
    """True when the reference's FILTER/PUPIL/EXP_TYPE/CHANNEL admit the exposure."""
    for key in _SELECTORS.get(reftype, ()):
        want = str(primary.get(key) or "").upper()
        pattern = row.get(_PATTERN_KEY.get(key, ""), None)
        if pattern and want in {p.strip().upper() for p in str(pattern).split("|")}:
            continue
        have = str(row.get(key) or "").upper()
        if have in _WILDCARDS or not want:
            continue
        if have != want:
            return False
    return True


@functools.lru_cache(maxsize=32)
def _scan(folder, stamp):
    rows = []
    for path in sorted([*Path(folder).glob("*.fits"), *Path(folder).glob("*.asdf"), *Path(folder).glob("*.json")]):
        try:
            header = reference_header(path)
        except Exception:  # noqa: BLE001 - an unreadable stray file is only an error if chosen
            continue
        if not header.get("REFTYPE"):
            continue
        row = {key: header.get(key) for key in _HEADER_KEYS}
        row["REFTYPE"] = str(row["REFTYPE"]).lower()
        row["path"] = str(path)
        rows.append(row)
    return tuple(rows)


def scan_reference_dir(folder):
    """Primary-header summary of every reference file in ``folder``.

    Parameters
    ----------
    folder : str or os.PathLike

    Returns
    -------
    tuple of dict
        One dict per file: REFTYPE (lower case), INSTRUME, DETECTOR,
        SUBARRAY, SUBSTRT1/2, SUBSIZE1/2, USEAFTER, READPATT and ``path``.
        Cached per process until the folder changes.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ReferenceFileError(folder, "reference folder not found", "set references.dir to the folder of reference files")
    return _scan(folder, os.stat(folder).st_mtime_ns)


def _covers(row, primary):
    """True when the reference's region contains the science subarray."""
    sx, sy = int(primary.get("SUBSTRT1", 1)), int(primary.get("SUBSTRT2", 1))
    nx, ny = int(primary.get("SUBSIZE1", 2048)), int(primary.get("SUBSIZE2", 2048))
    rx, ry = int(row["SUBSTRT1"] or 1), int(row["SUBSTRT2"] or 1)
    rnx, rny = int(row["SUBSIZE1"] or 2048), int(row["SUBSIZE2"] or 2048)
    return rx <= sx and ry <= sy and sx + nx <= rx + rnx and sy + ny <= ry + rny


def _rank(row, primary):
    date_obs = str(primary.get("DATE-OBS", "9999"))
    useafter = str(row["USEAFTER"] or "")
    in_time = useafter[:10] <= date_obs[:10]
    exact = str(row["SUBARRAY"]).upper() == str(primary.get("SUBARRAY", "FULL")).upper()
    return (exact, in_time, useafter, row["path"])


def select_references(primary, refs_dir=None, overrides=None, reftypes=DETECTOR1_REFTYPES):
    """Choose a reference file per type for one exposure.

    Parameters
    ----------
    primary : Mapping
        The exposure's primary header (INSTRUME, DETECTOR, SUBARRAY,
        SUBSTRT1/2, SUBSIZE1/2, DATE-OBS; FILTER, PUPIL, EXP_TYPE, CHANNEL for
        the stage-2 types, which also accept the P_EXP_TY/P_PUPIL patterns and ANY).
    refs_dir : str or os.PathLike, optional
        Folder of reference files (e.g. the simulator's ``<outdir>/refs``).
    overrides : dict, optional
        reftype -> path; always wins (``config.overrides.<reftype>``).
    reftypes : sequence of str
        Types to choose.

    Returns
    -------
    dict
        reftype -> path (str), or None when nothing matches.

    Raises
    ------
    ReferenceFileError
        If an override names a file that does not exist.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    rows = scan_reference_dir(refs_dir) if refs_dir else ()
    detector = str(primary.get("DETECTOR", "")).upper()
    instrument = str(primary.get("INSTRUME", "NIRCAM")).upper()
    chosen = {}
    for reftype in reftypes:
        if reftype in overrides:
            path = Path(overrides[reftype])
            if not path.is_file():
                raise ReferenceFileError(path, f"overrides.{reftype} names a file that does not exist",
                                         f"correct overrides.{reftype} in the config")
            chosen[reftype] = str(path)
            continue
        candidates = [
            row for row in rows
            if row["REFTYPE"] == reftype
            and (str(row["DETECTOR"]).upper() == detector or str(row["DETECTOR"] or "").upper() in _WILDCARDS)
            and str(row["INSTRUME"] or instrument).upper() == instrument
            and (str(row["SUBARRAY"]).upper() == str(primary.get("SUBARRAY", "FULL")).upper()
                 or str(row["SUBARRAY"] or "").upper() in _WILDCARDS
                 or _covers(row, primary))
            and _matches_selectors(row, primary, reftype)
        ]
        chosen[reftype] = max(candidates, key=lambda r: _rank(r, primary))["path"] if candidates else None
    return chosen
