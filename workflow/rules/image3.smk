"""Stage 3 imaging: the cal files of one association -> crf (per exposure) + i2d + segm + cat."""

include: "image3_common.smk"


rule image3_asn:
    output:
        asn=f"{RESULTS}/asn/{{product}}_asn.json",
    log:
        f"{RESULTS}/logs/asn/{{product}}.log",
    params:
        content=image3_asn_json,
    localrule: True
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/image3_asn.py"


rule image3:
    input:
        unpack(image3_inputs),
    output:
        i2d=image3_product("i2d"),
        cat=image3_product("cat"),
        segm=image3_product("segm"),
        crf=directory(f"{RESULTS}/image3/crf/{{product}}"),
    log:
        f"{RESULTS}/logs/image3/{{product}}.log",
    params:
        steps=image3_steps,
        # CRDS's APCORR / ABVEGAOFFSET: their identity decides a re-run, the paths are derived params
        references=lambda wildcards: references_identity(image3_references(wildcards)),
        reference_paths=lambda wildcards, input: image3_references(wildcards),
    threads: config["threads"]["image3"]
    resources:
        mem_mb=predicted_mem_mb("image3"),
        runtime=predicted_runtime("image3"),
    conda:
        "../../envs/webbflow.yaml"
    shell:
        job_command("image3.py", locals())
