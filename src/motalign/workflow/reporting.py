"""The paper's tables and figures (SPEC §4), built from the workflow's results.

Tables: ``<id>.csv`` (mean, std and number of seeds per cell), ``<id>.md`` and ``<id>.tex``
(``mean ± std``), and ``<id>_vs_paper.md`` (the paper's value, ours, the difference).  The
paper's values are data: ``motalign/workflow/paper_values.csv``, transcribed from the paper.
Rows are the configured pairs, labelled with each network's ``label``; rows are matched
to the paper's by those labels.

Figures: seaborn heatmaps of layer couplings (MOT beside pairwise, or MOT beside MOT+R),
averaged over seeds, with layer or region names on the axes; Appendix J.1 as lines with
error bands over seeds; Figure 5 as checkpoint couplings.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path

#: table column -> (method, coupling) in the experiment's score file
SCORE_COLUMNS = {
    "MOT": ("mot", "mot"),
    "Perm-P": ("mot", "random"),
    "Single-Best OT": ("mot", "single_best"),
    "Pairwise Best OT": ("mot", "pairwise_best"),
    "MOT+R": ("mot_r", "mot"),
    "Single-Best+R": ("mot_r", "single_best"),
    "Pairwise Best+R": ("mot_r", "pairwise_best"),
}
#: hierarchy table column -> (method, coupling)
HIERARCHY_COLUMNS = {
    "MOT": ("mot", "mot"),
    "Pairwise OT": ("mot", "pairwise_best"),
    "MOT+R": ("mot_r", "mot"),
    "Pairwise Best+R": ("mot_r", "pairwise_best"),
}
FOUR = ["MOT", "Perm-P", "Single-Best OT", "Pairwise Best OT"]
ROTATED = ["MOT+R", "Single-Best+R", "Pairwise Best+R"]
MIXED = ["MOT", "Pairwise Best OT", "MOT+R", "Pairwise Best+R"]


@dataclass(frozen=True)
class TableSpec:
    kind: str  # scores | hierarchy | global | linear_predictivity
    experiments: tuple
    columns: tuple
    caption: str
    average_sources: bool = False


TABLES = {
    "table1": TableSpec("scores", ("llm",), tuple(FOUR),
                        "LLM alignment: held-out reconstruction correlation of MOT and baselines (Table 1)."),
    "table2": TableSpec("scores", ("nsd",), tuple(FOUR),
                        "Visual cortex alignment across subjects (Table 2)."),
    "tableC1": TableSpec("scores", ("nsd",), tuple(FOUR),
                         "Visual cortex alignment, mean ± std over seeds (Table C.1)."),
    "table3": TableSpec("scores", ("vit",), tuple(MIXED),
                        "Vision model alignment, rotation-sensitive and rotation-augmented (Table 3)."),
    "tableD1": TableSpec("scores", ("vit",), tuple(FOUR),
                         "Vision models: MOT and its baselines (Table D.1)."),
    "tableD2": TableSpec("scores", ("vit",), tuple(ROTATED),
                         "Vision models: MOT+R and its baselines (Table D.2)."),
    "tableE1": TableSpec("scores", ("nsd_vit",), tuple(MIXED),
                         "Visual cortex vs vision models, averaged over subjects (Table E.1).",
                         average_sources=True),
    "tableE2": TableSpec("scores", ("nsd_vit",), tuple(FOUR),
                         "Visual cortex vs vision models per subject: MOT and baselines (Table E.2)."),
    "tableE3": TableSpec("scores", ("nsd_vit",), tuple(ROTATED),
                         "Visual cortex vs vision models per subject: MOT+R and baselines (Table E.3)."),
    "tableF1": TableSpec("global", (), ("Global OT", "Global Linear Predictivity", "MOT"),
                         "Global OT and global linear predictivity (all layers flattened) vs MOT (Table F.1)."),
    "tableG1": TableSpec("hierarchy", ("vit", "llm", "nsd"), tuple(HIERARCHY_COLUMNS),
                         "Hierarchy score H(P) of MOT(+R) and pairwise plans (Table G.1)."),
    "tableH1": TableSpec("linear_predictivity", (), ("Pairwise LP", "MOT"),
                         "Pairwise linear predictivity vs MOT reconstruction scores (Table H.1)."),
}


# --------------------------------------------------------------------------- inputs
def label(config: dict, name: str) -> str:
    entry = config.get("models", {}).get(name) or config.get("brains", {}).get(name) or {}
    return entry.get("label", name)


def table_experiments(table_id: str, config: dict) -> list:
    """The experiments a table summarises (those of the config that exist)."""
    spec = TABLES[table_id]
    if spec.kind in ("global", "linear_predictivity"):
        return list(config.get("baselines", {}).get(spec.kind, []))
    return [e for e in spec.experiments if e in config.get("experiments", {})]


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _per_seed_values(table_id: str, config: dict, scores: dict, baselines: list) -> list:
    """(experiment, source, target, seed, column, value) rows of a table."""
    spec = TABLES[table_id]
    out = []
    if spec.kind in ("scores", "hierarchy"):
        columns = SCORE_COLUMNS if spec.kind == "scores" else HIERARCHY_COLUMNS
        wanted = {v: k for k, v in columns.items() if k in spec.columns}
        field_name = "score" if spec.kind == "scores" else "hierarchy"
        for experiment in table_experiments(table_id, config):
            for row in _read_csv(scores[experiment]):
                column = wanted.get((row["method"], row["coupling"]))
                if column and row[field_name] not in ("", "None"):
                    out.append((experiment, row["source"], row["target"], int(row["seed"]), column,
                                float(row[field_name])))
        return out
    mot_column = "MOT"
    for path in baselines:
        result = json.loads(Path(path).read_text())
        experiment, seed = result["experiment"], int(result["seed"])
        for pair in result["pairs"]:
            key = (experiment, pair["source"], pair["target"], seed)
            if spec.kind == "global":
                out.append((*key, "Global OT", pair["global_ot"]))
                out.append((*key, "Global Linear Predictivity", pair["global_linear_predictivity"]))
            else:
                out.append((*key, "Pairwise LP", pair["score"]))
    for experiment in {row[0] for row in out}:
        for row in _read_csv(scores[experiment]):
            if (row["method"], row["coupling"]) == ("mot", "mot"):
                out.append((experiment, row["source"], row["target"], int(row["seed"]), mot_column,
                            float(row["score"])))
    return out


@dataclass
class Table:
    table_id: str
    columns: list
    rows: list = field(default_factory=list)  # dicts: model_1, model_2, {column: (mean, std, n)}

    def cell(self, row, column):
        return row["cells"].get(column)


def build_table(table_id: str, config: dict, scores: dict, baselines: list = ()) -> Table:
    """Mean and std over seeds of every cell of a table; rows in the config's pair order."""
    spec = TABLES[table_id]
    values = _per_seed_values(table_id, config, scores, list(baselines))
    if spec.average_sources:  # mean over sources (subjects) per target and seed, first
        grouped = {}
        for experiment, source, target, seed, column, value in values:
            grouped.setdefault((experiment, target, seed, column), []).append(value)
        values = [(e, "*", t, s, c, float(np.mean(v))) for (e, t, s, c), v in grouped.items()]
    cells = {}
    for experiment, source, target, seed, column, value in values:
        cells.setdefault((experiment, source, target), {}).setdefault(column, []).append(value)
    order = []
    for experiment in table_experiments(table_id, config):
        for source, target in config["experiments"][experiment]["pairs"]:
            key = (experiment, "*" if spec.average_sources else source, target)
            if key in cells and key not in order:
                order.append(key)
    table = Table(table_id, list(spec.columns))
    for key in order:
        experiment, source, target = key
        table.rows.append({
            "experiment": experiment,
            "model_1": "Subject" if source == "*" else label(config, source),
            "model_2": label(config, target),
            "cells": {c: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), len(v))
                      for c, v in cells[key].items()},
        })
    if not table.rows:
        raise ValueError(f"{table_id}: no results for experiments {table_experiments(table_id, config)}")
    return table


