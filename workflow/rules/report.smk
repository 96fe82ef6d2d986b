"""The report (`snakemake --report report.html`): QA per exposure, mosaic previews, residuals against
the demo's truth.  Category: the mode; subcategory: the stage whose products a figure shows."""

include: "report_common.smk"


rule qa_exposures:
    input:
        unpack(qa_exposures_inputs),
    output:
        rate=report(
            directory(f"{QA}/{{mode}}/detector1"),
            patterns=["{filter}/{root}_rate.png"],
            caption="../report/qa_rate.rst",
            category="{mode}",
            subcategory="detector1",
            labels={"exposure": "{root}", "filter": "{filter}", "product": "rate"},
        ),
        cal=report(
            directory(f"{QA}/{{mode}}/image2"),
            patterns=["{filter}/{root}_cal.png"],
            caption="../report/qa_cal.rst",
            category="{mode}",
            subcategory="image2",
            labels={"exposure": "{root}", "filter": "{filter}", "product": "cal"},
        ),
        rows=f"{QA}/{{mode}}/qa_rows.json",
        html=report(
            f"{QA}/{{mode}}/qa_table.html",
            caption="../report/qa_table.rst",
            category="{mode}",
            subcategory="QA per exposure",
            labels={"table": "QA per exposure"},
        ),
        csv=f"{QA}/{{mode}}/qa_table.csv",
    log:
        f"{RESULTS}/logs/qa/{{mode}}/exposures.log",
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("qa"),
        runtime=predicted_runtime("qa"),
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/qa_exposures.py"


rule qa_mosaics:
    input:
        unpack(qa_mosaics_inputs),
    output:
        previews=report(
            directory(f"{QA}/{{mode}}/image3/preview"),
            patterns=["{product}_preview.png"],
            caption="../report/qa_mosaic.rst",
            category="{mode}",
            subcategory="image3",
            labels={"association": "{product}", "figure": "mosaic and catalog"},
        ),
    log:
        f"{RESULTS}/logs/qa/{{mode}}/mosaics.log",
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("qa"),
        runtime=predicted_runtime("qa"),
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/qa_mosaics.py"


rule qa_truth:
    input:
        unpack(qa_truth_inputs),
    output:
        residuals=report(
            directory(f"{QA}/{{mode}}/image3/truth"),
            patterns=["{product}_truth.png"],
            caption="../report/qa_truth.rst",
            category="{mode}",
            subcategory="image3",
            labels={"association": "{product}", "figure": "residuals against the truth"},
        ),
    log:
        f"{RESULTS}/logs/qa/{{mode}}/truth.log",
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("qa"),
        runtime=predicted_runtime("qa"),
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/qa_truth.py"


rule qa_timeseries:
    input:
        unpack(qa_timeseries_inputs),
    output:
        png=report(
            f"{QA}/{{mode}}/tso3/{{product}}_timeseries.png",
            caption="../report/qa_timeseries.rst",
            category="{mode}",
            subcategory="tso3",
            labels={"association": "{product}", "figure": "time series"},
        ),
    log:
        f"{RESULTS}/logs/qa/{{mode}}/{{product}}_timeseries.log",
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("qa"),
        runtime=predicted_runtime("qa"),
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/qa_timeseries.py"


rule qa_photometry:
    input:
        unpack(qa_photometry_inputs),
    output:
        png=report(
            f"{QA}/{{mode}}/tso3/{{product}}_photometry.png",
            caption="../report/qa_photometry.rst",
            category="{mode}",
            subcategory="tso3",
            labels={"association": "{product}", "figure": "photometry"},
        ),
    log:
        f"{RESULTS}/logs/qa/{{mode}}/{{product}}_photometry.log",
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("qa"),
        runtime=predicted_runtime("qa"),
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/qa_photometry.py"


rule qa_coron3:
    input:
        unpack(qa_coron3_inputs),
    output:
        png=report(
            f"{QA}/{{mode}}/coron3/{{product}}_coron3.png",
            caption="../report/qa_coron3.rst",
            category="{mode}",
            subcategory="coron3",
            labels={"association": "{product}", "figure": "coronagraphy"},
        ),
    log:
        f"{RESULTS}/logs/qa/{{mode}}/{{product}}_coron3.log",
    params:
        # coron3's PSFMASK (a param: a CRDS cache file is fetched by the prefetch, not made by a rule)
        psfmask=lambda wildcards: coron3_references(wildcards)["psfmask"],
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("qa"),
        runtime=predicted_runtime("qa"),
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/qa_coron3.py"


rule qa_coron_jumps:
    input:
        unpack(qa_coron_jumps_inputs),
    output:
        png=report(
            f"{QA}/{{mode}}/jumps/coron_jumps.png",
            caption="../report/qa_coron_jumps.rst",
            category="{mode}",
            subcategory="detector1",
            labels={"figure": "jump flags, dark on vs off"},
        ),
        table=f"{QA}/{{mode}}/jumps/coron_jumps.ecsv",
    log:
        f"{RESULTS}/logs/qa/{{mode}}/coron_jumps.log",
    params:
        lines=qa_coron_jumps_lines,
        references=qa_coron_jumps_references,
        step_defaults=config["step_defaults"],
    threads: 1
    resources:
        mem_mb=predicted_mem_mb("qa"),
        runtime=predicted_runtime("qa"),
    conda:
        "../../envs/webbflow.yaml"
    script:
        "../scripts/qa_coron_jumps.py"
