"""motalign: Multi-Level Optimal Transport (MOT) for representational alignment.

Reference implementation of Shah & Khosla, "Representational Alignment Across Model
Layers and Brain Regions with Multi-Level Optimal Transport" (arXiv:2510.01706).

The package is layered: the method at the top level (:mod:`.mot`, :mod:`.three_level`,
:mod:`.baselines`, :mod:`.couplings`, :mod:`.metrics`, :mod:`.preprocessing`), its solvers
(:mod:`.solvers`) and inner level (:mod:`.inner`); files (:mod:`.io`), data acquisition
(:mod:`.datasets`), models and extraction (:mod:`.models`) and the workflow's job functions
(:mod:`.workflow`) beside it.  Importing the method never imports torch, h5py, boto3,
transformers or matplotlib.  The public names below are imported on first use, so that
``import motalign.io.store`` (as the workflow's light jobs do) does not pay for POT and
scikit-learn.
"""

from importlib import import_module

_EXPORTS = {
    "MOT": "mot",
    "ThreeLevelMOT": "three_level",
    "COUPLINGS": "couplings",
    "hierarchy_score": "metrics",
    "columnwise_pearson": "metrics",
    "GlobalOT": "baselines",
    "GlobalLinearPredictivity": "baselines",
    "PairwiseLinearPredictivity": "baselines",
    "PairwiseRSA": "baselines",
}

__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'motalign' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
