# Section 3.4: three-level MOT over training checkpoints; checkpoint costs computed in
# blocks of source checkpoints, then the checkpoint coupling.


rule three_level_block:
    input:
        x=lambda wc: [network_path(THREE_LEVEL["dataset"], wc.source, r) for r in block_revisions(wc.block)],
        y=lambda wc: [network_path(THREE_LEVEL["dataset"], wc.target, r) for r in THREE_LEVEL["revisions"]],
    output:
        THREE_LEVEL_BLOCK_NPZ,
    log:
        job_log("three_level_block", THREE_LEVEL_BLOCK_KEY),
    benchmark:
        job_benchmark("three_level_block", THREE_LEVEL_BLOCK_KEY)
    params:
        code=script_code("three_level_block.py"),
        mot=MOT_SETTINGS,
    threads: MOT_THREADS
    resources:
        **rule_resources("three_level_block"),
        **MOT_RESOURCES,
    conda:
        MOT_ENV
    script:
        "../scripts/three_level_block.py"


rule three_level:
    input:
        lambda wc: three_level_block_paths(wc.source, wc.target),
    output:
        json=THREE_LEVEL_JSON,
        npz=THREE_LEVEL_NPZ,
    params:
        code=script_code("three_level.py"),
        revisions=lambda wc: THREE_LEVEL["revisions"],
        meta=lambda wc: {"source": wc.source, "target": wc.target},
    log:
        job_log("three_level", THREE_LEVEL_KEY),
    threads: 1
    resources:
        **rule_resources("three_level"),
    conda:
        "../../envs/ot.yaml"
    script:
        "../scripts/three_level.py"
