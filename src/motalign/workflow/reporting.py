"""The paper's tables and figures (Sec. 3 and Appendices B-J), built from the workflow's
results.

Which tables and figures there are, what each shows and its caption are data: the
catalogue ``motalign/workflow/catalogue.yaml``, keyed by the experiment (or appendix
baseline, or analysis) whose results they show; this module is generic code over it.

Tables: ``<id>.csv`` (mean, std and number of seeds per cell), ``<id>.md`` and ``<id>.tex``
(``mean ± std``), and ``<id>_vs_paper.md`` (the paper's value, ours, the difference).  The
paper's values are data: ``motalign/workflow/paper_values.csv``, transcribed from the paper.
Rows are the configured pairs, labelled with each network's ``label``; rows are matched
to the paper's by those labels.

Figures: matplotlib heatmaps of layer couplings (MOT beside pairwise, or MOT beside MOT+R),
averaged over seeds, with layer or region names on the axes; Appendix J.1 as lines with
error bands over seeds; Figure 5 as checkpoint couplings.
"""

from __future__ import annotations

import csv
import textwrap
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import yaml

from ..io.atomic import atomic_path
from ..io.readers import check_array, corrupt, load_npz, read_csv, read_json

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
#: figure panel title -> (method, coupling) of the outer-OT results it shows
PANELS = {
    "MOT": ("mot", "mot"),
    "Pairwise OT": ("mot", "pairwise_best"),
    "MOT+R": ("mot_r", "mot"),
}
#: the appendix baselines: the config's ``baselines:`` keys (App. F, H, I)
BASELINE_KINDS = ("global", "linear_predictivity", "rsa")
#: the field of a baseline table's columns that is the pair's MOT score (not a baseline's)
MOT_FIELD = "mot"


@dataclass(frozen=True)
class TableSpec:
    kind: str  # scores | hierarchy | a baseline kind (global | linear_predictivity)
    experiments: tuple  # scores and hierarchy tables: the experiments it summarises
    columns: tuple
    caption: str
    average_sources: bool = False
    fields: tuple = ()  # baseline tables: the baseline result's field of each column

    @property
    def baseline(self) -> str | None:
        """The baseline kind whose configured experiments the table summarises, if any."""
        return self.kind if self.kind in BASELINE_KINDS else None


@dataclass(frozen=True)
class FigureSpec:
    kind: str  # pairs | linear_predictivity | rsa | subsampling | three_level
    caption: str
    experiment: str = ""
    pairs: tuple = ()
    variants: tuple = ()  # (panel title, method, coupling) of each panel of a pair

    @property
    def baseline(self) -> str | None:
        """The baseline kind whose results the figure shows, if any."""
        return self.kind if self.kind in BASELINE_KINDS else None

    @property
    def methods(self) -> tuple:
        """The methods whose outer-OT results a pairs figure shows, in panel order."""
        return tuple(dict.fromkeys(method for _, method, _ in self.variants))


def load_catalogue() -> dict:
    """The catalogue of the paper's tables and figures (``catalogue.yaml``), checked."""
    text = resources.files("motalign.workflow").joinpath("catalogue.yaml").read_text(encoding="utf-8")
    catalogue = yaml.safe_load(text)
    for section, entry in _catalogue_entries(catalogue):
        for table_id, table in entry.get("tables", {}).items():
            known = HIERARCHY_COLUMNS if section == "hierarchy" else SCORE_COLUMNS
            if section in ("experiments", "hierarchy") and not set(table["columns"]) <= set(known):
                raise ValueError(f"catalogue {table_id}: unknown columns "
                                 f"{sorted(set(table['columns']) - set(known))}")
        for figure_id, figure in entry.get("figures", {}).items():
            unknown = set(figure.get("panels", ())) - set(PANELS)
            if unknown:
                raise ValueError(f"catalogue {figure_id}: unknown panels {sorted(unknown)}")
    return catalogue


