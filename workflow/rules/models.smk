# Stage 2a: tiny instances of the paper's architectures, trained briefly on CPU.


rule train_tiny_model:
    input:
        stimuli=lambda wc: stimuli_path(config["models"][wc.model]["train"]["dataset"]),
    output:
        directory(R("models", "{model}")),
    params:
        model=lambda wc: config["models"][wc.model],
    log:
        R("logs", "train_tiny_model", "{model}.log"),
    benchmark:
        R("benchmarks", "train_tiny_model", "{model}.tsv")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/train_tiny_model.py"
