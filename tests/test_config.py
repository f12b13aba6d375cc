"""Config checks run before any job: the schema (and its defaults, unknown keys, repeated
entries), the tiny models' architectures, the cross-references, the report's pairs, the
stimulus counts; and the devices jobs ask for."""

import copy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from motalign.inner import SETTINGS
from motalign.inner import types as engine
from motalign.models.tiny import TEXT_FAMILIES, VISION_FAMILIES, default_architecture
from motalign.workflow import devices, model_jobs
from motalign.workflow.config import MOT_ENGINE_KEYS, ConfigError, check_config, mot_settings, n_layers, n_shards
from motalign.workflow.config_schema import validate_config, validate_schema
from motalign.workflow.shards import shard_pairs

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def load(name):
    return yaml.safe_load((ROOT / "config" / name).read_text())


def schema():
    return yaml.safe_load(SCHEMA.read_text())


def validated(config):
    """The config as the Snakefile sees it: validated, every default filled in."""
    return validate_schema(config, SCHEMA)


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "test.yaml", "pretrained.yaml"])
def test_shipped_configs_are_valid(name):
    jsonschema = pytest.importorskip("jsonschema")
    config = load(name)
    jsonschema.validate(config, schema())
    check_config(config)
    validate_config(config)


@pytest.mark.parametrize("name", ["config.yaml", "test.yaml", "pretrained.yaml"])
def test_defaults_are_filled_in_as_snakemake_did(name):
    """validate_config replaces snakemake.utils.validate(..., set_default=True): the same
    config comes out, also with every optional section left out."""
    utils = pytest.importorskip("snakemake.utils")
    full = load(name)
    bare = copy.deepcopy(full)
    for section in ("mot", "extraction", "include_embeddings", "baselines", "report", "brains", "models"):
        bare.pop(section, None)
    bare.get("nsd", {}).pop("simulation", None)
    for config in (full, bare):
        theirs, ours = copy.deepcopy(config), copy.deepcopy(config)
        utils.validate(theirs, str(SCHEMA), set_default=True)
        assert validate_schema(ours, SCHEMA) == theirs


def test_paper_config_covers_the_spec():
    config = load("paper.yaml")
    assert config["seeds"] == [0, 1, 2, 3, 4]
    assert len(config["experiments"]["llm"]["pairs"]) == 6
    assert len(config["experiments"]["nsd"]["pairs"]) == 6
    assert len(config["experiments"]["vit"]["pairs"]) == 10
    assert len(config["experiments"]["nsd_vit"]["pairs"]) == 16
    assert len(config["three_level"]["revisions"]) == 154
    assert n_layers(config, "llama_3b") == 28 and n_layers(config, "subjA") == 7


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["experiments"]["llm"]["pairs"].append(["llama_s", "nope"]),
     r"experiments\.llm\.pairs\[6\]: network 'nope'"),
    (lambda c: c["experiments"]["llm"].update(dataset="digits"), r"experiments\.llm\.pairs\[0\]: text model"),
    (lambda c: c["experiments"]["vit"]["pairs"].append(["subjA", "mae_b"]),
     r"experiments\.vit\.pairs\[10\]: brain 'subjA'"),
    (lambda c: c["models"]["llama_s"]["train"].update(dataset="digits"), r"models\.llama_s\.train\.dataset"),
    (lambda c: c["three_level"]["revisions"].append("step999"), r"three_level\.revisions: \['step999'\]"),
    (lambda c: c["baselines"].update(rsa=["missing"]), r"baselines\.rsa: unknown experiment 'missing'"),
    (lambda c: c["subsampling"].update(target="ghost"), r"subsampling\.target: unknown model 'ghost'"),
])
def test_cross_reference_errors_name_the_key(edit, key):
    config = copy.deepcopy(load("config.yaml"))
    edit(config)
    with pytest.raises(ConfigError, match=key):
        check_config(config)


@pytest.mark.parametrize("mot, message", [
    ({"solver": "lp"}, "mot.solver: 'lp' is not allowed; expected one of 'exact', 'sinkhorn'"),
    ({"device": "gpu"}, "mot.device: 'gpu' does not match"),
    ({"threads": 0}, "mot.threads: 0 must be >= 1"),
    ({"epsilon": 0}, "mot.epsilon: 0 must be > 0"),
    ({"n_jobs": 2}, "mot.n_jobs: unknown key"),
])
def test_schema_rejects_bad_engine_settings(mot, message):
    config = copy.deepcopy(load("config.yaml"))
    config["mot"].update(mot)
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert str(error.value).startswith(message)