def _catalogue_entries(catalogue):
    """(section, entry) of every entry of the catalogue that lists tables or figures."""
    for section in ("experiments", "baselines"):
        for entry in catalogue.get(section, {}).values():
            yield section, entry
    for section in ("hierarchy", "subsampling", "three_level"):
        if section in catalogue:
            yield section, catalogue[section]


def _table_specs(catalogue: dict) -> dict:
    """{table id: TableSpec} in the catalogue's order."""
    tables = {}
    for experiment, entry in catalogue["experiments"].items():
        for table_id, table in entry.get("tables", {}).items():
            tables[table_id] = TableSpec("scores", (experiment,), tuple(table["columns"]), table["caption"],
                                         average_sources=table.get("average_sources", False))
    for kind, entry in catalogue["baselines"].items():
        for table_id, table in entry.get("tables", {}).items():
            tables[table_id] = TableSpec(kind, (), tuple(table["columns"]), table["caption"],
                                         fields=tuple(table["columns"].values()))
    for table_id, table in catalogue["hierarchy"]["tables"].items():
        tables[table_id] = TableSpec("hierarchy", tuple(table["experiments"]), tuple(table["columns"]),
                                     table["caption"])
    return tables


CATALOGUE = load_catalogue()
#: every table of the paper: {table id: TableSpec}
TABLES = _table_specs(CATALOGUE)


# --------------------------------------------------------------------------- inputs
def label(config: dict, name: str) -> str:
    entry = config.get("models", {}).get(name) or config.get("brains", {}).get(name) or {}
    return entry.get("label", name)


def table_experiments(table_id: str, config: dict) -> list:
    """The experiments a table summarises: those of the config that exist and, for score
    and hierarchy tables, run a method that feeds at least one of its columns (an experiment
    without mot_r feeds no MOT+R-only table)."""
    spec = TABLES[table_id]
    if spec.baseline:
        return list(config.get("baselines", {}).get(spec.baseline, []))
    experiments = config.get("experiments", {})
    columns = SCORE_COLUMNS if spec.kind == "scores" else HIERARCHY_COLUMNS
    needed = {columns[c][0] for c in spec.columns if c in columns}
    return [e for e in spec.experiments if e in experiments and (not needed or needed & set(experiments[e]["methods"]))]


_NUMBERS = ("seed", "score", "hierarchy", "objective", "fraction")


def _read_csv(path, columns=("method", "coupling", "seed", "score")):
    """The rows of a score CSV, which must have ``columns`` and numbers where numbers go."""
    rows = read_csv(path, "score table", columns)
    for line, row in enumerate(rows, start=2):
        for column in _NUMBERS:
            value = row.get(column)
            if value in (None, "", "None"):
                continue
            try:
                float(value)
            except ValueError:
                raise corrupt(path, f"score table, line {line}: {column} = {value!r} is not a number") from None
    return rows


