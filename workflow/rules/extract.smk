# Stage 2b: layer activations, one job per model (x revision) x data set; GPU when present.


rule extract_activations:
    input:
        unpack(model_inputs),
    output:
        ACTIVATIONS_NPZ,
    params:
        code=script_code("extract_activations.py"),
        model=lambda wc: config["models"][wc.model],
        location=lambda wc: model_location(wc.model),
        revision=lambda wc: config["models"][wc.model].get("revision"),
        include_embeddings=config["include_embeddings"],
        extraction=EXTRACTION_SETTINGS,
    log:
        job_log("extract_activations", ACTIVATIONS_KEY),
    benchmark:
        job_benchmark("extract_activations", ACTIVATIONS_KEY)
    threads: EXTRACTION["threads"]
    resources:
        **EXTRACTION_RESOURCES,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/extract_activations.py"


use rule extract_activations as extract_revision with:
    output:
        REVISION_ACTIVATIONS_NPZ,
    params:
        code=script_code("extract_activations.py"),
        model=lambda wc: config["models"][wc.model],
        location=lambda wc: model_location(wc.model),
        revision=lambda wc: wc.revision,
        include_embeddings=config["include_embeddings"],
        extraction=EXTRACTION_SETTINGS,
    log:
        job_log("extract_activations", REVISION_ACTIVATIONS_KEY),
    benchmark:
        job_benchmark("extract_activations", REVISION_ACTIVATIONS_KEY)
