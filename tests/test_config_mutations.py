"""Config slips reach the user as one ConfigError naming the key, before any job.

Property: starting from each shipped config, a mutation (a deleted key, a misspelled key
at any depth, a value of the wrong type, a repeated list entry) either still plans, or
the checks that run before any job -- validate_config (schema, defaults, unknown keys,
cross-references, stimulus counts) and then what planning computes from the config (target
lists, figure and table ids, package pins, every planned job's resource request) -- raise
exactly one ConfigError whose message starts with a key path of the mutated config (or the
key that was deleted).  Never another exception type.

A few dry runs of the real workflow show that such an error reaches the user as a short
message, not a schema dump.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from motalign.models.pretrained import package_specs
from motalign.workflow import job_requests
from motalign.workflow.config import ConfigError, inline_inner, n_shards, network_kind
from motalign.workflow.config_schema import validate_config
from motalign.workflow.reporting import figure_specs, table_ids

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("config.yaml", "test.yaml", "paper.yaml", "pretrained.yaml")
CONFIGS = {name: yaml.safe_load((ROOT / "config" / name).read_text()) for name in SHIPPED}


# --------------------------------------------------------------------------- planning, as the rules do it


def _experiment_seeds(config, experiment):
    return config["experiments"][experiment].get("seeds", config["seeds"])


def planned_jobs(config):
    """(rule, wildcards, threads) of the jobs whose resources the workflow computes while
    planning (workflow/rules/*.smk), from the validated config."""
    mot_threads = config["mot"]["threads"]
    jobs, networks = [], set()
    for experiment, spec in config["experiments"].items():
        dataset = spec["dataset"]
        for method in spec["methods"]:
            for source, target in spec["pairs"]:
                for seed in _experiment_seeds(config, experiment):
                    wc = dict(experiment=experiment, method=method, source=source, target=target, seed=seed)
                    jobs += [("inner_ot", {**wc, "shard": k}, mot_threads)
                             for k in range(n_shards(config, source, target))]
                    inline = inline_inner(config, source, target)
                    jobs.append(("outer_ot", wc, mot_threads if inline else 1))
        networks |= {(dataset, n) for pair in spec["pairs"] for n in pair}
    for kind, experiments in config["baselines"].items():
        jobs += [("baseline", dict(kind=kind, experiment=e, seed=s), 1)
                 for e in experiments for s in _experiment_seeds(config, e)]
    sub = config.get("subsampling")
    if sub:
        jobs += [("subsample", dict(method=m, fraction=f, seed=s), mot_threads)
                 for m in sub["methods"] for f in sub["fractions"] for s in config["seeds"]]
        networks |= {(sub["dataset"], sub["source"]), (sub["dataset"], sub["target"])}
    three = config.get("three_level")
    if three:
        blocks = -(-len(three["revisions"]) // three["block_size"])
        jobs += [("three_level_block", dict(source=three["source"], target=three["target"], block=b), mot_threads)
                 for b in range(blocks)]
        jobs += [("extract_revision", dict(dataset=three["dataset"], model=three[side], revision=r), 1)
                 for side in ("source", "target") for r in three["revisions"]]
    for dataset, name in sorted(networks):
        if network_kind(config, name) == "brain":
            jobs.append(("brain_responses", dict(dataset=dataset, brain=name), 1))
        else:
            jobs.append(("extract_activations", dict(dataset=dataset, model=name), 1))
    jobs += [("prepare_stimuli", dict(dataset=d), 1) for d in sorted({d for d, _ in networks})]
    return jobs


def pre_job_checks(config):
    """Everything the Snakefile computes from the config before the first job."""
    validate_config(config)
    for dataset in config["datasets"].values():  # as common.smk: shipped files are the repository's
        if "path" in dataset and not os.path.isabs(dataset["path"]):
            dataset["path"] = str(ROOT / dataset["path"])
    package_specs(config)
    table_ids(config)
    figure_specs(config)
    for rule, wildcards, threads in planned_jobs(config):
        job_requests.request(config, rule, wildcards, threads)


# --------------------------------------------------------------------------- mutations


def _locations(node, path=()):
    """Every (path, value) below ``node``: mapping keys and list positions."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield path + (key,), value
        yield from _locations(value, path + (key,))


def _parent(config, path):
    node = config
    for part in path[:-1]:
        node = node[part]
    return node


def _dotted(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _resolves(config, dotted: str) -> bool:
    node = config
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", dotted):
        if index:
            if not isinstance(node, list) or int(index) >= len(node):
                return False
            node = node[int(index)]
        elif isinstance(node, dict) and name in node:
            node = node[name]
        else:
            return False
    return True


def _typo(key: str, kind: int, position: int, letter: str) -> str:
    i = position % len(key)
    if kind == 0 and len(key) > 1:  # a letter dropped
        return key[:i] + key[i + 1:]
    if kind == 1 and len(key) > 1:  # two letters swapped
        j = min(i + 1, len(key) - 1) if i + 1 < len(key) else i - 1
        chars = list(key)
        chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars)
    return key[:i] + letter + key[i:]  # a letter added


OTHER_TYPES = [None, "text", 7, 2.5, True, [], {}]


@st.composite
def mutated(draw, name):
    """(mutated config, the key path removed or renamed, or None)."""
    config = copy.deepcopy(CONFIGS[name])
    locations = list(_locations(config))
    path, value = draw(st.sampled_from(locations))
    parent = _parent(config, path)
    kind = draw(st.sampled_from(["delete", "misspell", "wrong_type", "duplicate"]))
    if kind in ("delete", "misspell") and isinstance(parent, dict):
        del parent[path[-1]]
        if kind == "misspell":
            typo = _typo(path[-1], draw(st.integers(0, 2)), draw(st.integers(0, 40)),
                         draw(st.sampled_from("aeiknrst_")))
            if typo in parent or typo == path[-1]:
                typo += "x"
            parent[typo] = value
        return config, _dotted(path)
    if kind == "duplicate" and isinstance(value, list) and value:
        value.append(copy.deepcopy(value[draw(st.integers(0, len(value) - 1))]))
        return config, None
    other = draw(st.sampled_from([v for v in OTHER_TYPES if type(v) is not type(value)]))
    parent[path[-1]] = copy.deepcopy(other)
    return config, None


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_pass_every_pre_job_check(name):
    pre_job_checks(copy.deepcopy(CONFIGS[name]))


@pytest.mark.parametrize("name", SHIPPED)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_config_plans_or_raises_one_config_error_naming_its_key(name, data):
    config, removed = data.draw(mutated(name))
    try:
        pre_job_checks(config)
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message and len(message) < 400, message
        key = message.split(": ", 1)[0]
        assert _resolves(config, key) or key == removed, f"{message!r} names no key of the config"


# --------------------------------------------------------------------------- what the user sees


def _dry_run(tmp_path, config) -> subprocess.CompletedProcess:
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(configfile), "-d", str(tmp_path / "work"),
         "-s", str(ROOT / "Snakefile")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )


def _misspell_top_level(c):
    c["seedz"] = c.pop("seeds")


def _misspell_nested(c):
    c["models"]["llama_s"]["architecture"]["hiden_size"] = c["models"]["llama_s"]["architecture"].pop("hidden_size")


def _duplicate_pair(c):
    c["experiments"]["llm"]["pairs"].append(list(c["experiments"]["llm"]["pairs"][0]))


@pytest.mark.parametrize("edit, expected", [
    (_misspell_top_level, "seedz: unknown key; did you mean 'seeds'?"),
    (_misspell_nested, "models.llama_s.architecture.hiden_size: unknown key; did you mean 'hidden_size'?"),
    (_duplicate_pair, "experiments.llm.pairs[1]: ['qwen_s', 'llama_s'] is listed twice (also at [0])"),
])
def test_a_dry_run_stops_with_one_short_message_naming_the_key(tmp_path, edit, expected):
    pytest.importorskip("snakemake")
    config = copy.deepcopy(CONFIGS["test.yaml"])
    edit(config)
    run = _dry_run(tmp_path, config)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert expected in output
    assert "ConfigError" in output
    assert len(output.strip().splitlines()) < 15, output
