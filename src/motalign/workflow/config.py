"""Cross-reference checks of a workflow configuration, run before any job, and the
look-ups the rules share.

The JSON schema (``workflow/schemas/config.schema.yaml``, applied by
:func:`motalign.workflow.config_schema.validate_config`) checks types, required keys,
unknown keys and repeated entries, and fills in every default; this module checks what a
schema cannot: that every experiment names defined data sets and networks, that brains
are only paired on their NSD data set, that modalities match (experiments, subsampling,
three-level analysis), and that three-level revisions exist.  Every error names the
offending config key.
"""

from __future__ import annotations

import math

METHODS = {"mot": False, "mot_r": True}  # method name -> rotation

#: fewest stimuli on either side of a train/held-out split
#: (:func:`motalign.workflow.data_jobs.make_split`; checked before any job by
#: :func:`motalign.workflow.config_schema.check_stimulus_counts`)
MIN_SPLIT_SIDE = 2

#: the keys of the config's ``mot`` section that are engine settings
#: (:data:`motalign.inner.SETTINGS` but ``n_jobs``, which is each job's ``threads``); the
#: other keys (``threads``, ``gpus``) are the jobs' resources
MOT_ENGINE_KEYS = ("max_iter", "tol", "solver", "device", "epsilon")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the config key."""


def network_kind(config: dict, name: str) -> str:
    """"model" or "brain"."""
    if name in config.get("models", {}):
        return "model"
    if name in config.get("brains", {}):
        return "brain"
    raise ConfigError(f"network {name!r} is defined neither under 'models' nor under 'brains'")


def mot_settings(config: dict) -> dict:
    """The engine settings that every MOT job of the workflow gets (``params: mot=``), from
    the validated ``mot`` section; a job passes them on with its threads as ``n_jobs``."""
    return {key: config["mot"][key] for key in MOT_ENGINE_KEYS}


def n_layers(config: dict, name: str) -> int:
    """Number of layers a network's activation file holds (declared, so that the DAG can be
    planned without data): transformer blocks (+1 with ``include_embeddings``), or the
    number of NSD regions for a brain."""
    if network_kind(config, name) == "brain":
        return len(config["nsd"]["regions"])
    model = config["models"][name]
    if model["source"] == "tiny":
        blocks = model["architecture"]["num_hidden_layers"]
    else:
        blocks = model["blocks"]
    return int(blocks) + int(bool(config["include_embeddings"]))


def inline_inner(config: dict, source: str, target: str) -> bool:
    """Whether the outer-OT job of this network pair runs the inner level itself: its layer
    pairs fit in one shard and ``inline_single_shard`` is on.  A separate inner-OT job would
    then only add a process start and a shard file, never parallelism (the outer job waits
    for its single shard), so the embedded default's hundreds of small pairs run as one job
    each, while the paper's pairs (hundreds of layer pairs) keep their shards."""
    fits = n_layers(config, source) * n_layers(config, target) <= config["shard_size"]
    return bool(config.get("inline_single_shard", True)) and fits


def n_shards(config: dict, source: str, target: str) -> int:
    """Inner-OT shards of a network pair: none when its outer job runs the inner level
    (:func:`inline_inner`)."""
    if inline_inner(config, source, target):
        return 0
    return math.ceil(n_layers(config, source) * n_layers(config, target) / config["shard_size"])


def _dataset_modality(config, dataset):
    return config["datasets"][dataset]["kind"]


