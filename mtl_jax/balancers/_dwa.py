"""Dynamic Weight Average (DWA): weight each task by how slowly its loss falls.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019,
https://arxiv.org/abs/1803.10704. The weighting is
:func:`mtl_jax.weighting.dwa_weights`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _presence, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _dwa

__all__ = ["DWAState", "dwa"]


class DWAState(NamedTuple):
    step: jax.Array  # [] int32, calls so far
    epoch_sum: jax.Array  # [K], losses summed over the current epoch
    epoch_count: jax.Array  # [K] int32, calls of the current epoch in which the task was present
    prev_losses: jax.Array  # [K], mean losses of the last completed epoch, L(t−1)
    prev_prev_losses: jax.Array  # [K], mean losses of the epoch before, L(t−2)
    epochs_done: jax.Array  # [] int32, completed epochs
    weights: jax.Array  # [K], weights used at the last update


def dwa(
    *,
    num_tasks: int | None = None,
    temperature: float = 2.0,
    steps_per_epoch: int = 1,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """Dynamic Weight Average: ``w_k = K · softmax(r / T)_k``, ``r_k = L̄_k(t−1) / L̄_k(t−2)``.

    ``L̄(t)`` is the mean loss over epoch ``t``; the paper averages over training
    epochs, LibMTL likewise. Here an "epoch" is ``steps_per_epoch`` calls, so the
    default ``steps_per_epoch=1`` is the per-step variant: step ``t`` uses the
    losses of steps ``t−1`` and ``t−2``. Until two epochs have completed the
    weights are all 1 (equal weighting).

    Presence: the softmax is over the present tasks and scaled to their number
    (before two epochs have completed, each present task gets 1); an absent task
    gets weight 0 and its loss is not recorded. An epoch's mean loss of a task is
    over the calls in which it was present; a task absent for a whole epoch keeps
    its loss history unchanged.

    Scale: the weights sum to ``K``, so the update is equal weighting's when the
    loss ratios agree.

    Modes: loss-only (one backward pass of ``Σ_k w_k L_k``); the weights do not
    depend on gradients, so full-parameter and representation modes coincide.

    Cost: loss-only (one backward pass of the weighted loss sum).

    Args:
      num_tasks: ``K`` (required, keyword-only).
      temperature: softmax temperature ``T > 0`` (paper: 2).
      steps_per_epoch: calls averaged into one loss record.
      shared: leaves to weight (all by default); the others receive the plain sum.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"loss"``.

    References:
      Liu, Johns & Davison 2019, https://arxiv.org/abs/1803.10704
    """
    _validate.check_num_tasks(num_tasks, required=True)
    temperature = _validate.check_number("temperature", temperature, low=0.0, low_open=True)
    steps_per_epoch = _validate.check_int("steps_per_epoch", steps_per_epoch)

    def init(params):
        del params
        zeros = jnp.zeros((num_tasks,), jnp.float32)
        i0 = jnp.zeros((), jnp.int32)
        counts = jnp.zeros((num_tasks,), jnp.int32)
        ones = jnp.ones((num_tasks,), jnp.float32)
        return DWAState(i0, zeros, counts, zeros, zeros, i0, ones)

    def weights_fn(losses, state, presence=None):
        _validate.check_losses(losses, num_tasks=num_tasks)
        ready = state.epochs_done >= 2
        w = _dwa.dwa_weights(
            state.prev_losses, state.prev_prev_losses, temperature=temperature, presence=presence
        )
        start = jnp.ones_like(w) if presence is None else presence.astype(w.dtype)
        w = jnp.where(ready, w, start).astype(jnp.float32)
        present = jnp.ones((num_tasks,), bool) if presence is None else presence
        epoch_sum = state.epoch_sum + _presence.zero_absent(losses.astype(jnp.float32), presence)
        epoch_count = state.epoch_count + present.astype(jnp.int32)
        step = state.step + 1
        closes = step % steps_per_epoch == 0
        # A task absent for the whole epoch keeps its history.
        record = closes & (epoch_count > 0)
        mean = epoch_sum / jnp.maximum(epoch_count, 1).astype(jnp.float32)
        new_state = DWAState(
            step=step,
            epoch_sum=jnp.where(closes, jnp.zeros_like(epoch_sum), epoch_sum),
            epoch_count=jnp.where(closes, jnp.zeros_like(epoch_count), epoch_count),
            prev_losses=jnp.where(record, mean, state.prev_losses),
            prev_prev_losses=jnp.where(record, state.prev_losses, state.prev_prev_losses),
            epochs_done=state.epochs_done + closes.astype(jnp.int32),
            weights=w,
        )
        return w, new_state

    return _base.loss_balancer(init, weights_fn, shared=shared)
