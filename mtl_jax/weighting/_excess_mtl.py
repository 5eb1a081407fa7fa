"""ExcessMTL: task weights driven by estimated excess risks.

He, Zhou, Wang & Zhao, "Robust Multi-Task Learning with Excess Risks", ICML 2024,
https://arxiv.org/abs/2402.02009. A task's *excess risk* ``L_k(θ) − L_k(θ_k*)``
(its loss above the best it could reach) is estimated by a second-order Taylor
expansion around ``θ_k*``: ``E_k ≈ ½ g_kᵀ H_k⁻¹ g_k`` (eq. 6), with the Hessian
replaced by AdaGrad's diagonal preconditioner ``H_k ≈ diag(sqrt(Σ_{s ≤ t} g_{k,s}²))``
(eq. 7). As in the authors' code (and LibMTL, torchjd) the factor ½ is dropped:
``E_k = Σ_i g_{k,i}² / sqrt(Σ_s g_{k,s,i}² + 10⁻⁷)``. Each ``E_k`` is divided by a
baseline ``E_k⁰`` (Section 3.2, scale processing) and the weights take an
exponentiated-gradient step on the simplex (eq. 9),

    α_k ← α_k exp(η E_k / E_k⁰) / Σ_j α_j exp(η E_j / E_j⁰),

so the tasks farthest from their optimum gain weight (robust to label noise on a
task, whose loss stays high but whose *excess* risk does not).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["excess_mtl_risks"]


def excess_mtl_risks(
    jac_leaves: list[jax.Array],
    sq_sums: list[jax.Array],
    *,
    eps: float = 1e-7,
) -> tuple[jax.Array, list[jax.Array]]:
    """The excess-risk estimates ``E_k`` and the updated squared-gradient sums.

    Args:
      jac_leaves: leaves of the task Jacobian, each ``[K, ...]``.
      sq_sums: the running sums ``Σ_s g_s²``, shaped like ``jac_leaves``.
      eps: added under the square root of the preconditioner.

    Returns:
      ``(E, new_sums)``: ``E_k = Σ_i g_{k,i}² / sqrt(S_{k,i} + eps)`` with
      ``S = sq_sums + g²`` (``[K]``), and ``S`` itself.
    """
    if len(jac_leaves) != len(sq_sums):
        raise ValueError(f"{len(jac_leaves)} Jacobian leaves but {len(sq_sums)} sums")
    total = None
    new = []
    for g, s in zip(jac_leaves, sq_sums):
        if g.shape != s.shape:
            raise ValueError(f"a Jacobian leaf has shape {g.shape} but its sum {s.shape}")
        sq = jnp.square(g.astype(s.dtype))
        acc = s + sq
        k = g.shape[0]
        term = jnp.sum(jnp.reshape(sq / jnp.sqrt(acc + eps), (k, -1)), axis=1)
        total = term if total is None else total + term
        new.append(acc)
    return total, new
