"""The tree says what the import graph does: no import cycle inside motalign, no module
over 600 lines, function-local imports only to defer a heavy dependency (and saying so),
and importing the method pulls in none of the workflow's heavy dependencies."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "motalign"
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path):
    """(target module, line number, is function-local) of every motalign import."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    local_lines = {n.lineno for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(name, is_package, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            yield target, node.lineno, node.lineno in local_lines


def graph() -> dict:
    edges = {}
    for name, path in MODULES.items():
        edges[name] = {t for t, _, _ in imports(name, path) if t in MODULES and t != name}
    return edges


def test_no_import_cycle():
    edges, state, stack = graph(), {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_no_module_over_600_lines():
    long = {name: n for name, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_function_local_imports_only_defer_heavy_dependencies():
    """A function-local import is never inside motalign's own tree without a reason, and
    every one says why it is deferred (a comment with 'deferred' on its line)."""
    offenders = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for _, lineno, local in imports(name, path):
            if local and "deferred" not in lines[lineno - 1]:
                offenders.append(f"{path.relative_to(SRC)}:{lineno}: {lines[lineno - 1].strip()}")
    reason = "function-local imports without a '# deferred: ...' reason:\n"
    assert not offenders, reason + "\n".join(sorted(set(offenders)))


HEAVY = ("torch", "h5py", "boto3", "transformers", "matplotlib", "nibabel", "seaborn")


@pytest.mark.parametrize("statement", [
    "import motalign",
    "from motalign import MOT, ThreeLevelMOT, GlobalOT, GlobalLinearPredictivity, "
    "PairwiseLinearPredictivity, PairwiseRSA, hierarchy_score, columnwise_pearson, COUPLINGS",
    "import motalign.inner, motalign.solvers, motalign.io.store, motalign.planted",
    "from motalign.workflow.alignment_jobs import collect_scores",
])
def test_the_method_imports_no_heavy_dependency(statement):
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_public_names_are_unchanged():
    import motalign

    assert sorted(motalign.__all__) == sorted([
        "MOT", "ThreeLevelMOT", "COUPLINGS", "hierarchy_score", "columnwise_pearson", "GlobalOT",
        "GlobalLinearPredictivity", "PairwiseLinearPredictivity", "PairwiseRSA"])
    for name in motalign.__all__:
        assert getattr(motalign, name) is not None