# --------------------------------------------------------------------------- writing tables
def _fmt(cell, digits=3):
    if cell is None:
        return ""
    mean, std, _ = cell
    return f"{mean:.{digits}f}" if np.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def write_table(table: Table, out_csv, out_md, out_tex, caption: str = "") -> None:
    """The table as CSV (mean, std, n per column), Markdown and LaTeX (mean ± std)."""
    header = ["model_1", "model_2"]
    for column in table.columns:
        header += [f"{column} mean", f"{column} std", f"{column} n_seeds"]
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in table.rows:
            line = [row["model_1"], row["model_2"]]
            for column in table.columns:
                cell = table.cell(row, column)
                line += ["", "", ""] if cell is None else [f"{cell[0]:.6f}", f"{cell[1]:.6f}", cell[2]]
            writer.writerow(line)
    names = ["Model 1", "Model 2", *table.columns]
    lines = [f"**{table.table_id}.** {caption}", "", "| " + " | ".join(names) + " |",
             "|" + "---|" * len(names)]
    for row in table.rows:
        lines.append("| " + " | ".join([row["model_1"], row["model_2"]]
                                       + [_fmt(table.cell(row, c)) for c in table.columns]) + " |")
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    tex = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{ll" + "c" * len(table.columns) + "}",
           r"\toprule", " & ".join(_tex(n) for n in names) + r" \\", r"\midrule"]
    for row in table.rows:
        cells = [_fmt(table.cell(row, c)).replace("±", r"$\pm$") for c in table.columns]
        tex.append(" & ".join([_tex(row["model_1"]), _tex(row["model_2"]), *cells]) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_tex(caption)}}}",
            rf"\label{{tab:{table.table_id}}}", r"\end{table}"]
    with atomic_path(out_tex) as tmp:
        tmp.write_text("\n".join(tex) + "\n")


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def paper_values(table_id: str) -> dict:
    """{(model_1, model_2, column): (value, std or nan)} transcribed from the paper."""
    text = resources.files("motalign.workflow").joinpath("paper_values.csv").read_text()
    out = {}
    for row in csv.DictReader(text.splitlines()):
        if row["table"] == table_id:
            std = float(row["std"]) if row["std"] else float("nan")
            out[row["model_1"], row["model_2"], row["column"]] = (float(row["value"]), std)
    return out


