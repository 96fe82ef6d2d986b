"""Inputs and targets of the report rules (kept apart from the rules, as snakemake --lint asks).

Everything the report shows lives under <results>/qa/<mode>/: the exposures' rate and cal
thumbnails (detector1/<filter>/<root>_rate.png, image2/<filter>/<root>_cal.png), their QA rows
(qa_rows.json) and table (qa_table.html, .csv), the mosaics' previews (image3/preview/) and, for
the demo, their residuals against the simulated sky (image3/truth/); for time series, one figure per
tso3 association (tso3/<product>_timeseries.png).  One job per mode and kind of
figure: a figure costs ~0.4 s, a job of its own ~2 s more.  A later mode adds its own rules and
figures here, under its own category.
"""

QA = f"{RESULTS}/qa"
DEMO_TRUTH = f"{DEMO_DIR}/truth/sources.ecsv"
RESOURCE_MODEL["qa"] = dict(mem_base=500, mem_per_mb=0.5, runtime_base=5, runtime_per_mb=0.02, sized_on=None)


wildcard_constraints:
    mode=_constraint(MODES, r"[a-z_]+"),


def qa_exposures_of(mode):
    """The mode's exposures with QA: those that end in a cal product (image2; not an imaging time
    series' calints), sorted by root name."""
    return sorted((e for e in stage_exposures("image2") if mode_of(e) == mode and image2_suffixes(e)[1] == "cal"),
                  key=lambda e: e.rootname)


def qa_exposures_inputs(wildcards):
    """The rate and cal products of the mode's exposures (same order)."""
    exposures = qa_exposures_of(wildcards.mode)
    return {"rates": [product_path(e, "rate") for e in exposures], "cals": [cal_path(e) for e in exposures]}


def qa_associations_of(mode):
    """The mode's image3 associations (the mode of an association is that of its first member)."""
    exposures = get_exposures()
    return [p for p, a in sorted(associations().items())
            if a.asn_type == "image3" and mode_of(exposures[a.members[0]]) == mode]


def qa_mosaics_inputs(wildcards):
    """The i2d and catalog of the mode's associations (same order)."""
    products = qa_associations_of(wildcards.mode)
    return {"i2ds": [image3_product("i2d").format(product=p) for p in products],
            "cats": [image3_product("cat").format(product=p) for p in products]}


def qa_truth_inputs(wildcards):
    """The mode's mosaics and catalogs, their crf folders (per-exposure residuals) and the demo's truth."""
    products = qa_associations_of(wildcards.mode)
    return {**qa_mosaics_inputs(wildcards), "crfs": [f"{RESULTS}/image3/crf/{p}" for p in products],
            "truth": DEMO_TRUTH}


def all_report_products(wildcards):
    """What `snakemake --report` shows: per mode the exposures' QA and the mosaics' previews (and,
    for the demo, the residuals against its truth)."""
    products = []
    for mode in MODES:
        if qa_exposures_of(mode):
            products.append(f"{QA}/{mode}/qa_table.html")
        if qa_associations_of(mode):
            products.append(f"{QA}/{mode}/image3/preview")
            if USE_DEMO:
                products.append(f"{QA}/{mode}/image3/truth")
        products += [f"{QA}/{mode}/tso3/{p}_timeseries.png" for p in qa_timeseries_associations_of(mode)]
        products += [LIGHTCURVE_FIGURE.format(product=p) for p in qa_timeseries_associations_of(mode)]
        products += [f"{QA}/{mode}/tso3/{p}_photometry.png" for p in qa_photometry_associations_of(mode)]
        products += [f"{QA}/{mode}/coron3/{p}_coron3.png" for p in qa_coron3_associations_of(mode)]
        if qa_coron_jumps_exposures(mode):
            products.append(f"{QA}/{mode}/jumps/coron_jumps.png")
    return products


def qa_timeseries_associations_of(mode):
    """The mode's grism tso3 associations (white light and trace; imaging time series have their
    photometry figure, :func:`qa_photometry_associations_of`)."""
    exposures = get_exposures()
    return [p for p, a in sorted(associations().items())
            if a.asn_type == "tso3" and mode_of(exposures[a.members[0]]) == mode
            and not tso3_is_phot(exposures[a.members[0]])]