def _rename(section: dict, old: str, new: str):
    section[new] = section.pop(old)


@pytest.mark.parametrize("edit, message", [
    # unknown keys, at every level, with the close match
    (lambda c: _rename(c, "seeds", "seedz"), "seedz: unknown key; did you mean 'seeds'?"),
    (lambda c: _rename(c["models"]["llama_s"]["architecture"], "hidden_size", "hiden_size"),
     "models.llama_s.architecture.hiden_size: unknown key; did you mean 'hidden_size'?"),
    (lambda c: c["datasets"]["digits"].update(imag_size=16),
     "datasets.digits.imag_size: unknown key; did you mean 'image_size'?"),
    (lambda c: _rename(c["models"]["pythia_s1"]["train"], "checkpoint_steps", "checkpoint_step"),
     "models.pythia_s1.train.checkpoint_step: unknown key; did you mean 'checkpoint_steps'?"),
    (lambda c: _rename(c["experiments"]["llm"], "pairs", "pair"),
     "experiments.llm.pair: unknown key; did you mean 'pairs'?"),
    (lambda c: c["nsd"]["simulation"].update(n_share=50),
     "nsd.simulation.n_share: unknown key; did you mean 'n_shared'?"),
    (lambda c: c["nsd"].update(planning_voxels={"V5": 10}),
     "nsd.planning_voxels.V5: unknown key; expected one of 'V1', 'V2'"),
    (lambda c: c["mot"].update(device=None), "mot.device: expected a string, got nothing (null)"),
    (lambda c: c["datasets"].update(more={"kind": "text", "source": "file"}),
     "datasets.more.path: required key missing (when source is 'file')"),
    # repeated entries; a reversed pair is another alignment
    (lambda c: c["experiments"]["llm"]["pairs"].append(["qwen_s", "llama_l"]),
     "experiments.llm.pairs[6]: ['qwen_s', 'llama_l'] is listed twice (also at [3])"),
    (lambda c: c["report"]["figure3"].append(["subjA", "subjC"]),
     "report.figure3[2]: ['subjA', 'subjC'] is listed twice"),
    (lambda c: c["baselines"]["rsa"].append("nsd"), "baselines.rsa[2]: 'nsd' is listed twice (also at [1])"),
    (lambda c: c["three_level"]["revisions"].append("step2"), "three_level.revisions[6]: 'step2' is listed twice"),
    # tiny models
    (lambda c: c["models"]["llama_s"]["architecture"].update(hidden_size="big"),
     "models.llama_s.architecture.hidden_size: expected an integer >= 1, got a string ('big')"),
    (lambda c: c["models"]["llama_s"].update(family="dinov2"),
     "models.llama_s.modality: a tiny dinov2 model takes images, not 'text'"),
    (lambda c: c["models"]["llama_s"].update(family="bert"), "models.llama_s.family: no tiny 'bert' model"),
    # modalities of the analyses, the report's pairs
    (lambda c: c["subsampling"].update(dataset="digits"),
     "subsampling.dataset: the images data set 'digits' does not suit subsampling.source"),
    (lambda c: c["three_level"].update(dataset="digits"),
     "three_level.dataset: the images data set 'digits' does not suit three_level.source"),
    (lambda c: c["report"]["figure2"].append(["qwen_s", "nobody"]),
     "report.figure2[2]: network 'nobody' is defined neither"),
    (lambda c: c["report"]["figure2"].append(["llama_l", "llama_s"]),
     "report.figure2[2]: the pair ['llama_l', 'llama_s'] is not among experiments.llm.pairs"),
    (lambda c: c["experiments"].pop("vit"), "report.figure4[0]: figure4 shows pairs of experiments.vit"),
    # stimulus counts
    (lambda c: c.update(fit_fraction=0.99),
     "fit_fraction: 0.99 of the 100 stimuli of datasets.nsd_shared (experiments.nsd.dataset) leaves 99 to fit "
     "and 1 held out"),
    (lambda c: c["nsd"]["simulation"].update(n_shared=140),
     "nsd.simulation.n_shared: 160 images (nsd.simulation.n_images) cannot hold 140 shared"),
    (lambda c: c["nsd"]["simulation"].update(n_sessions=5),
     "nsd.simulation.n_sessions: each subject's 104 images x 3 repetitions = 312 trials cannot be split"),
])
def test_config_errors_name_the_key(edit, message):
    config = copy.deepcopy(load("config.yaml"))
    edit(config)
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert str(error.value).startswith(message), str(error.value)
    assert len(str(error.value)) < 300


