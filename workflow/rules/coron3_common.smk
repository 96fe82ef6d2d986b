"""Inputs, parameters and products of the coron3 rule (coronagraphy stage 3), apart from the rule for --lint.

The association JSON is written by rule image3_asn (one rule for every stage-3 association).
"""

from webbflow.config import step_parameters
from webbflow.refs.select import CORON3_REFTYPES

RESOURCE_MODEL["coron3"] = dict(mem_base=1500, mem_per_mb=4.0, runtime_base=10, runtime_per_mb=0.2, sized_on=None)
CORON3_DIR = f"{RESULTS}/coron3"
# The demo's unocculted star and PSF (README, "Coronagraphy"): the simulator writes the first science
# exposure's unocculted PSF of a 1 DN/s source (truth/psf_template.fits, 41 x 41, its sum FLUXFRAC the
# flux fraction on the stamp) and the star's rate through the Lyot stop with the filter's PHOTMJSR
# (truth/companion.ecsv).  The companions are fitted with that template normalised to unit sum, so
# klip.star_flux is the star's flux on the same stamp in calints units summed over pixels:
# star_flux [DN/s] x PHOTMJSR x FLUXFRAC (the flat the simulator applies is divided out by flat_field).
DEMO_CORON_TRUTH = f"{DEMO_DIR}/truth/companion.ecsv"
DEMO_CORON_TEMPLATE = f"{DEMO_DIR}/truth/psf_template.fits"


def demo_coron3_steps():
    """The demo's coron3 layer: klip.psf_template and klip.star_flux from the simulator's truth."""
    if not USE_DEMO or not Path(DEMO_CORON_TRUTH).exists() or not Path(DEMO_CORON_TEMPLATE).exists():
        return None
    from astropy.io import fits
    from astropy.table import Table

    row = Table.read(DEMO_CORON_TRUTH, format="ascii.ecsv")[0]
    fraction = float(fits.getheader(DEMO_CORON_TEMPLATE)["FLUXFRAC"])
    return {"klip": {"psf_template": DEMO_CORON_TEMPLATE,
                     "star_flux": float(row["star_flux"]) * float(row["photmjsr"]) * fraction}}


def coron3_first(wildcards):
    """The exposure-table row of the association's first science member."""
    return get_exposures()[association_of(wildcards).members[0]]


def coron3_steps_dict(wildcards):
    """Effective coron3 step parameters (the first science member's mode, the demo's layer, the user's)."""
    return exposure_step_parameters(coron3_first(wildcards), "coron3", demo_coron3_steps())


def coron3_steps(wildcards):
    """Effective coron3 step parameters as canonical JSON (a change re-runs the association's products)."""
    return canonical_json(coron3_steps_dict(wildcards))


_CORON3_REFS = {}


def coron3_references(wildcards):
    """psfmask -> path: chosen with the first science exposure (its FILTER, CORONMSK, SUBARRAY)."""
    first = coron3_first(wildcards)
    if first.rootname not in _CORON3_REFS:
        chosen = crds_references(first, CORON3_REFTYPES, stage="coron3") if USE_CRDS else {}
        if not chosen.get("psfmask") and REFS_DIR:
            chosen.update({t: p for t, p in select_references(primary_header(first), REFS_DIR, OVERRIDES,
                                                              CORON3_REFTYPES).items() if p})
        _CORON3_REFS[first.rootname] = {"psfmask": portable_path(chosen.get("psfmask"))}
    return _CORON3_REFS[first.rootname]


def coron3_inputs(wildcards):
    """Association JSON, the members' calints and the PSFMASK reference."""
    inputs = {"asn": asn_path(wildcards.product), "calints": image3_member_cals(wildcards),
              **crds_stage_inputs(coron3_first(wildcards), coron3_references(wildcards), CORON3_REFTYPES, checked=True)}
    klip = coron3_steps_dict(wildcards)["klip"]
    if klip.get("psf_template") and (klip.get("sectors") or klip.get("contrast") or klip.get("companions")):
        inputs["psf_template"] = klip["psf_template"]
    return inputs


def coron3_beyond_suffixes():
    """The beyond-jwst products the coronagraphy mode's klip settings ask for (fixed per run: the
    rule's outputs), as (suffix, extension) pairs."""
    if "coronagraphy" not in MODES:
        return []
    klip = step_parameters(config["steps"], "coron3", MODES["coronagraphy"], USER_CONFIG.get("steps"),
                           (USER_CONFIG.get("mode_steps") or {}).get("coronagraphy"),
                           recommended=config["step_defaults"] == "recommended")["klip"]
    out = [("klipsub", "fits")] if klip.get("sectors") else []
    if klip.get("contrast"):
        out += [("contrast", "ecsv"), ("contrast", "png")]
    if klip.get("companions"):
        out.append(("companions", "ecsv"))
    return out


def coron3_product(suffix, ext="fits"):
    """Path pattern of a coron3 association product."""
    return f"{CORON3_DIR}/{{product}}_{suffix}.{ext}"


def coron3_outputs():
    """Named outputs of the coron3 rule: psfstack, i2d, psfshifts, the per-exposure folder (crfints,
    psfalign, psfsub) and the beyond-jwst products that are on."""
    out = {"psfstack": coron3_product("psfstack"), "i2d": coron3_product("i2d"),
           "psfshifts": coron3_product("psfshifts", "ecsv"),
           "exposures": directory(f"{CORON3_DIR}/exposures/{{product}}")}
    out.update({f"{s}_{e}": coron3_product(s, e) for s, e in coron3_beyond_suffixes()})
    return out


def coron3_products(exposures):
    """Every coron3 product of the exposures' associations (the per-exposure ones in their folder)."""
    names = [coron3_product(s, e) for s, e in [("psfstack", "fits"), ("i2d", "fits"), ("psfshifts", "ecsv")]
             + coron3_beyond_suffixes()] + [f"{CORON3_DIR}/exposures/{{product}}"]
    return [n.format(product=a.product) for a in planned_coron3_associations(exposures) for n in names]


STAGE_PRODUCTS["coron3"] = coron3_products
