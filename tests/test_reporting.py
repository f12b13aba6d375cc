"""Tables and figures summarise exactly the scores they are built from."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from motalign.workflow import reporting

CONFIG = {
    "seeds": [0, 1, 2],
    "models": {"a": {"label": "Llama-3.2 1B"}, "b": {"label": "Llama-3.2 3B"}, "c": {"label": "C"}},
    "brains": {},
    "experiments": {"llm": {"dataset": "s", "methods": ["mot"], "pairs": [["a", "b"], ["a", "c"]]}},
    "baselines": {"linear_predictivity": ["llm"]},
}


def write_scores(path, values):
    """values: {(source, target, seed, coupling): score}"""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["experiment", "method", "source", "target", "seed",
                                                    "coupling", "score", "hierarchy", "objective"])
        writer.writeheader()
        for (s, t, seed, coupling), score in values.items():
            writer.writerow({"experiment": "llm", "method": "mot", "source": s, "target": t, "seed": seed,
                             "coupling": coupling, "score": score, "hierarchy": 0.5 + score / 2,
                             "objective": 1.0})


@pytest.fixture
def scores(tmp_path, rng):
    values = {(s, t, seed, c): float(rng.uniform(0, 1))
              for s, t in (("a", "b"), ("a", "c")) for seed in range(3)
              for c in ("mot", "random", "single_best", "pairwise_best")}
    path = tmp_path / "llm.csv"
    write_scores(path, values)
    return path, values


def test_table_cells_are_mean_and_std_over_seeds(scores, tmp_path):
    path, values = scores
    table = reporting.build_table("table1", CONFIG, {"llm": path})
    assert [(r["model_1"], r["model_2"]) for r in table.rows] == [("Llama-3.2 1B", "Llama-3.2 3B"),
                                                                   ("Llama-3.2 1B", "C")]
    for row, (s, t) in zip(table.rows, (("a", "b"), ("a", "c"))):
        for column, coupling in (("MOT", "mot"), ("Perm-P", "random"), ("Single-Best OT", "single_best"),
                                 ("Pairwise Best OT", "pairwise_best")):
            seeds = [values[s, t, seed, coupling] for seed in range(3)]
            mean, std, n = row["cells"][column]
            assert mean == pytest.approx(np.mean(seeds)) and std == pytest.approx(np.std(seeds, ddof=1))
            assert n == 3
    reporting.write_table(table, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex", caption="cap")
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert float(rows[0]["MOT mean"]) == pytest.approx(table.rows[0]["cells"]["MOT"][0], abs=1e-6)
    assert "±" in (tmp_path / "t.md").read_text()
    assert r"\pm" in (tmp_path / "t.tex").read_text() and r"\label{tab:table1}" in (tmp_path / "t.tex").read_text()


def test_vs_paper_reports_the_difference(scores, tmp_path):
    path, values = scores
    table = reporting.build_table("table1", CONFIG, {"llm": path})
    counts = reporting.write_vs_paper(table, tmp_path / "vs.md")
    assert counts["cells_matched"] == 4  # only the Llama 1B - 3B row is in the paper
    text = (tmp_path / "vs.md").read_text()
    ours = np.mean([values["a", "b", seed, "mot"] for seed in range(3)])
    assert "| Llama-3.2 1B | Llama-3.2 3B | MOT | 0.558 |" in text
    assert f"{ours - 0.558:+.3f}" in text


def test_paper_values_are_transcribed():
    table1 = reporting.paper_values("table1")
    assert len(table1) == 24 and table1["Qwen-2.5 0.5B", "Llama-3.2 3B", "Pairwise Best OT"][0] == 0.524
    c1 = reporting.paper_values("tableC1")
    assert c1["Subject A", "Subject B", "Perm-P"] == (0.135, 0.015)
    assert len(reporting.paper_values("tableE2")) == 64 and len(reporting.paper_values("tableG1")) == 64


def test_linear_predictivity_table_joins_baseline_and_mot(scores, tmp_path):
    path, values = scores
    baselines = []
    for seed in range(3):
        out = tmp_path / f"lp{seed}.json"
        out.write_text(json.dumps({"experiment": "llm", "seed": seed, "pairs": [
            {"source": "a", "target": "b", "score": 0.1 * seed}, {"source": "a", "target": "c", "score": 0.2}]}))
        baselines.append(out)
    table = reporting.build_table("tableH1", CONFIG, {"llm": path}, baselines)
    assert table.rows[0]["cells"]["Pairwise LP"][0] == pytest.approx(0.1)
    assert table.rows[0]["cells"]["MOT"][0] == pytest.approx(np.mean([values["a", "b", s, "mot"] for s in range(3)]))


def test_figures_are_written(tmp_path):
    panel = reporting.Panel("MOT", np.eye(3) / 3, ["l1", "l2", "l3"], ["m1", "m2", "m3"], "A", "B")
    reporting.plot_panels([[panel, panel], [panel]], tmp_path / "f.pdf", tmp_path / "f.png", title="t")
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_figure_catalog_follows_the_config():
    config = {**CONFIG, "experiments": {
        "llm": CONFIG["experiments"]["llm"],
        "vit": {"dataset": "d", "methods": ["mot", "mot_r"], "pairs": [["a", "b"], ["b", "c"], ["a", "c"]]}},
        "report": {"figure2": [["a", "c"]]}}
    specs = reporting.figure_specs(config)
    assert {"figure2", "figureB1", "figure4", "figureD1", "figureD2", "figureD3", "figureH1"} == set(specs)
    assert specs["figure2"].pairs == (("a", "c"),)
    assert [v[0] for v in specs["figureD2"].variants] == ["MOT", "MOT+R"]
    assert reporting.table_ids(config) == ["table1", "table3", "tableD1", "tableD2", "tableH1", "tableG1"]


def test_a_table_needs_a_method_that_feeds_one_of_its_columns():
    """Without mot_r, the MOT+R-only table (tableD2) is not planned (it would have nothing
    to show and its job would fail); tables with some MOT column still are."""
    config = {**CONFIG, "experiments": {
        "vit": {"dataset": "d", "methods": ["mot"], "pairs": [["a", "b"]]}}}
    assert reporting.table_ids(config) == ["table3", "tableD1", "tableH1", "tableG1"]  # tableH1: the llm baseline
    assert reporting.table_experiments("tableD2", config) == []


def test_catalogue_is_keyed_by_what_feeds_each_table_and_figure():
    catalogue = reporting.load_catalogue()
    for experiment, entry in catalogue["experiments"].items():
        for table_id in entry.get("tables", {}):
            assert reporting.TABLES[table_id].kind == "scores"
            assert reporting.TABLES[table_id].experiments == (experiment,)
    for kind, entry in catalogue["baselines"].items():
        assert kind in reporting.BASELINE_KINDS
        for table_id in entry.get("tables", {}):
            assert reporting.TABLES[table_id].baseline == kind
            assert reporting.MOT_FIELD in reporting.TABLES[table_id].fields
    # every table the paper's values are transcribed for is in the catalogue
    paper_tables = {line.split(",")[0] for line in
                    (Path(reporting.__file__).parent / "paper_values.csv").read_text().splitlines()[1:]}
    assert paper_tables <= set(reporting.TABLES)


def test_per_pair_figures_are_numbered_and_follow_the_methods():
    config = {**CONFIG, "experiments": {
        "nsd_vit": {"dataset": "d", "methods": ["mot"], "pairs": [["a", "b"], ["a", "c"]]}}}
    specs = reporting.figure_specs(config)
    assert list(specs) == ["figureE1", "figureE2", "figureH1"]
    assert specs["figureE2"].caption == "Visual cortex vs vision model, pair 2: MOT and MOT+R (Figure E.2)."
    assert specs["figureE2"].pairs == (("a", "c"),) and specs["figureE2"].methods == ("mot",)
    assert specs["figureH1"].baseline == "linear_predictivity"
