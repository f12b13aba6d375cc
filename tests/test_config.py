"""Config checks run before any job: the schema (and its defaults), then the
cross-references."""

import copy
from pathlib import Path

import pytest
import yaml

from motalign.inner import SETTINGS
from motalign.inner import types as engine
from motalign.workflow.config import MOT_ENGINE_KEYS, ConfigError, check_config, mot_settings, n_layers, n_shards
from motalign.workflow.shards import shard_pairs

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def load(name):
    return yaml.safe_load((ROOT / "config" / name).read_text())


def schema():
    return yaml.safe_load(SCHEMA.read_text())


def validated(config):
    """The config as the Snakefile sees it: validated, every default filled in."""
    utils = pytest.importorskip("snakemake.utils")
    utils.validate(config, str(SCHEMA), set_default=True)
    return config


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "test.yaml"])
def test_shipped_configs_are_valid(name):
    jsonschema = pytest.importorskip("jsonschema")
    config = load(name)
    jsonschema.validate(config, schema())
    check_config(config)
    check_config(validated(config))


def test_paper_config_covers_the_spec():
    config = load("paper.yaml")
    assert config["seeds"] == [0, 1, 2, 3, 4]
    assert len(config["experiments"]["llm"]["pairs"]) == 6
    assert len(config["experiments"]["nsd"]["pairs"]) == 6
    assert len(config["experiments"]["vit"]["pairs"]) == 10
    assert len(config["experiments"]["nsd_vit"]["pairs"]) == 16
    assert len(config["three_level"]["revisions"]) == 154
    assert n_layers(config, "llama_3b") == 28 and n_layers(config, "subjA") == 7


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["experiments"]["llm"]["pairs"].append(["llama_s", "nope"]),
     r"experiments\.llm\.pairs\[6\]: network 'nope'"),
    (lambda c: c["experiments"]["llm"].update(dataset="digits"), r"experiments\.llm\.pairs\[0\]: text model"),
    (lambda c: c["experiments"]["vit"]["pairs"].append(["subjA", "mae_b"]),
     r"experiments\.vit\.pairs\[10\]: brain 'subjA'"),
    (lambda c: c["models"]["llama_s"]["train"].update(dataset="digits"), r"models\.llama_s\.train\.dataset"),
    (lambda c: c["three_level"]["revisions"].append("step999"), r"three_level\.revisions: \['step999'\]"),
    (lambda c: c["baselines"].update(rsa=["missing"]), r"baselines\.rsa: unknown experiment 'missing'"),
    (lambda c: c["subsampling"].update(target="ghost"), r"subsampling\.target: unknown model 'ghost'"),
])
def test_cross_reference_errors_name_the_key(edit, key):
    config = copy.deepcopy(load("config.yaml"))
    edit(config)
    with pytest.raises(ConfigError, match=key):
        check_config(config)


@pytest.mark.parametrize("mot, path", [
    ({"solver": "lp"}, ["mot", "solver"]),
    ({"device": "gpu"}, ["mot", "device"]),
    ({"threads": 0}, ["mot", "threads"]),
    ({"epsilon": 0}, ["mot", "epsilon"]),
    ({"n_jobs": 2}, ["mot"]),
])
def test_schema_rejects_bad_engine_settings(mot, path):
    jsonschema = pytest.importorskip("jsonschema")
    config = copy.deepcopy(load("config.yaml"))
    config["mot"].update(mot)
    with pytest.raises(jsonschema.ValidationError) as error:
        jsonschema.validate(config, schema())
    assert list(error.value.absolute_path) == path


def test_shards_cover_every_pair_once():
    pairs = [p for k in range(4) for p in shard_pairs(3, 5, 4, k)]
    assert sorted(pairs) == [(l, m) for l in range(3) for m in range(5)]
    config = {"shard_size": 4, "include_embeddings": True, "brains": {},
              "models": {"a": {"source": "hub", "blocks": 2}, "b": {"source": "hub", "blocks": 4}}}
    assert n_layers(config, "a") == 3 and n_shards(config, "a", "b") == 4
    with pytest.raises(ValueError, match="shard 4 is out of range"):
        shard_pairs(3, 5, 4, 4)


def test_schema_engine_defaults_are_the_librarys():
    """The workflow's engine defaults are the library's (motalign.inner.types), but for the
    device: the workflow uses a GPU when one is visible ("auto"), the library the CPU."""
    mot = schema()["properties"]["mot"]["properties"]
    assert mot["solver"]["default"] == engine.DEFAULT_SOLVER
    assert mot["epsilon"]["default"] == engine.DEFAULT_EPSILON
    assert mot["max_iter"]["default"] == engine.DEFAULT_MAX_ITER
    assert mot["tol"]["default"] == engine.DEFAULT_TOL
    assert mot["device"]["default"] == "auto" and engine.DEFAULT_DEVICE == "cpu"
    # every engine setting but n_jobs (each job's threads) is a key of the mot section
    assert set(MOT_ENGINE_KEYS) == set(SETTINGS) - {"n_jobs"} and set(MOT_ENGINE_KEYS) <= set(mot)


def test_sections_left_out_take_the_schema_defaults():
    config = load("test.yaml")
    for section in ("mot", "extraction", "include_embeddings", "baselines", "report"):
        config.pop(section, None)
    config["nsd"].pop("simulation")
    config = validated(config)
    defaults = schema()["properties"]
    assert config["mot"] == {key: value["default"] for key, value in defaults["mot"]["properties"].items()}
    assert mot_settings(config) == {"max_iter": 30, "tol": 1e-7, "solver": "exact", "device": "auto",
                                    "epsilon": 1e-3}
    assert config["extraction"] == {"batch_size": 32, "device": "auto", "gpus": 0, "threads": 1}
    assert config["include_embeddings"] is False and config["baselines"] == {}
    assert config["report"] == {"compare_with_paper": False}
    assert config["nsd"]["simulation"] == {"n_images": 160, "n_shared": 100, "n_specific": 4, "n_sessions": 3,
                                           "volume_shape": [10, 10, 10], "seed": 0}
    # a section that is given keeps its values and gains the defaults of the keys it leaves out
    config = validated({**load("test.yaml"), "mot": {"solver": "sinkhorn", "threads": 4}})
    assert mot_settings(config) == {"max_iter": 30, "tol": 1e-7, "solver": "sinkhorn", "device": "auto",
                                    "epsilon": 1e-3}
    assert config["mot"]["threads"] == 4 and config["mot"]["gpus"] == 0


def test_shipped_configs_give_every_engine_setting():
    for name in ("config.yaml", "paper.yaml", "test.yaml"):
        settings = mot_settings(validated(load(name)))
        assert list(settings) == list(MOT_ENGINE_KEYS)
