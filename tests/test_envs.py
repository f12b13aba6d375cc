"""The workflow's conda environments provide every module their jobs import (issue #12).

`snakemake --use-conda` runs each rule's script in the environment named by its `conda:`
directive, while CI runs everything in one pip environment: a package missing from an env
file shows up only on a user's machine.  These tests need neither conda nor the network.

* The rules, their env files and scripts are Snakemake's own: the workflow is loaded through
  its API (in a subprocess, which keeps Snakemake's global state out of pytest), once per
  environment that common.smk can pick for the MOT jobs (MOT_ENV: ot.yaml or torch.yaml).
* The third-party modules a job imports are derived statically from its script: every
  `motalign` name the script uses is followed to its definition, and every function or class
  so reached is scanned for the names it uses in turn.  A module's top-level imports count as
  soon as it is imported, a function's local imports (the package defers its heavy imports
  into functions) as soon as the function is reached; relative imports and re-exports are
  resolved, `if TYPE_CHECKING:` blocks are skipped.  Within a function every branch counts,
  so this over-approximates; a `motalign` name it cannot resolve fails the test.
* An env provides its conda packages, its pip requirements and, for an editable install of
  the package (`-e ..` or `-e ..[extra,...]`), the dependencies and extras that
  pyproject.toml lists; each mapped to import names (DISTRIBUTION_MODULES), together with
  the packages those are known to install (REQUIRES).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import pytest
import yaml

pytest.importorskip("snakemake")
tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11 on")

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
SRC = ROOT / "src"
PACKAGE = "motalign"

#: import names of distributions whose name is not their import name (lower-case names,
#: conda-forge's and PyPI's); any other distribution `foo-bar` provides `foo_bar`
DISTRIBUTION_MODULES = {
    "pytorch": {"torch"},
    "pytorch-gpu": {"torch"},
    "pytorch-cpu": {"torch"},
    "matplotlib-base": {"matplotlib"},
    "scikit-learn": {"sklearn"},
    "pillow": {"PIL"},
    "pyyaml": {"yaml"},
    "pot": {"ot"},
    "pytables": {"tables"},
    "python-dateutil": {"dateutil"},
    "huggingface-hub": {"huggingface_hub"},
    "scikit-image": {"skimage"},
}

#: distributions that a distribution always installs (its hard requirements, the same on
#: conda-forge and PyPI), where the code imports them directly
REQUIRES = {
    "boto3": {"botocore", "s3transfer", "jmespath"},
    "botocore": {"urllib3", "jmespath", "python-dateutil"},
    "requests": {"urllib3", "idna", "certifi", "charset-normalizer"},
    "scikit-learn": {"numpy", "scipy", "joblib", "threadpoolctl"},
    "pot": {"numpy", "scipy"},
    "seaborn": {"numpy", "pandas", "matplotlib-base"},
    "matplotlib-base": {"numpy"},
    "matplotlib": {"numpy"},
    "pandas": {"numpy"},
    "transformers": {"huggingface-hub", "tokenizers", "safetensors", "numpy", "pyyaml", "tqdm"},
}

#: modules that a third-party module needs at run time for what the jobs do with it, which
#: no import statement of ours shows: {module: {needed module: why}}
IMPLIED = {
    "transformers": {
        # AutoImageProcessor (motalign.models.extract, DINOv2 and ViT-MAE) is asked for the
        # PIL backend (BitImageProcessorPil, ViTImageProcessorPil), which needs Pillow.
        "PIL": "transformers' image processors (DINOv2, ViT-MAE) need Pillow",
    },
    "timm": {
        # timm imports torchvision (torchvision.ops, transforms) on `import timm`
        "torchvision": "timm imports torchvision",
    },
}

#: modules that a job may import but its env deliberately lacks: {module: (envs, reason)}
ALLOWED_MISSING = {
    "torch": (
        {"ot.yaml"},
        "the MOT engine imports torch only for mot.solver sinkhorn or a CUDA device, for which "
        "common.smk runs the MOT jobs in torch.yaml; with device auto it falls back to the CPU "
        "when torch is missing (motalign.inner.options.resolve_device)",
    ),
}

#: a top-level name that the job gets from Snakemake itself (its search path is added to
#: the job's): scripts may import it even though no env installs it
FROM_SNAKEMAKE = {"snakemake"}


# --------------------------------------------------------------------------- the rules

_LOAD_RULES = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, OutputSettings, Quietness,
                                          ResourceSettings, StorageSettings)

    snakefile, configs, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    result = {}
    for key, (config, workdir) in configs.items():
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            workflow = api.workflow(resource_settings=ResourceSettings(), storage_settings=StorageSettings(),
                                    config_settings=ConfigSettings(config=config),
                                    snakefile=Path(snakefile), workdir=Path(workdir))._workflow
            rules = result[key] = {}
            for rule in workflow.rules:
                base = str(rule.basedir)  # the folder of the rule file: conda: and script: are relative to it
                conda, script = rule.conda_env, rule.script
                rules[rule.name] = {
                    "conda": None if conda is None else os.path.normpath(os.path.join(base, str(conda))),
                    "script": None if script is None else os.path.normpath(os.path.join(base, str(script))),
                    "other": bool(rule.is_shell or rule.is_run or rule.is_notebook or rule.is_wrapper or rule.is_cwl),
                }
    Path(out).write_text(json.dumps(result))
    """
)

