"""Inputs, parameters and products of the tso3 rule (grism time series), apart from the rule for --lint.

The association JSON is written by rule image3_asn (one rule for every stage-3 association).
"""

from types import SimpleNamespace

from webbflow.associations import tso3_associations
from webbflow.refs.select import TSO3_REFTYPES

RESOURCE_MODEL["tso3"] = dict(mem_base=800, mem_per_mb=3.0, runtime_base=5, runtime_per_mb=0.05, sized_on=None)


def tso3_first(wildcards):
    """The exposure-table row of the association's first segment."""
    return get_exposures()[association_of(wildcards).members[0]]


# Imaging time series: tso3 is outlier_detection and tso_photometry -> <product>_phot.ecsv (rule
# tso3_phot); the GAIN (DN/s -> electrons when photom is skipped) is detector1's choice.
TSO3_PHOT_EXP_TYPES = ("NRC_TSIMAGE",)


def tso3_is_phot(exposure):
    """True for an imaging time series (photometry), False for a grism one (spectra)."""
    return exposure.exp_type in TSO3_PHOT_EXP_TYPES


def tso3_references(wildcards):
    """extract1d -> path: the first segment's choice in spec2 (every segment has the same); an
    imaging time series: gain -> detector1's choice for its first segment."""
    first = tso3_first(wildcards)
    if tso3_is_phot(first):
        root = SimpleNamespace(exposure=first.rootname.rsplit("_", 1)[0], detector=first.rootname.rsplit("_", 1)[1])
        return {"gain": chosen_references(root).get("gain")}
    return {"extract1d": grism_references(first)["extract1d"]}


def tso3_inputs(wildcards):
    """Association JSON, the members' calints and the EXTRACT1D (or GAIN) reference."""
    first = tso3_first(wildcards)
    reftypes = ("gain",) if tso3_is_phot(first) else TSO3_REFTYPES
    return {"asn": asn_path(wildcards.product), "calints": image3_member_cals(wildcards),
            **crds_stage_inputs(first, tso3_references(wildcards), reftypes, checked=True)}


def tso3_steps(wildcards):
    """Effective tso3 step parameters (the first segment's mode) as canonical JSON."""
    return canonical_json(exposure_step_parameters(tso3_first(wildcards), "tso3"))


def tso3_product(suffix):
    """Path pattern of a tso3 association product."""
    ext = "ecsv" if suffix in ("whtlt", "trace", "lc", "lcfit", "phot") else "fits"
    return f"{RESULTS}/tso3/{{product}}_{suffix}.{ext}"


# lc and lcfit come from rule lightcurves (workflow/rules/lightcurves.smk)
def tso3_products(exposures):
    """Every tso3 product of the exposures' associations: phot.ecsv of an imaging time series, or
    a grism's x1dints, whtlt, trace (and lc, lcfit from rule lightcurves)."""
    rows = {e.rootname: e for e in exposures}
    return [tso3_product(s).format(product=a.product) for a in tso3_associations(exposures)
            for s in (("phot",) if tso3_is_phot(rows[a.members[0]]) else
                      ("x1dints", "whtlt", "trace", "lc", "lcfit"))]


STAGE_PRODUCTS["tso3"] = tso3_products
