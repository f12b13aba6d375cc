"""The benchmark scripts run as README says and report what they claim."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("extra", [[], ["--in-process", "--sinkhorn", "--n-jobs", "2"]])
def test_inner_ot_benchmark_smoke_suite(tmp_path, capsys, extra):
    bench = load_script("inner_ot")
    out = tmp_path / "smoke.json"
    result = bench.main(["--suite", "smoke", "--out", str(out), *extra])
    saved = json.loads(out.read_text())
    assert saved["suite"] == "smoke" and saved["machine"]["cores"] >= 1
    assert [e["entry"] for e in saved["entries"]] == [e.name for e in bench.SUITES["smoke"]]
    for entry in saved["entries"]:
        rows = {r["method"]: r for r in entry["rows"]}
        assert rows["motalign"]["max_abs_dC"] <= 1e-9          # exact: equal to the POT loop
        assert all(r["seconds"] > 0 and r["peak_mib"] >= 0 for r in rows.values())
        if "sinkhorn" in rows:
            assert 0 <= rows["sinkhorn"]["max_abs_dC"] <= rows["sinkhorn"]["max_gap_bound"] + 1e-6
    assert "lsa_loop" in {r["method"] for r in saved["entries"][0]["rows"]}  # equal widths
    assert "lsa_loop" not in {r["method"] for r in saved["entries"][1]["rows"]}
    table = out.with_suffix(".md").read_text()
    assert "speed-up vs pot_loop" in table and "**suite total**" in table
    assert table in capsys.readouterr().out
    assert result["speedup"] > 0


def test_inner_ot_benchmark_lists_the_paper_suites(capsys):
    bench = load_script("inner_ot")
    bench.main(["--list"])
    listed = capsys.readouterr().out
    for suite in ("mixed", "table1", "paper", "mot_r", "smoke"):
        assert suite + ":" in listed
    widths = {w for entry in bench.SUITES["paper"] for w in entry.widths_x + entry.widths_y}
    assert min(widths) == 384 and max(widths) >= 3072  # NSD regions reach 3,074 voxels
    assert max(e.stimuli for e in bench.SUITES["paper"]) == 16000
    shapes = {(len(e.widths_x), len(e.widths_y)) for e in bench.SUITES["paper"]}
    assert (28, 36) in shapes and (32, 40) in shapes  # Llama-3B~Qwen-3B, MAE-H~DINOv2-G


def test_linear_predictivity_benchmark_agrees_with_ridgecv(tmp_path, capsys):
    bench = load_script("linear_predictivity")
    out = tmp_path / "lp.json"
    rows = bench.main(["--stimuli", "30", "90", "--layers", "2", "--width", "40", "--out", str(out)])
    assert [r["mode"] for r in rows] == ["gram", "svd"]
    assert all(r["same_penalties"] and r["max_score_diff"] < 1e-8 for r in rows)
    assert json.loads(out.read_text())["rows"] == rows
    assert "| shared decomposition (s) |" in capsys.readouterr().out
