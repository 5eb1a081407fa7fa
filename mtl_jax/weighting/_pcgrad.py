"""PCGrad ("gradient surgery") expressed on the Gram matrix of the task gradients.

Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020,
https://arxiv.org/abs/2001.06782.

Algorithm 1 of the paper: for every task ``i``, start from ``g_i^PC = g_i`` and visit
the other tasks ``j`` in a random order; whenever ``⟨g_i^PC, g_j⟩ < 0`` remove the
conflicting component, ``g_i^PC ← g_i^PC − ⟨g_i^PC, g_j⟩ / ‖g_j‖² · g_j``. The update
is ``Σ_i g_i^PC``. Every ``g_i^PC`` stays a linear combination of the original
gradients, ``g_i^PC = Σ_k C_ik g_k``, so the whole procedure runs on the coefficient
matrix ``C`` and the Gram matrix ``G``: ``⟨g_i^PC, g_j⟩ = (C G)_ij`` and the projection
only changes ``C_ij``. The final weights are the column sums ``w_k = Σ_i C_ik``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mtl_jax.weighting._gram import (
    all_present,
    as_gram,
    check_presence,
    nan_unless_finite,
    restrict_gram,
)

__all__ = ["pcgrad_weights"]


@functools.partial(jax.jit, static_argnums=1)
def random_task_orders(key: jax.Array, num_tasks: int) -> jax.Array:
    """``[K, K]`` int32: row ``i`` is an independent random permutation of the tasks."""
    keys = jax.random.split(key, num_tasks)
    return jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(keys).astype(jnp.int32)


def check_orders(orders: jax.typing.ArrayLike, k: int) -> jax.Array:
    orders = jnp.asarray(orders)
    if orders.shape != (k, k):
        raise ValueError(f"orders must have shape ({k}, {k}), got {orders.shape}")
    return orders.astype(jnp.int32)


def _as_gram(gram: jax.typing.ArrayLike) -> jax.Array:
    return as_gram(gram, symmetrize=False)


def pcgrad_weights(
    gram: jax.typing.ArrayLike,
    key: jax.Array | None = None,
    *,
    orders: jax.typing.ArrayLike | None = None,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """PCGrad task weights: ``Σ_i g_i^PC = Σ_k w_k g_k``.

    Args:
      gram: ``[K, K]`` Gram matrix of the task gradients.
      key: PRNG key drawing, for every task ``i``, the order in which it is
        projected against the others (ignored if ``orders`` is given).
      orders: ``[K, K]`` integers; row ``i`` is a permutation of ``0..K-1``
        giving task ``i``'s visiting order (the entry ``i`` itself is skipped).
      presence: optional ``[K]`` boolean mask. An absent task is neither projected
        nor projected onto, and gets weight exactly 0. With explicit ``orders`` the
        weights of the present tasks are exactly those of the ``|S|``-task problem
        whose orders are these rows restricted to the present tasks; with a
        ``key``, each present task's order is a uniformly random permutation of
        the present tasks (the ``K``-task draw restricted to them), so the result
        has the ``|S|``-task distribution but not its draw.

    Returns:
      ``[K]`` weights. Without conflicts (``G ≥ 0`` off the diagonal) they are all 1,
      i.e. the update equals :func:`~mtl_jax.balancers.equal_weighting`'s. All NaN
      if ``G`` has a non-finite entry among the present tasks.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import pcgrad_weights
      >>> g = jnp.array([[1.0, -1.0], [-1.0, 4.0]])  # g_1 = (1, 0), g_2 = (-1, ...)
      >>> [round(float(x), 3) for x in pcgrad_weights(g, orders=jnp.array([[0, 1], [1, 0]]))]
      [2.0, 1.25]
    """
    g = _as_gram(gram)
    k = g.shape[0]
    m = check_presence(presence, k)
    g = restrict_gram(g, m)
    if orders is None:
        if key is None:
            raise ValueError("pcgrad_weights needs a PRNG key or explicit orders")
        orders = random_task_orders(key, k)
    w = _pcgrad_ordered(g, check_orders(orders, k), all_present(m, k))
    return nan_unless_finite(w, g)


@jax.jit
def _pcgrad_ordered(g: jax.Array, orders: jax.Array, present: jax.Array) -> jax.Array:
    k = g.shape[0]
    diag = jnp.diagonal(g)
    tiny = jnp.finfo(g.dtype).tiny
    safe_diag = jnp.where(diag > tiny, diag, 1.0)

    def one_task(i, order):
        def body(t, c):
            j = order[t]
            dot = g[j] @ c  # ⟨g_i^PC, g_j⟩
            conflict = (j != i) & present[j] & (dot < 0) & (diag[j] > tiny)
            return c.at[j].add(jnp.where(conflict, -dot / safe_diag[j], 0.0))

        c0 = jnp.zeros((k,), g.dtype).at[i].set(jnp.where(present[i], 1.0, 0.0))
        return jax.lax.fori_loop(0, k, body, c0)

    coeffs = jax.vmap(one_task)(jnp.arange(k), orders)  # [K, K], row i: g_i^PC
    return jnp.sum(coeffs, axis=0)
