"""Stage-3 associations: many exposures -> one product, chosen from headers.

An image3 association holds the NRC_IMAGE exposures of one program,
observation and optical path (FILTER + PUPIL), as jwst's ``Asn_Lv3Image``
rule groups them (observation candidate ``o<ooo>``, target ``t001``).  Its
product is named as jwst names it (``rules_level3_base._dms_product_name``):
``jw<ppppp>-o<ooo>_t001_nircam_<opt>`` where ``<opt>`` is FILTER and PUPIL,
each lower case, sorted case-insensitively and joined by ``-`` (``clear`` if
both are empty); image3 has no subarray constraint, so no subarray suffix.

A tso3 association (``Asn_Lv3TSO``) holds the time-series exposures (all their segments) of one
program, observation, optical path and subarray; its name adds the subarray (``-subgrism256``;
FULL is omitted), as in ``jw01366-o002_t001_nircam_f322w2-grismr-subgrism256``.

A coron3 association (``Asn_Lv3NRCCoron``, coron-algorithms.md §3.1) holds a coronagraphic
program's NRC_CORON exposures of one optical path and subarray: the target's exposures (IS_PSF F,
one target, any roll) as ``science`` members and the PSF references (IS_PSF T) as ``psf`` members.
Science and PSF exposures come from different observations, so the candidate is a discovered one
(``c1001``, ``c1002``... in product-name order) and the name carries it and the subarray:
``jw01412-c1001_t001_nircam_f335m-maskrnd-sub320a335r`` (jwst's optical-path constraint includes
the subarray).  Members come in root-name (pool) order, science and psf interleaved as jwst's
generator adds them; the psf members' order fixes jwst's psfstack order.  They are the calints.

Associations are written as JWST association JSON (``asn_id``, ``asn_pool``,
``asn_type: image3``, ``products[name, members[expname, exptype]]``), which
jwst's ``calwebb_image3`` accepts as is.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import webbflow
from webbflow.io.errors import InputError
from webbflow.io.files import atomic_write_text

__all__ = [
    "IMAGE3_EXP_TYPES",
    "Association",
    "associations_from_cals",
    "image3_associations",
    "TSO3_EXP_TYPES",
    "opt_element",
    "product_name",
    "read_asn",
    "tso3_associations",
    "write_asn",
    "CORON3_EXP_TYPES",
    "coron3_associations",
]

IMAGE3_EXP_TYPES = ("NRC_IMAGE",)
TSO3_EXP_TYPES = ("NRC_TSGRISM", "NRC_TSIMAGE")
CORON3_EXP_TYPES = ("NRC_CORON",)
_RULES = {"image3": "candidate_Asn_Lv3Image", "tso3": "candidate_Asn_Lv3TSO", "coron3": "candidate_Asn_Lv3NRCCoron"}

# Values jwst treats as "no optical element" (dms_base._EMPTY), compared upper case.
_EMPTY = {"", "NULL", "--", "N", "F", "FALSE", "N/A"}


@dataclass
class Association:
    """One image3 association.

    Attributes
    ----------
    asn_id : str
        ``o<ooo>`` (observation candidate).
    product : str
        Stage-3 product name (no suffix).
    program, observation, filter, pupil : str
    members : list of str
        Exposure root names (``jw..._<det>``), sorted.
    pool : str
    """

    asn_id: str
    product: str
    program: str
    observation: str
    filter: str
    pupil: str
    members: list = field(default_factory=list)
    pool: str = "webbflow"
    asn_type: str = "image3"
    subarray: str | None = None
    psf_members: list = field(default_factory=list)

    def member_roles(self):
        """(root name, exptype) of every member in the JSON's order: pool (root-name) order, science
        and psf members interleaved as jwst's generator adds them."""
        roles = [(m, "science") for m in self.members] + [(m, "psf") for m in self.psf_members]
        return sorted(roles)

    def expnames(self, suffix="cal"):
        """Member file names, ``<root>_<suffix>.fits``."""
        return [f"{m}_{suffix}.fits" for m in self.members]

    def as_dict(self, suffix="cal"):
        """JWST association JSON content (``asn_type`` image3 or tso3)."""
        exp_types = {"tso3": TSO3_EXP_TYPES, "coron3": CORON3_EXP_TYPES}.get(self.asn_type, IMAGE3_EXP_TYPES)
        subarray = f" subarray={self.subarray}" if self.subarray else ""
        members = [{"expname": f"{root}_{suffix}.fits", "exptype": role} for root, role in self.member_roles()]
        return {
            "asn_type": self.asn_type,
            "asn_rule": _RULES[self.asn_type],
            "asn_id": self.asn_id,
            "asn_pool": self.pool,
            "program": self.program,
            "target": "1",
            "version_id": None,
            "code_version": f"webbflow {webbflow.__version__}",
            "constraints": f"program={self.program} observation={self.observation} "
                           f"filter={self.filter} pupil={self.pupil}{subarray} exp_type={'|'.join(exp_types)}",
            "products": [{"name": self.product, "members": members}],
        }


