# Paths, config look-ups and target lists shared by every rule file.

import itertools

from motalign.workflow.config import METHODS, check_config, n_layers, n_shards, network_kind

check_config(config)

# Relative data paths that do not exist in the working directory are taken relative to the
# repository, so that `snakemake -d elsewhere` finds the shipped sentence file.
for _dataset in config["datasets"].values():
    if "path" in _dataset and not os.path.isabs(_dataset["path"]) and not os.path.exists(_dataset["path"]):
        _dataset["path"] = os.path.join(workflow.basedir, _dataset["path"])

RESULTS = config["results"]
_MOT = {"max_iter": 30, "tol": 1e-7, "solver": "exact", "device": "auto", "epsilon": 1.0e-3,
        "threads": 1, "gpus": 0, **config.get("mot", {})}
# Passed to the inner-OT engine (motalign.engine) by every rule that fits MOT; the jobs'
# `threads` become its n_jobs (layer pairs solved in parallel inside a job).
MOT_PARAMS = {k: _MOT[k] for k in ("max_iter", "tol", "solver", "device", "epsilon")}
MOT_THREADS = _MOT["threads"]
MOT_RESOURCES = dict(gpu=_MOT["gpus"]) if _MOT["gpus"] else {}
# GPU or Sinkhorn MOT jobs need PyTorch: they use the torch environment.
MOT_ENV = "../../envs/torch.yaml" if (
    _MOT["gpus"] or _MOT["solver"] == "sinkhorn" or str(_MOT["device"]).startswith("cuda")
) else "../../envs/ot.yaml"
EXTRACTION = {"batch_size": 32, "device": "auto", "gpus": 0, "threads": 1, **config.get("extraction", {})}


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    model="[A-Za-z0-9_.-]+",
    brain="[A-Za-z0-9_.-]+",
    experiment="[A-Za-z0-9_.-]+",
    method="mot|mot_r",
    source="[A-Za-z0-9_.-]+",
    target="[A-Za-z0-9_.-]+",
    revision="[A-Za-z0-9_.-]+",
    kind="global|linear_predictivity|rsa",
    seed="[0-9]+",
    shard="[0-9]+",
    block="[0-9]+",
    fraction="[0-9.]+",


def R(*parts):
    """A path below the results folder."""
    return os.path.join(RESULTS, *parts)


def stimuli_path(dataset):
    return R("stimuli", f"{dataset}.npz")


def split_path(dataset, seed):
    return R("splits", dataset, f"seed{seed}.npz")


def network_path(dataset, name, revision=None):
    """Activation file of a model (optionally at a revision) or response file of a brain."""
    if network_kind(config, name) == "brain":
        return R("brains", dataset, f"{name}.npz")
    if revision:
        return R("activations", dataset, name, f"{revision}.npz")
    return R("activations", dataset, f"{name}.npz")


def nsd_root():
    source = config["nsd"]["source"]
    if source == "simulated":
        return R("data", "nsd_sim")
    if source == "s3":
        return R("data", "nsd")
    return config["nsd"]["root"]


def model_dir(model):
    return R("models", model)


def pair_key(source, target):
    return f"{source}~{target}"


def experiment_seeds(experiment):
    """An experiment's split seeds: its own `seeds`, or the global ones."""
    return config["experiments"][experiment].get("seeds", config["seeds"])


def experiment_jobs(experiment):
    """(method, source, target, seed) of every outer-OT job of an experiment."""
    spec = config["experiments"][experiment]
    return [
        (method, source, target, seed)
        for method in spec["methods"]
        for source, target in spec["pairs"]
        for seed in experiment_seeds(experiment)
    ]


def outer_json(experiment, method, source, target, seed):
    return R("mot", experiment, method, pair_key(source, target), f"seed{seed}.json")