#: config overrides under which common.smk picks each MOT_ENV
MOT_ENV_CONFIGS = {"ot.yaml": {}, "torch.yaml": {"mot": {"solver": "sinkhorn"}}}


@pytest.fixture(scope="module")
def rules_by_mot_env(tmp_path_factory):
    """{MOT_ENV: {rule: {"conda": env file, "script": script, "other": shell/run/...?}}}, from
    Snakemake, for each environment that common.smk can give the MOT jobs."""
    tmp = tmp_path_factory.mktemp("workflow")
    configs = {}
    for mot_env, config in MOT_ENV_CONFIGS.items():
        (tmp / mot_env).mkdir()
        configs[mot_env] = (config, str(tmp / mot_env))
    out = tmp / "rules.json"
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_RULES, str(ROOT / "Snakefile"), json.dumps(configs), str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"could not load the workflow:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads(out.read_text())


def env_jobs(rules_by_mot_env):
    """{env file: {rule: script}} over both MOT_ENV variants."""
    jobs = {}
    for rules in rules_by_mot_env.values():
        for name, rule in rules.items():
            if rule["conda"]:
                jobs.setdefault(rule["conda"], {})[name] = rule["script"]
    return jobs


# --------------------------------------------------------------------------- the imports


def _is_type_checking(node) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(nodes):
    """Every node below `nodes`, except the bodies of `if TYPE_CHECKING:` blocks."""
    todo = list(nodes)[::-1]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node):
            children = node.orelse
        else:
            children = list(ast.iter_child_nodes(node))
        todo.extend(reversed(children))


def _import_time_nodes(body):
    """What runs when a module (or class body) is executed: not the bodies of functions."""
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from stmt.decorator_list
            yield from stmt.args.defaults
            yield from (d for d in stmt.args.kw_defaults if d is not None)
        elif isinstance(stmt, ast.ClassDef):
            yield from stmt.decorator_list
            yield from stmt.bases
            yield from stmt.keywords
            yield from _import_time_nodes(stmt.body)
        elif isinstance(stmt, ast.If) and _is_type_checking(stmt):
            yield from _import_time_nodes(stmt.orelse)
        else:
            yield stmt


