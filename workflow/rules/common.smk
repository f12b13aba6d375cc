# Config look-ups and target lists shared by every rule file.  The Snakefile has validated
# the config (motalign.workflow.config_schema.validate_config: the schema's types and
# defaults, then the cross-references); the output layouts are those of paths.smk.

import re

from motalign.models.pretrained import package_key, package_specs
from motalign.workflow import job_requests
from motalign.workflow.config import (
    METHODS,
    inline_inner,
    mot_settings,
    n_layers,
    n_shards,
    network_kind,
)


def rule_resources(rule):
    """A rule's `mem_mb` and `runtime`, from the size model of its inputs' shapes
    (motalign.workflow.job_requests; the same model as `motalign estimate`)."""
    return job_requests.resources(config, rule)


def script_code(name):
    """The SHA-256 of workflow/scripts/<name>, the `code` param of the rules that run it.
    An edited script changes the param, and the params trigger re-runs those jobs.  This
    replaces Snakemake's code trigger for scripts, which compares the script's mtime and so
    fired for every job of results moved to a fresh clone (profiles/default/config.yaml)."""
    import hashlib  # deferred: used by this helper only

    with open(os.path.join(workflow.basedir, "workflow", "scripts", name), "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


# Relative data paths that do not exist in the working directory are taken relative to the
# repository, so that `snakemake -d elsewhere` finds the shipped sentence file.  They stay
# relative (to the working directory): an absolute path of the checkout in a job's params or
# inputs would re-run the job, and everything after it, from any other checkout.
for _dataset in config["datasets"].values():
    if "path" in _dataset and not os.path.isabs(_dataset["path"]) and not os.path.exists(_dataset["path"]):
        _dataset["path"] = os.path.relpath(os.path.join(workflow.basedir, _dataset["path"]))

# --- the MOT jobs (inner_ot, outer_ot, subsample, three_level_block)
MOT = config["mot"]
#: the engine settings passed to every MOT job as `params: mot=`; each job adds its
#: `threads` as n_jobs (layer pairs solved in parallel inside the job)
MOT_SETTINGS = mot_settings(config)
MOT_THREADS = MOT["threads"]
MOT_RESOURCES = dict(gpu=MOT["gpus"]) if MOT["gpus"] else {}
#: an outer-OT job that runs its pair's inner level (inline_inner) asks for the MOT GPUs too
OUTER_MOT_RESOURCES = (
    dict(gpu=lambda wc: MOT["gpus"] if inline_inner(config, wc.source, wc.target) else 0)
    if MOT["gpus"]
    else {}
)
# GPU or Sinkhorn MOT jobs need PyTorch: they use the torch environment.
MOT_ENV = (
    "../../envs/torch.yaml"
    if MOT["gpus"] or MOT["solver"] == "sinkhorn" or str(MOT["device"]).startswith("cuda")
    else "../../envs/ot.yaml"
)

# --- the extraction jobs (extract_activations, extract_revision)
EXTRACTION = config["extraction"]
EXTRACTION_SETTINGS = {key: EXTRACTION[key] for key in ("batch_size", "device")}
EXTRACTION_RESOURCES = dict(**rule_resources("extract_activations"), gpu=EXTRACTION["gpus"])

# --- optional analyses: an empty mapping when the config leaves them out
THREE_LEVEL = config.get("three_level") or {}
SUBSAMPLING = config.get("subsampling") or {}


# --- paths of the data


def stimuli_path(dataset):
    return STIMULI_NPZ.format(dataset=dataset)


def split_path(dataset, seed):
    return SPLIT_NPZ.format(dataset=dataset, seed=seed)


def network_path(dataset, name, revision=None):
    """Activation file of a model (optionally at a revision) or response file of a brain."""
    if network_kind(config, name) == "brain":
        return BRAIN_NPZ.format(dataset=dataset, brain=name)
    if revision:
        return REVISION_ACTIVATIONS_NPZ.format(dataset=dataset, model=name, revision=revision)
    return ACTIVATIONS_NPZ.format(dataset=dataset, model=name)


def nsd_root():
    """The NSD folder: simulated here, mirrored from S3, or a local copy (nsd.root)."""
    source = config["nsd"]["source"]
    if source == "simulated":
        return NSD_SIMULATED_DIR
    if source == "s3":
        return NSD_MIRROR_DIR
    return config["nsd"]["root"]


def model_dir(model):
    return MODEL_DIR.format(model=model)


def models_from(source):
    """Names of the config's models with this source (tiny, hub, package)."""
    return [name for name, model in config.get("models", {}).items() if model["source"] == source]


def one_of(names):
    """A wildcard constraint that matches exactly these names (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


#: the packaged checkpoints' specs, by package key (motalign.models.pretrained)
PACKAGES = package_specs(config)


def package_wheel(model):
    return PACKAGE_WHEEL.format(package=package_key(config["models"][model]["package"]))


def nsd_subjects():
    """The NSD subjects of the configured brains."""
    return sorted({brain["subject"] for brain in config["brains"].values()})


# --- experiments and their outputs


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


def outer_paths(layout, experiment, method, source, target, seed):
    """OUTER_JSON or OUTER_NPZ of one outer-OT job."""
    return layout.format(experiment=experiment, method=method, source=source, target=target, seed=seed)


def outer_json(experiment, method, source, target, seed):
    return outer_paths(OUTER_JSON, experiment, method, source, target, seed)


def outer_npz(experiment, method, source, target, seed):
    return outer_paths(OUTER_NPZ, experiment, method, source, target, seed)


def shard_paths(experiment, method, source, target, seed):
    return expand(
        INNER_SHARD_NPZ,
        experiment=experiment,
        method=method,
        source=source,
        target=target,
        seed=seed,
        shard=range(n_shards(config, source, target)),
    )


def experiment_scores(experiment):
    return SCORES_CSV.format(experiment=experiment)


def baseline_jsons(kind=None):
    """The results of every configured baseline (of one `kind`, if given)."""
    return [
        BASELINE_JSON.format(kind=k, experiment=experiment, seed=seed)
        for k, experiments in config["baselines"].items()
        if kind in (None, k)
        for experiment in experiments
        for seed in experiment_seeds(experiment)
    ]


def subsampling_jsons():
    if not SUBSAMPLING:
        return []
    return [
        SUBSAMPLING_JSON.format(method=method, fraction=fraction, seed=seed)
        for method in SUBSAMPLING["methods"]
        for fraction in SUBSAMPLING["fractions"]
        for seed in config["seeds"]
    ]


def three_level_blocks():
    """Block numbers of the three-level checkpoint costs."""
    if not THREE_LEVEL:
        return range(0)
    return range(-(-len(THREE_LEVEL["revisions"]) // THREE_LEVEL["block_size"]))


def block_revisions(block):
    size = THREE_LEVEL["block_size"]
    return THREE_LEVEL["revisions"][int(block) * size : (int(block) + 1) * size]


def three_level_paths(layout):
    """THREE_LEVEL_JSON or THREE_LEVEL_NPZ of the configured three-level analysis."""
    return layout.format(source=THREE_LEVEL["source"], target=THREE_LEVEL["target"])


def three_level_block_paths(source, target):
    return expand(THREE_LEVEL_BLOCK_NPZ, source=source, target=target, block=three_level_blocks())


def intermediate_targets():
    """Every stored intermediate result.  `rule all` asks for them too, so that deleting any
    one of them rebuilds it, and then (being newer) everything that depends on it."""
    targets = []
    for experiment, spec in config["experiments"].items():
        for job in experiment_jobs(experiment):
            targets += [outer_json(experiment, *job), outer_npz(experiment, *job)]
            targets += shard_paths(experiment, *job)
        targets += [network_path(spec["dataset"], n) for pair in spec["pairs"] for n in pair]
        targets += [split_path(spec["dataset"], seed) for seed in experiment_seeds(experiment)]
    targets += subsampling_jsons()
    if THREE_LEVEL:
        targets += three_level_block_paths(THREE_LEVEL["source"], THREE_LEVEL["target"])
        targets += [
            network_path(THREE_LEVEL["dataset"], THREE_LEVEL[side], revision)
            for side in ("source", "target")
            for revision in THREE_LEVEL["revisions"]
        ]
    return list(dict.fromkeys(targets))


def nsd_datasets():
    """NSD data sets on which some experiment pairs brains (their voxel counts are reported)."""
    return sorted(
        {
            spec["dataset"]
            for spec in config["experiments"].values()
            if any(network_kind(config, n) == "brain" for pair in spec["pairs"] for n in pair)
        }
    )


def all_targets():
    targets = [experiment_scores(e) for e in config["experiments"]]
    targets += expand(VOXEL_COUNTS_CSV, dataset=nsd_datasets())
    targets += baseline_jsons()
    if SUBSAMPLING:
        targets.append(SUBSAMPLING_CSV)
    if THREE_LEVEL:
        targets.append(three_level_paths(THREE_LEVEL_JSON))
    targets.append(PROVENANCE_JSON)
    return targets + intermediate_targets()


# --- used by report.smk: the provenance rule


def provenance_inputs():
    """The activation (and brain response) files and the stimuli files of the run's
    experiments and analyses."""
    networks = [t for t in intermediate_targets() if t.endswith(".npz") and is_network_file(t)]
    datasets = [spec["dataset"] for spec in config["experiments"].values()]
    for analysis in (SUBSAMPLING, THREE_LEVEL):
        if analysis:
            datasets.append(analysis["dataset"])
    return {
        "activations": networks,
        "stimuli": [stimuli_path(d) for d in dict.fromkeys(datasets)],
    }


def is_network_file(path):
    """Whether a path is an activation or brain response file (below activations/ or brains/)."""
    return any(path.startswith(results_path(folder) + os.sep) for folder in ("activations", "brains"))


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
    if model["source"] in ("tiny", "package"):
        inputs["model"] = model_dir(wildcards.model)
    return inputs


def model_location(model_name):
    """Where extraction loads a model from: the folder made here (tiny, package) or the hub id."""
    model = config["models"][model_name]
    return model_dir(model_name) if model["source"] in ("tiny", "package") else model["id"]


# --- used by alignment.smk


def pair_inputs(wildcards):
    dataset = config["experiments"][wildcards.experiment]["dataset"]
    return {
        "x": network_path(dataset, wildcards.source),
        "y": network_path(dataset, wildcards.target),
        "split": split_path(dataset, wildcards.seed),
    }




# --- used by baselines.smk


def baseline_inputs(wildcards):
    experiment = config["experiments"][wildcards.experiment]
    networks = sorted({network_path(experiment["dataset"], n) for pair in experiment["pairs"] for n in pair})
    return {"networks": networks, "split": split_path(experiment["dataset"], wildcards.seed)}


def baseline_pairs(wildcards):
    experiment = config["experiments"][wildcards.experiment]
    return [
        {
            "source": s,
            "target": t,
            "x_path": network_path(experiment["dataset"], s),
            "y_path": network_path(experiment["dataset"], t),
        }
        for s, t in experiment["pairs"]
    ]


# --- used by report.smk

from motalign.workflow.reporting import TABLES, figure_specs, table_experiments, table_ids

TABLE_IDS = table_ids(config)
FIGURES = figure_specs(config)
COMPARE_WITH_PAPER = config["report"]["compare_with_paper"]


def table_outputs(table_id):
    layouts = [TABLE_CSV, TABLE_MD, TABLE_TEX] + ([TABLE_VS_PAPER_MD] if COMPARE_WITH_PAPER else [])
    return [layout.format(table_id=table_id) for layout in layouts]


def table_scores(wildcards):
    """{experiment: score file} of the experiments a table summarises."""
    return {e: experiment_scores(e) for e in table_experiments(wildcards.table_id, config)}


def table_inputs(wildcards):
    spec = TABLES[wildcards.table_id]
    experiments = table_experiments(wildcards.table_id, config)
    inputs = {"scores": [experiment_scores(e) for e in experiments]}
    if spec.baseline:
        inputs["baselines"] = [
            BASELINE_JSON.format(kind=spec.baseline, experiment=e, seed=s)
            for e in experiments
            for s in experiment_seeds(e)
        ]
    return inputs


def figure_input_map(wildcards):
    """{(source, target, method): (outer json paths, outer npz paths)} for pair figures,
    else {"files": [...]}."""
    spec = FIGURES[wildcards.figure_id]
    if spec.kind == "pairs":
        seeds = experiment_seeds(spec.experiment)
        return {
            (source, target, method): (
                [outer_json(spec.experiment, method, source, target, s) for s in seeds],
                [outer_npz(spec.experiment, method, source, target, s) for s in seeds],
            )
            for source, target in spec.pairs
            for method in spec.methods
        }
    if spec.baseline:
        return {"files": baseline_jsons(spec.baseline)}
    if spec.kind == "subsampling":
        return {"files": [SUBSAMPLING_CSV]}
    return {"files": [three_level_paths(THREE_LEVEL_NPZ), three_level_paths(THREE_LEVEL_JSON)]}


def figure_inputs(wildcards):
    files = []
    for value in figure_input_map(wildcards).values():
        files += value if isinstance(value, list) else value[0] + value[1]
    return {"files": files}


def report_targets():
    targets = [t for table_id in TABLE_IDS for t in table_outputs(table_id)]
    for figure_id in FIGURES:
        targets += [FIGURE_PDF.format(figure_id=figure_id), FIGURE_PNG.format(figure_id=figure_id)]
    return targets
