"""Validation of a workflow configuration before any job: the JSON schema
(``workflow/schemas/config.schema.yaml``) with its defaults, the keys a schema cannot
know, the cross-references (:func:`motalign.workflow.config.check_config`) and the
stimulus counts.

:func:`validate_config` replaces Snakemake's ``validate(config, schema, set_default=True)``:

* defaults are filled in exactly as Snakemake's ``set_default`` does (the schema stays the
  only place that defines them): wherever validation meets a ``properties`` keyword on a
  mapping, each property missing from the mapping that has a ``default`` gets a copy of it,
  before its value is validated -- so a section with ``default: {}`` that is left out
  becomes ``{}`` and is then filled in with its own keys' defaults;
* each problem becomes one :class:`~motalign.workflow.config.ConfigError` with a one-line
  message: the key path, what is wrong, and for a misspelled key the closest allowed key
  (``models.tiny_a.architecture.hiden_size: unknown key; did you mean 'hidden_size'?``);
  no schema or config dump.  When there are several, the first is raised (unknown keys
  first: a misspelling also makes the key it stands for missing) and the message says at
  how many other keys there are problems.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
from pathlib import Path

import jsonschema
import yaml
from jsonschema import validators

from ..datasets.nsd import simulate
from ..models.pretrained import package_specs
from ..models.tiny import TEXT_FAMILIES, VISION_FAMILIES, default_architecture
from .config import MIN_SPLIT_SIDE, ConfigError, check_config, network_kind
from .reporting import CATALOGUE
from .sizes import n_fit, n_stimuli

__all__ = ["SCHEMA_PATH", "validate_config", "validate_schema", "check_architectures", "check_report",
           "check_stimulus_counts", "MIN_SPLIT_SIDE"]

#: the workflow's config schema (in the repository, beside the rule files)
SCHEMA_PATH = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
#: how many allowed keys an "unknown key" message lists when none is close
_MAX_LISTED = 16
#: JSON schema types as a YAML file has them
_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "a boolean (true or false)", "null": "nothing (null)"}


def validate_config(config: dict, schema_path=None) -> dict:
    """Check a workflow config before any job and fill in the schema's defaults (in place;
    the config is also returned): the schema, the tiny models' architecture keys, the
    cross-references, the report's pairs and the stimulus counts.  Raises one
    :class:`ConfigError`."""
    validate_schema(config, schema_path)
    check_architectures(config)
    check_config(config)
    try:
        package_specs(config)  # the packaged checkpoints' pins, as the rules read them
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_report(config)
    check_stimulus_counts(config)
    return config


# --------------------------------------------------------------------------- the schema


@functools.lru_cache(maxsize=4)
def _read_schema(path: str, mtime_ns: int) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _load_schema(schema_path) -> dict:
    """The schema (read once per file version; validation never changes it: the defaults
    it fills in are copies)."""
    path = Path(schema_path or SCHEMA_PATH).resolve()
    return _read_schema(str(path), path.stat().st_mtime_ns)


def _with_defaults(validator_class):
    """``validator_class`` that fills in defaults as Snakemake's ``set_default`` does (the
    jsonschema FAQ recipe), on mappings only and with a copy of each default."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def validate_schema(config: dict, schema_path=None) -> dict:
    """Validate ``config`` against the schema, filling in its defaults (in place)."""
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, got {_describe(config)}")
    schema = _load_schema(schema_path)
    validator_class = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    errors = list(_with_defaults(validator_class)(schema).iter_errors(config))
    if errors:
        # unknown keys first (a misspelled key is also a missing one), then in the schema's order
        errors.sort(key=lambda e: e.validator != "additionalProperties")
        first = list(errors[0].absolute_path)
        others = len({tuple(e.absolute_path) for e in errors if list(e.absolute_path) != first})
        message = _message(errors[0], schema)
        if others:
            message += f" (and problems at {others} other key{'s' if others > 1 else ''}: fix this one and run again)"
        raise ConfigError(message)
    return config


