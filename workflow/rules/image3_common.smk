"""Associations, inputs and parameters of the image3 rules (kept apart from the rules, as snakemake --lint asks)."""

import json

from webbflow.associations import CORON3_EXP_TYPES, coron3_associations, image3_associations, tso3_associations
from webbflow.refs.select import IMAGE3_REFTYPES
from webbflow.demo import ABVEGAOFFSET_NAME, APCORR_NAME, GAIA_CATALOG
RESOURCE_MODEL["image3"] = dict(mem_base=1000, mem_per_mb=3.0, runtime_base=10, runtime_per_mb=0.2, sized_on=None)
# The demo's SUB160 exposures hold about ten stars 1.4" apart, with pointing errors under 0.3":
# jwst's matching defaults (minobj 15, searchrad 2") cannot tie them.  Used for the demo only,
# between the mode preset and the user's config (which still wins).
DEMO_IMAGE3_STEPS = {"tweakreg": {"minobj": 4, "searchrad": 0.5, "separation": 0.5, "tolerance": 0.2,
                                   "abs_minobj": 4, "abs_searchrad": 0.5, "abs_separation": 0.5,
                                   "abs_tolerance": 0.2}}
# The demo's Gaia-like catalog (written by the simulator): under step_defaults recommended the demo's
# mosaics are aligned to it, as MAST's are to Gaia; under jwst, relative only (jwst's default).
DEMO_REFCAT = f"{DEMO_DIR}/{GAIA_CATALOG}"


# The simulator's ABVEGAOFFSET reference (jwst's format; CRDS would serve it to source_catalog):
# the demo catalogs' Vega magnitudes, under both step_defaults as jwst with CRDS.
DEMO_ABVEGA = f"{DEMO_DIR}/refs/{ABVEGAOFFSET_NAME}"
# The simulator's APCORR reference (jwst's format, its point source as the i2d shows it): the aperture
# radii and correction jwst's source_catalog takes from CRDS, under step_defaults jwst.  Recommended
# measures them on each mosaic instead (its dithers' sub-pixel phases set the drizzled PSF's width:
# demo F444W totals 1.011 of truth with the reference, 1.003 measured).
DEMO_APCORR = f"{DEMO_DIR}/refs/{APCORR_NAME}"


def demo_image3_steps(variant=None):
    """The demo's image3 layer: its small-field matching, its AB-Vega offsets and, when recommended
    (by the main config, or by ``variant``'s), its absolute catalog; under jwst, its APCORR reference."""
    if not USE_DEMO:
        return None
    steps = {k: dict(v) for k, v in DEMO_IMAGE3_STEPS.items()}
    step_defaults = (VARIANTS[variant][1] if variant else config)["step_defaults"]
    if step_defaults == "recommended" and Path(DEMO_REFCAT).exists():
        steps["tweakreg"]["abs_refcat"] = DEMO_REFCAT
    if Path(DEMO_ABVEGA).exists():
        steps["source_catalog"] = {"abvegaoffset_file": DEMO_ABVEGA}
    if step_defaults == "jwst" and Path(DEMO_APCORR).exists():
        steps.setdefault("source_catalog", {})["apcorr_file"] = DEMO_APCORR
    return steps


wildcard_constraints:
    product=r"jw\d{5}-(o\d{3}|c\d{4})_t\d{3}_nircam_[a-z0-9-]+",


def coron3_exposures():
    """The coronagraphic exposures (NRC_CORON) whose mode makes their calints (image2)."""
    return [e for e in stage_exposures("image2") if e.exp_type in CORON3_EXP_TYPES]


def planned_coron3_associations(exposures):
    """coron3 associations of ``exposures``; a target with no PSF reference is refused (its one line,
    and a failing bad_input job naming its file) and left out of stage 3, the other targets planned."""
    rows = list(exposures)
    while True:
        try:
            return coron3_associations(rows, pool=Path(UNCAL_DIR).name)
        except InputError as exc:
            named = [e for e in rows if Path(e.path) == Path(exc.path)]
            if not named:
                raise
            refuse_input(exc)
            group = lambda e: (e.program, e.filter, e.pupil, e.subarray, e.targname, e.is_psf)  # noqa: E731
            rows = [e for e in rows if group(e) != group(named[0])]


def associations():
    """product name -> stage-3 Association (image3, tso3 for time series, coron3 for coronagraphy) of
    the exposures whose mode runs that stage (from their headers); grouped once per version of the
    exposure table, not once per job that asks."""
    pool = Path(UNCAL_DIR).name
    key = (_TABLE_VERSION[0], len(get_exposures()))
    if _ASSOCIATIONS.get("key") != key:
        found = {a.product: a for a in image3_associations(stage_exposures("image3"), pool=pool)}
        found.update({a.product: a for a in tso3_associations(stage_exposures("tso3"), pool=pool)})
        found.update({a.product: a for a in planned_coron3_associations(coron3_exposures())})
        _ASSOCIATIONS.update(key=(_TABLE_VERSION[0], len(get_exposures())), found=found)
    return _ASSOCIATIONS["found"]


