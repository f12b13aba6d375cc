"""scripts/gpu_check.py, the one-shot GPU check (issue #12, item 6), where there is no GPU:
its CPU smoke mode writes the report of the GPU run with every figure finite, a machine
without CUDA skips every step, a step runs in its own process and is stopped at its limit,
and the POT wheels it carries are slimmed with a valid RECORD."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import math
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_KEYS = {"schema", "mode", "started", "budget_seconds", "wall_seconds", "machine", "steps"}
STEP_KEYS = {"status", "reason", "seconds", "limit_seconds", "results"}
MACHINE_KEYS = {"python", "platform", "cores", "cpu", "cuda_available", "gpu", "gpu_memory_gib", "torch",
                "torch_cuda", "driver", "packages", "pot_source"}


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def numbers(value, path="$"):
    """Every number in a JSON document, with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def check_report(out: Path, gpu_check, mode: str) -> dict:
    report = json.loads((out / "gpu_check.json").read_text())  # strict JSON: no NaN
    assert set(report) == TOP_KEYS and report["schema"] == gpu_check.SCHEMA and report["mode"] == mode
    assert MACHINE_KEYS <= set(report["machine"])
    assert list(report["steps"]) == list(gpu_check.STEPS)
    for name, step in report["steps"].items():
        assert STEP_KEYS <= set(step), name
        assert step["status"] in gpu_check.STATUSES, name
        assert step["status"] == "ok" or step["reason"], name
    bad = [(path, x) for path, x in numbers(report) if not math.isfinite(x)]
    assert not bad
    table = (out / "gpu_check.md").read_text()
    assert "| step | status | seconds | figures | note |" in table
    for name, step in report["steps"].items():
        assert f"| {name} | {step['status']} |" in table
    return report


def test_shell_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_check.sh")], check=True)


@pytest.mark.slow  # about 20 s of CPU: torch, transformers, two tiny models trained
def test_cpu_smoke_writes_the_full_report(gpu_check, tmp_path, capsys):
    gpu_check.main([str(tmp_path), "--cpu-smoke", "--in-process"])
    assert "| timing | ok |" in capsys.readouterr().out
    report = check_report(tmp_path, gpu_check, "cpu-smoke")
    steps = report["steps"]
    assert steps["tests"]["status"] == "skipped" and "no CUDA" in steps["tests"]["reason"]
    assert {name: steps[name]["status"] for name in gpu_check.STEPS[1:]} == dict.fromkeys(gpu_check.STEPS[1:], "ok")

    extraction = steps["extraction"]["results"]
    assert [m["name"].split(" (")[0] for m in extraction["models"]] == ["tiny llama", "tiny dinov2"]
    for model in extraction["models"]:
        for variant in model["variants"]:
            assert len(variant["per_layer"]) == model["layers"] and variant["all_finite"]
            assert 0 < variant["max_abs"] and variant["max_rel_fro"] < 0.05  # bfloat16 against float32

    exact = steps["inner_exact"]["results"]
    assert exact["max_abs_dC"] <= 1e-9 and exact["plans_equal"] == exact["plans_total"] > 0
    assert {c["rotation"] for c in exact["cases"]} == {False, True}
    assert all("error" not in c and "skipped" not in c for c in exact["cases"])

    sinkhorn = steps["sinkhorn"]["results"]
    assert sinkhorn["max_gap_bound"] >= 0 and sinkhorn["max_abs_dC"] >= 0
    assert all(c["bound_holds"] for c in sinkhorn["cases"] if not c["rotation"])

    timing = steps["timing"]["results"]
    methods = {row["method"] for row in timing["rows"]}
    assert methods == {"MOT exact", "MOT sinkhorn", "MOT+R exact", "MOT+R sinkhorn"}
    for row in timing["rows"]:
        assert "error" not in row
        if "skipped" not in row:  # only where the budget ran out
            assert row["seconds_total"] > 0 and row["extrapolated"] == (row["pairs_timed"] < row["pairs_total"])


