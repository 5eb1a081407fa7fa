"""Moving semantic transfer network (MSTN): moving class centroids and the semantic loss.

MSTN adds to DANN a *semantic* alignment: per-class feature centroids of labelled
source samples and of pseudo-labelled target samples (pseudo-label = arg-max of
the classifier) are tracked by exponential moving averages across mini-batches,
and their squared distance is minimised.

Follows the authors' TensorFlow code (``office/alexnet/mstnmodel.py``): batch
centroids are ``segment_sum / max(count, 1)``, so a class absent from a batch has
a zero batch centroid and its moving centroid decays towards zero
(``absent="zero"``); ``absent="keep"`` keeps the old centroid instead (a common
variant). The moving centroids are state, updated with the value computed in the
step; gradients flow only through the current batch term.

References:
  Xie, Zheng, Chen, Chen. Learning Semantic Representations for Unsupervised
  Domain Adaptation. ICML 2018. https://proceedings.mlr.press/v80/xie18c.html
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from mtl_jax.adaptation._dann import (
    ApplyFn,
    DiscriminatorFn,
    _ce,
    domain_adversarial_loss,
)
from mtl_jax.adaptation._gradient_reversal import dann_lambda, gradient_reversal

__all__ = [
    "MSTNState",
    "class_centroids",
    "make_mstn_step",
    "mstn_init",
    "semantic_loss",
    "update_centroids",
]


class MSTNState(NamedTuple):
    """Moving centroids of MSTN."""

    source_centroids: jax.Array  # [K, D]
    target_centroids: jax.Array  # [K, D]


def mstn_init(num_classes: int, feature_dim: int, dtype: Any = jnp.float32) -> MSTNState:
    """Zero moving centroids (as in the reference code)."""
    if num_classes < 1 or feature_dim < 1:
        raise ValueError(f"need positive sizes, got {num_classes}, {feature_dim}")
    z = jnp.zeros((num_classes, feature_dim), dtype)
    return MSTNState(z, z)


def class_centroids(
    features: ArrayLike, labels: ArrayLike, num_classes: int
) -> tuple[jax.Array, jax.Array]:
    r"""Per-class mean features of a batch.

    .. math:: c_k = \frac{\sum_i [y_i = k] f_i}{\max(1, \sum_i [y_i = k])}

    (zero for classes absent from the batch).

    Example:
      >>> import numpy as np
      >>> from mtl_jax.adaptation import class_centroids
      >>> f = np.array([[1.0], [3.0], [5.0]], np.float32)
      >>> c, n = class_centroids(f, np.array([0, 0, 2]), 3)
      >>> c[:, 0].tolist(), n.tolist()
      ([2.0, 0.0, 5.0], [2.0, 0.0, 1.0])

    Args:
      features: ``[B, D]``.
      labels: ``[B]`` integer (pseudo-)labels.
      num_classes: ``K``.

    Returns:
      ``(centroids [K, D], counts [K])``.
    """
    f, y = jnp.asarray(features), jnp.asarray(labels)
    if f.ndim != 2 or y.shape != f.shape[:1]:
        raise ValueError(f"need features [B, D] and labels [B], got {f.shape}, {y.shape}")
    onehot = jax.nn.one_hot(y, num_classes, dtype=f.dtype)  # [B, K]
    counts = jnp.sum(onehot, axis=0)
    sums = onehot.T @ f
    return sums / jnp.maximum(counts, 1.0)[:, None], counts


def update_centroids(
    moving: ArrayLike,
    batch: ArrayLike,
    counts: ArrayLike,
    theta: float = 0.7,
    absent: Literal["zero", "keep"] = "zero",
) -> jax.Array:
    r"""Moving-average centroid update ``C ← θ C_old + (1 − θ) c_batch``.

    The old centroids enter through ``stop_gradient``: the semantic loss trains
    the network only through the current batch.

    Args:
      moving: ``[K, D]`` previous moving centroids.
      batch: ``[K, D]`` batch centroids from :func:`class_centroids`.
      counts: ``[K]`` batch class counts.
      theta: ``θ ∈ [0, 1]`` (0.7 in the paper).
      absent: ``"zero"`` (paper code: absent classes use a zero batch centroid) or
        ``"keep"`` (absent classes keep their old moving centroid).

    Returns:
      ``[K, D]`` new centroids.
    """
    if not 0.0 <= theta <= 1.0:
        raise ValueError(f"theta must be in [0, 1], got {theta}")
    if absent not in ("zero", "keep"):
        raise ValueError(f"absent must be 'zero' or 'keep', got {absent!r}")
    old = jax.lax.stop_gradient(jnp.asarray(moving))
    new = theta * old + (1.0 - theta) * jnp.asarray(batch)
    if absent == "keep":
        new = jnp.where((jnp.asarray(counts) > 0)[:, None], new, old)
    return new


def semantic_loss(source_centroids: ArrayLike, target_centroids: ArrayLike) -> jax.Array:
    r"""``L_SM = mean_{k,d} (C_S[k, d] − C_T[k, d])²`` (the reference code's mean square)."""
    d = jnp.asarray(source_centroids) - jnp.asarray(target_centroids)
    return jnp.mean(d * d)


def make_mstn_step(
    apply_fn: ApplyFn,
    discriminator_fn: DiscriminatorFn,
    optimizer: optax.GradientTransformation,
    *,
    num_classes: int,
    theta: float = 0.7,
    adversarial_weight: float = 0.1,
    semantic_weight: float = 1.0,
    gamma: float = 10.0,
    absent: Literal["zero", "keep"] = "zero",
):
    r"""Builds a (jit-able) MSTN training step.

    .. math::
        L = L_C(\text{source}) + w_{adv} L_{adv}(D(R_{λ_p}(f_s)), D(R_{λ_p}(f_t)))
            + λ_p\, w_{SM}\, L_{SM}(C_S, C_T),

    where ``C_S`` / ``C_T`` are the moving centroids updated with this batch
    (source labels / target arg-max pseudo-labels). With the gradient reversal
    the discriminator minimises ``w_adv L_adv`` and the features receive
    ``-λ_p w_adv ∇L_adv``: the paper's ``L_C + λ_p(0.1 L_adv + L_SM)``.

    Args:
      apply_fn: ``apply_fn(params, x) -> (features [B, D], logits [B, K])``.
      discriminator_fn: ``discriminator_fn(params, features) -> [B] logits``.
      optimizer: any optax transformation over ``params``.
      num_classes: ``K``.
      theta: moving-average factor ``θ``.
      adversarial_weight: ``w_adv`` (0.1 in the paper).
      semantic_weight: ``w_SM`` (1 in the paper).
      gamma: ``γ`` of :func:`dann_lambda`.
      absent: absent-class rule of :func:`update_centroids`.

    Returns:
      ``step(params, opt_state, mstn_state, source_x, source_y, target_x, progress)``
      returning ``(params, opt_state, mstn_state, metrics)``.

    References:
      Xie et al. ICML 2018. https://proceedings.mlr.press/v80/xie18c.html
    """
    if adversarial_weight < 0 or semantic_weight < 0:
        raise ValueError(f"weights must be >= 0, got {adversarial_weight}, {semantic_weight}")
    if not 0.0 <= theta <= 1.0:
        raise ValueError(f"theta must be in [0, 1], got {theta}")

    def loss_fn(params, state, source_x, source_y, target_x, progress):
        lam = dann_lambda(progress, gamma=gamma)
        fs, ls = apply_fn(params, source_x)
        ft, lt = apply_fn(params, target_x)
        cls = _ce(ls, source_y)
        adv = domain_adversarial_loss(
            discriminator_fn(params, gradient_reversal(fs, lam)),
            discriminator_fn(params, gradient_reversal(ft, lam)),
        )
        pseudo = jnp.argmax(lt, axis=-1)
        cs, ns = class_centroids(fs, source_y, num_classes)
        ct, nt = class_centroids(ft, pseudo, num_classes)
        new_s = update_centroids(state.source_centroids, cs, ns, theta, absent)
        new_t = update_centroids(state.target_centroids, ct, nt, theta, absent)
        sem = semantic_loss(new_s, new_t)
        total = cls + adversarial_weight * adv + lam * semantic_weight * sem
        metrics = {
            "loss": total,
            "classification": cls,
            "adversarial": adv,
            "semantic": sem,
            "lambda": lam,
        }
        new_state = MSTNState(jax.lax.stop_gradient(new_s), jax.lax.stop_gradient(new_t))
        return total, (new_state, metrics)

    def step(params, opt_state, state, source_x, source_y, target_x, progress):
        grads, (state, metrics) = jax.grad(loss_fn, has_aux=True)(
            params, state, source_x, source_y, target_x, progress
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, state, metrics

    return step
