"""Gradient Vaccine on the Gram matrix: raise pairwise cosines to adaptive targets.

Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021,
https://arxiv.org/abs/2010.05874.

For every task ``i`` and the other tasks ``j`` in a random order, with
``φ_ij = cos(g_i^PC, g_j)`` and the target ``φ̂_ij`` (an EMA of past cosines): if
``φ_ij < φ̂_ij`` then
``g_i^PC ← g_i^PC + ‖g_i^PC‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)) · g_j``,
which sets the cosine to exactly ``φ̂_ij`` (measured cosines are clipped to
``[−1, 1]``, and the target used is capped at ``1 − 10⁻⁴``, where the correction
would diverge); then ``φ̂_ij ← (1−β) φ̂_ij + β φ_ij``
(with the cosine measured before the correction, as in the paper's Algorithm 1
and LibMTL). The update is ``Σ_i g_i^PC``. As for PCGrad, ``g_i^PC = Σ_k C_ik g_k``,
so everything runs on ``G`` and the coefficient matrix ``C``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.weighting._gram import all_present, check_presence, nan_unless_finite, restrict_gram
from mtl_jax.weighting._pcgrad import _as_gram, check_orders, random_task_orders

__all__ = ["gradvac_weights"]

_MAX_TARGET = 1.0 - 1e-4  # largest target cosine used in a correction


def gradvac_weights(
    gram: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    key: jax.Array | None = None,
    *,
    beta: float = 0.5,
    eps: float = 1e-8,
    orders: jax.typing.ArrayLike | None = None,
    presence: jax.typing.ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """GradVac task weights and the updated cosine targets.

    Args:
      gram: ``[K, K]`` Gram matrix of the task gradients.
      targets: ``[K, K]`` EMA cosine targets ``φ̂`` (zeros at the first step,
        which makes the first correction PCGrad's projection).
      key: PRNG key drawing each task's visiting order (ignored if ``orders``).
      beta: EMA rate of the targets.
      eps: added to the denominators.
      orders: ``[K, K]`` integers; row ``i`` is a permutation of ``0..K-1``.
      presence: optional ``[K]`` boolean mask. An absent task is neither corrected
        nor used as a target direction, gets weight exactly 0, and every target
        ``φ̂_ij`` with ``i`` or ``j`` absent is left unchanged; the present tasks'
        weights and targets are those of the ``|S|``-task problem with the orders
        restricted to them (with a ``key``: equal in distribution, as for
        :func:`~mtl_jax.weighting.pcgrad_weights`).

    Returns:
      ``(weights[K], new_targets[K, K])``; the weights are all NaN if ``G`` has a
      non-finite entry among the present tasks (the targets are then unchanged).
    """
    g = _as_gram(gram)
    k = g.shape[0]
    phi_hat = jnp.asarray(targets, g.dtype)
    if phi_hat.shape != (k, k):
        raise ValueError(f"targets must have shape ({k}, {k}), got {phi_hat.shape}")
    if orders is None:
        if key is None:
            raise ValueError("gradvac_weights needs a PRNG key or explicit orders")
        orders = random_task_orders(key, k)
    orders = check_orders(orders, k)
    m = check_presence(presence, k)
    g = restrict_gram(g, m)
    w, new = _gradvac_ordered(g, phi_hat, orders, beta, eps, all_present(m, k))
    w = nan_unless_finite(w, g)
    return w, jnp.where(jnp.all(jnp.isfinite(w)), new, phi_hat)


@jax.jit
def _gradvac_ordered(g, phi_hat, orders, beta, eps, present):
    k = g.shape[0]
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(g), 0.0))

    def one_task(i, order, hat_row):
        def body(t, carry):
            c, hat_row = carry
            j = order[t]
            cg = c @ g
            norm_i = jnp.sqrt(jnp.maximum(cg @ c, 0.0))
            # A cosine: clipped to [-1, 1] against cancellation in cᵀGc (dependent
            # gradients, low precision), which would otherwise send φ, and the
            # targets, far outside that range.
            phi = jnp.clip(cg[j] / (norm_i * norms[j] + eps), -1.0, 1.0)
            # The correction needed to reach a target cosine φ̂ diverges as φ̂ → 1.
            hat = jnp.clip(hat_row[j], -1.0, _MAX_TARGET)
            s_phi = jnp.sqrt(jnp.maximum(1.0 - phi * phi, 0.0))
            s_hat = jnp.sqrt(jnp.maximum(1.0 - hat * hat, 0.0))
            coef = norm_i * (hat * s_phi - phi * s_hat) / (norms[j] * s_hat + eps)
            pair = (j != i) & present[i] & present[j]
            active = pair & (phi < hat)
            c = c.at[j].add(jnp.where(active, coef, 0.0))
            new_hat = jnp.where(pair, (1.0 - beta) * hat + beta * phi, hat_row[j])
            return c, hat_row.at[j].set(new_hat)

        c0 = jnp.zeros((k,), g.dtype).at[i].set(jnp.where(present[i], 1.0, 0.0))
        return jax.lax.fori_loop(0, k, body, (c0, hat_row))

    coeffs, new_targets = jax.vmap(one_task)(jnp.arange(k), orders, phi_hat)
    return jnp.sum(coeffs, axis=0), new_targets