def opt_element(filter_name, pupil):
    """jwst's optical-element string: non-empty FILTER/PUPIL, lower case, sorted, ``-``-joined."""
    values = [str(v).strip() for v in (filter_name, pupil) if v is not None and str(v).strip().upper() not in _EMPTY]
    values.sort(key=str.lower)
    return "-".join(v.lower() for v in values) or "clear"


def product_name(program, observation, filter_name, pupil, target=1, subarray=None):
    """``jw<ppppp>-o<ooo>_t<ttt>_nircam_<opt>[-<subarray>]`` (stage-3 product name without suffix).

    The subarray is appended (lower case) for the rules that constrain it (tso3), except FULL.
    """
    name = f"jw{int(program):05d}-o{int(observation):03d}_t{int(target):03d}_nircam_{opt_element(filter_name, pupil)}"
    if subarray and str(subarray).strip().upper() not in _EMPTY | {"FULL"}:
        name += f"-{str(subarray).strip().lower()}"
    return name


def image3_associations(exposures, exp_types=IMAGE3_EXP_TYPES, pool="webbflow"):
    """Group exposure-table rows into image3 associations.

    Parameters
    ----------
    exposures : iterable of webbflow.exposures.Exposure
        Rows of the exposure table (identity from headers).
    exp_types : tuple of str
        EXP_TYPEs that go into image3.
    pool : str
        ``asn_pool`` recorded in the JSON.

    Returns
    -------
    list of Association
        Sorted by product name; members sorted by root name.
    """
    return _associate(exposures, exp_types, pool)


def tso3_associations(exposures, exp_types=TSO3_EXP_TYPES, pool="webbflow"):
    """Group exposure-table rows (segments) into tso3 associations (``asn_id`` o<ooo>).

    Parameters
    ----------
    exposures : iterable of webbflow.exposures.Exposure
    exp_types : tuple of str
        EXP_TYPEs that go into tso3.
    pool : str

    Returns
    -------
    list of Association
        Sorted by product name; members (segment root names) sorted, so segments come in order.
    """
    return _associate(exposures, exp_types, pool, tso3=True)


def coron3_associations(exposures, exp_types=CORON3_EXP_TYPES, pool="webbflow"):
    """Group coronagraphic exposures into coron3 associations from their headers (IS_PSF).

    One association per program, science target, optical path (FILTER + PUPIL) and coronagraphic
    subarray (full-frame exposures are left out: jwst reduces them as imaging): the
    target's exposures (IS_PSF F) are its ``science`` members, every PSF reference (IS_PSF T) of the
    same program, optical path and subarray its ``psf`` members (jwst's ``Asn_Lv3NRCCoron``).  Write
    it with ``write_asn(asn, path, suffix="calints")``.

    Parameters
    ----------
    exposures : iterable of webbflow.exposures.Exposure
        Rows of the exposure table (``is_psf``, ``targname`` from the headers).
    exp_types : tuple of str
    pool : str

    Targets are numbered ``t001``, ``t002``... per program in target-name order (TARGPROP; jwst takes
    the pool's TARGETID, which APT assigns).

    Returns
    -------
    list of Association
        ``asn_type`` coron3, ``asn_id`` c1001, c1002... in product-name order; science members
        (``members``) and PSF members (``psf_members``) sorted by root name
        (:meth:`Association.member_roles`: the JSON's order).

    Raises
    ------
    InputError
        If a target has science exposures but no PSF reference shares its optical path and subarray
        (coron3 would stop with no product), naming one of its files.
    """
    # full-frame coronagraphic exposures are imaging for jwst (Asn_Lv3NRCCoronImage), not coron3
    rows = [e for e in exposures if e.exp_type in exp_types and e.subarray != "FULL"]
    psfs, groups = {}, {}
    for e in rows:
        key = (f"{int(e.program):05d}", e.filter, e.pupil, e.subarray)
        if e.is_psf:
            psfs.setdefault(key, []).append(e)
        else:
            groups.setdefault(key + (e.targname,), []).append(e)
    out = []
    targets = {}
    for key in sorted(groups):
        program, filter_name, pupil, subarray, target = key
        science = sorted(groups[key], key=lambda e: e.rootname)
        refs = sorted(psfs.get(key[:4], []), key=lambda e: e.rootname)
        if not refs:
            raise InputError(science[0].path, f"coronagraphic science exposure ({filter_name}/{pupil}/{subarray}) has "
                             "no PSF reference (IS_PSF = T) with the same filter, pupil and subarray",
                             "add the reference star's exposures to inputs.uncal_dir")
        t = targets.setdefault((program, target), len([k for k in targets if k[0] == program]) + 1)
        out.append(Association("", "", program, "|".join(sorted({e.observtn for e in science})), filter_name, pupil,
                               members=[e.rootname for e in science], pool=pool, asn_type="coron3",
                               subarray=subarray, psf_members=[e.rootname for e in refs]))
        out[-1].product = (f"jw{program}-{{acid}}_t{t:03d}_nircam_{opt_element(filter_name, pupil)}"
                           f"-{subarray.lower()}" if subarray.upper() != "FULL"
                           else f"jw{program}-{{acid}}_t{t:03d}_nircam_{opt_element(filter_name, pupil)}")
    out.sort(key=lambda a: a.product)
    for n, asn in enumerate(out):
        asn.asn_id = f"c{1001 + n}"
        asn.product = asn.product.format(acid=asn.asn_id)
    return out


