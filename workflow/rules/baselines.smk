# Appendix baselines: global OT / linear predictivity (App. F), pairwise linear
# predictivity (App. H), pairwise RSA (App. I); one job per baseline x experiment x seed,
# over the experiment's pairs.


rule baseline:
    input:
        unpack(baseline_inputs),
    output:
        BASELINE_JSON,
    params:
        code=script_code("baseline.py"),
        pairs=baseline_pairs,
        meta=lambda wc: {"experiment": wc.experiment},
    log:
        job_log("baseline", BASELINE_KEY),
    benchmark:
        job_benchmark("baseline", BASELINE_KEY)
    threads: 2
    resources:
        **rule_resources("baseline"),
    conda:
        "../../envs/ot.yaml"
    script:
        "../scripts/baseline.py"