def qa_timeseries_inputs(wildcards):
    """The association's whtlt and trace, its segments' calints, rateints and 1/f tables (and the demo's truth)."""
    exposures = get_exposures()
    members = [exposures[m] for m in association_of(wildcards).members]
    inputs = {"whtlt": tso3_product("whtlt").format(product=wildcards.product),
              "trace": tso3_product("trace").format(product=wildcards.product),
              "calints": [spec2_path(e, "calints") for e in members],
              "rateints": [product_path(e, "rateints") for e in members],
              # detector1's 1/f QA tables (before and after ROEBA), beside the rateints
              "onef": [product_path(e, "onef").removesuffix(".fits") + ".ecsv" for e in members]}
    if USE_DEMO and Path(DEMO_TSO_TRUTH).exists():
        inputs["truth"] = DEMO_TSO_TRUTH
        if Path(DEMO_TSO_DRIFT).exists():
            inputs["drift"] = DEMO_TSO_DRIFT
    return inputs


def qa_photometry_associations_of(mode):
    """The mode's imaging tso3 associations (NRC_TSIMAGE: the phot.ecsv figure)."""
    exposures = get_exposures()
    return [p for p, a in sorted(associations().items())
            if a.asn_type == "tso3" and mode_of(exposures[a.members[0]]) == mode
            and tso3_is_phot(exposures[a.members[0]])]


def qa_photometry_inputs(wildcards):
    """The association's phot.ecsv (and the demo's transit and centroid truth)."""
    inputs = {"phot": tso3_product("phot").format(product=wildcards.product)}
    if USE_DEMO and Path(DEMO_TSO_TRUTH).exists():
        inputs["truth"] = DEMO_TSO_TRUTH
        if Path(DEMO_TSO_CENTROID).exists():
            inputs["centroid"] = DEMO_TSO_CENTROID
    return inputs


DEMO_TSO_TRUTH = f"{DEMO_DIR}/truth/transit.ecsv"
DEMO_TSO_CENTROID = f"{DEMO_DIR}/truth/centroid.ecsv"
DEMO_TSO_DRIFT = f"{DEMO_DIR}/truth/drift.ecsv"


def qa_coron3_associations_of(mode):
    """The mode's coron3 associations."""
    exposures = get_exposures()
    return [p for p, a in sorted(associations().items())
            if a.asn_type == "coron3" and mode_of(exposures[a.members[0]]) == mode]


def qa_coron3_inputs(wildcards):
    """The association's psfsub files (their folder), i2d, align_refs shifts, the beyond-jwst products
    its rule writes and, for the demo, the companion's truth."""
    product = wildcards.product
    inputs = {"exposures": f"{CORON3_DIR}/exposures/{product}", "i2d": coron3_product("i2d").format(product=product),
              "shifts": coron3_product("psfshifts", "ecsv").format(product=product)}
    names = {"klipsub": "klipsub_fits", "contrast": "contrast_ecsv", "companions": "companions_ecsv"}
    on = {f"{s}_{e}" for s, e in coron3_beyond_suffixes()}
    inputs.update({k: coron3_product(*v.split("_")).format(product=product) for k, v in names.items() if v in on})
    if USE_DEMO and Path(DEMO_CORON_TRUTH).exists():
        inputs["truth"] = DEMO_CORON_TRUTH
    return inputs


def qa_coron_jumps_exposures(mode):
    """The mode's coronagraphic exposures (NRC_CORON) with a rateints, sorted by root name."""
    return sorted((e for e in stage_exposures("detector1") if mode_of(e) == mode and e.exp_type in CORON3_EXP_TYPES),
                  key=lambda e: e.rootname)


def qa_coron_jumps_inputs(wildcards):
    """The uncal files and rateints of the mode's coronagraphic exposures (same order)."""
    exposures = qa_coron_jumps_exposures(wildcards.mode)
    return {"uncals": [e.path for e in exposures], "rateints": [product_path(e, "rateints") for e in exposures]}


def qa_coron_jumps_lines(wildcards):
    """The two stage-1 lines the jump figure compares, as canonical JSON: ``recommended`` (the preset's:
    dark skipped, pseudo reference rows) and ``jwst`` (step_defaults: jwst), each with the user's
    ``steps`` on top, as the detector1 job would get them."""
    mode = wildcards.mode
    return canonical_json({line: _mode_step_parameters(mode, "detector1", recommended=line == "recommended")
                           for line in ("recommended", "jwst")})


def qa_coron_jumps_references(wildcards, input):
    """The detector1 references of each exposure (same order), those its detector1 job read."""
    return [exposure_references(e) for e in qa_coron_jumps_exposures(wildcards.mode)]
