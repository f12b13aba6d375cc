# Stage 3: seeded 80/20 fit / held-out splits of every data set.


rule make_split:
    input:
        STIMULI_NPZ,
    output:
        SPLIT_NPZ,
    params:
        code=script_code("make_split.py"),
        fit_fraction=config["fit_fraction"],
    log:
        job_log("make_split", SPLIT_KEY),
    threads: 1
    resources:
        **rule_resources("make_split"),
    conda:
        "../../envs/ot.yaml"
    script:
        "../scripts/make_split.py"