def _per_seed_values(table_id: str, config: dict, scores: dict, baselines: list) -> list:
    """(experiment, source, target, seed, column, value) rows of a table."""
    spec = TABLES[table_id]
    out = []
    if spec.kind in ("scores", "hierarchy"):
        columns = SCORE_COLUMNS if spec.kind == "scores" else HIERARCHY_COLUMNS
        wanted = {v: k for k, v in columns.items() if k in spec.columns}
        field_name = "score" if spec.kind == "scores" else "hierarchy"
        for experiment in table_experiments(table_id, config):
            for row in _read_csv(scores[experiment], ("method", "coupling", "source", "target", "seed",
                                                      field_name)):
                column = wanted.get((row["method"], row["coupling"]))
                if column and row[field_name] not in ("", "None"):
                    out.append((experiment, row["source"], row["target"], int(row["seed"]), column,
                                float(row[field_name])))
        return out
    columns = dict(zip(spec.columns, spec.fields))
    for path in baselines:
        result = read_json(path, "baseline result", ("experiment", "seed", "pairs"))
        experiment, seed = result["experiment"], int(result["seed"])
        for pair in result["pairs"]:
            key = (experiment, pair["source"], pair["target"], seed)
            out += [(*key, column, pair[f]) for column, f in columns.items() if f != MOT_FIELD]
    mot_columns = [column for column, f in columns.items() if f == MOT_FIELD]
    for experiment in {row[0] for row in out}:
        for row in _read_csv(scores[experiment], ("method", "coupling", "source", "target", "seed", "score")):
            if (row["method"], row["coupling"]) == SCORE_COLUMNS["MOT"]:
                out += [(experiment, row["source"], row["target"], int(row["seed"]), column, float(row["score"]))
                        for column in mot_columns]
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
        for experiment, _source, target, seed, column, value in values:
            grouped.setdefault((experiment, target, seed, column), []).append(value)
        values = [(e, "*", t, s, c, float(np.mean(v))) for (e, t, s, c), v in grouped.items()]
    cells = {}
    for experiment, source, target, _seed, column, value in values:
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
        shape = stack[0].shape if stack else (None, None)
        stack.append(check_array(path, load_npz(path, "outer-OT result", [key])[key], key, "outer-OT result",
                                 shape=shape))
    return np.mean(stack, axis=0)


def pair_panels(config, experiment, source, target, jsons_by_method: dict, npz_by_method: dict,
                variants: list) -> list:
    """Panels for one pair: ``variants`` = [(title, method, coupling), ...]."""
    panels = []
    for title, method, coupling in variants:
        layers = read_json(jsons_by_method[method][0], "outer-OT result", ("source_layers", "target_layers"))
        panels.append(Panel(
            f"{title}", mean_coupling(npz_by_method[method], f"coupling_{coupling}"),
            layers["source_layers"], layers["target_layers"],
            label(config, source), label(config, target),
        ))
    return panels


def plot_panels(groups: list, out_pdf, out_png, title: str = "") -> None:
    """One row of heatmaps per group (a group = the panels of one pair)."""
    import matplotlib  # deferred: matplotlib is slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: see above

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
            _heatmap(fig, ax, scaled, _ticks(panel.columns), _ticks(panel.rows))
            ax.set_title(panel.title, fontsize=9)
            ax.set_xlabel(panel.column_title, fontsize=8)
            ax.set_ylabel(panel.row_title, fontsize=8)
            ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(textwrap.fill(title, 45 * n_cols), fontsize=10)
    fig.tight_layout()
    _save(fig, out_pdf, out_png)
    plt.close(fig)


def _heatmap(fig, ax, matrix, column_labels, row_labels):
    """A heatmap of ``matrix`` (rows top to bottom, a cell per entry, viridis from 0 to its
    maximum) with a labelled colour bar; empty labels are skipped."""
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=max(1e-12, float(matrix.max())),
                      aspect="auto", interpolation="nearest")
    for axis, labels, set_ticks, set_labels in (
        ("x", column_labels, ax.set_xticks, ax.set_xticklabels),
        ("y", row_labels, ax.set_yticks, ax.set_yticklabels),
    ):
        shown = [(i, str(name)) for i, name in enumerate(labels) if str(name)]
        set_ticks([i for i, _ in shown])
        set_labels([name for _, name in shown], rotation=90 if axis == "x" else 0)
    fig.colorbar(image, ax=ax, label="mass (rows sum to 1)")


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
    import matplotlib  # deferred: matplotlib is slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: see above

    names = {("mot", "mot"): "MOT", ("mot", "pairwise_best"): "Pairwise Best",
             ("mot_r", "mot"): "MOT+R", ("mot_r", "pairwise_best"): "Pairwise Best+R"}
    series = {}
    for row in _read_csv(csv_path, ("method", "coupling", "fraction", "score")):
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
        ax.set_title(textwrap.fill(title, 60), fontsize=8)
    fig.tight_layout()
    _save(fig, out_pdf, out_png)
    plt.close(fig)


