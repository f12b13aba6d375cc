"""Scores of the paper: held-out reconstruction correlation (Sec. 2.2.3) and the hierarchy
score H(P) (Appendix G)."""

from __future__ import annotations

import numpy as np

from .preprocessing import power_of_two_scale, scaled_columns


def _unit_scaled(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which columns of ``a`` are constant, and ``a`` in float64 with every column scaled
    by a power of two to a largest absolute value in ``[0.5, 1)``."""
    high, low = a.max(axis=0), a.min(axis=0)
    max_abs = np.maximum(np.abs(high), np.abs(low)).astype(np.float64)
    return high == low, scaled_columns(a, power_of_two_scale(max_abs))


def columnwise_pearson(truth: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, int]:
    """Pearson r between matching columns of ``truth`` and ``prediction`` (T x n).

    Returns ``(r, n_undefined)``.  A column that is constant (``max == min``) in either
    array has no defined correlation: it gets r = 0 and is counted in ``n_undefined``
    (the constant-unit rule, see :mod:`motalign.preprocessing`).

    Any finite scale: each column is first multiplied by the power of two that brings its
    largest absolute value into ``[0.5, 1)`` (exact), so r does not depend on the scale of
    either array (no squares overflow at 1e300 or underflow at 1e-300).
    """
    a, b = np.asarray(truth), np.asarray(prediction)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"truth and prediction must be 2-D arrays of one shape, got {a.shape} and {b.shape}"
        )
    a_constant, a = _unit_scaled(a)
    b_constant, b = _unit_scaled(b)
    undefined = a_constant | b_constant
    a -= a.mean(axis=0)
    b -= b.mean(axis=0)
    num = np.einsum("ij,ij->j", a, b)
    den = np.sqrt(np.einsum("ij,ij->j", a, a) * np.einsum("ij,ij->j", b, b))
    r = np.zeros(a.shape[1])
    ok = ~undefined & (den > 0)
    r[ok] = num[ok] / den[ok]
    np.clip(r, -1.0, 1.0, out=r)
    return r, int((~ok).sum())


def _positions(n: int, side: str) -> np.ndarray:
    if n < 2:
        raise ValueError(
            f"hierarchy_score needs at least 2 layers on each side; the {side} side has {n}"
        )
    return np.arange(n, dtype=np.float64) / (n - 1)


def hierarchy_score(plan) -> float:
    """Hierarchy score H(P) = 1 - D(P) of a layer coupling (paper, Appendix G).

    Layer indices are embedded in [0, 1] (``r_l = (l-1)/(L-1)``, ``c_m = (m-1)/(M-1)``);
    ``D(P) = sum_lm w_lm |r_l - c_m|`` with ``w = |P| / sum |P|``.  H is 1 when all mass
    lies on the diagonal and lower the further it strays.  Needs L, M >= 2 and a plan with
    some mass; the plan's scale does not matter (it is rescaled by a power of two, exactly).
    """
    p = np.abs(np.asarray(plan, dtype=np.float64))
    if p.ndim != 2:
        raise ValueError(f"hierarchy_score expects an L x M plan, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("hierarchy_score: the plan has non-finite entries")
    peak = p.max(initial=0.0)
    if peak <= 0:
        raise ValueError("hierarchy_score: the plan carries no mass")
    p = scaled_columns(p.ravel(), power_of_two_scale(peak)).reshape(p.shape)  # any scale
    total = p.sum()
    r = _positions(p.shape[0], "source")
    c = _positions(p.shape[1], "target")
    distance = np.abs(r[:, None] - c[None, :])
    return float(1.0 - (p * distance).sum() / total)
