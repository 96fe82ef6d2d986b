"""Input, parameter and target functions of the image2 rule (kept apart from the rule, as snakemake --lint asks)."""

from webbflow.associations import CORON3_EXP_TYPES
from webbflow.config import step_skipped
from webbflow.refs.select import IMAGE2_REFTYPES
from webbflow.demo import WISP_DIR
from webbflow.steps.wisps import template_name

_IMAGE2_REFS = {}
# The demo's wisp templates (written by the simulator for demo-imaging-wisps): under step_defaults
# recommended its cals have their wisps subtracted, as the NIRCam team recommends; under jwst, not.
DEMO_WISPS = f"{DEMO_DIR}/{WISP_DIR}"


def demo_image2_steps(variant=None):
    """The demo's image2 layer: its wisp templates when recommended (in the main config, or in
    ``variant``'s) and the demo has some."""
    full = VARIANTS[variant][1] if variant else config
    if USE_DEMO and full["step_defaults"] == "recommended" and Path(DEMO_WISPS).is_dir():
        return {"wisps": {"template_dir": DEMO_WISPS}}
    return None


# Imaging time series: image2 takes the rateints and writes calints (a cube per segment), as jwst's
# calwebb_image2 does for NRC_TSIMAGE and NRC_CORON (rule image2's {kind} wildcard).
IMAGE2_INTS_EXP_TYPES = ("NRC_TSIMAGE", "NRC_CORON")


def image2_suffixes(exposure):
    """(input, output) suffixes of the exposure's image2 job: rate -> cal, or rateints -> calints (a
    full-frame coronagraphic exposure: rate -> cal, as jwst's Asn_Lv2CoronAsRate)."""
    ints = exposure.exp_type in IMAGE2_INTS_EXP_TYPES and not (exposure.exp_type == "NRC_CORON"
                                                                and exposure.subarray == "FULL")
    return ("rateints", "calints") if ints else ("rate", "cal")


def cal_path(exposure, variant=None):
    """<results>/image2/<filter>/<rootname>_cal.fits (_calints.fits for an imaging time series).

    ``variant``: under <results>/variants/<variant>/ when the variant's image2 parameters or its input
    (:func:`product_path`) differ from the main tree's; else the main tree's product, shared.
    """
    root = RESULTS
    rate, cal = image2_suffixes(exposure)
    if variant and (product_path(exposure, rate, variant) != product_path(exposure, rate)
                    or exposure_image2_steps(exposure, variant) != exposure_image2_steps(exposure)):
        root = variant_dir(variant)
    return f"{root}/image2/{exposure.filter.lower()}/{exposure.rootname}_{cal}.fits"


def image2_products(exposures):
    """The cal/calints products, and for coronagraphy the coron3 association JSON of the calints
    (rule coron3 reduces it)."""
    coron = [e for e in exposures if e.exp_type in CORON3_EXP_TYPES]
    asns = planned_coron3_associations(coron) if coron else []
    return [cal_path(e) for e in exposures] + [asn_path(a.product) for a in asns]


STAGE_PRODUCTS["image2"] = image2_products


def image2_references(wildcards):
    """reftype -> path of the distortion, flat, photom and area references of the job's exposure."""
    exposure = exposure_of(wildcards)
    if exposure.rootname not in _IMAGE2_REFS:
        chosen = crds_references(exposure, IMAGE2_REFTYPES, stage="image2") if USE_CRDS else {}
        missing = [t for t in IMAGE2_REFTYPES if not chosen.get(t)]
        folder = REFS_DIR or (f"{DEMO_DIR}/refs" if USE_DEMO else None)
        if missing and folder:
            # The demo's own folder fills what the CRDS cache does not map (e.g. ASDF references).
            chosen.update({t: p for t, p in select_references(primary_header(exposure), folder, OVERRIDES,
                                                              missing).items() if p})
        _IMAGE2_REFS[exposure.rootname] = {t: portable_path(chosen.get(t)) for t in IMAGE2_REFTYPES}
    return _IMAGE2_REFS[exposure.rootname]


def image2_inputs(wildcards):
    """The rate (rateints) product and the reference files it is calibrated with."""
    exposure = exposure_of(wildcards)
    suffixes = image2_suffixes(exposure)
    if wildcards.kind != suffixes[1]:
        raise ValueError(f"{exposure.rootname} ({exposure.exp_type}) has a {suffixes[1]} product, not {wildcards.kind}")
    variant = getattr(wildcards, "variant", None)
    inputs = {"rate": product_path(exposure, suffixes[0], variant),
              **crds_stage_inputs(exposure_of(wildcards), image2_references(wildcards), IMAGE2_REFTYPES)}
    # the exposure's wisp template, when the option is on and the folder has one (a new template re-runs it)
    params = exposure_image2_steps_dict(exposure, variant)
    if params["wisps"].get("template_dir") and not step_skipped(params, "wisps"):
        template = Path(params["wisps"]["template_dir"]) / template_name(exposure.detector, exposure.filter,
                                                                          exposure.pupil)
        if template.exists():
            inputs["wisp_template"] = str(template)
    return inputs


def image2_steps(wildcards):
    """Effective image2 step parameters as canonical JSON (of the job's variant, if any; a change re-runs
    the exposure's cal)."""
    return exposure_image2_steps(exposure_of(wildcards), getattr(wildcards, "variant", None))


def exposure_image2_steps_dict(exposure, variant=None):
    """Effective image2 step parameters of ``exposure`` (its mode's, the demo's wisp templates, then the
    user's) under the main config or ``variant``'s."""
    return exposure_step_parameters(exposure, "image2", demo_image2_steps(variant), variant=variant)


def exposure_image2_steps(exposure, variant=None):
    """:func:`image2_steps` of ``exposure`` under the main config or ``variant``'s."""
    return canonical_json(exposure_image2_steps_dict(exposure, variant))
