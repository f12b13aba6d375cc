# Appendix J.1: units of the target model subsampled, MOT / MOT+R refitted per fraction x seed.


rule subsample:
    input:
        x=lambda wc: network_path(SUBSAMPLING["dataset"], SUBSAMPLING["source"]),
        y=lambda wc: network_path(SUBSAMPLING["dataset"], SUBSAMPLING["target"]),
        split=lambda wc: split_path(SUBSAMPLING["dataset"], wc.seed),
    output:
        SUBSAMPLING_JSON,
    params:
        code=script_code("subsample.py"),
        rotation=lambda wc: METHODS[wc.method],
        meta=lambda wc: {"method": wc.method, "source": SUBSAMPLING["source"], "target": SUBSAMPLING["target"]},
        mot=MOT_SETTINGS,
    log:
        job_log("subsample", SUBSAMPLING_KEY),
    benchmark:
        job_benchmark("subsample", SUBSAMPLING_KEY)
    threads: MOT_THREADS
    resources:
        **rule_resources("subsample"),
        **MOT_RESOURCES,
    conda:
        MOT_ENV
    script:
        "../scripts/subsample.py"


rule collect_subsampling:
    input:
        subsampling_jsons(),
    output:
        SUBSAMPLING_CSV,
    params:
        code=script_code("collect_subsampling.py"),
    log:
        job_log("collect_subsampling"),
    localrule: True
    conda:
        "../../envs/ot.yaml"
    script:
        "../scripts/collect_subsampling.py"
