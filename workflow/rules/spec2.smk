"""Stage 2 for grism time series: rateints -> calints + x1dints, one job per segment and detector."""

include: "spec2_common.smk"


rule spec2:
    input:
        unpack(spec2_inputs),
    output:
        calints=f"{RESULTS}/spec2/{{filter}}/{{exposure}}_{{detector}}_calints.fits",
        x1dints=f"{RESULTS}/spec2/{{filter}}/{{exposure}}_{{detector}}_x1dints.fits",
    log:
        f"{RESULTS}/logs/spec2/{{filter}}/{{exposure}}_{{detector}}.log",
    params:
        steps=spec2_steps,
        references=lambda wildcards: references_identity(spec2_references(wildcards)),
        reference_paths=lambda wildcards, input: spec2_references(wildcards),
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("spec2"),
        runtime=predicted_runtime("spec2"),
    conda:
        "../../envs/webbflow.yaml"
    shell:
        job_command("spec2.py", locals())
