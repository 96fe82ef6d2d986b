"""Inputs of the lightcurves rule, apart from the rule for --lint."""


# the grism time-series mode's figure (the only mode with tso3 associations): beside its other QA
LIGHTCURVE_FIGURE = f"{RESULTS}/qa/tso_grism/tso3/{{product}}_lightcurves.png"


def lightcurves_inputs(wildcards):
    """tso3's x1dints of the association (and, for the demo, its transit truth as the fit's guess)."""
    inputs = {"x1dints": tso3_product("x1dints").format(product=wildcards.product)}
    if USE_DEMO and config["lightcurves"]["transit"] is None and Path(DEMO_TSO_TRUTH).exists():
        inputs["truth"] = DEMO_TSO_TRUTH
    return inputs


