# Stage 2b: layer activations, one job per model (x revision) x data set; GPU when present.


rule extract_activations:
    input:
        unpack(model_inputs),
    output:
        R("activations", "{dataset}", "{model}.npz"),
    params:
        model=lambda wc: config["models"][wc.model],
        location=lambda wc: model_location(wc.model),
        revision=lambda wc: config["models"][wc.model].get("revision"),
        include_embeddings=config.get("include_embeddings", False),
        extraction={k: EXTRACTION[k] for k in ("batch_size", "device")},
    log:
        R("logs", "extract_activations", "{dataset}", "{model}.log"),
    benchmark:
        R("benchmarks", "extract_activations", "{dataset}", "{model}.tsv")
    threads: EXTRACTION["threads"]
    resources:
        **EXTRACTION_RESOURCES,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/extract_activations.py"


use rule extract_activations as extract_revision with:
    output:
        R("activations", "{dataset}", "{model}", "{revision}.npz"),
    params:
        model=lambda wc: config["models"][wc.model],
        location=lambda wc: model_location(wc.model),
        revision=lambda wc: wc.revision,
        include_embeddings=config.get("include_embeddings", False),
        extraction={k: EXTRACTION[k] for k in ("batch_size", "device")},
    log:
        R("logs", "extract_activations", "{dataset}", "{model}", "{revision}.log"),
    benchmark:
        R("benchmarks", "extract_activations", "{dataset}", "{model}", "{revision}.tsv")
