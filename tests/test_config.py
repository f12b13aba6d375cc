"""Config checks run before any job: the schema, then the cross-references."""

import copy
from pathlib import Path

import pytest
import yaml

from motalign.workflow.config import ConfigError, check_config, n_layers, n_shards
from motalign.workflow.shards import shard_pairs

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    return yaml.safe_load((ROOT / "config" / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "test.yaml"])
def test_shipped_configs_are_valid(name):
    jsonschema = pytest.importorskip("jsonschema")
    config = load(name)
    schema = yaml.safe_load((ROOT / "config" / "schema" / "config.schema.yaml").read_text())
    jsonschema.validate(config, schema)
    check_config(config)


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
    (lambda c: c["experiments"]["llm"]["pairs"].append(["llama_s", "nope"]), r"experiments\.llm\.pairs\[6\]: network 'nope'"),
    (lambda c: c["experiments"]["llm"].update(dataset="digits"), r"experiments\.llm\.pairs\[0\]: text model"),
    (lambda c: c["experiments"]["vit"]["pairs"].append(["subjA", "mae_b"]), r"experiments\.vit\.pairs\[10\]: brain 'subjA'"),
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
    schema = yaml.safe_load((ROOT / "config" / "schema" / "config.schema.yaml").read_text())
    with pytest.raises(jsonschema.ValidationError) as error:
        jsonschema.validate(config, schema)
    assert list(error.value.absolute_path) == path


def test_shards_cover_every_pair_once():
    pairs = [p for k in range(4) for p in shard_pairs(3, 5, 4, k)]
    assert sorted(pairs) == [(l, m) for l in range(3) for m in range(5)]
    config = {"shard_size": 4, "include_embeddings": True, "brains": {},
              "models": {"a": {"source": "hub", "blocks": 2}, "b": {"source": "hub", "blocks": 4}}}
    assert n_layers(config, "a") == 3 and n_shards(config, "a", "b") == 4
    with pytest.raises(ValueError, match="shard 4 is out of range"):
        shard_pairs(3, 5, 4, 4)
