"""GradNorm's weight objective and its closed-form gradient.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018,
https://arxiv.org/abs/1711.02257.

With ``n_i = ‖∇_W L_i‖`` the gradient norm of task ``i`` on the chosen shared layer
``W``, ``G_i = w_i n_i``, ``Ḡ = mean_i G_i``, the inverse training rates
``L̃_i = L_i(t) / L_i(0)`` and ``r_i = L̃_i / mean_j L̃_j``, the weights minimise
``L_grad = Σ_i |G_i − Ḡ r_i^α|`` with the target ``Ḡ r_i^α`` held constant (paper,
section 3.2), so ``∂L_grad/∂w_i = sign(G_i − Ḡ r_i^α) · n_i``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _presence

__all__ = ["gradnorm_objective", "gradnorm_targets", "gradnorm_weights_grad"]


def _safe_div(a, b):
    ok = jnp.abs(b) > jnp.finfo(jnp.result_type(b)).tiny
    return jnp.where(ok, a / jnp.where(ok, b, 1.0), 1.0)


def gradnorm_targets(
    weights: jax.typing.ArrayLike,
    layer_norms: jax.typing.ArrayLike,
    losses: jax.typing.ArrayLike,
    initial_losses: jax.typing.ArrayLike,
    *,
    alpha: float,
    presence: jax.Array | None = None,
) -> jax.Array:
    """The targets ``Ḡ r_i^α`` (as constants: gradients are stopped), shape ``[K]``.

    A zero initial loss gives ``L̃_i = 1``; a zero mean of ``L̃`` gives ``r_i = 1``.
    With ``presence`` (a ``[K]`` bool array) the means ``Ḡ`` and ``mean_j L̃_j`` are
    over the present tasks and the absent tasks' targets are 0.
    """
    w = jnp.asarray(weights)
    n = jnp.asarray(layer_norms, w.dtype)
    if presence is not None:
        n = _presence.zero_absent(n, presence)
        losses = _presence.zero_absent(jnp.asarray(losses, w.dtype), presence)
    ratio = _safe_div(jnp.asarray(losses, w.dtype), jnp.asarray(initial_losses, w.dtype))
    r = _safe_div(ratio, _presence.masked_mean(ratio, presence))
    target = _presence.masked_mean(w * n, presence) * jnp.maximum(r, 0.0) ** alpha
    return jax.lax.stop_gradient(_presence.zero_absent(target, presence))


def gradnorm_objective(
    weights: jax.typing.ArrayLike,
    layer_norms: jax.typing.ArrayLike,
    losses: jax.typing.ArrayLike,
    initial_losses: jax.typing.ArrayLike,
    *,
    alpha: float,
    presence: jax.Array | None = None,
) -> jax.Array:
    """``L_grad(w) = Σ_i |w_i n_i − Ḡ r_i^α|`` with the target held constant.

    With ``presence`` the sum and the means run over the present tasks.
    """
    w = jnp.asarray(weights)
    target = gradnorm_targets(
        w, layer_norms, losses, initial_losses, alpha=alpha, presence=presence
    )
    terms = jnp.abs(w * jnp.asarray(layer_norms, w.dtype) - target)
    return jnp.sum(_presence.zero_absent(terms, presence))


def gradnorm_weights_grad(
    weights: jax.typing.ArrayLike,
    layer_norms: jax.typing.ArrayLike,
    losses: jax.typing.ArrayLike,
    initial_losses: jax.typing.ArrayLike,
    *,
    alpha: float,
    presence: jax.Array | None = None,
) -> jax.Array:
    """Closed-form ``∂L_grad/∂w_i = sign(w_i n_i − Ḡ r_i^α) · n_i``, shape ``[K]``.

    Args:
      weights: ``[K]`` current task weights ``w``.
      layer_norms: ``[K]`` gradient norms ``n_i = ‖∇_W L_i‖`` on the chosen layer.
      losses: ``[K]`` current losses ``L_i(t)``.
      initial_losses: ``[K]`` losses ``L_i(0)`` at the first update.
      alpha: the asymmetry ``α`` (0.12 on the paper's toy, 1.5 on NYUv2).
      presence: optional ``[K]`` bool array of the present tasks (``None``: all);
        the means are over the present tasks and an absent task's entry is 0.

    Returns:
      The gradient of :func:`gradnorm_objective` w.r.t. ``weights``.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import gradnorm_weights_grad
      >>> g = gradnorm_weights_grad(jnp.ones(2), jnp.array([1.0, 3.0]), jnp.ones(2),
      ...                           jnp.ones(2), alpha=1.5)
      >>> g.tolist()  # task 0's gradient is below the mean norm: raise its weight
      [-1.0, 3.0]
    """
    w = jnp.asarray(weights)
    n = jnp.asarray(layer_norms, w.dtype)
    if presence is None:
        target = gradnorm_targets(w, n, losses, initial_losses, alpha=alpha)
        return jnp.sign(w * n - target) * n
    n = _presence.zero_absent(n, presence)
    target = gradnorm_targets(w, n, losses, initial_losses, alpha=alpha, presence=presence)
    return _presence.zero_absent(jnp.sign(w * n - target) * n, presence)
