"""Learning to Transfer (L2T): a reflection function learned from transfer experiences.

Wei, Zhang, Huang & Yang, "Transfer Learning via Learning to Transfer", ICML 2018,
http://proceedings.mlr.press/v80/wei18a.html (an earlier version is
https://arxiv.org/abs/1708.05629).

L2T has two stages. (1) From transfer experiences ``E_e = (⟨S_e, T_e⟩, W_e, l_e)`` —
a source/target pair, the latent map a base algorithm chose for it and the
*performance improvement ratio* ``l_e = acc(with transfer) / acc(target only)`` — it
learns a reflection function predicting ``1/l_e`` from statistics of the mapped pair::

    f(S, T, W) = βᵀ d̂_W + λ βᵀ Q̂_W β + μ / (βᵀ τ̂_W) + b,

with ``d̂_W`` the per-kernel MMD² between ``S W`` and ``T W`` over a bank of Gaussian
kernels, ``Q̂_W`` the covariance of those estimates and ``τ̂_W`` the target's
per-kernel variance (``mmd_statistics``). (2) For a new pair it picks
``W* = argmin_W f(S, T, W) + γ ‖W‖²_F``.

What we followed and what we simplified (the full paper text could not be read
offline; only its abstract was available to us, so the formula above could not
be checked against the paper):

* β ≥ 0, λ ≥ 0 and μ ≥ 0 are enforced with a softplus parametrisation (the signs make
  a large discrepancy, an uncertain discrepancy and a collapsed target all predict
  less improvement); b is free.
* Stage 1 minimises the mean squared error between f and ``1/l_e`` plus
  ``reg · (‖β‖² + λ² + μ²)``, with Adam; the paper's exact loss and regulariser may
  differ.
* Stage 2 optimises one map W shared by source and target with Adam from a given
  start (the packaged experiment starts from each base algorithm's map and keeps the
  W with the lowest objective).
* The base algorithms are linear (PCA, TCA, subspace alignment; see
  ``_base_transfer``) instead of the paper's larger set (TCA, ITL, CMF, LSDT, GFK, ...).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from mtl_jax.transfer._mmd import MMDStatistics, mmd_statistics

__all__ = ["ReflectionParams", "fit_reflection", "optimize_latent_map", "reflection_value"]

_EPS = 1e-6


class ReflectionParams(NamedTuple):
    """Learned parameters of the reflection function."""

    beta: jax.Array  # [K] >= 0, one weight per kernel
    lam: jax.Array  # [] >= 0, weight of the variance term βᵀQβ
    mu: jax.Array  # [] >= 0, weight of the discriminability term 1/(βᵀτ)
    b: jax.Array  # [] bias


def reflection_value(params: ReflectionParams, stats: MMDStatistics) -> jax.Array:
    """``f = βᵀd + λ βᵀQβ + μ / (βᵀτ) + b``, the predicted inverse improvement ratio 1/l.

    Args:
      params: the reflection function's parameters.
      stats: ``mmd_statistics`` of a mapped source/target pair (unbatched).

    Returns:
      Scalar float32.

    References:
      Wei et al., 2018, http://proceedings.mlr.press/v80/wei18a.html
    """
    beta = params.beta
    quad = beta @ (stats.q @ beta)
    return beta @ stats.d + params.lam * quad + params.mu / (beta @ stats.tau + _EPS) + params.b


def _constrain(raw: tuple) -> ReflectionParams:
    vb, vl, vm, b = raw
    return ReflectionParams(jax.nn.softplus(vb), jax.nn.softplus(vl), jax.nn.softplus(vm), b)


def fit_reflection(
    stats: MMDStatistics,
    improvement_ratios: ArrayLike,
    *,
    reg: float = 1e-3,
    num_iters: int = 2000,
    learning_rate: float = 0.02,
) -> ReflectionParams:
    """Fits the reflection function on transfer experiences (L2T stage 1).

    Minimises ``mean_e (f(stats_e) − 1/l_e)² + reg (‖β‖² + λ² + μ²)`` over
    β, λ, μ ≥ 0 and b, full batch, with Adam in one jitted ``lax.scan``.

    Args:
      stats: batched ``MMDStatistics`` of the experiences (``d [E, K]``, ``q [E, K, K]``,
        ``tau [E, K]``), e.g. ``jax.vmap(mmd_statistics, (0, 0, None))(...)`` or stacked.
      improvement_ratios: ``[E]`` positive performance improvement ratios l_e.
      reg: L2 regularisation weight (≥ 0).
      num_iters: Adam steps (≥ 1).
      learning_rate: Adam learning rate (> 0).

    Returns:
      The fitted ``ReflectionParams``.

    References:
      Wei et al., 2018, http://proceedings.mlr.press/v80/wei18a.html
    """
    if not reg >= 0:
        raise ValueError(f"reg must be >= 0, got {reg!r}")
    if not isinstance(num_iters, numbers.Integral) or num_iters < 1:
        raise ValueError(f"num_iters must be an int >= 1, got {num_iters!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    ratios = jnp.asarray(improvement_ratios, jnp.float32)
    d = jnp.asarray(stats.d, jnp.float32)
    if d.ndim != 2 or ratios.shape != (d.shape[0],):
        raise ValueError(f"need stats.d [E, K] and ratios [E], got {d.shape}, {ratios.shape}")
    if not bool(jnp.all(ratios > 0)):
        raise ValueError("improvement ratios must be positive")
    stats = MMDStatistics(d, jnp.asarray(stats.q, jnp.float32), jnp.asarray(stats.tau, jnp.float32))
    return _fit_jit(stats, 1.0 / ratios, float(reg), int(num_iters), float(learning_rate))


def _fit_impl(stats, targets, reg, steps, learning_rate):
    k = stats.d.shape[1]
    raw = (jnp.full((k,), -2.0), jnp.asarray(-2.0), jnp.asarray(-2.0), jnp.mean(targets))

    def loss(raw):
        p = _constrain(raw)
        pred = jax.vmap(reflection_value, in_axes=(None, 0))(p, stats)
        penalty = jnp.sum(p.beta**2) + p.lam**2 + p.mu**2
        return jnp.mean((pred - targets) ** 2) + reg * penalty

    # optax.adam mixes a Python float with an int32 count, which strict dtype
    # promotion rejects; allow standard promotion for the optimizer only.
    with jax.numpy_dtype_promotion("standard"):
        opt = optax.adam(learning_rate)

        def step(carry, _):
            r, s = carry
            u, s = opt.update(jax.grad(loss)(r), s)
            return (optax.apply_updates(r, u), s), None

        (raw, _), _ = jax.lax.scan(step, (raw, opt.init(raw)), None, length=steps)
    return _constrain(raw)


_fit_jit = jax.jit(_fit_impl, static_argnums=(2, 3, 4))


def optimize_latent_map(
    params: ReflectionParams,
    source: ArrayLike,
    target: ArrayLike,
    init: ArrayLike,
    sigmas: ArrayLike,
    *,
    gamma: float = 1e-3,
    num_iters: int = 200,
    learning_rate: float = 0.01,
) -> tuple[jax.Array, jax.Array]:
    """Optimises the shared latent map for a new pair (L2T stage 2).

    ``W* = argmin_W f(S W, T W) + γ ‖W‖²_F`` by Adam from ``init``.

    Args:
      params: fitted ``ReflectionParams``.
      source: ``[n_s, d]`` source features.
      target: ``[n_t, d]`` (unlabelled) target features.
      init: ``[d, k]`` starting map (e.g. a base algorithm's map).
      sigmas: ``[K]`` kernel bandwidths, the bank used to fit ``params``.
      gamma: weight γ ≥ 0 of ``‖W‖²_F``.
      num_iters: Adam steps (≥ 0; 0 returns ``init``).
      learning_rate: Adam learning rate (> 0).

    Returns:
      ``(W [d, k], objective [num_iters + 1])`` — the map and the objective trace
      (entry 0 at ``init``, entry i after i steps).

    References:
      Wei et al., 2018, http://proceedings.mlr.press/v80/wei18a.html
    """
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    if not isinstance(num_iters, numbers.Integral) or num_iters < 0:
        raise ValueError(f"num_iters must be an int >= 0, got {num_iters!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    xs, xt = jnp.asarray(source, jnp.float32), jnp.asarray(target, jnp.float32)
    w0 = jnp.asarray(init, jnp.float32)
    if w0.ndim != 2 or w0.shape[0] != xs.shape[1]:
        raise ValueError(f"init must be [{xs.shape[1]}, k], got {w0.shape}")
    sig = jnp.asarray(sigmas, jnp.float32)
    return _opt_jit(params, xs, xt, w0, sig, float(gamma), int(num_iters), float(learning_rate))


def _opt_impl(params, xs, xt, w0, sigmas, gamma, steps, learning_rate):
    def objective(w):
        stats = mmd_statistics(xs @ w, xt @ w, sigmas)
        return reflection_value(params, stats) + gamma * jnp.sum(w * w)

    # See _fit_impl: optax.adam needs standard dtype promotion.
    with jax.numpy_dtype_promotion("standard"):
        opt = optax.adam(learning_rate)

        def step(carry, _):
            w, s = carry
            val, g = jax.value_and_grad(objective)(w)
            u, s = opt.update(g, s)
            return (optax.apply_updates(w, u), s), val

        (w, _), trace = jax.lax.scan(step, (w0, opt.init(w0)), None, length=steps)
    trace = jnp.concatenate([trace, objective(w).reshape(1)])
    return w, trace


_opt_jit = jax.jit(_opt_impl, static_argnums=(5, 6, 7))