def test_without_cuda_every_step_is_skipped(gpu_check, tmp_path):
    if gpu_check.cuda_available():
        pytest.skip("this machine has CUDA")
    gpu_check.main([str(tmp_path)])
    report = check_report(tmp_path, gpu_check, "gpu")
    assert {s["status"] for s in report["steps"].values()} == {"skipped"}
    assert {s["reason"] for s in report["steps"].values()} == {"no CUDA"}


@pytest.mark.slow  # a child process that imports torch and POT
def test_a_step_runs_in_its_own_process_and_stops_at_its_limit(gpu_check, tmp_path):
    gpu_check.main([str(tmp_path), "--cpu-smoke", "--steps", "inner_exact"])
    report = check_report(tmp_path, gpu_check, "cpu-smoke")
    assert report["steps"]["inner_exact"]["status"] == "ok"
    assert report["steps"]["inner_exact"]["results"]["plans_total"] > 0
    assert report["steps"]["timing"]["reason"] == "not selected (--steps)"

    ctx = gpu_check.Context(mode="cpu-smoke", out_dir=tmp_path, deadline=time.time() + 1)
    start = time.perf_counter()
    record = gpu_check.run_subprocess("timing", ctx, 1.0, None)
    assert time.perf_counter() - start < 10
    assert record["status"] == "failed" and record["reason"].startswith("timed out after 1 s")


def test_pytest_summary_is_parsed(gpu_check):
    counts = gpu_check.parse_pytest_summary(
        "..F\nFAILED tests/x.py::t\n= 1 failed, 5 passed, 3 skipped, 25 deselected, 1 error in 7.91s =\n")
    assert (counts["passed"], counts["failed"], counts["skipped"], counts["deselected"], counts["errors"]) == (
        5, 1, 3, 25, 1)
    assert gpu_check.parse_pytest_summary("no tests ran")["passed"] == 0


def test_slim_wheel_rewrites_record(gpu_check, tmp_path):
    source = tmp_path / "raw" / "pot-0.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    source.parent.mkdir()
    files = {"ot/__init__.py": b"x = 1\n", "ot/lp/emd.cpython-312-x86_64-linux-gnu.so": b"\x7fELF" + bytes(100),
             "pot-0.0.dist-info/METADATA": b"Name: pot\n", "pot-0.0.dist-info/RECORD": b"stale\n"}
    with zipfile.ZipFile(source, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    target = gpu_check.slim_wheel(source, tmp_path / source.name, strip="true")  # `true`: a no-op strip
    with zipfile.ZipFile(target) as wheel:
        assert sorted(wheel.namelist()) == sorted(files)
        record = wheel.read("pot-0.0.dist-info/RECORD").decode().splitlines()
        for line in record:
            name, digest, size = line.rsplit(",", 2)
            if name.endswith("RECORD"):
                assert digest == size == ""
                continue
            data = wheel.read(name)
            assert int(size) == len(data)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    assert len(record) == len(files)


def test_a_timm_checkpoint_is_extracted_in_both_precisions(gpu_check, tmp_path):
    """The real-checkpoint path of the extraction step (EfficientNet-Lite0 on the GPU machine),
    here with timm's tiny test EfficientNet on the CPU: float32 against bfloat16."""
    timm = pytest.importorskip("timm", reason="needs timm")
    from timm.models import save_for_hf

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    save_for_hf(timm.create_model("test_efficientnet").eval(), str(tmp_path / "net"))
    assert gpu_check._weights_kind(tmp_path / "net") == "timm"
    images, _ = gpu_check.synthetic_images(6, 32)
    reference, dtype = gpu_check._extract_variant("timm", tmp_path / "net", images, "cpu", "float32")
    half, half_dtype = gpu_check._extract_variant("timm", tmp_path / "net", images, "cpu", "bfloat16")
    assert (dtype, half_dtype) == ("torch.float32", "torch.bfloat16")
    layers = gpu_check.compare_layers(reference, half)
    assert len(layers) == len(reference) > 3 and all(x["finite"] for x in layers)
    assert 0 < max(x["max_abs"] for x in layers) and max(x["rel_fro"] or 0 for x in layers) < 0.1
