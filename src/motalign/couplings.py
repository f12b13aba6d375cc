"""Layer couplings compared on the same fitted neuron plans (paper Sec. 2.4).

Every coupling is an L x M array whose rows sum to 1/L, used in the reconstruction
``Xhat_l = L * sum_m P[l, m] * Yz_m (n_l Q_lm)^T``:

* ``mot``: the outer OT plan P (Sec. 2.2.2);
* ``single_best``: each row's argmax of P, mass 1/L (Single-Best OT);
* ``pairwise_best``: each row's argmin of the inner costs C, mass 1/L (Pairwise Best OT);
* ``random``: the rows of P permuted at random (Perm-P), seeded.
"""

from __future__ import annotations

import numpy as np

COUPLINGS = ("mot", "single_best", "pairwise_best", "random")


def one_hot_rows(columns: np.ndarray, n_columns: int) -> np.ndarray:
    """An L x n_columns coupling with mass 1/L at ``(l, columns[l])``."""
    columns = np.asarray(columns)
    coupling = np.zeros((columns.size, n_columns))
    coupling[np.arange(columns.size), columns] = 1.0 / columns.size
    return coupling


def layer_couplings(plan: np.ndarray, cost: np.ndarray, permutation: np.ndarray) -> dict:
    """The four couplings of Sec. 2.4 from the outer plan, the inner costs and a permutation
    of the source layers (ties in argmax/argmin go to the lowest index)."""
    n_target = plan.shape[1]
    return {
        "mot": plan,
        "single_best": one_hot_rows(plan.argmax(axis=1), n_target),
        "pairwise_best": one_hot_rows(cost.argmin(axis=1), n_target),
        "random": plan[np.asarray(permutation)],
    }


def check_coupling_name(name: str) -> str:
    if name not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {name!r}")
    return name
