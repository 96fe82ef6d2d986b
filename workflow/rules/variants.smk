"""Parameter variants side by side (config ``variants``): the detector1, image2 and image3 rules again, under
<results>/variants/{variant}/, with the variant's parameters (the {variant} wildcard selects them in
the rules' parameter and input functions), and the report's comparison of the variants."""

include: "variants_common.smk"


use rule detector1 as detector1_variant with:
    output:
        rate=f"{RESULTS}/variants/{{variant}}/detector1/{{filter}}/{{exposure}}_{{detector}}_rate.fits",
        rateints=f"{RESULTS}/variants/{{variant}}/detector1/{{filter}}/{{exposure}}_{{detector}}_rateints.fits",
        onef=f"{RESULTS}/variants/{{variant}}/detector1/{{filter}}/{{exposure}}_{{detector}}_onef.ecsv",
        **({"highpix": f"{RESULTS}/variants/{{variant}}/detector1/{{filter}}/{{exposure}}_{{detector}}_highpix.ecsv"}
           if PERSISTENCE else {}),
    log:
        f"{RESULTS}/logs/variants/{{variant}}/detector1/{{filter}}/{{exposure}}_{{detector}}.log",


use rule image2 as image2_variant with:
    output:
        cal=f"{RESULTS}/variants/{{variant}}/image2/{{filter}}/{{exposure}}_{{detector}}_{{kind}}.fits",
    log:
        f"{RESULTS}/logs/variants/{{variant}}/image2/{{filter}}/{{exposure}}_{{detector}}_{{kind}}.log",


use rule image3_asn as image3_asn_variant with:
    output:
        asn=f"{RESULTS}/variants/{{variant}}/asn/{{product}}_asn.json",
    log:
        f"{RESULTS}/logs/variants/{{variant}}/asn/{{product}}.log",


use rule image3 as image3_variant with:
    output:
        i2d=image3_product("i2d", f"{RESULTS}/variants/{{variant}}"),
        cat=image3_product("cat", f"{RESULTS}/variants/{{variant}}"),
        segm=image3_product("segm", f"{RESULTS}/variants/{{variant}}"),
        crf=directory(f"{RESULTS}/variants/{{variant}}/image3/crf/{{product}}"),
    log:
        f"{RESULTS}/logs/variants/{{variant}}/image3/{{product}}.log",


rule qa_variants:
    input:
        unpack(qa_variants_inputs),
    output:
        html=report(
            f"{VARIANTS_QA}/variants.html",
            caption="../report/qa_variants.rst",
            category="Variants",
            labels={"table": "variants side by side"},
        ),
        csv=f"{VARIANTS_QA}/variants.csv",
        rows=f"{VARIANTS_QA}/variants.json",
        png=report(
            f"{VARIANTS_QA}/variants.png",
            caption="../report/qa_variants.rst",
            category="Variants",
            labels={"figure": "variants side by side"},
        ),
    log:
        f"{RESULTS}/logs/qa/variants.log",
    params:
        labels=qa_variants_labels,
        overrides=qa_variants_overrides,
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("qa"),
        runtime=predicted_runtime("qa"),
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/qa_variants.py"
