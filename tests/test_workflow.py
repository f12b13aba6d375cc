"""The Snakemake workflow, run end to end on config/test.yaml in a temporary directory.

The test config has one pair per experiment family and goes through the same rules as the
embedded default and config/paper.yaml.  The tests that run jobs are marked slow.
"""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("snakemake")
pytest.importorskip("torch")
pytest.importorskip("nibabel")

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "config" / "test.yaml"
#: the tests that run the workflow's jobs for real (minutes): `pytest -m "not slow"` skips them
slow = pytest.mark.slow


def snakemake(workdir, *args, configfile=TEST_CONFIG, check=True):
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
               *args, "--cores", "2", "--configfile", str(configfile)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def planned_jobs(workdir, *args, configfile=TEST_CONFIG):
    """{rule: count} of a dry run."""
    result = snakemake(workdir, "-n", *args, configfile=configfile)
    out = result.stdout + result.stderr
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    jobs.pop("total", None)
    return jobs


@pytest.fixture(scope="module")
def run(test_config_run):
    """The session's run of config/test.yaml (tests/conftest.py), shared with test_slurm.py."""
    return test_config_run


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@slow
def test_every_experiment_is_scored(run):
    expected = {"llm": 1, "nsd": 1, "vit": 2, "nsd_vit": 2}  # pairs x methods
    for experiment, n in expected.items():
        rows = read_csv(run / "results" / "scores" / f"{experiment}.csv")
        assert len(rows) == n * 2 * 4  # x 2 seeds x 4 couplings
        scores = np.array([float(r["score"]) for r in rows])
        assert np.all(np.isfinite(scores)) and np.all(np.abs(scores) <= 1)
        assert {r["coupling"] for r in rows} == {"mot", "single_best", "pairwise_best", "random"}


@slow
def test_simulated_subjects_align_region_to_region(run):
    rows = read_csv(run / "results" / "scores" / "nsd.csv")
    mot = [r for r in rows if r["coupling"] == "mot"]
    assert all(float(r["hierarchy"]) >= 0.95 for r in mot)
    result = json.loads((run / "results" / "mot" / "nsd" / "mot" / "subjA~subjB" / "seed0.json").read_text())
    assert result["source_layers"] == ["V1", "V2", "V3", "V4", "Ventral", "Lateral", "Dorsal"]
    assert result["scores"]["mot"] > result["scores"]["random"]
    with np.load(run / "results" / "mot" / "nsd" / "mot" / "subjA~subjB" / "seed0.npz") as data:
        np.testing.assert_allclose(data["coupling_mot"], np.eye(7) / 7, atol=1e-12)


@slow
def test_activation_stores_and_splits(run):
    from motalign.io.store import ActivationStore

    with ActivationStore(run / "results" / "activations" / "sentences" / "llama_s.npz") as store:
        assert store.n_layers == 4  # blocks, embeddings excluded
        assert store.metadata["include_embeddings"] is False
        n = len(store.stimulus_ids)
    with np.load(run / "results" / "splits" / "sentences" / "seed0.npz") as split:
        assert len(split["fit"]) == round(0.8 * n)
        assert not set(split["fit"]) & set(split["held_out"])
    counts = read_csv(run / "results" / "data" / "nsd_shared_voxel_counts.csv")
    assert len(counts) == 2 * 7 and all(int(r["voxels"]) > 0 for r in counts)
    with ActivationStore(run / "results" / "brains" / "nsd_shared" / "subjA.npz") as brain, \
            ActivationStore(run / "results" / "activations" / "nsd_shared" / "mae_b.npz") as model:
        assert list(brain.stimulus_ids) == list(model.stimulus_ids)