def _associate(exposures, exp_types, pool, tso3=False):
    """Exposures of ``exp_types`` grouped by product name (the subarray's too for tso3), members sorted."""
    groups = {}
    for e in exposures:
        if e.exp_type not in exp_types:
            continue
        extra = {"asn_type": "tso3", "subarray": e.subarray} if tso3 else {}
        name = product_name(e.program, e.observtn, e.filter, e.pupil, subarray=extra.get("subarray"))
        asn = groups.setdefault(name, Association(f"o{int(e.observtn):03d}", name, f"{int(e.program):05d}",
                                                  f"{int(e.observtn):03d}", e.filter, e.pupil, pool=pool, **extra))
        asn.members.append(e.rootname)
    for asn in groups.values():
        asn.members.sort()
    return [groups[k] for k in sorted(groups)]


def associations_from_cals(paths, exp_types=IMAGE3_EXP_TYPES, pool="webbflow"):
    """image3 associations of cal files, from their primary headers (members are the file names' roots).

    Raises
    ------
    InputError
        If a file lacks the identity keywords.
    """
    from astropy.io import fits

    from webbflow.exposures import exposure_from_header

    rows = []
    for path in paths:
        try:
            header = fits.getheader(path)
        except OSError as exc:
            raise InputError(path, f"cannot be read ({exc})", "give cal files written by image2") from None
        e = exposure_from_header(header, path)
        rows.append(e)
    return image3_associations(rows, exp_types, pool)


def write_asn(asn, path, suffix="cal"):
    """Write an association as JWST JSON, atomically.

    Parameters
    ----------
    asn : Association
    path : str or os.PathLike
        Must end in ``.json`` (jwst recognises associations by it).
    suffix : str
        Member file suffix (``cal``).
    """
    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"{path}: association files must end in .json")
    return atomic_write_text(path, json.dumps(asn.as_dict(suffix), indent=2) + "\n")


def read_asn(path):
    """Read a level-3 association JSON (jwst's or ours).

    Returns
    -------
    dict
        ``asn_id``, ``asn_pool``, ``product`` (first product's name) and
        ``members`` (science member paths, relative names resolved against the
        JSON's folder).

    Raises
    ------
    InputError
        If the JSON lacks ``asn_id``, ``asn_pool`` or a product with members.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"is not a readable association JSON ({exc})", "give an *_asn.json file") from None
    missing = [k for k in ("asn_id", "asn_pool", "products") if k not in data]
    if missing or not data["products"] or not data["products"][0].get("members"):
        raise InputError(path, f"lacks {', '.join(missing) or 'products[0].members'}",
                         "write asn_id, asn_pool and products[name, members[expname, exptype]]")
    product = data["products"][0]
    members = [str((path.parent / m["expname"]) if not Path(m["expname"]).is_absolute() else m["expname"])
               for m in product["members"] if m.get("exptype", "science") == "science"]
    return {"asn_id": data["asn_id"], "asn_pool": data["asn_pool"], "product": product.get("name", ""),
            "members": members}
