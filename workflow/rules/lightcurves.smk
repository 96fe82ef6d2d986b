"""Spectroscopic light curves and transit fits of a grism time series (not in jwst): tso3's x1dints ->
<product>_lc.ecsv (white light and lightcurves.nbins wavelength bins per integration) and
<product>_lcfit.ecsv (transit depth per curve, from the lightcurves.transit guess)."""

include: "lightcurves_common.smk"


rule lightcurves:
    input:
        unpack(lightcurves_inputs),
    output:
        curves=tso3_product("lc"),
        fits=tso3_product("lcfit"),
        png=report(
            LIGHTCURVE_FIGURE,
            caption="../report/qa_lightcurves.rst",
            category="tso_grism",
            subcategory="tso3",
            labels={"association": "{product}", "figure": "light curves"},
        ),
    log:
        f"{RESULTS}/logs/lightcurves/{{product}}.log",
    params:
        nbins=config["lightcurves"]["nbins"],
        wave_range=config["lightcurves"]["wave_range"],
        transit=config["lightcurves"]["transit"],
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("qa"),
        runtime=predicted_runtime("qa"),
    conda:
        "../../envs/webbflow.yaml"
    shell:
        job_command("lightcurves.py", locals())
