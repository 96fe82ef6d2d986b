"""Reference files through CRDS: fetch every one before the per-exposure jobs, then lock them.

The lockfile is written by the crds_prefetch rule when it is missing (e.g. after the demo is
simulated), and re-written by the onstart hook, before any job, when the plan has changed
(another context, new exposures, other overrides).  Per-exposure jobs read it (ancient input).

The rule exists only while the lockfile does not (issue 12).  snakemake skips its own checks
(params, input set, code) of every job downstream of a job that has to run, and an ancient()
link then passes nothing on: a prefetch re-run for any reason (a new uncal, a changed override,
an edited script) made the run do nothing else and report success.  With the lockfile present
it is a plain input; the products' own params (portable names and digests of their references)
decide what re-runs, and crds_relock() re-locks before any job starts.
Only jobs that read a file chosen by crds have it as an input: when the overrides give all their
types, neither the lock nor a CRDS cache is needed (and the onstart hook does nothing).
"""


onstart:
    # First: the server's imports overlap the re-lock below.
    start_job_server()
    drop_default_rate_limit()
    # Two runs from different working folders must not write one results_dir (snakemake's own lock is
    # per working folder); held until this process ends.
    _RESULTS_LOCK.append(lock_results_dir(RESULTS))
    crds_relock()


# Parsed before the run; the demo or a download writes the exposures later in the same run.
if not Path(CRDS_LOCK).exists():

    rule crds_prefetch:
        input:
            unpack(crds_prefetch_inputs),
        output:
            lock=CRDS_LOCK,
        params:
            # From the planning process; derived params (they take ``input``), not compared between runs.
            uncals=crds_prefetch_uncals,
            cache=lambda wildcards, input: crds_setup().cache,
            reftypes=crds_prefetch_reftypes,
            overrides=lambda wildcards, input: OVERRIDES,
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
