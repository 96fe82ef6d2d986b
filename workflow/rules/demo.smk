"""The bundled demo program, written by our simulator (deterministic seed)."""


checkpoint demo:
    output:
        manifest=DEMO_MANIFEST,
    params:
        preset=config["demo"]["preset"],
        seed=config["demo"]["seed"],
        outdir=lambda wildcards, output: os.path.dirname(output.manifest),
    log:
        f"{RESULTS}/logs/demo.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    localrule: True
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/demo.py"
