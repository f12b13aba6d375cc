# Section 3.4: three-level MOT over training checkpoints; checkpoint costs computed in
# blocks of source checkpoints, then the checkpoint coupling.

rule three_level_block:
    input:
        x=lambda wc: [network_path(THREE["dataset"], wc.source, r) for r in block_revisions(wc.block)],
        y=lambda wc: [network_path(THREE["dataset"], wc.target, r) for r in THREE["revisions"]],
    output:
        R("three_level", "{source}~{target}", "block{block}.npz"),
    log:
        R("logs", "three_level_block", "{source}~{target}", "block{block}.log"),
    benchmark:
        R("benchmarks", "three_level_block", "{source}~{target}", "block{block}.tsv")
    params:
        mot=MOT_PARAMS,
    threads: MOT_THREADS
    resources:
        mem_mb=16000,
        runtime=720,
        **MOT_RESOURCES,
    conda:
        MOT_ENV
    script:
        "../scripts/three_level_block.py"


rule three_level:
    input:
        lambda wc: [R("three_level", f"{wc.source}~{wc.target}", f"block{b}.npz") for b in three_level_blocks()],
    output:
        json=R("three_level", "{source}~{target}.json"),
        npz=R("three_level", "{source}~{target}.npz"),
    params:
        revisions=THREE.get("revisions", []),
        meta=lambda wc: {"source": wc.source, "target": wc.target},
    log:
        R("logs", "three_level", "{source}~{target}.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/ot.yaml"
    script:
        "../scripts/three_level.py"