def check_config(config: dict) -> None:
    """Raise :class:`ConfigError` naming the key of the first inconsistency found."""
    datasets = config["datasets"]
    models = config.get("models", {})
    brains = config.get("brains", {})
    both = sorted(set(models) & set(brains))
    if both:
        raise ConfigError(f"brains.{both[0]}: the name is also used under 'models'; a network needs a name of its own")
    for name, model in models.items():
        if model["source"] == "tiny":
            train = model.get("train")
            if not train or "architecture" not in model:
                raise ConfigError(f"models.{name}: a tiny model needs 'architecture' and 'train'")
            if train["dataset"] not in datasets:
                raise ConfigError(f"models.{name}.train.dataset: unknown data set {train['dataset']!r}")
            if _dataset_modality(config, train["dataset"]) != model["modality"]:
                raise ConfigError(
                    f"models.{name}.train.dataset: a {model['modality']} model cannot be trained "
                    f"on the {_dataset_modality(config, train['dataset'])} data set {train['dataset']!r}"
                )
        elif model["source"] == "package":
            if "package" not in model or "blocks" not in model:
                raise ConfigError(f"models.{name}: a packaged checkpoint needs 'package' and 'blocks'")
            if model["package"]["format"] == "efficientnet_pytorch" and model["family"] != "timm":
                raise ConfigError(f"models.{name}.family: an efficientnet_pytorch checkpoint is a timm model")
        elif "blocks" not in model or "id" not in model:
            raise ConfigError(f"models.{name}: a hub model needs 'id' and 'blocks'")
    for name, dataset in datasets.items():
        if dataset["source"] == "nsd" and "nsd" not in config:
            raise ConfigError(f"datasets.{name}: source 'nsd' needs an 'nsd' section")
    for name, experiment in config.get("experiments", {}).items():
        key = f"experiments.{name}"
        dataset = experiment["dataset"]
        if dataset not in datasets:
            raise ConfigError(f"{key}.dataset: unknown data set {dataset!r}")
        for method in experiment["methods"]:
            if method not in METHODS:
                raise ConfigError(f"{key}.methods: unknown method {method!r}; use {sorted(METHODS)}")
        for i, pair in enumerate(experiment["pairs"]):
            for network in pair:
                try:
                    kind = network_kind(config, network)
                except ConfigError as error:
                    raise ConfigError(f"{key}.pairs[{i}]: {error}") from None
                if kind == "brain" and datasets[dataset]["source"] != "nsd":
                    raise ConfigError(
                        f"{key}.pairs[{i}]: brain {network!r} only has responses on an NSD "
                        f"data set, not on {dataset!r}"
                    )
                if kind == "model" and models[network]["modality"] != datasets[dataset]["kind"]:
                    raise ConfigError(
                        f"{key}.pairs[{i}]: {models[network]['modality']} model {network!r} "
                        f"cannot run on the {datasets[dataset]['kind']} data set {dataset!r}"
                    )
            if pair[0] == pair[1]:
                raise ConfigError(f"{key}.pairs[{i}]: a network paired with itself ({pair[0]!r})")
    for kind, names in config.get("baselines", {}).items():
        for experiment in names:
            if experiment not in config.get("experiments", {}):
                raise ConfigError(f"baselines.{kind}: unknown experiment {experiment!r}")
    sub = config.get("subsampling")
    if sub:
        for side in ("source", "target"):
            if sub[side] not in models:
                raise ConfigError(f"subsampling.{side}: unknown model {sub[side]!r}")
        if sub["dataset"] not in datasets:
            raise ConfigError(f"subsampling.dataset: unknown data set {sub['dataset']!r}")
        _check_modality(config, "subsampling", sub)
    three = config.get("three_level")
    if three:
        for side in ("source", "target"):
            model = models.get(three[side])
            if model is None:
                raise ConfigError(f"three_level.{side}: unknown model {three[side]!r}")
            if model["source"] == "tiny":
                steps = model["train"].get("checkpoint_steps") or []
                have = {f"step{s}" for s in steps}
                missing = [r for r in three["revisions"] if r not in have]
                if missing:
                    raise ConfigError(
                        f"three_level.revisions: {missing} are not among the checkpoints that "
                        f"models.{three[side]}.train.checkpoint_steps saves"
                    )
        if three["dataset"] not in datasets:
            raise ConfigError(f"three_level.dataset: unknown data set {three['dataset']!r}")
        _check_modality(config, "three_level", three)


def _check_modality(config: dict, section: str, spec: dict) -> None:
    """The data set of an analysis (``subsampling``, ``three_level``) has the modality of
    its source and target models."""
    kind = _dataset_modality(config, spec["dataset"])
    for side in ("source", "target"):
        model = config["models"][spec[side]]
        if model["modality"] != kind:
            raise ConfigError(
                f"{section}.dataset: the {kind} data set {spec['dataset']!r} does not suit {section}.{side}, "
                f"the {model['modality']} model {spec[side]!r}"
            )
