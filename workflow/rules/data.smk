# Stage 1: stimuli (sentences, images) and the NSD data (simulated here, or a local mirror).


rule prepare_stimuli:
    input:
        stimuli_inputs,
    output:
        R("stimuli", "{dataset}.npz"),
    params:
        dataset=lambda wc: config["datasets"][wc.dataset],
        nsd_root=lambda wc: nsd_root() if "nsd" in config else None,
        cache_dir=R("downloads"),
    log:
        R("logs", "prepare_stimuli", "{dataset}.log"),
    benchmark:
        R("benchmarks", "prepare_stimuli", "{dataset}.tsv")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/prepare_stimuli.py"


rule simulate_nsd:
    output:
        directory(R("data", "nsd_sim")),
    params:
        subjects=sorted({b["subject"] for b in config.get("brains", {}).values()}),
        simulation=config.get("nsd", {}).get("simulation", {}),
    log:
        R("logs", "simulate_nsd.log"),
    benchmark:
        R("benchmarks", "simulate_nsd.tsv")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/simulate_nsd.py"


rule brain_responses:
    input:
        nsd=nsd_root(),
        stimuli=R("stimuli", "{dataset}.npz"),
    output:
        R("brains", "{dataset}", "{brain}.npz"),
    params:
        subject=lambda wc: config["brains"][wc.brain]["subject"],
        regions=config.get("nsd", {}).get("regions", []),
        sessions=config.get("nsd", {}).get("sessions"),
    log:
        R("logs", "brain_responses", "{dataset}", "{brain}.log"),
    benchmark:
        R("benchmarks", "brain_responses", "{dataset}", "{brain}.tsv")
    threads: 1
    resources:
        mem_mb=16000,
        runtime=240,
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/brain_responses.py"


rule download_nsd:
    output:
        directory(R("data", "nsd")),
    params:
        subjects=sorted({b["subject"] for b in config.get("brains", {}).values()}),
        sessions=config.get("nsd", {}).get("sessions"),
    log:
        R("logs", "download_nsd.log"),
    benchmark:
        R("benchmarks", "download_nsd.tsv")
    threads: 4
    resources:
        mem_mb=8000,
        runtime=720,
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/download_nsd.py"


rule nsd_voxel_counts:
    input:
        unpack(lambda wc: {b: network_path(wc.dataset, b) for b in config.get("brains", {})}),
    output:
        R("data", "{dataset}_voxel_counts.csv"),
    log:
        R("logs", "nsd_voxel_counts", "{dataset}.log"),
    localrule: True
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/nsd_voxel_counts.py"
