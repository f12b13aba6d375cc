"""The size model, the rules' resource requests made from it, and ``motalign estimate``."""

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from motalign.couplings import COUPLINGS
from motalign.io.store import write_activations
from motalign.workflow import estimate as est
from motalign.workflow import sizes
from motalign.workflow.config import ConfigError
from motalign.workflow.job_requests import FIXED, MIN_MEM_MB, MODELLED, request, rule_need

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("snakemake")


def config(name):
    return est.load_config(ROOT / "config" / name)


@pytest.fixture(scope="module")
def paper():
    return config("paper.yaml")


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory):
    """Snakemake's plan of config/paper.yaml (about 35 s)."""
    return est.plan(ROOT / "config" / "paper.yaml", tmp_path_factory.mktemp("plan"))


def test_stimulus_counts_from_the_declarations(paper):
    assert sizes.n_stimuli(paper, "stsb") == 2552
    assert sizes.n_stimuli(paper, "imagenet") == 20 * 1000
    assert sizes.n_stimuli(paper, "nsd_shared") == 1000
    assert sizes.n_fit(paper, 2552) == 2042
    test = config("test.yaml")
    assert sizes.n_stimuli(test, "sentences") == len(
        [s for s in (ROOT / "workflow/resources/sentences.txt").read_text().splitlines() if s.strip()]
    )


def test_widths_declared_then_read_from_the_file(paper, tmp_path):
    assert sizes.declared_widths(paper, "llama_3b") == [3072] * 28
    assert sizes.declared_widths(paper, "subjA") == [sizes.PLANNING_VOXELS[r] for r in paper["nsd"]["regions"]]
    edited = copy.deepcopy(paper)
    edited["nsd"]["planning_voxels"] = {"V1": 123}
    assert sizes.declared_widths(edited, "subjA")[0] == 123
    path = tmp_path / "a.npz"
    write_activations(path, {"a": np.zeros((5, 3)), "b": np.zeros((5, 7))}, stimulus_ids=list("vwxyz"))
    assert sizes.file_widths(path) == [3, 7]
    assert sizes.network_widths(paper, "llama_3b", path) == [3, 7]
    assert sizes.network_widths(paper, "llama_3b", tmp_path / "missing.npz") == [3072] * 28
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    assert sizes.file_widths(tmp_path / "broken.npz") is None


def test_a_hub_model_without_width_is_named(paper):
    edited = copy.deepcopy(paper)
    del edited["models"]["qwen_3b"]["width"]
    with pytest.raises(ConfigError, match=r"models\.qwen_3b\.width"):
        sizes.declared_widths(edited, "qwen_3b")


def test_needs_grow_with_threads_rotation_and_shapes():
    pairs = [(0, m) for m in range(8)]
    base = dict(n_total=2552, n_fit_rows=2042, rotation=False, threads=1)
    one = sizes.inner_ot_need([3072] * 2, [2048] * 8, pairs, **base)
    eight = sizes.inner_ot_need([3072] * 2, [2048] * 8, pairs, **{**base, "threads": 8})
    rot = sizes.inner_ot_need([3072] * 2, [2048] * 8, pairs, **{**base, "rotation": True})
    small = sizes.inner_ot_need([384] * 2, [384] * 8, pairs, **base)
    assert eight.mem_mb > one.mem_mb and eight.runtime_min < one.runtime_min
    assert rot.mem_mb > one.mem_mb and rot.runtime_min > one.runtime_min
    assert small.mem_mb < one.mem_mb and small.runtime_min < one.runtime_min
    assert one.request_mem_mb >= one.mem_mb * sizes.MEMORY_MARGIN - 100
    assert one.request_runtime_min >= sizes.MIN_RUNTIME_MIN


def test_every_rule_of_the_paper_plan_is_sized_as_the_workflow_asks(paper, paper_plan):
    """Each non-local job's declared mem_mb and runtime are the size model's request."""
    rules = {job.rule for job in paper_plan}
    assert {
        "inner_ot",
        "outer_ot",
        "baseline",
        "subsample",
        "three_level_block",
        "extract_activations",
        "extract_revision",
    } <= rules
    for job in paper_plan:
        assert job.rule in FIXED or job.rule in MODELLED, job.rule
        if "mem_mb" not in job.resources:
            continue  # a local rule
        asked = request(paper, job.rule, job.wildcards, job.threads)
        assert job.resources["mem_mb"] == asked["mem_mb"], (job.rule, job.wildcards)
        assert job.resources["runtime"] == asked["runtime"], (job.rule, job.wildcards)
        need = rule_need(paper, job.rule, job.wildcards, job.threads)
        assert job.resources["mem_mb"] >= need.mem_mb
        assert job.resources["mem_mb"] <= max(MIN_MEM_MB, 2 * need.mem_mb)


def test_parse_dry_run_reads_jobs_in_and_out_of_groups():
    text = """
[Mon Nov 30 19:20:51 2026]
rule make_split:
    output: results/splits/a/seed0.npz
    wildcards: dataset=a, seed=0
    resources: tmpdir=/tmp, runtime=10, mem_mb=1000, mem=1 GB, mem_mib=954
[Mon Nov 30 19:20:51 2026] Group job inner_ot (jobs in lexicogr. order):

    [Mon Nov 30 19:20:51 2026]
    rule inner_ot:
        wildcards: experiment=nsd, method=mot, source=subjA, target=subjB, seed=0, shard=3
        threads: 8
        resources: tmpdir=/tmp, runtime=120, mem_mb=<TBD>, mem=<TBD>
localrule collect_scores:
    wildcards: experiment=nsd
"""
    jobs = est.parse_dry_run(text)
    assert [j.rule for j in jobs] == ["make_split", "inner_ot", "collect_scores"]
    assert jobs[0].resources == {"runtime": 10, "mem_mb": 1000, "mem_mib": 954}
    assert jobs[1].threads == 8 and jobs[1].wildcards["shard"] == "3"
    assert jobs[1].resources == {"runtime": 120}
    assert jobs[2].wildcards == {"experiment": "nsd"} and jobs[2].resources == {}