@cache
def module_path(name: str) -> Path | None:
    """The file of a module of the package, or None if `name` is not one."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


class _Module:
    def __init__(self, name: str, path: Path):
        self.name, self.path = name, path
        self.is_package = path.name == "__init__.py"
        self.tree = parse(path)
        #: top-level functions and classes
        self.units = {
            s.name: s for s in self.tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        }
        #: other top-level names (constants and the like): defined on import
        self.variables = {
            n.id for s in self.tree.body if isinstance(s, (ast.Assign, ast.AnnAssign, ast.AugAssign))
            for n in ast.walk(s) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        #: names bound by the module's top-level imports
        self.bindings = {}

    def lazy_export(self, name: str) -> str | None:
        """The submodule of a name exported through `__getattr__` and a `{name: submodule}` dict."""
        if "__getattr__" not in self.units:
            return None
        for stmt in self.tree.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Dict):
                for key, value in zip(stmt.value.keys, stmt.value.values):
                    if isinstance(key, ast.Constant) and key.value == name and isinstance(value, ast.Constant):
                        return f"{self.name}.{value.value}"
        return None


class ImportGraph:
    """The third-party modules that running a script imports (see the module docstring)."""

    def __init__(self):
        self.modules: dict[str, _Module] = {}
        self.reached: set[tuple[str, str]] = set()
        #: {top-level module: where it was first imported}
        self.needs: dict[str, str] = {}
        self.unresolved: list[str] = []

    # -- modules and names of the package

    def load(self, name: str, where: str) -> _Module | None:
        """Import a module of the package (and its parents): run its top-level code."""
        parts = name.split(".")
        module = None
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub in self.modules:
                module = self.modules[sub]
                continue
            path = module_path(sub)
            if path is None:
                self.unresolved.append(f"module {sub} ({where})")
                return None
            module = self.modules[sub] = _Module(sub, path)
            self._run(module, list(_import_time_nodes(module.tree.body)), module.bindings)
        return module

    def reach(self, module_name: str, name: str, where: str):
        """A name of a module of the package is used: its function or class may run."""
        if (module_name, name) in self.reached:
            return
        self.reached.add((module_name, name))
        module = self.load(module_name, where)
        if module is None:
            return
        if name in module.units:
            node = module.units[name]
            self._run(module, [node], {})
        elif module_path(f"{module_name}.{name}"):
            self.load(f"{module_name}.{name}", where)
        elif name in module.bindings:
            self._follow(module.bindings[name], where)
        elif module.lazy_export(name):
            self.reach(module.lazy_export(name), name, where)
        elif name not in module.variables:
            self.unresolved.append(f"{module_name}.{name} ({where})")

    def reach_all(self, module_name: str, where: str):
        """A module of the package is used as a whole (passed around, `import *`)."""
        module = self.load(module_name, where)
        for name in module.units if module else ():
            self.reach(module_name, name, where)

    def _follow(self, binding, where):
        kind, module_name, name = binding
        if kind == "module":
            self.reach_all(module_name, where)
        else:
            self.reach(module_name, name, where)

    # -- running code: its imports and the names it uses

    def _absolute(self, module: _Module, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module
        package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
        base = package[: len(package) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))

    def _run(self, module: _Module, nodes, bindings: dict):
        """Execute `nodes` of `module`: imports first (binding names in `bindings`), then uses."""
        nodes = list(_walk(nodes))
        for node in nodes:
            where = f"{module.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    if top != PACKAGE:
                        self._need(top, where)
                        continue
                    self.load(alias.name, where)
                    if alias.asname:
                        bindings[alias.asname] = ("module", alias.name, None)
                    else:
                        bindings[top] = ("module", top, None)
            elif isinstance(node, ast.ImportFrom):
                source = self._absolute(module, node)
                top = source.split(".")[0]
                if top != PACKAGE:
                    self._need(top, where)
                    continue
                if self.load(source, where) is None:
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        self.reach_all(source, where)
                    elif module_path(f"{source}.{alias.name}"):
                        self.load(f"{source}.{alias.name}", where)
                        bindings[alias.asname or alias.name] = ("module", f"{source}.{alias.name}", None)
                    else:
                        bindings[alias.asname or alias.name] = ("from", source, alias.name)
        # the names that start an attribute chain (`pkg.sub.f`) are resolved with the chain
        chain_bases = {id(node.value) for node in nodes if isinstance(node, ast.Attribute)}
        for node in nodes:
            where = f"{module.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute):
                self._attribute(module, node, bindings, where)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and id(node) not in chain_bases:
                self._name(module, node.id, bindings, where)

    def _binding(self, module, name, bindings):
        return bindings.get(name) or module.bindings.get(name)

    def _name(self, module, name, bindings, where):
        binding = self._binding(module, name, bindings)
        if binding is not None and binding[0] == "from":
            self.reach(binding[1], binding[2], where)
        elif binding is not None:
            self.reach_all(binding[1], where)  # a module passed around: any of its names may run
        elif name in module.units:
            self.reach(module.name, name, where)

    def _attribute(self, module, node, bindings, where):
        """`pkg.sub.name`: the name of a module of the package that the chain ends in."""
        chain = []
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return
        binding = self._binding(module, node.id, bindings)
        if binding is None or binding[0] != "module":
            return
        current = binding[1]
        for attr in reversed(chain):
            if module_path(f"{current}.{attr}"):
                current = f"{current}.{attr}"
                self.load(current, where)
            else:
                self.reach(current, attr, where)
                return

    def _need(self, top: str, where: str):
        if top not in sys.stdlib_module_names and top != "__future__":
            self.needs.setdefault(top, where)

    # -- a script

    def run_script(self, path: Path):
        script = _Module("__main__", path)
        self._run(script, [script.tree], script.bindings)
        return self


@cache
def script_needs(script: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """({third-party top-level module: where it is imported}, unresolved names) of a script."""
    graph = ImportGraph().run_script(Path(script))
    needs = dict(graph.needs)
    for module in list(needs):
        for implied, why in IMPLIED.get(module, {}).items():
            needs.setdefault(implied, f"{needs[module]}, then {why}")
    return needs, tuple(graph.unresolved)


# --------------------------------------------------------------------------- the environments

_REQUIREMENT_NAME = re.compile(r"^\s*(?:[\w.-]+::)?([A-Za-z0-9][A-Za-z0-9._-]*)")
_EDITABLE = re.compile(r"^-e\s+(?P<path>[^\[\s]+)(?:\[(?P<extras>[^\]]*)\])?\s*$")


def normalize(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def modules_of(distributions) -> set[str]:
    """Import names of `distributions` and of what they install in turn."""
    todo, seen = [normalize(d) for d in distributions], set()
    while todo:
        distribution = todo.pop()
        if distribution not in seen:
            seen.add(distribution)
            todo.extend(normalize(d) for d in REQUIRES.get(distribution, ()))
    return {m for d in seen for m in DISTRIBUTION_MODULES.get(d, {d.replace("-", "_")})}


def requirement_name(requirement: str) -> str:
    return _REQUIREMENT_NAME.match(requirement).group(1)


@cache
def pyproject(path: Path) -> dict:
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def package_requirements(project_dir: Path, extras: set[str]) -> list[str]:
    """What `pip install -e project_dir[extras]` installs: dependencies and (nested) extras."""
    project = pyproject(project_dir / "pyproject.toml")["project"]
    optional = project.get("optional-dependencies", {})
    requirements, todo, done = list(project.get("dependencies", [])), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in done:
            continue
        assert extra in optional, f"{project_dir}: no extra {extra!r} in pyproject.toml"
        done.add(extra)
        for requirement in optional[extra]:
            nested = re.fullmatch(rf"{project['name']}\[([^\]]*)\]", requirement.strip())
            if nested:
                todo.extend(e.strip() for e in nested.group(1).split(","))
            else:
                requirements.append(requirement)
    return requirements


def env_distributions(spec: dict, env_dir: Path) -> set[str]:
    """The distributions that an environment (a parsed env file in `env_dir`) installs."""
    distributions = set()
    for dependency in spec.get("dependencies", []):
        if isinstance(dependency, str):
            distributions.add(requirement_name(dependency))
            continue
        for requirement in dependency.get("pip", []):
            editable = _EDITABLE.match(requirement.strip())
            if editable:
                project_dir = (env_dir / editable["path"]).resolve()
                assert (project_dir / "pyproject.toml").is_file(), f"-e {editable['path']}: no pyproject.toml"
                extras = {e.strip() for e in (editable["extras"] or "").split(",") if e.strip()}
                distributions |= {requirement_name(r) for r in package_requirements(project_dir, extras)}
                distributions.add(pyproject(project_dir / "pyproject.toml")["project"]["name"])
            else:
                distributions.add(requirement_name(requirement))
    return distributions


def missing_modules(env_name: str, spec: dict, env_dir: Path, jobs: dict[str, str]) -> list[str]:
    """A line per module that a job imports and the environment does not provide."""
    provided = modules_of(env_distributions(spec, env_dir)) | FROM_SNAKEMAKE
    problems = []
    for rule, script in sorted(jobs.items()):
        needs, unresolved = script_needs(script)
        problems += [f"{rule}: cannot resolve {u}" for u in unresolved]
        for module, where in sorted(needs.items()):
            allowed_envs, _ = ALLOWED_MISSING.get(module, ((), ""))
            if module not in provided and env_name not in allowed_envs:
                problems.append(f"{rule}: {env_name} lacks {module!r} (imported at {where})")
    return problems


def read_env(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------- the tests


def test_every_job_has_a_script_and_an_env(rules_by_mot_env):
    for mot_env, rules in rules_by_mot_env.items():
        for name, rule in rules.items():
            if rule["conda"] or rule["script"] or rule["other"]:
                assert rule["conda"] and rule["script"] and not rule["other"], (
                    f"rule {name} (MOT_ENV {mot_env}): a job needs both `conda:` and `script:` "
                    f"(the imports of shell/run jobs are not checked here): {rule}"
                )
                assert Path(rule["conda"]).parent == ENVS and Path(rule["conda"]).is_file(), rule
    mot_rules = {"inner_ot", "outer_ot", "subsample", "three_level_block"}
    for mot_env, rules in rules_by_mot_env.items():
        assert {Path(rules[r]["conda"]).name for r in mot_rules} == {mot_env}


def test_every_env_provides_what_its_jobs_import(rules_by_mot_env):
    jobs = env_jobs(rules_by_mot_env)
    assert {Path(env).name for env in jobs} == {p.name for p in ENVS.glob("*.yaml")}, "an env file no rule uses"
    problems = []
    for env, env_jobs_ in sorted(jobs.items()):
        path = Path(env)
        problems += missing_modules(path.name, read_env(path), path.parent, env_jobs_)
    assert not problems, "\n".join(problems)


def test_the_allowed_gaps_are_real(rules_by_mot_env):
    """Each ALLOWED_MISSING entry is imported by a job of its env, which lacks it."""
    for module, (envs, _) in ALLOWED_MISSING.items():
        for env_name in envs:
            path = ENVS / env_name
            scripts = env_jobs(rules_by_mot_env)[str(path)].values()
            assert any(module in script_needs(s)[0] for s in scripts), f"no job of {env_name} imports {module}"
            assert module not in modules_of(env_distributions(read_env(path), ENVS)), f"{env_name} has {module}"


OLD_DATA_YAML = """\
channels: [conda-forge, nodefaults]
dependencies:
  - python=3.11
  - numpy=2.4
  - scipy=1.17
  - pot=0.9.7
  - scikit-learn=1.9
  - nibabel=5.4
  - h5py=3.16
  - pip
  - pip:
      - -e ..
