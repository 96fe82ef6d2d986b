"""Input, parameter and target functions of the spec2 rule (grism time series), apart from the rule for --lint."""

from webbflow.refs.select import SPEC2_REFTYPES

_SPEC2_REFS = {}


def spec2_path(exposure, suffix):
    """<results>/spec2/<filter>/<rootname>_<suffix>.fits (suffix calints or x1dints)."""
    return f"{RESULTS}/spec2/{exposure.filter.lower()}/{exposure.rootname}_{suffix}.fits"


STAGE_PRODUCTS["spec2"] = lambda exposures: [spec2_path(e, s) for e in exposures for s in ("calints", "x1dints")]


def spec2_references(wildcards):
    """reftype -> path of the grism references of the job's segment (:func:`grism_references`)."""
    return grism_references(exposure_of(wildcards))


def grism_references(exposure):
    """reftype -> path of the grism references of a segment: overrides, then CRDS or the folder.

    With references.dir null, crds chooses them (under the run's context, the files the lockfile
    records for the segment); a segment whose types match nothing in the context stops planning
    with one line naming the exposure, the type and the fixes.  With references.dir set, the folder.
    """
    if exposure.rootname not in _SPEC2_REFS:
        if USE_CRDS:
            chosen = crds_references(exposure, SPEC2_REFTYPES, stage="spec2")
        else:
            chosen = select_references(primary_header(exposure), REFS_DIR, OVERRIDES, SPEC2_REFTYPES)
        _SPEC2_REFS[exposure.rootname] = {t: portable_path(chosen.get(t)) for t in SPEC2_REFTYPES}
    return _SPEC2_REFS[exposure.rootname]


def spec2_inputs(wildcards):
    """The rateints product and the reference files it is calibrated with."""
    return {"rateints": product_path(exposure_of(wildcards), "rateints"),
            **crds_stage_inputs(exposure_of(wildcards), spec2_references(wildcards), SPEC2_REFTYPES,
                              checked=True)}


def spec2_steps(wildcards):
    """Effective spec2 step parameters as canonical JSON."""
    return canonical_json(exposure_step_parameters(exposure_of(wildcards), "spec2"))
