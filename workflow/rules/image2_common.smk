"""Input, parameter and target functions of the image2 rule (kept apart from the rule, as snakemake --lint asks)."""

from webbflow.refs.select import IMAGE2_REFTYPES

_IMAGE2_REFS = {}


def cal_path(exposure):
    """<results>/image2/<filter>/<rootname>_cal.fits."""
    return f"{RESULTS}/image2/{exposure.filter.lower()}/{exposure.rootname}_cal.fits"


STAGE_PRODUCTS["image2"] = lambda exposures: [cal_path(e) for e in exposures]


def image2_references(wildcards):
    """reftype -> path of the distortion, flat, photom and area references of the job's exposure."""
    exposure = exposure_of(wildcards)
    if exposure.rootname not in _IMAGE2_REFS:
        chosen = crds_references(exposure, IMAGE2_REFTYPES, stage="image2") if USE_CRDS else {}
        missing = [t for t in IMAGE2_REFTYPES if not chosen.get(t)]
        folder = REFS_DIR or (f"{DEMO_DIR}/refs" if USE_DEMO else None)
        if missing and folder:
            # The demo's own folder fills what the CRDS cache does not map (e.g. ASDF references).
            primary = read_uncal_headers(exposure.path).primary
            chosen.update({t: p for t, p in select_references(primary, folder, OVERRIDES, missing).items() if p})
        _IMAGE2_REFS[exposure.rootname] = {t: portable_path(chosen.get(t)) for t in IMAGE2_REFTYPES}
    return _IMAGE2_REFS[exposure.rootname]


def image2_inputs(wildcards):
    """The rate product and the reference files it is calibrated with."""
    return {"rate": product_path(exposure_of(wildcards), "rate"),
            **crds_stage_inputs(exposure_of(wildcards), image2_references(wildcards), IMAGE2_REFTYPES)}


def image2_steps(wildcards):
    """Effective assign_wcs/flat_field/photom parameters as canonical JSON."""
    return canonical_json(exposure_step_parameters(exposure_of(wildcards), "image2"))
