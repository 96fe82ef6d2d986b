"""Stage 3 for coronagraphy: one coron3 association's calints (science rolls and PSF references) ->
psfstack, psfalign, psfsub and crfints per exposure, i2d; with the beyond-jwst klip options the
north-up sector KLIP cube, the contrast curve and the companions."""

include: "coron3_common.smk"


rule coron3:
    input:
        unpack(coron3_inputs),
    output:
        **coron3_outputs(),
    log:
        f"{RESULTS}/logs/coron3/{{product}}.log",
    params:
        steps=coron3_steps,
        references=lambda wildcards: references_identity(coron3_references(wildcards)),
        reference_paths=lambda wildcards, input: coron3_references(wildcards),
    threads: config["threads"]["coron3"]
    resources:
        mem_mb=predicted_mem_mb("coron3"),
        runtime=predicted_runtime("coron3"),
    conda:
        "../../envs/webbflow.yaml"
    shell:
        job_command("coron3.py", locals())