@pytest.mark.slow
def test_estimate_of_the_test_config_covers_every_rule_and_requests_hold(tmp_path):
    rows = est.estimate(ROOT / "config" / "test.yaml", workdir=tmp_path, log=lambda m: None)
    plan_rules = {j.rule for j in est.plan(ROOT / "config" / "test.yaml", tmp_path / "again")}
    by_rule = {r["rule"]: r for r in rows}
    assert set(by_rule) == plan_rules
    for rule in est.MEASURED:
        row = by_rule[rule]
        assert row["basis"].startswith("measured"), row
        assert row["measured_peak_mb"] > 50
        assert row["declared_mem_mb"] >= row["measured_peak_mb"], row
        for variant in row["variants"]:
            assert "error" not in variant, variant
    assert by_rule["extract_activations"]["basis"].startswith("projected")
    assert by_rule["inner_ot"]["jobs"] == 22
    assert est.format_table(rows).splitlines()[-1].startswith("total")


def _widest_paper_pair(paper):
    spec = paper["experiments"]["llm"]
    widths = {name: sizes.declared_widths(paper, name) for pair in spec["pairs"] for name in pair}
    return max(
        spec["pairs"], key=lambda p: max(widths[p[0]]) * max(widths[p[1]]) * len(widths[p[0]]) * len(widths[p[1]])
    )


@pytest.mark.slow
def test_paper_shapes_one_inner_shard_and_one_outer_job_within_their_requests(paper, tmp_path):
    """The widest paper pair (Llama-3.2 3B x Qwen-2.5 3B: 28 x 3,072 and 36 x 2,048 units,
    2,552 prompts) at full width and stimulus count on synthetic activations: a whole
    inner-OT shard (32 layer pairs, the config's 8 threads) and the outer-OT job on
    shards of the real plans' size; each uses no more memory than the workflow asks for,
    and not less than half of it."""
    source, target = _widest_paper_pair(paper)
    total = sizes.n_stimuli(paper, "stsb")
    files = {"split": str(tmp_path / "split.npz")}
    est.synthetic_split(files["split"], total, sizes.n_fit(paper, total))
    for i, name in enumerate((source, target)):
        files[name] = str(tmp_path / f"{name}.npz")
        est.synthetic_network(files[name], total, sizes.declared_widths(paper, name), seed=i)
    threads = paper["mot"]["threads"]
    for rule, wildcards in [
        (
            "inner_ot",
            {"experiment": "llm", "method": "mot", "source": source, "target": target, "seed": "0", "shard": "0"},
        ),
        ("outer_ot", {"experiment": "llm", "method": "mot", "source": source, "target": target, "seed": "0"}),
    ]:
        job = est.PlannedJob(rule, wildcards, threads if rule == "inner_ot" else 1)
        spec = est._spec(paper, job, files, tmp_path, budget_units=paper["shard_size"])
        result = est.run_measurement(spec, tmp_path)
        assert "error" not in result, result.get("error")
        assert result["units_done"] == result["units_total"]
        asked = request(paper, rule, wildcards, job.threads)["mem_mb"]
        assert result["peak_mb"] <= asked, (rule, result, asked)
        assert asked <= 2 * result["peak_mb"], (rule, result, asked)
    with np.load(tmp_path / "shard.npz") as shard:
        assert shard["pairs"].shape == (paper["shard_size"], 2)
        assert np.all(shard["plan_ptr"][1:] - shard["plan_ptr"][:-1] <= 3072 + 2048)
    outer = yaml.safe_load((tmp_path / "outer.json").read_text())
    assert set(outer["scores"]) == set(COUPLINGS)


def test_resource_callables_share_one_need_and_see_a_file_appear(paper, tmp_path, monkeypatch):
    """``resources()``: mem_mb and runtime of one job come from one need, and the request
    follows the input file once it exists (planning -> run time)."""
    from types import SimpleNamespace

    import motalign.workflow.job_requests as jr

    calls = []
    original = jr.request
    monkeypatch.setattr(jr, "request", lambda *a: calls.append(a) or original(*a))
    callables = jr.resources(paper, "inner_ot")
    wildcards = {"experiment": "llm", "source": "llama_3b", "target": "qwen_3b", "method": "mot", "shard": "0"}
    x, y = tmp_path / "x.npz", tmp_path / "y.npz"
    inputs = SimpleNamespace(x=str(x), y=str(y))
    planned = original(paper, "inner_ot", wildcards, 8, {"x": str(x), "y": str(y)})
    assert callables["mem_mb"](wildcards, inputs, 8, 1) == planned["mem_mb"]
    assert callables["runtime"](wildcards, inputs, 8, 1) == planned["runtime"]
    assert len(calls) == 1
    write_activations(x, {"a": np.zeros((5, 3))}, stimulus_ids=list("vwxyz"))
    assert callables["mem_mb"](wildcards, inputs, 8, 2) < 2 * planned["mem_mb"]  # 1 x 3 units, not 28 x 3,072
    assert len(calls) == 2
