"""Pseudo-task control: decoder initialisation and update strategies.

Meyerson & Miikkulainen, "Pseudo-task Augmentation: From Deep Multitask Learning
to Intratask Sharing—and Back", ICML 2018, https://arxiv.org/abs/1803.04062
(Algorithm 1, "PTA training framework").

PTA trains the shared model and all ``K×D`` decoders jointly for a
*meta-iteration* of ``M`` gradient steps; then every task's decoders are scored
on validation data and updated by a control strategy. These are pure functions
over the decoder parameters (a pytree whose leaves carry leading ``[K, D]``
axes), per-decoder dropout rates ``[K, D]`` and an explicit PRNG key. Scales may
be Python floats or scalar arrays (validated when concrete), so one compiled
program can run several scales under ``jax.vmap``.

Deviations: the paper's exact update rules and scales are not reproduced from
its text (see the PTA page of the documentation); here the selection is by
validation score with ties to the lowest index, the perturbation is additive
Gaussian noise of a fixed standard deviation on every parameter of every
non-best decoder, the dropout hyperperturbation is additive Gaussian noise on
the non-best decoders' rates clipped to ``[0, max_dropout]``, the best decoder
is never perturbed, the optimiser state is left as it is, and frozen decoders
keep their random initialisation while still sending their loss to the shared
model.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "PTA_STRATEGIES",
    "pta_greedy_copy",
    "pta_identical_init",
    "pta_perturb",
    "pta_perturb_dropout",
    "pta_trainable_mask",
    "pta_update",
]

PyTree = Any

#: Update strategies :func:`pta_update` accepts.
PTA_STRATEGIES = ("none", "greedy", "perturb", "hyperperturb")


def _leading(tree: PyTree) -> tuple[int, int]:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError("decoder parameters are empty")
    shapes = {tuple(x.shape[:2]) for x in leaves}
    if len(shapes) != 1 or any(x.ndim < 2 for x in leaves):
        raise ValueError(f"every decoder leaf needs the same leading [K, D] axes, got {shapes}")
    return shapes.pop()


def _check_best(best: jax.Array, k: int) -> None:
    if best.shape != (k,):
        raise ValueError(f"best must have shape ({k},), got {best.shape}")


def _check_scale(name: str, value) -> None:
    """A scale is a float >= 0, or a scalar array (checked when its value is concrete)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a float >= 0, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} must be a float >= 0, got {value!r}")
        return
    if not isinstance(value, jax.Array) or value.ndim != 0:
        raise ValueError(f"{name} must be a float >= 0 or a scalar array, got {value!r}")
    try:
        concrete = float(value)
    except jax.errors.ConcretizationTypeError:  # traced: validated where it was concrete
        return
    if concrete < 0:
        raise ValueError(f"{name} must be >= 0, got {concrete}")


def _is_zero(value) -> bool:
    """True only for a Python zero (a traced scale is always applied; ``x + 0·ε == x``)."""
    return isinstance(value, (int, float)) and value == 0


def pta_identical_init(decoders: PyTree) -> PyTree:
    """Identical initialisation: every task's decoders start as its decoder 0.

    ``θ_kd ← θ_k0`` for all ``d``. (Independent initialisation is what
    :class:`~mtl_jax.models.PseudoTaskHeads` does by default.)

    Args:
      decoders: decoder parameters, leaves ``[K, D, ...]``.

    Returns:
      The same structure with all decoders of a task equal.
    """
    _leading(decoders)
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x[:, :1], x.shape), decoders)


def pta_greedy_copy(decoders: PyTree, best: jax.Array) -> PyTree:
    """Greedy copy: every decoder of task ``k`` becomes its best one, ``θ_kd ← θ_{k,best_k}``.

    Args:
      decoders: decoder parameters, leaves ``[K, D, ...]``.
      best: ``[K]`` index of each task's best decoder.

    Returns:
      Decoder parameters with all decoders of a task equal to its best.
    """
    k, _ = _leading(decoders)
    _check_best(best, k)

    def copy(x):
        idx = best.astype(jnp.int32).reshape((k, 1) + (1,) * (x.ndim - 2))
        return jnp.broadcast_to(jnp.take_along_axis(x, idx, axis=1), x.shape)

    return jax.tree_util.tree_map(copy, decoders)


def pta_perturb(
    decoders: PyTree, key: jax.Array, best: jax.Array, *, scale: float | jax.Array
) -> PyTree:
    """Adds ``N(0, scale²)`` noise to every parameter of every non-best decoder.

    ``θ_kd ← θ_kd + scale·ε`` with ``ε ~ N(0, I)`` for ``d ≠ best_k``; the best
    decoders are left exactly as they are.

    Args:
      decoders: decoder parameters, leaves ``[K, D, ...]``.
      key: a PRNG key.
      best: ``[K]`` decoders to leave unperturbed.
      scale: the noise standard deviation (>= 0).

    Returns:
      The perturbed decoder parameters.
    """
    _check_scale("scale", scale)
    k, n = _leading(decoders)
    _check_best(best, k)
    keep = jnp.arange(n)[None, :] == best[:, None]  # [K, D]
    leaves, treedef = jax.tree_util.tree_flatten(decoders)
    keys = jax.random.split(key, len(leaves))
    out = []
    for x, kk in zip(leaves, keys):
        noise = scale * jax.random.normal(kk, x.shape, x.dtype)
        m = keep.reshape((k, n) + (1,) * (x.ndim - 2))
        out.append(jnp.where(m, x, x + noise))
    return jax.tree_util.tree_unflatten(treedef, out)


