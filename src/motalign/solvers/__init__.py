"""OT solvers with uniform marginals: exact (:mod:`.exact`, NumPy/SciPy/POT; float32-priced
with a certified float64 repair, :mod:`.repair`) and batched
entropic Sinkhorn (:mod:`.sinkhorn`, torch; import it explicitly)."""

from .exact import (
    CorrelationCost,
    DenseCost,
    OTSolverError,
    correlation_cost,
    correlation_ot,
    exact_ot,
    restricted_network_simplex,
    sparse_plan,
    transport_marginals,
)
from .repair import float32_correlation_cost, float32_cost_bound, repaired_correlation_ot

__all__ = [
    "exact_ot",
    "correlation_cost",
    "correlation_ot",
    "restricted_network_simplex",
    "CorrelationCost",
    "DenseCost",
    "sparse_plan",
    "transport_marginals",
    "OTSolverError",
    "repaired_correlation_ot",
    "float32_correlation_cost",
    "float32_cost_bound",
]