def three_level_panels(npz_path, json_path, config) -> list:
    data = load_npz(npz_path, "three-level result", ["coupling", "pairwise_best_map"])
    coupling, pairwise = (check_array(npz_path, data[k], k, "three-level result", ndim=2) for k in data)
    meta = read_json(json_path, "three-level result", ("source_revisions", "target_revisions", "source", "target"))
    rows, cols = meta["source_revisions"], meta["target_revisions"]
    a, b = label(config, meta["source"]), label(config, meta["target"])
    return [Panel("Three-level MOT: checkpoint coupling R", coupling, rows, cols, a, b),
            Panel("Pairwise best checkpoint", pairwise, rows, cols, a, b)]


def baseline_panels(json_paths: list, config, key: str = "best_match_map") -> list:
    """One panel per pair: the best-match map averaged over seeds."""
    maps = {}
    for path in json_paths:
        result = read_json(path, "baseline result", ("experiment", "pairs"))
        for pair in result["pairs"]:
            k = (result["experiment"], pair["source"], pair["target"])
            maps.setdefault(k, []).append(np.asarray(pair[key]))
    groups = []
    for (_experiment, source, target), stack in maps.items():
        matrix = np.mean(stack, axis=0)
        groups.append([Panel(f"{label(config, source)} ↔ {label(config, target)}", matrix,
                             [str(i) for i in range(matrix.shape[0])],
                             [str(i) for i in range(matrix.shape[1])],
                             label(config, source), label(config, target))])
    return groups


# --------------------------------------------------------------------------- figure catalogue
def figure_specs(config: dict) -> dict:
    """Every figure id the config can produce (the catalogue's, for the experiments,
    baselines and analyses the config has), with what it shows."""
    experiments = config.get("experiments", {})
    chosen = config.get("report", {})
    specs = {}
    for experiment, entry in CATALOGUE["experiments"].items():
        if experiment not in experiments:
            continue
        listed = tuple(tuple(p) for p in experiments[experiment]["pairs"])
        methods = experiments[experiment]["methods"]
        for figure_id, figure in entry.get("figures", {}).items():
            variants = tuple((title, *PANELS[title]) for title in figure["panels"] if PANELS[title][0] in methods)
            if figure.get("per_pair"):
                for k, pair in enumerate(listed, 1):
                    specs[figure_id.format(k=k)] = FigureSpec("pairs", figure["caption"].format(k=k), experiment,
                                                              (pair,), variants)
                continue
            if "first_pairs" not in figure:
                pairs = listed
            elif chosen.get(figure_id):
                pairs = tuple(tuple(p) for p in chosen[figure_id])
            else:
                pairs = listed[:figure["first_pairs"]]
            specs[figure_id] = FigureSpec("pairs", figure["caption"], experiment, pairs, variants)
    baselines = config.get("baselines", {})
    for kind, entry in CATALOGUE["baselines"].items():
        if baselines.get(kind):
            for figure_id, figure in entry.get("figures", {}).items():
                specs[figure_id] = FigureSpec(kind, figure["caption"])
    for analysis in ("subsampling", "three_level"):
        if config.get(analysis):
            for figure_id, figure in CATALOGUE[analysis].get("figures", {}).items():
                specs[figure_id] = FigureSpec(analysis, figure["caption"])
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
    elif spec.baseline:
        plot_panels(baseline_panels(inputs["files"], config), out_pdf, out_png,
                    title=f"{figure_id}: {spec.caption}")
    elif spec.kind == "subsampling":
        plot_subsampling(inputs["files"][0], out_pdf, out_png, title=f"{figure_id}: {spec.caption}")
    else:
        npz = next(f for f in inputs["files"] if str(f).endswith(".npz"))
        js = next(f for f in inputs["files"] if str(f).endswith(".json"))
        plot_panels([three_level_panels(npz, js, config)], out_pdf, out_png,
                    title=f"{figure_id}: {spec.caption}")
