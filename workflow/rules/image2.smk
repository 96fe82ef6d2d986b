"""Stage 2 imaging: rate -> cal (assign_wcs, flat_field, photom), one job per exposure and detector;
an imaging time series' segment: rateints -> calints (the {kind} wildcard: cal or calints)."""

include: "image2_common.smk"


rule image2:
    wildcard_constraints:
        kind="cal|calints",
    input:
        unpack(image2_inputs),
    output:
        cal=f"{RESULTS}/image2/{{filter}}/{{exposure}}_{{detector}}_{{kind}}.fits",
    log:
        f"{RESULTS}/logs/image2/{{filter}}/{{exposure}}_{{detector}}_{{kind}}.log",
    params:
        steps=image2_steps,
        references=lambda wildcards: references_identity(image2_references(wildcards)),
        reference_paths=lambda wildcards, input: image2_references(wildcards),
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("image2"),
        runtime=predicted_runtime("image2"),
    conda:
        "../../envs/webbflow.yaml"
    shell:
        job_command("image2.py", locals())

