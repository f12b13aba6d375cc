# Stage 2a: tiny instances of the paper's architectures, trained briefly on CPU.


rule train_tiny_model:
    input:
        stimuli=lambda wc: stimuli_path(config["models"][wc.model]["train"]["dataset"]),
    output:
        directory(MODEL_DIR),
    params:
        model=lambda wc: config["models"][wc.model],
    log:
        job_log("train_tiny_model", MODEL_KEY),
    benchmark:
        job_benchmark("train_tiny_model", MODEL_KEY)
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/train_tiny_model.py"
