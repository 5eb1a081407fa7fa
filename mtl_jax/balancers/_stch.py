"""Smooth Tchebycheff (STCH) scalarisation of the normalised log-losses.

Lin, Zhang, Yang, Zhang & Zhang, "Smooth Tchebycheff Scalarization for
Multi-Objective Optimization", ICML 2024, https://arxiv.org/abs/2402.19078. The
weights are :func:`mtl_jax.weighting.stch_weights`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _presence, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _stch

__all__ = ["STCHState", "stch"]


class STCHState(NamedTuple):
    step: jax.Array  # [] int32, updates so far
    nadir_sum: jax.Array  # [K], losses summed over the averaging window of the warm-up
    nadir: jax.Array  # [K], the nadir vector once known (ones before)
    weights: jax.Array  # [K], weights on the raw losses used at the last update
    nadir_count: jax.Array  # [K] int32, calls of the averaging window in which the task was present
    nadir_known: jax.Array  # [K] bool, whether nadir[k] is final


def stch(
    *,
    num_tasks: int | None = None,
    mu: float = 1.0,
    warmup_steps: int = 0,
    nadir: jax.typing.ArrayLike | None = None,
    nadir_steps: int | None = None,
    eps: float = 1e-8,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """Smooth Tchebycheff: descend ``K μ log Σ_k exp(log(L_k / n_k) / μ)``.

    The update is ``Σ_k w_k ∇L_k`` with ``w_k = K softmax(log(L / n) / μ)_k / L_k``:
    a smooth version of descending the worst normalised task (``μ → 0``).

    Warm-up (the authors' MTL code): for the first ``warmup_steps`` updates the
    objective is ``Σ_k log L_k`` (``w_k = 1 / L_k``) and the losses of the last
    ``nadir_steps`` of them are averaged into the nadir vector ``n``. The authors
    count in epochs (warm-up 4 epochs, nadir = mean of the 5th); here in steps.
    ``nadir=`` fixes ``n`` instead; with neither a warm-up nor ``nadir=``, ``n`` is
    the losses of the first call.

    Presence: the objective is over the present tasks (``K`` becomes their
    number, the softmax runs over them) and an absent task gets weight 0 (also
    during the warm-up). The nadir of a task is the mean of its losses over the
    calls of the averaging window in which it was present; it is fixed at the
    first call after the warm-up in which the task is present (from that call's
    loss if the task was absent for the whole window, or if there is no warm-up).
    An absent task's nadir records are left unchanged.

    Scale: at ``L = n`` the weights are ``1 / L_k`` (the gradient of
    ``Σ_k log L_k``), i.e. equal weighting's scaled by ``1 / L_k`` per task.

    Modes: loss-only (one backward pass of ``Σ_k w_k L_k``).

    Cost: loss-only (one backward pass of the weighted loss sum).

    Args:
      num_tasks: ``K`` (required, keyword-only).
      mu: smoothing ``μ > 0`` (LibMTL default 1).
      warmup_steps: updates of ``Σ log L`` before switching to STCH.
      nadir: ``[K]`` fixed nadir vector (positive); ``None`` to estimate it.
      nadir_steps: how many final warm-up steps are averaged into the nadir
        (default: all of them).
      eps: losses and nadir are clipped below at ``eps`` before the logarithm.
      shared: leaves to weight (all by default); the others receive the plain sum.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"loss"``.

    References:
      Lin et al. 2024, https://arxiv.org/abs/2402.19078
    """
    _validate.check_num_tasks(num_tasks, required=True)
    mu = _validate.check_number("mu", mu, low=0.0, low_open=True)
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
    if nadir_steps is None:
        nadir_steps = warmup_steps
    if not isinstance(nadir_steps, int) or not 0 <= nadir_steps <= warmup_steps:
        raise ValueError(f"nadir_steps must be an int in [0, warmup_steps], got {nadir_steps!r}")
    if nadir is None and warmup_steps > 0 and nadir_steps == 0:
        raise ValueError("nadir_steps must be >= 1 when the nadir is estimated during warm-up")
    if nadir is not None:
        nadir = jnp.asarray(nadir, jnp.float32)
        if nadir.shape != (num_tasks,) or not bool(jnp.all(nadir > 0)):
            raise ValueError(f"nadir must be a positive vector of shape ({num_tasks},)")
    eps = _validate.check_number("eps", eps, low=0.0, low_open=True)
    window_start = warmup_steps - nadir_steps

    def init(params):
        del params
        ones = jnp.ones((num_tasks,), jnp.float32)
        n0 = ones if nadir is None else nadir
        counts = jnp.zeros((num_tasks,), jnp.int32)
        known = jnp.full((num_tasks,), nadir is not None)
        return STCHState(jnp.zeros((), jnp.int32), jnp.zeros_like(ones), n0, ones, counts, known)

    def weights_fn(losses, state, presence=None):
        _validate.check_losses(losses, num_tasks=num_tasks)
        losses = losses.astype(jnp.float32)
        present = jnp.ones((num_tasks,), bool) if presence is None else presence
        t = state.step
        in_warmup = t < warmup_steps
        averaging = in_warmup & (t >= window_start) & present
        nadir_sum = state.nadir_sum + jnp.where(averaging, losses, 0.0)
        nadir_count = state.nadir_count + averaging.astype(jnp.int32)
        n = state.nadir
        known = state.nadir_known
        if nadir is None:
            fix = (~in_warmup) & present & ~known
            mean = nadir_sum / jnp.maximum(nadir_count, 1).astype(jnp.float32)
            estimate = jnp.where(nadir_count > 0, mean, losses)
            n = jnp.where(fix, estimate, n)
            known = known | fix
        w_warm = _presence.zero_absent(1.0 / jnp.maximum(losses, eps), presence)
        w_stch = _stch.stch_weights(losses, nadir=n, mu=mu, eps=eps, presence=presence)
        w = jnp.where(in_warmup, w_warm, w_stch)
        return w, STCHState(t + 1, nadir_sum, n, w, nadir_count, known)

    return _base.loss_balancer(init, weights_fn, shared=shared)