def _path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _key(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(value) -> str:
    kind = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing (null)"}.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)) or value is None:
        return kind
    return f"{kind} ({_short(value)})"


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _suggest(word, allowed) -> str:
    """"; did you mean 'x'?" or "; expected one of ..." (or nothing, when the list is long)."""
    allowed = [str(a) for a in allowed]
    close = difflib.get_close_matches(str(word), allowed, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    if len(allowed) <= _MAX_LISTED:
        return "; expected one of " + ", ".join(repr(a) for a in allowed)
    return ""


def _at(schema: dict, schema_path) -> dict:
    node = schema
    for part in schema_path:
        node = node[part]
    return node


def _condition(error, schema) -> str:
    """' (when source is 'file')' for an error inside an if/then, else ''."""
    parts = list(error.schema_path)
    if "then" not in parts:
        return ""
    where = parts[: len(parts) - 1 - parts[::-1].index("then")]
    condition = _at(schema, where).get("if", {}).get("properties", {})
    said = [f"{k} is {v['const']!r}" for k, v in condition.items() if isinstance(v, dict) and "const" in v]
    return f" (when {' and '.join(said)})" if said else ""


def _first_duplicate(items):
    for j, item in enumerate(items):
        for i in range(j):
            if items[i] == item and isinstance(items[i], bool) == isinstance(item, bool):
                return i, j
    return None


def _message(error, schema) -> str:
    path = _path(error.absolute_path)
    kind, value, instance = error.validator, error.validator_value, error.instance
    if "propertyNames" in error.schema_path:  # the instance is the offending key itself
        if kind == "enum":
            return f"{_key(path, instance)}: unknown key{_suggest(instance, value)}"
        return f"{_key(path, instance)}: invalid name; names use only letters, digits, '_', '.' and '-'"
    if kind == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extra = [k for k in instance if k not in allowed]
        key = extra[0] if extra else "?"
        return f"{_key(path, key)}: unknown key{_suggest(key, allowed)}"
    if kind == "required":
        missing = [k for k in value if k not in instance] or list(value)
        return f"{_key(path, missing[0])}: required key missing{_condition(error, schema)}"
    if kind == "not" and isinstance(value, dict) and "required" in value:
        present = [k for k in value["required"] if k in instance]
        return f"{_key(path, present[0] if present else value['required'][0])}: not allowed here" \
               f"{_condition(error, schema)}"
    where = path or "the config"
    if kind == "type":
        expected = " or ".join(_TYPE_NAMES.get(t, t) for t in (value if isinstance(value, list) else [value]))
        return f"{where}: expected {expected}, got {_describe(instance)}"
    if kind == "enum":
        return f"{where}: {_short(instance)} is not allowed{_suggest(instance, value)}"
    if kind == "pattern":
        return f"{where}: {_short(instance)} does not match {value!r}"
    if kind == "uniqueItems":
        found = _first_duplicate(instance)
        if found:
            i, j = found
            return (f"{where}[{j}]: {_short(instance[j])} is listed twice (also at [{i}]); each entry must "
                    "appear once (a repeated entry repeats its jobs and counts its results twice)")
        return f"{where}: an entry is listed twice"
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if kind in bounds:
        return f"{where}: {_short(instance)} must be {bounds[kind]} {value}"
    if kind in ("minItems", "maxItems"):
        word = "at least" if kind == "minItems" else "at most"
        return f"{where}: needs {word} {value} entr{'y' if value == 1 else 'ies'}, has {len(instance)}"
    if kind == "minProperties":
        return f"{where}: needs at least {value} entr{'y' if value == 1 else 'ies'}"
    if kind == "const":
        return f"{where}: must be {value!r}, got {_short(instance)}"
    text = error.message
    return f"{where}: {text if len(text) <= 160 else text[:157] + '...'}"


# --------------------------------------------------------------------------- tiny models


def _architecture_type(default):
    """(check, description) of an architecture value, from the family default's type."""
    if isinstance(default, bool):
        return (lambda v: isinstance(v, bool)), "a boolean"
    if isinstance(default, int):
        return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1), "an integer >= 1"
    return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0), "a number > 0"


def check_architectures(config: dict) -> None:
    """The ``architecture`` of every tiny model: a family the tiny builder has, the
    family's modality, and only the keys that the builder sets (those of
    :func:`motalign.models.tiny.default_architecture`), of their types."""
    for name, model in (config.get("models") or {}).items():
        if model.get("source") != "tiny":
            continue
        key = f"models.{name}"
        family = model["family"]
        if family not in TEXT_FAMILIES + VISION_FAMILIES:
            raise ConfigError(f"{key}.family: no tiny {family!r} model can be built; a tiny model's family is one "
                              f"of {', '.join(TEXT_FAMILIES + VISION_FAMILIES)}")
        modality = "text" if family in TEXT_FAMILIES else "images"
        if model["modality"] != modality:
            raise ConfigError(f"{key}.modality: a tiny {family} model takes {modality}, not {model['modality']!r}")
        defaults = default_architecture(family)
        for arch_key, value in model["architecture"].items():
            if arch_key not in defaults:
                raise ConfigError(f"{key}.architecture.{arch_key}: unknown key{_suggest(arch_key, defaults)}")
            valid, described = _architecture_type(defaults[arch_key])
            if not valid(value):
                raise ConfigError(f"{key}.architecture.{arch_key}: expected {described}, got {_describe(value)}")