"""


def test_the_check_fails_without_the_extras_and_passes_with_them(rules_by_mot_env):
    """envs/data.yaml before issue #12 (the package without its extras) fails the check;
    the same file with `-e ..[data,nsd]` passes it: the extras are read from pyproject.toml."""
    jobs = env_jobs(rules_by_mot_env)[str(ENVS / "data.yaml")]
    problems = missing_modules("data.yaml", yaml.safe_load(OLD_DATA_YAML), ENVS, jobs)
    lacking = {re.search(r"lacks '([^']+)'", p).group(1) for p in problems}
    assert {"huggingface_hub", "urllib3", "pyarrow", "PIL", "boto3", "botocore"} <= lacking, problems
    assert any(p.startswith("download_nsd:") and "'boto3'" in p for p in problems)
    assert any(p.startswith("prepare_stimuli:") and "'huggingface_hub'" in p for p in problems)
    with_extras = OLD_DATA_YAML.replace("- -e ..", "- -e ..[data,nsd]")
    assert missing_modules("data.yaml", yaml.safe_load(with_extras), ENVS, jobs) == []


def test_each_env_says_which_rules_use_it(rules_by_mot_env):
    for env, jobs in env_jobs(rules_by_mot_env).items():
        first_line = Path(env).read_text().splitlines()[0]
        unnamed = [rule for rule in jobs if not re.search(rf"\b{rule}\b", first_line)]
        assert first_line.startswith("#") and not unnamed, f"{Path(env).name}: its first line does not name {unnamed}"


def test_conda_pins_agree_with_pyproject():
    """Every conda package is pinned (name=version), and the pin satisfies the range that
    pyproject.toml gives the same distribution, so that `pip install -e ..` keeps it."""
    from packaging.requirements import Requirement

    project = pyproject(ROOT / "pyproject.toml")["project"]
    ranges = {}
    for requirement in project["dependencies"] + sum(project["optional-dependencies"].values(), []):
        parsed = Requirement(requirement)
        if normalize(parsed.name) != PACKAGE:
            ranges.setdefault(normalize(parsed.name), parsed.specifier)
    aliases = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
    problems = []
    for path in sorted(ENVS.glob("*.yaml")):
        for dependency in read_env(path)["dependencies"]:
            if not isinstance(dependency, str) or dependency == "pip":
                continue
            name, _, version = dependency.partition("=")
            if not version or not re.fullmatch(r"[0-9][0-9.]*", version):
                problems.append(f"{path.name}: {dependency} is not pinned as name=version")
                continue
            specifier = ranges.get(aliases.get(normalize(name), normalize(name)))
            if specifier is not None and not specifier.contains(version):
                problems.append(f"{path.name}: {dependency} is outside pyproject.toml's {specifier}")
    assert not problems, "\n".join(problems)
