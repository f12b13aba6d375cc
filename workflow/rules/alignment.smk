# Stages 4-6: inner OT per shard of layer pairs (Sec. 2.2.1), outer OT + couplings + scores
# per pair x seed (Sec. 2.2.2-2.2.3), and the collection of every experiment's scores over
# seeds.


rule inner_ot:
    input:
        unpack(pair_inputs),
    output:
        INNER_SHARD_NPZ,
    params:
        code=script_code("inner_ot.py"),
        rotation=lambda wc: METHODS[wc.method],
        shard_size=config["shard_size"],
        layers=lambda wc: (n_layers(config, wc.source), n_layers(config, wc.target)),
        mot=MOT_SETTINGS,
    log:
        job_log("inner_ot", INNER_SHARD_KEY),
    benchmark:
        job_benchmark("inner_ot", INNER_SHARD_KEY)
    threads: MOT_THREADS
    resources:
        **rule_resources("inner_ot"),
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
        json=OUTER_JSON,
        npz=OUTER_NPZ,
    params:
        code=script_code("outer_ot.py"),
        rotation=lambda wc: METHODS[wc.method],
        meta=lambda wc: {"experiment": wc.experiment, "method": wc.method, "source": wc.source, "target": wc.target},
        layers=lambda wc: (n_layers(config, wc.source), n_layers(config, wc.target)),
        mot=MOT_SETTINGS,
    log:
        job_log("outer_ot", OUTER_KEY),
    benchmark:
        job_benchmark("outer_ot", OUTER_KEY)
    # a pair without shards (config inline_single_shard) runs its inner level here too
    threads: lambda wc: MOT_THREADS if inline_inner(config, wc.source, wc.target) else 1
    resources:
        **rule_resources("outer_ot"),
        **OUTER_MOT_RESOURCES,
    conda:
        MOT_ENV
    script:
        "../scripts/outer_ot.py"


rule collect_scores:
    input:
        lambda wc: [outer_json(wc.experiment, *job) for job in experiment_jobs(wc.experiment)],
    output:
        SCORES_CSV,
    params:
        code=script_code("collect_scores.py"),
    log:
        job_log("collect_scores", EXPERIMENT_KEY),
    wildcard_constraints:
        experiment="|".join(config["experiments"]),
    localrule: True
    conda:
        "../../envs/ot.yaml"
    script:
        "../scripts/collect_scores.py"
