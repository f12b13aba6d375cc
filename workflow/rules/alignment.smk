# Stages 4-6: inner OT per shard of layer pairs, outer OT + couplings + scores per pair x
# seed, and the collection of every experiment's scores over seeds.


rule inner_ot:
    input:
        unpack(pair_inputs),
    output:
        R("inner", "{experiment}", "{method}", "{source}~{target}", "seed{seed}", "shard{shard}.npz"),
    params:
        rotation=lambda wc: METHODS[wc.method],
        shard_size=config["shard_size"],
        layers=lambda wc: (n_layers(config, wc.source), n_layers(config, wc.target)),
        mot=MOT_PARAMS,
    log:
        R("logs", "inner_ot", "{experiment}", "{method}", "{source}~{target}", "seed{seed}", "shard{shard}.log"),
    benchmark:
        R("benchmarks", "inner_ot", "{experiment}", "{method}", "{source}~{target}", "seed{seed}", "shard{shard}.tsv")
    threads: MOT_THREADS
    resources:
        mem_mb=inner_resources,
        runtime=120,
        **MOT_RESOURCES,
    group:
        "inner_ot"
    conda:
        MOT_ENV
    script:
        "../scripts/inner_ot.py"


rule outer_ot:
    input:
        unpack(pair_inputs),
        shards=lambda wc: shard_paths(wc.experiment, wc.method, wc.source, wc.target, wc.seed),
    output:
        json=R("mot", "{experiment}", "{method}", "{source}~{target}", "seed{seed}.json"),
        npz=R("mot", "{experiment}", "{method}", "{source}~{target}", "seed{seed}.npz"),
    params:
        rotation=lambda wc: METHODS[wc.method],
        meta=lambda wc: {"experiment": wc.experiment, "method": wc.method,
                         "source": wc.source, "target": wc.target},
        mot=MOT_PARAMS,
    log:
        R("logs", "outer_ot", "{experiment}", "{method}", "{source}~{target}", "seed{seed}.log"),
    benchmark:
        R("benchmarks", "outer_ot", "{experiment}", "{method}", "{source}~{target}", "seed{seed}.tsv")
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        MOT_ENV
    script:
        "../scripts/outer_ot.py"


rule collect_scores:
    input:
        lambda wc: [outer_json(wc.experiment, *job) for job in experiment_jobs(wc.experiment)],
    output:
        R("scores", "{experiment}.csv"),
    log:
        R("logs", "collect_scores", "{experiment}.log"),
    wildcard_constraints:
        experiment="|".join(config["experiments"]),
    localrule: True
    conda:
        "../../envs/ot.yaml"
    script:
        "../scripts/collect_scores.py"
