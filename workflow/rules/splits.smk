# Stage 3: seeded 80/20 fit / held-out splits of every data set.


rule make_split:
    input:
        R("stimuli", "{dataset}.npz"),
    output:
        R("splits", "{dataset}", "seed{seed}.npz"),
    params:
        fit_fraction=config["fit_fraction"],
    log:
        R("logs", "make_split", "{dataset}", "seed{seed}.log"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/ot.yaml"
    script:
        "../scripts/make_split.py"