def pta_perturb_dropout(
    rates: jax.Array,
    key: jax.Array,
    best: jax.Array,
    *,
    scale: float | jax.Array,
    max_dropout: float,
) -> jax.Array:
    """Hyperperturbation: ``p_kd ← clip(p_kd + scale·ε, 0, max_dropout)`` for ``d ≠ best_k``.

    Args:
      rates: per-decoder dropout rates ``[K, D]``.
      key: a PRNG key.
      best: ``[K]`` decoders whose rates are kept.
      scale: standard deviation of the Gaussian step (>= 0).
      max_dropout: upper clip, in ``[0, 1)``.

    Returns:
      ``[K, D]`` rates.
    """
    _check_scale("scale", scale)
    if not 0.0 <= max_dropout < 1.0:
        raise ValueError(f"max_dropout must be in [0, 1), got {max_dropout}")
    if rates.ndim != 2:
        raise ValueError(f"rates must have shape [K, D], got {rates.shape}")
    _check_best(best, rates.shape[0])
    keep = jnp.arange(rates.shape[1])[None, :] == best[:, None]
    step = scale * jax.random.normal(key, rates.shape, rates.dtype)
    return jnp.where(keep, rates, jnp.clip(rates + step, 0.0, max_dropout))


def pta_trainable_mask(num_tasks: int, num_decoders: int, *, num_frozen: int = 0) -> jax.Array:
    """Which decoders gradient descent may move: the last ``num_frozen`` of each task are frozen.

    Frozen decoders keep their (random) initial parameters for the whole run,
    while still giving the shared model their loss signal.

    Args:
      num_tasks: ``K``.
      num_decoders: ``D``.
      num_frozen: frozen decoders per task, in ``[0, D - 1]``.

    Returns:
      ``[K, D]`` bool, True where the decoder is trained.
    """
    if not 0 <= num_frozen < num_decoders:
        raise ValueError(
            f"num_frozen must be in [0, num_decoders - 1] = [0, {num_decoders - 1}], "
            f"got {num_frozen}"
        )
    row = jnp.arange(num_decoders) < num_decoders - num_frozen
    return jnp.broadcast_to(row[None, :], (num_tasks, num_decoders))


def pta_update(
    decoders: PyTree,
    rates: jax.Array,
    scores: jax.Array,
    key: jax.Array,
    *,
    strategy: str,
    perturbation_scale: float | jax.Array = 0.0,
    dropout_scale: float | jax.Array = 0.0,
    max_dropout: float = 0.9,
) -> tuple[PyTree, jax.Array, jax.Array]:
    """One decoder update at the end of a meta-iteration, from validation scores.

    With ``best_k = argmax_d scores[k, d]``:

    * ``"none"``: decoders and rates unchanged (independent or frozen decoders);
    * ``"greedy"``: ``θ_kd ← θ_{k,best_k}`` (and the best rate copied);
    * ``"perturb"``: greedy copy, then :func:`pta_perturb` with ``perturbation_scale``;
    * ``"hyperperturb"``: greedy copy of parameters and rates, then
      :func:`pta_perturb` with ``perturbation_scale`` (skipped when 0) and
      :func:`pta_perturb_dropout` with ``dropout_scale``.

    Args:
      decoders: decoder parameters, leaves ``[K, D, ...]``.
      rates: dropout rates ``[K, D]``.
      scores: validation scores ``[K, D]`` (higher is better).
      key: a PRNG key.
      strategy: one of :data:`PTA_STRATEGIES`.
      perturbation_scale: std of the parameter perturbation.
      dropout_scale: std of the dropout-rate perturbation.
      max_dropout: upper clip of the rates.

    Returns:
      ``(decoders, rates, best)``.
    """
    if strategy not in PTA_STRATEGIES:
        raise ValueError(f"strategy must be one of {PTA_STRATEGIES}, got {strategy!r}")
    _check_scale("perturbation_scale", perturbation_scale)
    _check_scale("dropout_scale", dropout_scale)
    k, n = _leading(decoders)
    if scores.shape != (k, n) or rates.shape != (k, n):
        raise ValueError(
            f"scores and rates must have shape {(k, n)}, got {scores.shape} and {rates.shape}"
        )
    best = jnp.argmax(scores, axis=-1).astype(jnp.int32)
    if strategy == "none":
        return decoders, rates, best
    decoders = pta_greedy_copy(decoders, best)
    rates = jnp.broadcast_to(jnp.take_along_axis(rates, best[:, None], axis=1), rates.shape)
    k_params, k_rates = jax.random.split(key)
    if strategy in ("perturb", "hyperperturb") and not _is_zero(perturbation_scale):
        decoders = pta_perturb(decoders, k_params, best, scale=perturbation_scale)
    if strategy == "hyperperturb":
        rates = pta_perturb_dropout(
            rates, k_rates, best, scale=dropout_scale, max_dropout=max_dropout
        )
    return decoders, rates, best
