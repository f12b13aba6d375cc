"""motalign: Multi-Level Optimal Transport (MOT) for representational alignment.

Reference implementation of Shah & Khosla, "Representational Alignment Across Model
Layers and Brain Regions with Multi-Level Optimal Transport" (arXiv:2510.01706).
"""

from .baselines import GlobalLinearPredictivity, GlobalOT, PairwiseLinearPredictivity, PairwiseRSA
from .couplings import COUPLINGS
from .estimators import MOT
from .metrics import columnwise_pearson, hierarchy_score
from .three_level import ThreeLevelMOT

__all__ = [
    "MOT", "ThreeLevelMOT", "COUPLINGS", "hierarchy_score", "columnwise_pearson",
    "GlobalOT", "GlobalLinearPredictivity", "PairwiseLinearPredictivity", "PairwiseRSA",
]
__version__ = "0.1.0"
