"""SDMGrad: direction-oriented stochastic MGDA with double sampling (and objective sampling).

Xiao, Ban & Ji, NeurIPS 2023, https://arxiv.org/abs/2305.18409. The inner solve
is :func:`mtl_jax.weighting.sdmgrad_step`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.balancers._modo import two_sample_balancer
from mtl_jax.weighting import _sdmgrad
from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["SDMGradState", "sdmgrad"]


class SDMGradState(NamedTuple):
    inner: jax.Array  # [K] float32, w (the inner solver's warm start)
    key: jax.Array  # [2] uint32 raw key data, for objective sampling
    weights: jax.Array  # [K] float32, weights applied at the last update


def _sample_objectives(key: jax.Array, present: jax.Array, n: int) -> jax.Array:
    """Each present task independently with probability ``n / |S|``, redrawn until one is."""
    count = jnp.maximum(jnp.sum(present.astype(jnp.float32)), 1.0)
    prob = jnp.minimum(n / count, 1.0)

    def draw(carry):
        key, _ = carry
        key, sub = jax.random.split(key)
        return key, present & (jax.random.uniform(sub, present.shape) < prob)

    def empty(carry):
        return ~jnp.any(carry[1]) & jnp.any(present)

    _, mask = jax.lax.while_loop(empty, draw, draw((key, present)))
    return mask


def sdmgrad(
    *,
    num_tasks: int | None = None,
    lambda_: float = 0.3,
    lr: float = 10.0,
    momentum: float = 0.5,
    num_iters: int = 20,
    pref_vector: jax.typing.ArrayLike | None = None,
    num_sampled: int | None = None,
    seed: int = 0,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """SDMGrad: ``d = J (w + λ w̃) / (1 + λ)`` with ``w`` from a stochastic inner solve.

    ``w`` approximately solves ``min_{w ∈ Δ} ½ ‖J (w + λ w̃)‖²`` by ``num_iters``
    projected momentum-SGD steps (warm-started from the last ``w``) on the
    normalised double-sampling matrix ``A = J_1 J_2ᵀ``: pass it as
    ``tx.update(jac, state, params, task_losses=..., cross_gram=A)``
    (:func:`mtl_jax.weighting.task_cross_gram`); ``jac`` is the Jacobian of a third batch, the one
    the update is made of (the paper's ``ζ``). Without ``cross_gram`` (and on the
    training step's Gramian route) the Gram matrix of ``jac`` is used. ``λ → ∞``
    gives the target direction ``J w̃`` (the mean gradient), ``λ = 0`` stochastic
    MGDA.

    Objective sampling (SDMGrad-OS, for many tasks): with ``num_sampled=n`` each
    present task is kept independently with probability ``n / |S|`` (redrawn if
    none is), the others' rows of ``A`` and gradients are set to 0 (they stay in
    the simplex, as in the authors' code), and the update is scaled by ``|S| / n``
    so that it is unbiased. The key lives in the state.

    Differences to the references, and the choices made: the inner objective is
    ``½‖·‖²`` (torchjd, LibMTL, the authors' MT10 code; their NYUv2/CityScapes
    script differentiates ``‖·‖²``, i.e. twice the step at the same ``lr``); ``A``
    is divided by ``(mean_k sqrt(max(A_kk, 0)))² + 10⁻⁸`` (torchjd; the authors
    add ``10⁻⁴`` under the square root instead).

    Scale: the weights sum to 1 (mean-gradient scale, ``1/K`` of
    :func:`equal_weighting`'s for identical gradients); the normalisation of
    ``A`` makes them invariant to the gradients' scale.

    Modes: full-parameter and representation mode. An absent task gets weight 0
    and keeps its ``w_k``; the inner problem is over the present tasks.

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      num_tasks: ``K`` (required, keyword-only); ``w_0 = 1/K``.
      lambda_: ``λ ≥ 0`` (the authors' experiments and torchjd: 0.3).
      lr: inner step size ``η > 0`` (10).
      momentum: inner momentum ``μ ∈ [0, 1)`` (0.5).
      num_iters: inner steps per update (20).
      pref_vector: ``[K]`` target weights ``w̃`` (default uniform).
      num_sampled: ``n`` for objective sampling (``None``: all tasks every step).
      seed: seed of the objective-sampling key.
      shared: leaves to balance; the others receive the plain sum over tasks.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and
      Provable Stochastic Algorithms", NeurIPS 2023, https://arxiv.org/abs/2305.18409
    """
    _validate.check_num_tasks(num_tasks, required=True)
    lambda_ = _validate.check_number("lambda_", lambda_, low=0.0)
    lr = _validate.check_number("lr", lr, low=0.0, low_open=True)
    momentum = _validate.check_number("momentum", momentum, low=0.0, high=1.0, high_open=True)
    num_iters = _validate.check_int("num_iters", num_iters)
    seed = _validate.check_seed(seed)
    if num_sampled is not None:
        num_sampled = _validate.check_int("num_sampled", num_sampled)
        if num_sampled > num_tasks:
            raise ValueError(f"num_sampled={num_sampled} exceeds num_tasks={num_tasks}")
    pref = None
    if pref_vector is not None:
        pref = jnp.asarray(pref_vector, jnp.float32)
        if pref.shape != (num_tasks,) or not bool(jnp.all(pref >= 0)):
            raise ValueError(
                f"pref_vector must be a non-negative [{num_tasks}] vector, got {pref_vector!r}"
            )

    def init(params):
        del params
        w = jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)
        return SDMGradState(w, _state.key_data(seed), w)

    def weights_fn(gram, losses, state, presence=None, *, cross):
        del losses
        present = as_presence(presence, num_tasks)
        a = gram if cross is None else cross
        key = state.key
        gain = 1.0
        sampled = present
        if num_sampled is not None:
            key, (sub,) = _state.split_key(state.key)
            sampled = _sample_objectives(sub, present, num_sampled)
            a = jnp.where(sampled[:, None] & sampled[None, :], a, 0.0)
            gain = jnp.sum(present.astype(jnp.float32)) / num_sampled
        inner, applied = _sdmgrad.sdmgrad_step(
            state.inner,
            a,
            lambda_=lambda_,
            lr=lr,
            momentum=momentum,
            num_iters=num_iters,
            pref_vector=pref,
            presence=present,
        )
        w = jnp.where(sampled, gain * applied, 0.0)
        return w, SDMGradState(inner, key, w)

    return two_sample_balancer(init, weights_fn, shared=shared)
