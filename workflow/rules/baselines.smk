# Appendix baselines: global OT / linear predictivity (F), pairwise linear predictivity (H),
# pairwise RSA (I); one job per baseline x experiment x seed, over the experiment's pairs.


rule baseline:
    input:
        unpack(baseline_inputs),
    output:
        R("baselines", "{kind}", "{experiment}", "seed{seed}.json"),
    params:
        pairs=baseline_pairs,
        meta=lambda wc: {"experiment": wc.experiment},
    log:
        R("logs", "baseline", "{kind}", "{experiment}", "seed{seed}.log"),
    benchmark:
        R("benchmarks", "baseline", "{kind}", "{experiment}", "seed{seed}.tsv")
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    conda:
        "../../envs/ot.yaml"
    script:
        "../scripts/baseline.py"
