"""Shared synthetic networks with planted answers."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _load_loopback():
    """tests/fixtures/loopback.py, importable under any pytest import mode."""
    name = "motalign_tests_loopback"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "fixtures" / "loopback.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


LoopbackServer = _load_loopback().LoopbackServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def test_config_run(tmp_path_factory):
    """config/test.yaml run once per session, locally on 2 cores: the run that
    tests/test_workflow.py examines and the local reference that tests/test_slurm.py compares
    the SLURM run with (one local run instead of two, and the SLURM run no longer shares the
    two cores with a local one)."""
    pytest.importorskip("snakemake")
    workdir = tmp_path_factory.mktemp("workflow")
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "-q",
               "--cores", "2", "--configfile", str(ROOT / "config" / "test.yaml")]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return workdir


def random_network(rng, n_layers, width, n_stimuli):
    """Independent Gaussian layers: distinct tuning, so correspondences are unambiguous."""
    widths = [width] * n_layers if np.isscalar(width) else list(width)
    return [rng.standard_normal((n_stimuli, w)) for w in widths]


def noisy_unit_shuffle(rng, layer, noise):
    """A copy of ``layer`` with its units permuted and independent noise added."""
    return layer[:, rng.permutation(layer.shape[1])] + noise * rng.standard_normal(layer.shape)


def split(layers, n_fit):
    return [a[:n_fit] for a in layers], [a[n_fit:] for a in layers]


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
