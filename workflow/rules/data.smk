# Stage 1: stimuli (sentences, images) and the NSD data (simulated here, or a local mirror).


rule prepare_stimuli:
    input:
        stimuli_inputs,
    output:
        STIMULI_NPZ,
    params:
        code=script_code("prepare_stimuli.py"),
        dataset=lambda wc: config["datasets"][wc.dataset],
        nsd_root=lambda wc: nsd_root() if "nsd" in config else None,
        cache_dir=None,  # huggingface_hub's cache (HF_HUB_CACHE), shared with transformers
    log:
        job_log("prepare_stimuli", DATASET_KEY),
    benchmark:
        job_benchmark("prepare_stimuli", DATASET_KEY)
    threads: 1
    resources:
        **rule_resources("prepare_stimuli"),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/prepare_stimuli.py"


rule simulate_nsd:
    output:
        directory(NSD_SIMULATED_DIR),
    params:
        code=script_code("simulate_nsd.py"),
        subjects=nsd_subjects(),
        simulation=lambda wc: config["nsd"]["simulation"],
    log:
        job_log("simulate_nsd"),
    benchmark:
        job_benchmark("simulate_nsd")
    threads: 1
    resources:
        **rule_resources("simulate_nsd"),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/simulate_nsd.py"


rule brain_responses:
    input:
        nsd=lambda wc: nsd_root(),
        stimuli=STIMULI_NPZ,
    output:
        BRAIN_NPZ,
    params:
        code=script_code("brain_responses.py"),
        subject=lambda wc: config["brains"][wc.brain]["subject"],
        regions=lambda wc: config["nsd"]["regions"],
        sessions=lambda wc: config["nsd"].get("sessions"),
    log:
        job_log("brain_responses", BRAIN_KEY),
    benchmark:
        job_benchmark("brain_responses", BRAIN_KEY)
    threads: 1
    resources:
        **rule_resources("brain_responses"),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/brain_responses.py"


rule download_nsd:
    output:
        directory(NSD_MIRROR_DIR),
    params:
        code=script_code("download_nsd.py"),
        cache=NSD_DOWNLOAD_CACHE,
        subjects=nsd_subjects(),
        sessions=lambda wc: config["nsd"].get("sessions"),
    log:
        job_log("download_nsd"),
    benchmark:
        job_benchmark("download_nsd")
    threads: 4
    resources:
        **rule_resources("download_nsd"),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/download_nsd.py"


rule nsd_voxel_counts:
    input:
        unpack(lambda wc: {brain: network_path(wc.dataset, brain) for brain in config["brains"]}),
    output:
        VOXEL_COUNTS_CSV,
    params:
        code=script_code("nsd_voxel_counts.py"),
    log:
        job_log("nsd_voxel_counts", DATASET_KEY),
    localrule: True
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/nsd_voxel_counts.py"