def shard_paths(experiment, method, source, target, seed):
    return [
        R("inner", experiment, method, pair_key(source, target), f"seed{seed}", f"shard{k}.npz")
        for k in range(n_shards(config, source, target))
    ]


def experiment_scores(experiment):
    return R("scores", f"{experiment}.csv")


def baseline_jsons(kind=None):
    return [
        R("baselines", k, experiment, f"seed{seed}.json")
        for k, experiments in config.get("baselines", {}).items()
        if kind in (None, k)
        for experiment in experiments
        for seed in experiment_seeds(experiment)
    ]


def subsampling_jsons():
    sub = config.get("subsampling")
    if not sub:
        return []
    return [
        R("subsampling", method, f"frac{fraction}", f"seed{seed}.json")
        for method in sub["methods"]
        for fraction in sub["fractions"]
        for seed in config["seeds"]
    ]


def three_level_json():
    three = config.get("three_level")
    if not three:
        return []
    return [R("three_level", f"{pair_key(three['source'], three['target'])}.json")]


def intermediate_targets():
    """Every stored intermediate result.  `rule all` asks for them too, so that deleting any
    one of them rebuilds it, and then (being newer) everything that depends on it."""
    targets = []
    for experiment, spec in config["experiments"].items():
        for method, source, target, seed in experiment_jobs(experiment):
            json_path = outer_json(experiment, method, source, target, seed)
            targets += [json_path, json_path[: -len(".json")] + ".npz"]
            targets += shard_paths(experiment, method, source, target, seed)
        targets += [network_path(spec["dataset"], n) for pair in spec["pairs"] for n in pair]
        targets += [split_path(spec["dataset"], seed) for seed in experiment_seeds(experiment)]
    targets += subsampling_jsons()
    three = config.get("three_level")
    if three:
        key = pair_key(three["source"], three["target"])
        targets += [R("three_level", key, f"block{b}.npz") for b in three_level_blocks()]
        targets += [network_path(three["dataset"], three[side], revision)
                    for side in ("source", "target") for revision in three["revisions"]]
    return list(dict.fromkeys(targets))


def nsd_datasets():
    """NSD data sets on which some experiment pairs brains (their voxel counts are reported)."""
    return sorted({
        spec["dataset"] for spec in config["experiments"].values()
        if any(network_kind(config, n) == "brain" for pair in spec["pairs"] for n in pair)
    })


def all_targets():
    targets = [experiment_scores(e) for e in config["experiments"]]
    targets += [R("data", f"{d}_voxel_counts.csv") for d in nsd_datasets()]
    targets += baseline_jsons()
    if config.get("subsampling"):
        targets.append(R("scores", "subsampling.csv"))
    targets += three_level_json()
    return targets + intermediate_targets()


# --- used by data.smk


def stimuli_inputs(wildcards):
    dataset = config["datasets"][wildcards.dataset]
    if dataset["source"] == "file":
        return [dataset["path"]]
    if dataset["source"] == "nsd":
        return [nsd_root()]
    if dataset["source"] == "imagenet":  # a local archive, when configured and present
        return [p for p in (dataset.get("archive"), dataset.get("devkit")) if p and os.path.exists(p)]
    return []


# --- used by extract.smk


def model_inputs(wildcards):
    model = config["models"][wildcards.model]
    inputs = {"stimuli": stimuli_path(wildcards.dataset)}
    if model["source"] == "tiny":
        inputs["model"] = model_dir(wildcards.model)
    return inputs


def model_location(model_name):
    model = config["models"][model_name]
    return model_dir(model_name) if model["source"] == "tiny" else model["id"]


EXTRACTION_RESOURCES = dict(mem_mb=32000, runtime=120, gpu=EXTRACTION["gpus"])


# --- used by alignment.smk


def pair_inputs(wildcards):
    dataset = config["experiments"][wildcards.experiment]["dataset"]
    return {
        "x": network_path(dataset, wildcards.source),
        "y": network_path(dataset, wildcards.target),
        "split": split_path(dataset, wildcards.seed),
    }


