"""MOT+R for a batch of equal-shaped layer pairs in torch (paper Sec. 2.3): the batched twin
of :func:`.rotation.rotation_alignment`, working on Gram blocks (``Xz^T Xz``, ``Xz^T Yz``,
``Yz^T Yz``) with batched Procrustes SVDs.  Each pair keeps its own acceptance rule,
stopping rule and non-increasing history (a pair stops, as in the NumPy twin, when its Q
step leaves the weights unchanged); ``tests/test_inner_contract.py`` pins the two
alternations to the same result.  The Procrustes steps are batched SVDs here; the NumPy
twin's :func:`~.rotation.polar_factor` gives the same rotations up to round-off."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .types import Alternation, PairResult


def cross_blocks(xs, ys, batch):
    """``Xz_l^T Yz_m`` for every pair of the batch (B x n x m) and the stimulus count."""
    first = xs(batch[0][0])
    n, m = first.shape[1], ys(batch[0][1]).shape[1]
    cross = torch.empty((len(batch), n, m), dtype=first.dtype, device=first.device)
    for k, (l, mm) in enumerate(batch):
        torch.matmul(xs(l).T, ys(mm), out=cross[k])
    return cross, first.shape[0]


def rotation_batch(xs, ys, batch, solve, alternation: Alternation, initial=None,
                   initial_plans=None):
    """MOT+R for a batch of equal-shaped pairs, starting from the rotations ``initial``
    (identity when None) and their defining sparse plans ``initial_plans`` (B entries, None
    for the identity); ``solve`` solves a batch of Q steps (exact or Sinkhorn).
    Returns the pairs' :class:`PairResult` and the final rotations (B x n x n, on the
    device).  Each result's ``rotation_plan`` is the host plan of its last accepted
    Procrustes step (``initial_plans[k]`` when none was accepted); for Sinkhorn Q steps it
    is the sparse rounding of the soft plan, so the rotation it rebuilds is only as close
    as that rounding."""
    max_iter, tol = alternation.max_iter, alternation.tol
    cross, t = cross_blocks(xs, ys, batch)  # K = Xz^T Yz
    gram_x = torch.stack([xs.gram(l) for l, _ in batch])
    gram_y = torch.stack([ys.gram(m) for _, m in batch])
    b, n, _ = cross.shape
    y_norm = torch.sqrt(torch.diagonal(gram_y, dim1=1, dim2=2).clamp_min(0))
    total_x = torch.diagonal(gram_x, dim1=1, dim2=2).sum(dim=1)
    scale = 1.0 / (t * n)

    def objective(rot, weights, idx):
        """f(R, Q) = (tr Gx - 2 <R, K W^T> + tr(W Gy W^T)) / (T n), W = n Q."""
        fit = (rot * (cross[idx] @ weights.transpose(1, 2))).sum(dim=(1, 2))
        recon = ((weights @ gram_y[idx]) * weights).sum(dim=(1, 2))
        return (total_x[idx] - 2.0 * fit + recon) * scale

    def q_cost(rot, idx):
        """1 - corr(Xz R, Yz) from Gram blocks."""
        numerator = rot.transpose(1, 2) @ cross[idx]
        xr = torch.sqrt(((gram_x[idx] @ rot) * rot).sum(dim=1).clamp_min(0))
        denominator = xr[:, :, None] * y_norm[idx][:, None, :]
        positive = denominator > 0
        corr = torch.where(positive, numerator / torch.where(positive, denominator, 1.0), 0.0)
        return 1.0 - corr

    def procrustes(weights, idx):
        u, _, vh = torch.linalg.svd(cross[idx] @ weights.transpose(1, 2))
        return u @ vh

    every = torch.arange(b, device=cross.device)
    if initial is None:
        rot = torch.eye(n, dtype=cross.dtype, device=cross.device).repeat(b, 1, 1)
    else:
        rot = initial.to(cross.dtype).clone()
    dense, _, plans, _ = solve(q_cost(rot, every))
    potentials = solve.potentials  # Sinkhorn: warm starts for the next Q steps
    plans = list(plans)
    rotation_plans = list(initial_plans) if initial_plans is not None else [None] * b
    weights = dense * n
    value = objective(rot, weights, every)
    history = [[v] for v in value.cpu().double().tolist()]
    active = np.ones(b, dtype=bool)
    for _ in range(max_iter):
        idx_np = np.flatnonzero(active)
        if idx_np.size == 0:
            break
        idx = torch.as_tensor(idx_np, device=cross.device)
        new_rot = procrustes(weights[idx], idx)
        new_value = objective(new_rot, weights[idx], idx)
        better = (new_value <= value[idx]).cpu().numpy()
        active[idx_np[~better]] = False  # an exact Procrustes step cannot raise f; be safe
        if not better.any():
            break
        keep = torch.as_tensor(better, device=cross.device)
        idx_np, idx, new_rot, new_value = idx_np[better], idx[keep], new_rot[keep], new_value[keep]
        rot[idx] = new_rot
        for k in idx_np:  # the plans whose weights defined these rotations
            rotation_plans[k] = plans[k]
        warm = None if potentials is None else tuple(p[idx] for p in potentials)
        q_dense, _, q_plans, _ = solve(q_cost(new_rot, idx), warm)
        if potentials is not None:
            for p, new in zip(potentials, solve.potentials):
                p[idx] = new
        q_weights = q_dense * n
        plan_value = objective(new_rot, q_weights, idx)
        accept_t = plan_value <= new_value
        # a Q step that leaves the weights unchanged ends the pair's alternation: the next
        # round would repeat the same Procrustes step (the NumPy twin's rule)
        changed = (accept_t & (q_weights != weights[idx]).flatten(1).any(dim=1)).cpu().numpy()
        accept = accept_t.cpu().numpy()
        if accept.any():
            weights[idx[accept_t]] = q_weights[accept_t]
            for j in np.flatnonzero(accept):
                plans[idx_np[j]] = q_plans[j]
        new_value = torch.where(accept_t, plan_value, new_value)
        improvement = (value[idx] - new_value).cpu().double().numpy()
        value[idx] = new_value
        for j, (k, v) in enumerate(zip(idx_np, new_value.cpu().double().tolist())):
            history[k].append(v)
            if not changed[j] or improvement[j] <= tol * max(1.0, abs(v)):
                active[k] = False
    rot_host = rot.cpu().double().numpy()
    results = [PairResult(pair, history[k][-1], sp.csr_matrix(plans[k]), history=history[k],
                          rotation=rot_host[k],
                          rotation_plan=None if rotation_plans[k] is None else sp.csr_matrix(rotation_plans[k]))
               for k, pair in enumerate(batch)]
    return results, rot
