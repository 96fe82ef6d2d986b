"""Reference files through CRDS: fetch every one before the per-exposure jobs, then lock them.

The lockfile is written by the crds_prefetch rule when it is missing (e.g. after the demo is
simulated), and re-written by the onstart hook, before any job, when the plan has changed
(another context, new exposures, other overrides).  Per-exposure jobs read it (ancient input).
Only jobs that read a file chosen by crds have it as an input: when the overrides give all their
types, neither the lock nor a CRDS cache is needed (and the onstart hook does nothing).
"""


onstart:
    crds_relock()


rule crds_prefetch:
    input:
        unpack(crds_prefetch_inputs),
    output:
        lock=CRDS_LOCK,
    params:
        # Constant on purpose (context and plan come from the config): a re-lock must not look like
        # a changed input to every product; crds_relock() handles changed plans.
        cache=lambda wildcards: crds_setup().cache,
        reftypes=lambda wildcards: sorted(CRDS_REFTYPES),
        overrides=OVERRIDES,
    log:
        f"{RESULTS}/logs/crds_prefetch.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    localrule: True
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/crds_prefetch.py"
