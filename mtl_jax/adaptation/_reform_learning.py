"""REFORM, learning side: the biased refit and the transport-cost metric.

See ``_reform.py`` for the semantic mapping itself and for what this
implementation follows and simplifies.

References:
  Ye, Zhan, Jiang, Zhou. Rectify Heterogeneous Models with Semantic Mapping.
  ICML 2018. https://proceedings.mlr.press/v80/ye18c.html
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from mtl_jax._lbfgs import minimize
from mtl_jax.adaptation._reform import (
    LinearModel,
    linear_model_predict,
    mahalanobis_cost,
    semantic_transport,
    transform_model,
)

__all__ = ["learn_metric", "reform_refit"]


def _ce(model: LinearModel, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = linear_model_predict(model, x)
    return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, y))


def reform_refit(
    x: ArrayLike,
    y: ArrayLike,
    prior: LinearModel | None,
    *,
    num_classes: int,
    lam: float = 0.1,
    learn_scale: bool = True,
    num_iters: int = 100,
) -> tuple[LinearModel, jax.Array]:
    r"""Refits a linear model on few labels with a biased regulariser.

    .. math::
        \min_{W, b, d}\ \frac1N \sum_i \ell(x_i W + b, y_i) + λ \| W - d\, \tilde W \|_F^2

    ``prior=None`` (``W̃ = 0``) is plain ridge-regularised training from scratch.
    ``learn_scale=False`` fixes ``d = 1``. Solved with ``optax.lbfgs``.

    Args:
      x: ``[N, d1]`` features.
      y: ``[N]`` integer labels.
      prior: the transformed model ``W̃`` (bias used as initial bias), or None.
      num_classes: ``C``.
      lam: ``λ > 0``.
      learn_scale: learn the scalar ``d``.
      num_iters: L-BFGS iterations.

    Returns:
      ``(model, d)``.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    if x.ndim != 2 or y.shape != x.shape[:1]:
        raise ValueError(f"need x [N, d] and y [N], got {x.shape}, {y.shape}")
    dim = x.shape[1]
    if prior is None:
        w_prior = jnp.zeros((dim, num_classes), x.dtype)
        b0 = jnp.zeros(num_classes, x.dtype)
    else:
        if prior.weights.shape != (dim, num_classes):
            raise ValueError(f"prior weights must be {(dim, num_classes)}")
        w_prior, b0 = prior.weights, prior.bias
    return _refit(x, y, w_prior, b0, lam, learn_scale, num_iters)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _refit(x, y, w_prior, b0, lam, learn_scale, num_iters):
    init = {"w": w_prior, "b": b0, "d": jnp.ones((), x.dtype)}

    def objective(p):
        d = p["d"] if learn_scale else jnp.ones((), x.dtype)
        r = p["w"] - d * w_prior
        return _ce(LinearModel(p["w"], p["b"]), x, y) + lam * jnp.sum(r * r)

    p = minimize(objective, init, num_iters=num_iters)
    d = p["d"] if learn_scale else jnp.ones((), x.dtype)
    return LinearModel(p["w"], p["b"]), d


def learn_metric(
    phi_old: ArrayLike,
    phi_new: ArrayLike,
    old: LinearModel,
    x: ArrayLike,
    y: ArrayLike,
    *,
    factor_init: ArrayLike | None = None,
    num_iters: int = 30,
    learning_rate: float = 0.05,
    epsilon: float = 0.05,
) -> jax.Array:
    r"""Learns ``M = L Lᵀ`` by differentiating the transported model's loss through Sinkhorn.

    .. math::
        \min_L \frac1N \sum_i \ell\bigl(x_i\, \bar T(L)^\top W_0 + b_0,\ y_i\bigr),
        \quad T(L) = \mathrm{Sinkhorn}(C_{LL^\top}(φ, φ')).

    Args:
      phi_old: ``[d0, m]`` meta-representations of old features.
      phi_new: ``[d1, m]`` meta-representations of new features.
      old: the old-space model.
      x: ``[N, d1]`` few labelled examples in the new space.
      y: ``[N]`` labels.
      factor_init: ``[m, m]`` initial ``L`` (identity by default).
      num_iters: Adam steps.
      learning_rate: Adam step size.
      epsilon: relative entropic regularisation of :func:`semantic_transport`.

    Returns:
      ``[m, m]`` metric ``M``.
    """
    phi_old, phi_new = jnp.asarray(phi_old), jnp.asarray(phi_new)
    x, y = jnp.asarray(x), jnp.asarray(y)
    m = phi_old.shape[1]
    factor = jnp.eye(m, dtype=phi_old.dtype) if factor_init is None else jnp.asarray(factor_init)

    if not isinstance(num_iters, numbers.Integral) or num_iters < 1:
        raise ValueError(f"num_iters must be an int >= 1, got {num_iters!r}")
    return _learn_metric(phi_old, phi_new, old, x, y, factor, num_iters, learning_rate, epsilon)


@functools.partial(jax.jit, static_argnums=(6, 7, 8))
def _learn_metric(phi_old, phi_new, old, x, y, factor, num_iters, learning_rate, epsilon):
    def loss(lf):
        plan = semantic_transport(mahalanobis_cost(phi_old, phi_new, lf @ lf.T), epsilon=epsilon)
        return _ce(transform_model(old, plan), x, y)

    tx = optax.adam(learning_rate)

    def body(_, carry):
        lf, s = carry
        g = jax.grad(loss)(lf)
        u, s = tx.update(g, s, lf)
        return optax.apply_updates(lf, u), s

    factor, _ = jax.lax.fori_loop(0, num_iters, body, (factor, tx.init(factor)))
    return factor @ factor.T
