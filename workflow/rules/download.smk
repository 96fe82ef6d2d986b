"""Data from MAST: list the program's uncal products and download them (checkpoint: the exposure
table is built from the downloaded headers)."""


checkpoint download:
    output:
        manifest=DOWNLOAD_MANIFEST,
    params:
        download=config["download"],
        uncal_dir=UNCAL_DIR,
    log:
        f"{RESULTS}/logs/download.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=240,
    retries: 2
    localrule: True
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/download.py"