def test_a_reversed_pair_is_another_alignment():
    config = copy.deepcopy(load("config.yaml"))
    config["experiments"]["llm"]["pairs"].append(["llama_l", "llama_s"])
    validate_config(config)


def test_architecture_keys_are_those_of_the_family_defaults():
    """Every key of a family's defaults is accepted (the builder sets each of them), and
    a key of another family's defaults is not."""
    config = copy.deepcopy(load("config.yaml"))
    for family, model in (("gpt_neox", "pythia_s1"), ("vit_mae", "mae_b"), ("dinov2", "dinov2_s")):
        config["models"][model]["architecture"] = default_architecture(family)
    validate_config(config)
    for family in TEXT_FAMILIES + VISION_FAMILIES:
        assert "num_hidden_layers" in default_architecture(family)
    config["models"]["dinov2_s"]["architecture"]["intermediate_size"] = 64  # vit_mae's, not dinov2's
    with pytest.raises(ConfigError, match=r"models\.dinov2_s\.architecture\.intermediate_size: unknown key"):
        validate_config(config)


# --------------------------------------------------------------------------- devices


class _FakeCuda:
    def __init__(self, count):
        self.count = count

    def is_available(self):
        return self.count > 0

    def device_count(self):
        return self.count


@pytest.fixture
def no_torch(monkeypatch):
    """PyTorch cannot be imported: 'auto' and 'cpu' must not need it."""
    monkeypatch.setitem(sys.modules, "torch", None)


def test_auto_and_cpu_pass_without_importing_torch(no_torch):
    for device in ("auto", "cpu"):
        devices.require_device(device, "mot.device")
    with pytest.raises(ConfigError, match=r"^extraction\.device: 'cuda' was asked for, but PyTorch is not installed"):
        devices.require_device("cuda", "extraction.device")
    with pytest.raises(ConfigError, match=r"^mot\.device: unknown device 'gpu'"):
        devices.require_device("gpu", "mot.device")


@pytest.mark.parametrize("count, device, message", [
    (0, "cuda", r"^mot\.device: 'cuda' was asked for, but this machine \(.+\) has no CUDA device visible to PyTorch "
                r"\(torch .+, CUDA build: (yes|no).*\); use 'auto' or 'cpu', or run the job on a GPU node$"),
    (0, "cuda:1", r"^mot\.device: 'cuda:1' was asked for, but this machine .+ has no CUDA device"),
    (2, "cuda:2", r"^mot\.device: 'cuda:2' was asked for, but this machine .+ has only 2 CUDA devices visible "
                  r"to PyTorch \(cuda:0 to cuda:1;"),
])
def test_a_missing_cuda_device_names_the_key(monkeypatch, count, device, message):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch, "cuda", _FakeCuda(count))
    with pytest.raises(ConfigError, match=message):
        devices.require_device(device, "mot.device")
    if count:
        devices.require_device(f"cuda:{count - 1}", "mot.device")
        devices.require_device("cuda", "mot.device")


def test_local_runs_check_their_devices_before_the_first_job(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch, "cuda", _FakeCuda(0))
    config = {"extraction": {"device": "cpu"}, "mot": {"device": "cuda"}}

    class Job:
        def __init__(self, *params):
            self.rule = SimpleNamespace(params=dict.fromkeys(params))

    class Workflow:
        def __init__(self, plugin, local, jobs=None):
            self.executor_plugin, self.local_exec = plugin, local
            if jobs is not None:
                self.dag = SimpleNamespace(needrun_jobs=lambda: iter(jobs))

    devices.check_local_devices(config, Workflow(None, True))  # executor not known yet: the jobs check
    devices.check_local_devices(config, Workflow("slurm", False))  # cluster jobs check on their node
    # a local run whose jobs do not use the MOT engine does not need its device
    devices.check_local_devices(config, Workflow("local", True, [Job("extraction"), Job("dataset")]))
    for workflow in (Workflow("local", True), Workflow("local", True, [Job("extraction"), Job("mot")]), None):
        with pytest.raises(ConfigError, match=r"^mot\.device: 'cuda' was asked for"):
            devices.check_local_devices(config, workflow)


