"""DB-MTL: dual balancing of loss scales and gradient magnitudes.

Lin, Ye, Xu, Shi, Zhang & Kwok, "Dual-Balancing for Multi-Task Learning",
https://arxiv.org/abs/2308.12029.

*Loss-scale balancing* trains on ``log L_k``, whose gradient is ``∇L_k / L_k``.
*Gradient-magnitude balancing* then rescales each task's (log-loss) gradient to
the largest norm among the tasks: ``α_k = max_j n_j / n_k`` with
``n_k = ‖∇ log L_k‖`` (an exponential moving average of it in the balancer). The
update is ``Σ_k α_k ∇ log L_k = Σ_k w_k ∇L_k`` with ``w_k = α_k / (L_k + eps)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _presence

__all__ = ["db_mtl_log_grad_norms", "db_mtl_weights"]


def db_mtl_log_grad_norms(
    gram: jax.typing.ArrayLike, losses: jax.typing.ArrayLike, *, eps: float = 1e-8
) -> jax.Array:
    """``n_k = ‖∇ log(L_k + eps)‖ = √G_kk / (L_k + eps)`` from the Gram matrix of raw gradients."""
    g = jnp.asarray(gram)
    g = g.astype(jnp.promote_types(g.dtype, jnp.float32))
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(g), 0.0))
    return norms / (jnp.asarray(losses, g.dtype) + eps)


def db_mtl_weights(
    log_grad_norms: jax.typing.ArrayLike,
    losses: jax.typing.ArrayLike,
    *,
    eps: float = 1e-8,
    presence: jax.Array | None = None,
) -> jax.Array:
    """Weights on the raw losses: ``w_k = α_k / (L_k + eps)``, ``α_k = max_j n_j / n_k``.

    With ``presence``, the maximum is over the present tasks and the absent tasks
    get 0.

    Args:
      log_grad_norms: ``[K]`` norms ``n_k`` of the log-loss gradients (or their moving
        average).
      losses: ``[K]`` task losses (positive).
      eps: added to the losses inside the logarithm, as in LibMTL.
      presence: optional ``[K]`` bool array of the present tasks (``None``: all).

    Returns:
      ``[K]`` weights. A task with ``n_k = 0`` (no gradient) gets ``α_k = 0``.
    """
    n = jnp.asarray(log_grad_norms)
    n = n.astype(jnp.promote_types(n.dtype, jnp.float32))
    if presence is not None:
        n = _presence.zero_absent(n, presence)
    ok = n > 0
    alpha = jnp.where(ok, jnp.max(n) / jnp.where(ok, n, 1.0), 0.0)
    w = alpha / (jnp.asarray(losses, n.dtype) + eps)
    return _presence.zero_absent(w, presence)