_ASSOCIATIONS = {}


def association_of(wildcards):
    """The job's association."""
    return associations()[wildcards.product]


def asn_path(product, variant=None):
    """<results>/asn/<product>_asn.json (``variant``: its tree's, when its image3 products are its own)."""
    root = variant_dir(variant) if variant and image3_is_own(product, variant) else RESULTS
    return f"{root}/asn/{product}_asn.json"


def image3_is_own(product, variant):
    """Whether ``variant`` makes image3 association ``product`` itself: a member's cal or the image3
    parameters differ from the main tree's (else it shares the main mosaic)."""
    exposures = get_exposures()
    asn = associations()[product]
    if asn.asn_type != "image3":
        return False  # time series and coronagraphy: stage 3 is not made per variant
    members = [exposures[root] for root in asn.members]
    return (any(cal_path(e, variant) != cal_path(e) for e in members)
            or _image3_steps_of(members[0], variant) != _image3_steps_of(members[0]))


def _image3_steps_of(first, variant=None):
    return exposure_step_parameters(first, "image3", demo_image3_steps(variant), variant=variant)


def image3_member_cals(wildcards):
    """Member files of the association: cal (image3) or calints (tso3)."""
    exposures = get_exposures()
    asn = association_of(wildcards)
    if asn.asn_type == "coron3":
        # science and PSF members in the JSON's order
        return [cal_path(exposures[root]) for root, _ in asn.member_roles()]
    if asn.asn_type == "tso3":
        # a grism segment's calints comes from spec2, an imaging one's from image2
        return [cal_path(exposures[root]) if image2_suffixes(exposures[root])[1] == "calints"
                else spec2_path(exposures[root], "calints") for root in asn.members]
    # a variant's job: its own cal products where it has them
    return [cal_path(exposures[root], getattr(wildcards, "variant", None)) for root in asn.members]


def image3_asn_json(wildcards):
    """Association content, members given relative to the asn/ folder (jwst resolves them from there)."""
    asn = association_of(wildcards)
    content = asn.as_dict("calints" if asn.asn_type in ("tso3", "coron3") else "cal")
    folder = os.path.dirname(asn_path(wildcards.product, getattr(wildcards, "variant", None)))
    for member, cal in zip(content["products"][0]["members"], image3_member_cals(wildcards)):
        member["expname"] = os.path.relpath(cal, folder)
    return canonical_json(content)


def image3_steps_dict(wildcards):
    """Effective image3 step parameters (mode of the association's first member, then the user's;
    a variant's job: the variant's)."""
    first = get_exposures()[association_of(wildcards).members[0]]
    return _image3_steps_of(first, getattr(wildcards, "variant", None))


def image3_steps(wildcards):
    """Effective image3 step parameters as canonical JSON (a change re-runs the association's products)."""
    return canonical_json(image3_steps_dict(wildcards))


_IMAGE3_REFS = {}


def image3_references(wildcards):
    """apcorr / abvegaoffset -> path CRDS chose for source_catalog, with the association's first member
    (the i2d keeps its INSTRUME, EXP_TYPE, FILTER and PUPIL, the keywords CRDS selects them by, and the
    prefetch locked them with the member's other types); {} without CRDS (a reference folder, or
    overrides with no CRDS cache: image3 needs no reference and reads its by-path ones, if any)."""
    asn = association_of(wildcards)
    if asn.asn_type != "image3" or not USE_CRDS or not CRDS_CACHE:
        return {}
    first = get_exposures()[asn.members[0]]
    if first.rootname not in _IMAGE3_REFS:
        chosen = crds_references(first, IMAGE3_REFTYPES, stage="image3")
        _IMAGE3_REFS[first.rootname] = {t: portable_path(p) for t, p in chosen.items()}
    return _IMAGE3_REFS[first.rootname]


def image3_inputs(wildcards):
    """Association JSON, member cal files, the absolute-alignment catalog, when one is set, and the
    CRDS lockfile when CRDS chose the catalog's references."""
    inputs = {"asn": asn_path(wildcards.product, getattr(wildcards, "variant", None)),
              "cals": image3_member_cals(wildcards)}
    references = image3_references(wildcards)
    if references:
        first = get_exposures()[association_of(wildcards).members[0]]
        inputs.update(crds_stage_inputs(first, references, IMAGE3_REFTYPES, checked=True))
    refcat = image3_steps_dict(wildcards)["tweakreg"].get("abs_refcat")
    if refcat:
        inputs["refcat"] = refcat
    return inputs


def image3_product(suffix, root=None):
    """Path pattern of an association product (under ``root``, default <results>; a variant's
    rules use <results>/variants/{variant})."""
    ext = "ecsv" if suffix == "cat" else "fits"
    return f"{root or RESULTS}/image3/{{product}}_{suffix}.{ext}"


STAGE_PRODUCTS["image3"] = lambda exposures: [image3_product(s).format(product=a.product)
                                               for a in image3_associations(exposures) for s in ("i2d", "cat")]