def inner_resources(wildcards, input, threads, attempt):
    """Memory of an inner-OT job: its layers (float32 on disk, float64 z-scores of the fit
    rows: at most 3x the activation files) plus one layer pair's cost and solver arrays
    per engine thread (about 250 MB at 3,072 x 2,048); doubled, tripled on retries."""
    return int((2000 + 3 * input.size_mb + 250 * threads + 64 * config["shard_size"]) * attempt)


# --- used by baselines.smk


def baseline_inputs(wildcards):
    experiment = config["experiments"][wildcards.experiment]
    networks = sorted({network_path(experiment["dataset"], n) for pair in experiment["pairs"] for n in pair})
    return {"networks": networks, "split": split_path(experiment["dataset"], wildcards.seed)}


def baseline_pairs(wildcards):
    experiment = config["experiments"][wildcards.experiment]
    return [
        {"source": s, "target": t, "x_path": network_path(experiment["dataset"], s),
         "y_path": network_path(experiment["dataset"], t)}
        for s, t in experiment["pairs"]
    ]


# --- used by three_level.smk


THREE = config.get("three_level") or {}


def three_level_blocks():
    n = len(THREE.get("revisions", []))
    return range(-(-n // THREE["block_size"])) if THREE else range(0)


def block_revisions(block):
    size = THREE["block_size"]
    return THREE["revisions"][int(block) * size:(int(block) + 1) * size]


# --- used by subsampling.smk


SUBSAMPLING = config.get("subsampling") or {}


# --- used by report.smk

from motalign.workflow.reporting import TABLES, figure_specs, table_experiments, table_ids

TABLE_IDS = table_ids(config)
FIGURES = figure_specs(config)
COMPARE_WITH_PAPER = config.get("report", {}).get("compare_with_paper", False)


def table_outputs(table_id):
    outputs = [R("tables", f"{table_id}.{ext}") for ext in ("csv", "md", "tex")]
    if COMPARE_WITH_PAPER:
        outputs.append(R("tables", f"{table_id}_vs_paper.md"))
    return outputs


def table_inputs(wildcards):
    experiments = table_experiments(wildcards.table_id, config)
    inputs = {"scores": [experiment_scores(e) for e in experiments]}
    kind = TABLES[wildcards.table_id].kind
    if kind in ("global", "linear_predictivity"):
        inputs["baselines"] = [R("baselines", kind, e, f"seed{s}.json") for e in experiments for s in experiment_seeds(e)]
    return inputs


def figure_input_map(wildcards):
    """{(source, target, method): (outer json paths, outer npz paths)} for pair figures,
    else {"files": [...]}."""
    spec = FIGURES[wildcards.figure_id]
    if spec.kind == "pairs":
        out = {}
        for source, target in spec.pairs:
            for _, method, _ in spec.variants:
                jsons = [outer_json(spec.experiment, method, source, target, s)
                         for s in experiment_seeds(spec.experiment)]
                out[source, target, method] = (jsons, [j[: -len(".json")] + ".npz" for j in jsons])
        return out
    if spec.kind in ("linear_predictivity", "rsa"):
        return {"files": baseline_jsons(spec.kind)}
    if spec.kind == "subsampling":
        return {"files": [R("scores", "subsampling.csv")]}
    key = pair_key(THREE["source"], THREE["target"])
    return {"files": [R("three_level", f"{key}.npz"), R("three_level", f"{key}.json")]}


def figure_inputs(wildcards):
    files = []
    for value in figure_input_map(wildcards).values():
        files += value if isinstance(value, list) else value[0] + value[1]
    return {"files": files}


def report_targets():
    targets = [t for table_id in TABLE_IDS for t in table_outputs(table_id)]
    targets += [R("figures", f"{f}.{ext}") for f in FIGURES for ext in ("pdf", "png")]
    return targets