# --------------------------------------------------------------------------- report


def _figure_experiments() -> dict:
    """{figure id: experiment} of the figures whose pairs ``report.<figure id>`` chooses
    (those with ``first_pairs`` in the catalogue)."""
    return {figure_id: experiment
            for experiment, entry in CATALOGUE["experiments"].items()
            for figure_id, figure in entry.get("figures", {}).items() if "first_pairs" in figure}


def check_report(config: dict) -> None:
    """Every pair that ``report.<figure id>`` chooses names defined networks and is a pair
    of the experiment that the figure shows (its transport plans are that experiment's)."""
    experiments = config.get("experiments") or {}
    owners = _figure_experiments()
    for figure_id, pairs in (config.get("report") or {}).items():
        if figure_id not in owners:
            continue  # not a list of pairs (compare_with_paper)
        experiment = owners[figure_id]
        for i, pair in enumerate(pairs):
            key = f"report.{figure_id}[{i}]"
            for network in pair:
                try:
                    network_kind(config, network)
                except ConfigError as error:
                    raise ConfigError(f"{key}: {error}") from None
            if experiment not in experiments:
                raise ConfigError(f"{key}: {figure_id} shows pairs of experiments.{experiment}, which this config "
                                  f"does not define; remove report.{figure_id} or add the experiment")
            if list(pair) not in [list(p) for p in experiments[experiment]["pairs"]]:
                raise ConfigError(f"{key}: the pair {list(pair)} is not among experiments.{experiment}.pairs, whose "
                                  f"transport plans {figure_id} shows; choose one of them or add it there")


# --------------------------------------------------------------------------- stimulus counts


def _datasets_split(config: dict) -> dict:
    """{data set: the config key that splits it} of every data set a job splits."""
    used = {}
    for name, experiment in (config.get("experiments") or {}).items():
        used.setdefault(experiment["dataset"], f"experiments.{name}.dataset")
    for analysis in ("subsampling", "three_level"):
        if config.get(analysis):
            used.setdefault(config[analysis]["dataset"], f"{analysis}.dataset")
    return used


def _declared_count(config: dict, dataset: str):
    """The stimulus count the config declares for a data set, or None (a file, counted
    when its job reads it)."""
    spec = config["datasets"][dataset]
    if spec["source"] == "file" and "expected_count" not in spec:
        return None
    if spec["source"] == "imagenet" and "per_class" not in spec:
        return None
    if spec["source"] == "nsd" and "nsd" not in config:
        return None
    return n_stimuli(config, dataset)


def check_stimulus_counts(config: dict) -> None:
    """What the stimulus counts must allow: ``fit_fraction`` leaves at least
    :data:`MIN_SPLIT_SIDE` fit and held-out stimuli of each data set that is split (where
    the config declares the count), and the simulated NSD's ``n_images`` hold its shared
    and subject-specific images in sessions of equal length
    (:func:`motalign.datasets.nsd.simulate.simulate_nsd`)."""
    fraction = config["fit_fraction"]
    for dataset, used_by in _datasets_split(config).items():
        total = _declared_count(config, dataset)
        if total is None:
            continue
        fit = n_fit(config, total)
        if not MIN_SPLIT_SIDE <= fit <= total - MIN_SPLIT_SIDE:
            raise ConfigError(
                f"fit_fraction: {fraction} of the {total} stimuli of datasets.{dataset} ({used_by}) leaves {fit} "
                f"to fit and {total - fit} held out; each side needs at least {MIN_SPLIT_SIDE}")
    nsd = config.get("nsd")
    if not nsd or nsd["source"] != "simulated":
        return
    sim = nsd["simulation"]
    n_images, n_shared, n_specific = sim["n_images"], sim["n_shared"], sim["n_specific"]
    if n_shared + 8 * n_specific > n_images:
        raise ConfigError(
            f"nsd.simulation.n_shared: {n_images} images (nsd.simulation.n_images) cannot hold {n_shared} shared "
            f"+ 8 subjects x {n_specific} subject-specific images (nsd.simulation.n_specific); at most "
            f"{n_images - 8 * n_specific} shared images fit")
    repetitions = inspect.signature(simulate.simulate_nsd).parameters["repetitions"].default
    trials = (n_shared + n_specific) * repetitions
    if trials % sim["n_sessions"]:
        raise ConfigError(
            f"nsd.simulation.n_sessions: each subject's {n_shared + n_specific} images x {repetitions} repetitions = "
            f"{trials} trials cannot be split evenly over {sim['n_sessions']} sessions; change n_sessions, "
            "n_shared or n_specific")
