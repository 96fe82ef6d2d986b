"""Stage 1: uncal -> rate + rateints, one job per exposure and detector."""


rule detector1:
    input:
        unpack(detector1_inputs),
    output:
        rate=f"{RESULTS}/detector1/{{filter}}/{{exposure}}_{{detector}}_rate.fits",
        rateints=f"{RESULTS}/detector1/{{filter}}/{{exposure}}_{{detector}}_rateints.fits",
        # QA, not a product: the 1/f per integration and amplifier before and after ROEBA
        onef=f"{RESULTS}/detector1/{{filter}}/{{exposure}}_{{detector}}_onef.ecsv",
        # steps.persistence: the pixels later exposures of the detector flag (only when the option is on)
        **({"highpix": f"{RESULTS}/detector1/{{filter}}/{{exposure}}_{{detector}}_highpix.ecsv"}
           if PERSISTENCE else {}),
    log:
        f"{RESULTS}/logs/detector1/{{filter}}/{{exposure}}_{{detector}}.log",
    params:
        steps=detector1_steps,
        references=detector1_references,
        reference_paths=detector1_reference_paths,
        exp_types=detector1_exp_types,
    threads: config["threads"]["detector1"]
    resources:
        mem_mb=detector1_mem_mb,
        runtime=detector1_runtime,
    conda:
        "../../envs/webbflow.yaml"
    shell:
        job_command("detector1.py", locals())