def write_vs_paper(table: Table, out_md) -> dict:
    """Per cell: the paper's value, ours, and ours minus the paper's.  Returns counts."""
    paper = paper_values(table.table_id)
    lines = [f"**{table.table_id}: paper vs ours** (ours: mean ± std over seeds; "
             "difference = ours - paper)", "",
             "| Model 1 | Model 2 | column | paper | ours | difference |", "|---|---|---|---|---|---|"]
    matched = 0
    for row in table.rows:
        for column in table.columns:
            cell = table.cell(row, column)
            ref = paper.get((row["model_1"], row["model_2"], column))
            if cell is None and ref is None:
                continue
            ours = _fmt(cell)
            ref_text = "—" if ref is None else (f"{ref[0]:.3f}" if np.isnan(ref[1]) else f"{ref[0]:.3f} ± {ref[1]:.3f}")
            diff = "—" if ref is None or cell is None else f"{cell[0] - ref[0]:+.3f}"
            matched += ref is not None and cell is not None
            lines.append(f"| {row['model_1']} | {row['model_2']} | {column} | {ref_text} | {ours} | {diff} |")
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return {"cells_matched": matched, "paper_cells": len(paper)}


# --------------------------------------------------------------------------- figures
@dataclass
class Panel:
    title: str
    matrix: np.ndarray
    rows: list
    columns: list
    row_title: str = ""
    column_title: str = ""


def mean_coupling(npz_paths: list, key: str) -> np.ndarray:
    """A coupling averaged over seeds (outer-OT ``.npz`` files)."""
    stack = []
    for path in npz_paths:
        with np.load(path) as data:
            stack.append(data[key])
    return np.mean(stack, axis=0)


def pair_panels(config, experiment, source, target, jsons_by_method: dict, npz_by_method: dict,
                variants: list) -> list:
    """Panels for one pair: ``variants`` = [(title, method, coupling), ...]."""
    panels = []
    for title, method, coupling in variants:
        layers = json.loads(Path(jsons_by_method[method][0]).read_text())
        panels.append(Panel(
            f"{title}", mean_coupling(npz_by_method[method], f"coupling_{coupling}"),
            layers["source_layers"], layers["target_layers"],
            label(config, source), label(config, target),
        ))
    return panels