@slow
def test_baselines_subsampling_and_three_level(run):
    results = run / "results"
    glob = json.loads((results / "baselines" / "global" / "nsd" / "seed0.json").read_text())
    assert set(glob["pairs"][0]) >= {"global_ot", "global_linear_predictivity"}
    lp = json.loads((results / "baselines" / "linear_predictivity" / "llm" / "seed1.json").read_text())
    assert np.allclose(np.sum(lp["pairs"][0]["best_match_map"], axis=1), 1 / 3)
    rsa = json.loads((results / "baselines" / "rsa" / "nsd" / "seed0.json").read_text())
    assert len(rsa["pairs"][0]["best_match"]) == 7
    sub = read_csv(results / "scores" / "subsampling.csv")
    assert {float(r["fraction"]) for r in sub} == {0.5, 1.0} and len(sub) == 2 * 2 * 2
    three = json.loads((results / "three_level" / "pythia_s1~pythia_s2.json").read_text())
    assert three["source_revisions"] == ["step0", "step4", "step12"]
    with np.load(results / "three_level" / "pythia_s1~pythia_s2.npz") as data:
        np.testing.assert_allclose(data["coupling"].sum(axis=1), 1 / 3, atol=1e-12)


@slow
def test_every_job_left_a_log_and_a_benchmark(run):
    logs = list((run / "results" / "logs").rglob("*.log"))
    assert logs and all(p.read_text().strip() for p in logs)
    assert list((run / "results" / "benchmarks").rglob("inner_ot/**/*.tsv"))


@slow
def test_finished_run_reruns_nothing(run):
    assert planned_jobs(run) == {}


@slow
def test_deleting_an_output_rebuilds_only_its_dependents(run):
    downstream = {"collect_scores", "table", "figure", "all"}
    outer = run / "results" / "mot" / "vit" / "mot_r" / "dinov2_s~mae_b" / "seed1.json"
    outer.unlink()
    jobs = planned_jobs(run)
    assert jobs["outer_ot"] == 1 and jobs["collect_scores"] == 1
    assert jobs["table"] == 4  # table3, tableD1, tableD2, tableG1 summarise this pair
    assert jobs["figure"] == 2  # figure4 and figureD1 show it
    assert set(jobs) <= {"outer_ot"} | downstream
    shard = run / "results" / "inner" / "llm" / "mot" / "qwen_s~llama_s" / "seed0" / "shard0.npz"
    shard.unlink()
    jobs = planned_jobs(run)
    assert jobs["inner_ot"] == 1 and jobs["outer_ot"] == 2 and jobs["collect_scores"] == 2
    assert set(jobs) <= {"inner_ot", "outer_ot"} | downstream
    snakemake(run, "-q")
    assert planned_jobs(run) == {}


@slow
def test_interrupted_run_resumes_without_redoing_shards(run):
    # a run stopped after its inner-OT shards: the outer results and scores are missing
    for path in (run / "results" / "mot" / "nsd").rglob("*"):
        if path.is_file():
            path.unlink()
    (run / "results" / "scores" / "nsd.csv").unlink()
    jobs = planned_jobs(run)
    assert "inner_ot" not in jobs and jobs["outer_ot"] == 2
    assert set(jobs) <= {"outer_ot", "collect_scores", "table", "figure", "all"}
    snakemake(run, "-q")
    assert planned_jobs(run) == {}


def test_paper_dag_plans_offline(tmp_path):
    jobs = planned_jobs(tmp_path, configfile=ROOT / "config" / "paper.yaml")
    assert jobs["inner_ot"] > 1000 and jobs["outer_ot"] == (6 + 6 + 20 + 32) * 5
    assert jobs["extract_revision"] == 2 * 154
    assert not (tmp_path / "results").exists()


def test_default_dag_aligns_small_pairs_in_one_job_over_several_seeds(tmp_path):
    """The embedded default: every experiment over at least two splits (so that every table
    has a standard deviation), and each pair's inner level inside its outer-OT job (its
    layer pairs fit in one shard), so no inner_ot job is planned."""
    import yaml

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    seeds = {name: spec.get("seeds", config["seeds"]) for name, spec in config["experiments"].items()}
    assert all(len(s) >= 2 for s in seeds.values()), seeds
    jobs = planned_jobs(tmp_path, configfile=ROOT / "config" / "config.yaml")
    assert "inner_ot" not in jobs
    assert jobs["outer_ot"] == sum(
        len(spec["methods"]) * len(spec["pairs"]) * len(seeds[name]) for name, spec in config["experiments"].items()
    )


