"""Inputs, parameters and products of the tso3 rule (grism time series), apart from the rule for --lint.

The association JSON is written by rule image3_asn (one rule for every stage-3 association).
"""

from webbflow.associations import tso3_associations
from webbflow.refs.select import TSO3_REFTYPES

RESOURCE_MODEL["tso3"] = dict(mem_base=800, mem_per_mb=3.0, runtime_base=5, runtime_per_mb=0.05, sized_on=None)


def tso3_first(wildcards):
    """The exposure-table row of the association's first segment."""
    return get_exposures()[association_of(wildcards).members[0]]


def tso3_references(wildcards):
    """extract1d -> path: the first segment's choice in spec2 (every segment has the same)."""
    return {"extract1d": grism_references(tso3_first(wildcards))["extract1d"]}


def tso3_inputs(wildcards):
    """Association JSON, the members' calints and the EXTRACT1D reference."""
    return {"asn": asn_path(wildcards.product), "calints": image3_member_cals(wildcards),
            **crds_stage_inputs(tso3_first(wildcards), tso3_references(wildcards), TSO3_REFTYPES,
                              checked=True)}


def tso3_steps(wildcards):
    """Effective tso3 step parameters (the first segment's mode) as canonical JSON."""
    return canonical_json(exposure_step_parameters(tso3_first(wildcards), "tso3"))


def tso3_product(suffix):
    """Path pattern of a tso3 association product."""
    ext = "ecsv" if suffix in ("whtlt", "trace", "lc", "lcfit") else "fits"
    return f"{RESULTS}/tso3/{{product}}_{suffix}.{ext}"


# lc and lcfit come from rule lightcurves (workflow/rules/lightcurves.smk)
STAGE_PRODUCTS["tso3"] = lambda exposures: [
    tso3_product(s).format(product=a.product) for a in tso3_associations(exposures)
    for s in ("x1dints", "whtlt", "trace", "lc", "lcfit")]
