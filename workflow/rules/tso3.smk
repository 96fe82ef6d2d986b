"""Stage 3 for grism time series: the calints of one exposure's segments -> crfints (per segment),
x1dints (one EXTRACT1D per segment), the white-light curve whtlt.ecsv and the trace's row and width
per integration, trace.ecsv (not in jwst).  An imaging time series (rule tso3_phot): crfints and the
photometry of every integration, phot.ecsv."""

include: "tso3_common.smk"


rule tso3:
    input:
        unpack(tso3_inputs),
    output:
        x1dints=tso3_product("x1dints"),
        whtlt=tso3_product("whtlt"),
        trace=tso3_product("trace"),
        crfints=directory(f"{RESULTS}/tso3/crfints/{{product}}"),
    log:
        f"{RESULTS}/logs/tso3/{{product}}.log",
    params:
        steps=tso3_steps,
        references=lambda wildcards: references_identity(tso3_references(wildcards)),
        reference_paths=lambda wildcards, input: tso3_references(wildcards),
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("tso3"),
        runtime=predicted_runtime("tso3"),
    conda:
        "../../envs/webbflow.yaml"
    shell:
        job_command("tso3.py", locals())


rule tso3_phot:
    input:
        unpack(tso3_inputs),
    output:
        phot=tso3_product("phot"),
        crfints=directory(f"{RESULTS}/tso3/crfints/{{product}}"),
    log:
        f"{RESULTS}/logs/tso3/{{product}}_phot.log",
    params:
        steps=tso3_steps,
        references=lambda wildcards: references_identity(tso3_references(wildcards)),
        reference_paths=lambda wildcards, input: tso3_references(wildcards),
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("tso3"),
        runtime=predicted_runtime("tso3"),
    conda:
        "../../envs/webbflow.yaml"
    shell:
        job_command("tso3_phot.py", locals())
