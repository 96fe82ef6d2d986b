"""Bad inputs (issue 12 item 7): one failing job per file the planning refused (common.smk, BAD_INPUTS).

The output is never written: the job exits non-zero with the file's one line, so with keep-going the
rest of the program is reduced and the run exits non-zero naming each file; without, it stops here.
"""


rule bad_input:
    output:
        f"{RESULTS}/bad_input/{{name}}",
    wildcard_constraints:
        name=r"[^/]+",
    params:
        path=lambda wildcards: BAD_INPUTS[wildcards.name].path,
        problem=lambda wildcards: BAD_INPUTS[wildcards.name].problem,
        fix=lambda wildcards: BAD_INPUTS[wildcards.name].fix,
    log:
        f"{RESULTS}/logs/bad_input/{{name}}.log",
    # Retrying cannot fix a file.
    retries: 0
    threads: 1
    resources:
        mem_mb=500,
        runtime=1,
    localrule: True
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/bad_input.py"


onerror:
    bad_input_summary()
