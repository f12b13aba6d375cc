"""OT solvers with uniform marginals: exact (:mod:`.exact`, NumPy/SciPy/POT) and batched
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
]