def plot_panels(groups: list, out_pdf, out_png, title: str = "") -> None:
    """One row of heatmaps per group (a group = the panels of one pair)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    n_rows = len(groups)
    n_cols = max(len(g) for g in groups)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.6 * n_rows), squeeze=False)
    for r, group in enumerate(groups):
        for c in range(n_cols):
            ax = axes[r][c]
            if c >= len(group):
                ax.axis("off")
                continue
            panel = group[c]
            scaled = panel.matrix * panel.matrix.shape[0]  # rows sum to 1
            sns.heatmap(scaled, ax=ax, cmap="viridis", vmin=0, vmax=max(1e-12, float(scaled.max())),
                        xticklabels=_ticks(panel.columns), yticklabels=_ticks(panel.rows),
                        cbar_kws={"label": "mass (rows sum to 1)"})
            ax.set_title(panel.title, fontsize=9)
            ax.set_xlabel(panel.column_title, fontsize=8)
            ax.set_ylabel(panel.row_title, fontsize=8)
            ax.tick_params(labelsize=6)
    if title:
        import textwrap

        fig.suptitle(textwrap.fill(title, 45 * n_cols), fontsize=10)
    fig.tight_layout()
    _save(fig, out_pdf, out_png)
    plt.close(fig)


def _ticks(names):
    names = list(names)
    if len(names) <= 24:
        return names
    step = int(np.ceil(len(names) / 24))
    return [n if i % step == 0 else "" for i, n in enumerate(names)]


def _save(fig, out_pdf, out_png):
    with atomic_path(out_pdf, suffix=".pdf") as tmp:
        fig.savefig(tmp, format="pdf")
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=130)


def plot_subsampling(csv_path, out_pdf, out_png, title: str = "") -> None:
    """Appendix J.1: reconstruction score vs fraction of target units kept, mean and a band
    of ± one std over seeds, for MOT, MOT+R and their pairwise baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {("mot", "mot"): "MOT", ("mot", "pairwise_best"): "Pairwise Best",
             ("mot_r", "mot"): "MOT+R", ("mot_r", "pairwise_best"): "Pairwise Best+R"}
    series = {}
    for row in _read_csv(csv_path):
        key = names.get((row["method"], row["coupling"]))
        if key:
            series.setdefault(key, {}).setdefault(float(row["fraction"]), []).append(float(row["score"]))
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, by_fraction in series.items():
        fractions = sorted(by_fraction)
        mean = np.array([np.mean(by_fraction[f]) for f in fractions])
        std = np.array([np.std(by_fraction[f]) for f in fractions])
        ax.plot(fractions, mean, marker="o", label=name)
        ax.fill_between(fractions, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("fraction of target units kept")
    ax.set_ylabel("held-out reconstruction score")
    ax.legend(fontsize=8)
    if title:
        import textwrap

        ax.set_title(textwrap.fill(title, 60), fontsize=8)
    fig.tight_layout()
    _save(fig, out_pdf, out_png)
    plt.close(fig)


def three_level_panels(npz_path, json_path, config) -> list:
    with np.load(npz_path) as data:
        coupling, pairwise = data["coupling"], data["pairwise_best_map"]
    meta = json.loads(Path(json_path).read_text())
    rows, cols = meta["source_revisions"], meta["target_revisions"]
    a, b = label(config, meta["source"]), label(config, meta["target"])
    return [Panel("Three-level MOT: checkpoint coupling R", coupling, rows, cols, a, b),
            Panel("Pairwise best checkpoint", pairwise, rows, cols, a, b)]


def baseline_panels(json_paths: list, config, key: str = "best_match_map") -> list:
    """One panel per pair: the best-match map averaged over seeds."""
    maps, meta = {}, {}
    for path in json_paths:
        result = json.loads(Path(path).read_text())
        for pair in result["pairs"]:
            k = (result["experiment"], pair["source"], pair["target"])
            maps.setdefault(k, []).append(np.asarray(pair[key]))
    groups = []
    for (experiment, source, target), stack in maps.items():
        matrix = np.mean(stack, axis=0)
        groups.append([Panel(f"{label(config, source)} ↔ {label(config, target)}", matrix,
                             [str(i) for i in range(matrix.shape[0])],
                             [str(i) for i in range(matrix.shape[1])],
                             label(config, source), label(config, target))])
    return groups


# --------------------------------------------------------------------------- figure catalog
MOT_VS_PAIRWISE = (("MOT", "mot", "mot"), ("Pairwise OT", "mot", "pairwise_best"))
MOT_VS_ROTATION = (("MOT", "mot", "mot"), ("MOT+R", "mot_r", "mot"))


@dataclass(frozen=True)
class FigureSpec:
    kind: str  # pairs | linear_predictivity | rsa | subsampling | three_level
    caption: str
    experiment: str = ""
    pairs: tuple = ()
    variants: tuple = ()


def figure_specs(config: dict) -> dict:
    """Every figure id the config can produce (SPEC §4), with what it shows."""
    experiments = config.get("experiments", {})
    chosen = config.get("report", {})
    specs = {}

    def pairs(experiment, key=None, default=None):
        listed = [tuple(p) for p in experiments[experiment]["pairs"]]
        if key and chosen.get(key):
            return tuple(tuple(p) for p in chosen[key])
        return tuple(listed if default is None else listed[:default])

    def variants(experiment, wanted):
        methods = experiments[experiment]["methods"]
        return tuple(v for v in wanted if v[1] in methods)

    if "llm" in experiments:
        specs["figure2"] = FigureSpec("pairs", "Transport plans for LLM alignment: MOT (left) vs pairwise OT "
                                      "(right) (Figure 2).", "llm", pairs("llm", "figure2", 2),
                                      variants("llm", MOT_VS_PAIRWISE))
        specs["figureB1"] = FigureSpec("pairs", "MOT transport plans across LLM families and scales (Figure B.1).",
                                       "llm", pairs("llm"), variants("llm", MOT_VS_PAIRWISE[:1]))
    if "nsd" in experiments:
        specs["figure3"] = FigureSpec("pairs", "Transport plans for cross-subject brain alignment: MOT vs "
                                      "pairwise OT (Figure 3).", "nsd", pairs("nsd", "figure3", 2),
                                      variants("nsd", MOT_VS_PAIRWISE))
        specs["figureC1"] = FigureSpec("pairs", "MOT and pairwise OT plans for every subject pair (Figure C.1).",
                                       "nsd", pairs("nsd"), variants("nsd", MOT_VS_PAIRWISE))
    if "vit" in experiments:
        specs["figure4"] = FigureSpec("pairs", "Vision models without (MOT) and with rotation (MOT+R) "
                                      "(Figure 4).", "vit", pairs("vit", "figure4", 1),
                                      variants("vit", MOT_VS_ROTATION))
        for k, pair in enumerate(pairs("vit"), 1):
            specs[f"figureD{k}"] = FigureSpec("pairs", f"Vision models, pair {k}: MOT and MOT+R (Figure D.{k}).",
                                              "vit", (pair,), variants("vit", MOT_VS_ROTATION))
    if "nsd_vit" in experiments:
        for k, pair in enumerate(pairs("nsd_vit"), 1):
            specs[f"figureE{k}"] = FigureSpec("pairs", f"Visual cortex vs vision model, pair {k}: MOT and MOT+R "
                                              f"(Figure E.{k}).", "nsd_vit", (pair,),
                                              variants("nsd_vit", MOT_VS_ROTATION))
    baselines = config.get("baselines", {})
    if baselines.get("linear_predictivity"):
        specs["figureH1"] = FigureSpec("linear_predictivity", "Best-match maps of pairwise linear predictivity "
                                       "(Figure H.1).")
    if baselines.get("rsa"):
        specs["figureI1"] = FigureSpec("rsa", "Best-match maps of pairwise RSA (Figure I.1).")
    if config.get("subsampling"):
        specs["figureJ1"] = FigureSpec("subsampling", "Reconstruction score vs fraction of target units kept, "
                                       "mean ± std over seeds (Figure J.1).")
    if config.get("three_level"):
        specs["figure5"] = FigureSpec("three_level", "Three-level MOT over training checkpoints vs the "
                                      "pairwise-best checkpoint map (Figure 5).")
    return specs


def table_ids(config: dict) -> list:
    """The table ids whose experiments exist in the config."""
    return [t for t in TABLES if table_experiments(t, config)]


def build_figure(figure_id: str, config: dict, inputs: dict, out_pdf, out_png) -> None:
    """Draw one figure.  ``inputs``: for "pairs" figures {(source, target, method):
    (json paths, npz paths)}; otherwise {"files": [...]}."""
    spec = figure_specs(config)[figure_id]
    if spec.kind == "pairs":
        groups = []
        for source, target in spec.pairs:
            jsons = {m: inputs[source, target, m][0] for _, m, _ in spec.variants}
            npzs = {m: inputs[source, target, m][1] for _, m, _ in spec.variants}
            groups.append(pair_panels(config, spec.experiment, source, target, jsons, npzs,
                                      list(spec.variants)))
        plot_panels(groups, out_pdf, out_png, title=f"{figure_id}: {spec.caption}")
    elif spec.kind in ("linear_predictivity", "rsa"):
        plot_panels(baseline_panels(inputs["files"], config), out_pdf, out_png,
                    title=f"{figure_id}: {spec.caption}")
    elif spec.kind == "subsampling":
        plot_subsampling(inputs["files"][0], out_pdf, out_png, title=f"{figure_id}: {spec.caption}")
    else:
        npz = next(f for f in inputs["files"] if str(f).endswith(".npz"))
        js = next(f for f in inputs["files"] if str(f).endswith(".json"))
        plot_panels([three_level_panels(npz, js, config)], out_pdf, out_png,
                    title=f"{figure_id}: {spec.caption}")