def test_extraction_checks_its_device_before_loading_anything(monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch, "cuda", _FakeCuda(0))
    with pytest.raises(ConfigError, match=r"^extraction\.device: 'cuda' was asked for"):
        model_jobs.extract_activations({"modality": "text"}, tmp_path / "missing_model", tmp_path / "missing.npz",
                                       tmp_path / "out.npz", revision=None, include_embeddings=False,
                                       batch_size=4, device="cuda")
    assert not (tmp_path / "out.npz").exists()


def test_shards_cover_every_pair_once():
    pairs = [p for k in range(4) for p in shard_pairs(3, 5, 4, k)]
    assert sorted(pairs) == [(l, m) for l in range(3) for m in range(5)]
    config = {"shard_size": 4, "include_embeddings": True, "brains": {},
              "models": {"a": {"source": "hub", "blocks": 2}, "b": {"source": "hub", "blocks": 4}}}
    assert n_layers(config, "a") == 3 and n_shards(config, "a", "b") == 4
    with pytest.raises(ValueError, match="shard 4 is out of range"):
        shard_pairs(3, 5, 4, 4)


def test_schema_engine_defaults_are_the_librarys():
    """The workflow's engine defaults are the library's (motalign.inner.types), but for the
    device: the workflow uses a GPU when one is visible ("auto"), the library the CPU."""
    mot = schema()["properties"]["mot"]["properties"]
    assert mot["solver"]["default"] == engine.DEFAULT_SOLVER
    assert mot["epsilon"]["default"] == engine.DEFAULT_EPSILON
    assert mot["max_iter"]["default"] == engine.DEFAULT_MAX_ITER
    assert mot["tol"]["default"] == engine.DEFAULT_TOL
    assert mot["device"]["default"] == "auto" and engine.DEFAULT_DEVICE == "cpu"
    # every engine setting but n_jobs (each job's threads) is a key of the mot section
    assert set(MOT_ENGINE_KEYS) == set(SETTINGS) - {"n_jobs"} and set(MOT_ENGINE_KEYS) <= set(mot)


def test_sections_left_out_take_the_schema_defaults():
    config = load("test.yaml")
    for section in ("mot", "extraction", "include_embeddings", "baselines", "report"):
        config.pop(section, None)
    config["nsd"].pop("simulation")
    config = validated(config)
    defaults = schema()["properties"]
    assert config["mot"] == {key: value["default"] for key, value in defaults["mot"]["properties"].items()}
    assert mot_settings(config) == {"max_iter": 30, "tol": 1e-7, "solver": "exact", "device": "auto",
                                    "epsilon": 1e-3}
    assert config["extraction"] == {"batch_size": 32, "device": "auto", "gpus": 0, "threads": 1}
    assert config["include_embeddings"] is False and config["baselines"] == {}
    assert config["report"] == {"compare_with_paper": False}
    assert config["nsd"]["simulation"] == {"n_images": 160, "n_shared": 100, "n_specific": 4, "n_sessions": 3,
                                           "volume_shape": [10, 10, 10], "seed": 0}
    # a section that is given keeps its values and gains the defaults of the keys it leaves out
    config = validated({**load("test.yaml"), "mot": {"solver": "sinkhorn", "threads": 4}})
    assert mot_settings(config) == {"max_iter": 30, "tol": 1e-7, "solver": "sinkhorn", "device": "auto",
                                    "epsilon": 1e-3}
    assert config["mot"]["threads"] == 4 and config["mot"]["gpus"] == 0


def test_shipped_configs_give_every_engine_setting():
    for name in ("config.yaml", "paper.yaml", "test.yaml"):
        settings = mot_settings(validated(load(name)))
        assert list(settings) == list(MOT_ENGINE_KEYS)