def test_bad_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TEST_CONFIG.read_text().replace("pairs: [[qwen_s, llama_s]]", "pairs: [[qwen_s, nobody]]")
                   .replace("- qwen_s\n      - llama_s", "- qwen_s\n      - nobody"))
    result = snakemake(tmp_path, "-q", configfile=bad, check=False)
    assert result.returncode != 0
    assert "experiments.llm.pairs[0]: network 'nobody'" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()
    schema_bad = tmp_path / "schema_bad.yaml"
    schema_bad.write_text(TEST_CONFIG.read_text().replace("fit_fraction: 0.8", "fit_fraction: 1.5"))
    result = snakemake(tmp_path, "-q", configfile=schema_bad, check=False)
    assert result.returncode != 0 and "fit_fraction" in result.stdout + result.stderr


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "-s", str(ROOT / "Snakefile")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


@slow
def test_tables_and_figures_summarise_the_scores(run):
    tables = run / "results" / "tables"
    rows = read_csv(run / "results" / "scores" / "nsd.csv")
    mot = [float(r["score"]) for r in rows if r["coupling"] == "mot"]
    (table2,) = read_csv(tables / "table2.csv")
    assert (table2["model_1"], table2["model_2"]) == ("Subject A", "Subject B")
    assert float(table2["MOT mean"]) == pytest.approx(np.mean(mot), abs=1e-6)
    assert float(table2["MOT std"]) == pytest.approx(np.std(mot, ddof=1), abs=1e-6)
    assert int(table2["MOT n_seeds"]) == 2
    for table_id in ("table1", "table2", "tableC1", "table3", "tableD1", "tableD2", "tableE1", "tableE2",
                     "tableE3", "tableF1", "tableG1", "tableH1"):
        for ext in ("csv", "md", "tex"):
            assert (tables / f"{table_id}.{ext}").stat().st_size > 0
    (e1,) = read_csv(tables / "tableE1.csv")
    assert e1["model_1"] == "Subject" and float(e1["MOT+R mean"]) != 0
    figures = run / "results" / "figures"
    for figure_id in ("figure2", "figure3", "figure4", "figure5", "figureB1", "figureC1", "figureD1",
                      "figureE1", "figureH1", "figureI1", "figureJ1"):
        assert (figures / f"{figure_id}.png").read_bytes()[:4] == b"\x89PNG"
        assert (figures / f"{figure_id}.pdf").read_bytes()[:4] == b"%PDF"


@slow
def test_a_deleted_table_comes_back_with_its_named_target_alone(run):
    (run / "results" / "tables" / "table1.md").unlink()
    assert planned_jobs(run, "table1") == {"table": 1, "table1": 1}
    snakemake(run, "table1", "-q")
    assert (run / "results" / "tables" / "table1.md").exists()
    assert planned_jobs(run) == {}


@slow
def test_report_bundles_every_table_and_figure(run):
    snakemake(run, "--report", "report.html")
    html = (run / "report.html").read_text(errors="replace")
    assert "table1" in html and "figure5" in html


def test_every_plan_has_one_provenance_job(tmp_path):
    assert planned_jobs(tmp_path)["provenance"] == 1


@slow
def test_provenance_records_the_weights_and_data_of_the_run(run):
    results = run / "results"
    document = json.loads((results / "provenance.json").read_text())
    activations = document["activations"]
    assert set(activations) == {str(p.relative_to(run)) for p in results.glob("activations/**/*.npz")} | {
        str(p.relative_to(run)) for p in results.glob("brains/**/*.npz")}
    tiny = activations["results/activations/sentences/llama_s.npz"]["weights"]
    assert tiny["kind"] == "local" and len(tiny["sha256"]) == 64
    revision = activations["results/activations/sentences/pythia_s1/step4.npz"]["weights"]
    assert revision["revision"] == "step4" and revision["path"].endswith("step4")
    stimuli = document["stimuli"]
    assert set(stimuli) == {str(p.relative_to(run)) for p in results.glob("stimuli/*.npz")}
    assert all(entry["content_verified"] is True for entry in stimuli.values())
    assert len(stimuli["results/stimuli/sentences.npz"]["file_sha256"]) == 64
    assert {"motalign", "numpy", "snakemake"} <= set(document["packages"])


@slow
def test_report_includes_the_provenance(run):
    snakemake(run, "results/provenance.json", "--report", "provenance_report.html")
    html = (run / "provenance_report.html").read_text(errors="replace")
    assert "provenance.json" in html and "Provenance" in html
