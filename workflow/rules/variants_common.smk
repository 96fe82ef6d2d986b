"""Targets and inputs of the variants rules (config ``variants``; kept apart from the rules, as snakemake --lint asks).

A variant is the main config deep-merged with its overrides (``steps``, ``mode_steps``,
``step_defaults``).  Its products (detector1's rate/rateints/1-f table, image2's cal/calints,
image3's association, i2d, cat, segm and crf) are computed under <results>/variants/<name>/ only where
its parameters, or the products they are made from, differ from the main tree's: :func:`product_path`,
:func:`cal_path` and :func:`asn_path` with a variant name point at the main tree's otherwise, so a
variant that changes only image2 reads the main rates, one that changes only image3 the main cals,
and one that changes jump recomputes from detector1 on.  Time series (spec2, tso3) and coron3 are
not made per variant.
"""

from webbflow.report.variants import TRUTH_RATE_SUFFIX

VARIANTS_QA = f"{QA}/variants"


wildcard_constraints:
    variant=_constraint(VARIANTS, r"[a-z0-9][a-z0-9_-]*"),


# steps.persistence links the detector1 jobs of the main config through their _highpix summaries; a
# variant cannot switch it on alone (its jobs would wait for summaries nothing writes).
for _variant in VARIANTS:
    if not PERSISTENCE and any(
            not _mode_step_parameters(m, "detector1", extra_steps=DETECTOR1_EXTRA_STEPS, variant=_variant)
            ["persistence"].get("skip", True) for m in MODES):
        raise InputError(f"variants.{_variant}", "steps.persistence is on in this variant but off in the main config",
                         "switch it on in the main config too (variants then share its summaries), or run the "
                         "variant as a config of its own")


def variant_exposures():
    """The exposures a variant reduces: every exposure with detector1 products, by root name."""
    return sorted(stage_exposures("detector1"), key=lambda e: e.rootname)


def variant_products(variant):
    """The products of ``variant``'s tree, each its own or the main tree's (shared)."""
    paths = []
    for e in variant_exposures():
        paths += [product_path(e, s, variant) for s in ("rate", "rateints")]
        if "image2" in MODES[mode_of(e)]["stages"]:
            paths.append(cal_path(e, variant))
    for product, asn in sorted(associations().items()):
        if asn.asn_type == "image3":
            root = variant_dir(variant) if image3_is_own(product, variant) else None
            paths += [image3_product(s, root).format(product=product) for s in ("i2d", "cat")]
    return paths


def all_variant_products(wildcards):
    """Every variant's products and the report's comparison (nothing without config ``variants``)."""
    if not VARIANTS:
        return []
    paths = [p for v in VARIANTS for p in variant_products(v)]
    return sorted(set(paths)) + [f"{VARIANTS_QA}/variants.html"]


def variant_truths():
    """The demo's true rate of each exposure (``truth/<root>_truth_rate.fits``), in
    :func:`variant_exposures` order; [] when there is no truth (not the demo, or a file missing)."""
    if not USE_DEMO:
        return []
    paths = [f"{DEMO_DIR}/truth/{e.rootname}{TRUTH_RATE_SUFFIX}" for e in variant_exposures()]
    return paths if all(Path(p).exists() for p in paths) else []


def qa_variants_inputs(wildcards):
    """The rate of every exposure in the main tree, then in each variant's (shared ones included), and the truth."""
    exposures = variant_exposures()
    rates = [product_path(e, "rate") for e in exposures]
    rates += [product_path(e, "rate", v) for v in VARIANTS for e in exposures]
    return {"rates": rates, "truths": variant_truths()}


def qa_variants_labels(wildcards):
    """(variant, root name, whether the variant computes it) of each rate of :func:`qa_variants_inputs`
    ("main": the main config)."""
    return [["main", e.rootname, True] for e in variant_exposures()] + [
        [v, e.rootname, product_path(e, "rate", v) != product_path(e, "rate")] for v in VARIANTS
        for e in variant_exposures()]


def qa_variants_overrides(wildcards):
    """Each variant's overrides as written (canonical JSON: shown in the table; a change re-makes it)."""
    return canonical_json({v: USER_CONFIG["variants"][v] for v in VARIANTS})
