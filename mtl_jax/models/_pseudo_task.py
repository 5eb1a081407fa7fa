"""Pseudo-task heads: ``D`` decoders per task on a shared model's output.

Meyerson & Miikkulainen, "Pseudo-task Augmentation: From Deep Multitask Learning
to Intratask Sharing—and Back", ICML 2018, https://arxiv.org/abs/1803.04062.

A (task, decoder, decoder parameters) triple is a *pseudo-task*: every task ``k``
has ``D`` decoders ``D_kd`` projecting the shared representation ``z = F(x)`` to
its own classification layer, and every pseudo-task contributes its own loss, so
the shared model ``F`` is trained towards the same task "in ``D`` ways". The
decoder parameters are stacked with leading axes ``[K, D]`` and applied with one
``einsum`` (no Python loop over tasks or decoders).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax import _validate

__all__ = [
    "PseudoTaskHeads",
    "decoder_accuracy",
    "pseudo_task_losses",
    "select_decoders",
    "selected_logits",
]


def _check_rates(rates: jax.Array) -> None:
    """Raises for concrete dropout rates outside ``[0, 1)``; traced rates pass."""
    if isinstance(rates, jax.core.Tracer):
        return
    r = np.asarray(rates)
    bad = ~((r >= 0) & (r < 1))
    if np.any(bad):
        raise ValueError(
            f"dropout_rates must lie in [0, 1), got {r[bad].tolist()} "
            f"at (task, decoder) {np.argwhere(bad).tolist()}"
        )


class PseudoTaskHeads(nn.Module):
    """``K`` tasks × ``D`` affine decoders on a shared representation.

    For input ``z`` of shape ``[B, d]`` the output is

    .. math::

       y_{k d} = \\bigl(z \\odot m_{k d} / (1 - p_{k d})\\bigr) W_{k d} + b_{k d},
       \\qquad k = 1..K,\\ d = 1..D,

    of shape ``[K, D, B, features]``, where ``m_kd`` is a Bernoulli(``1 - p_kd``)
    dropout mask on the decoder's input and ``p_kd`` is decoder ``(k, d)``'s own
    dropout rate (the quantity that hyperperturbation adjusts). Without rates, or
    with ``train=False`` (the default), no dropout is applied, and with ``D = 1`` the
    module computes exactly :class:`~mtl_jax.models.MultiHeadDense` (one head per
    task).

    Parameters ``kernel [K, D, d, features]`` and ``bias [K, D, features]``; every
    decoder is initialised independently (the paper's independent initialisation;
    :func:`~mtl_jax.recipes.pta_identical_init` makes them identical).

    Attributes:
      num_tasks: ``K``.
      num_decoders: ``D``, decoders per task.
      features: output size of every decoder (e.g. the number of classes).

    ``kernel_init`` and ``bias_init`` initialise one decoder's ``[d, features]``
    kernel and ``[features]`` bias (LeCun normal and zeros by default).

    References:
      Meyerson & Miikkulainen, ICML 2018, https://arxiv.org/abs/1803.04062.
    """

    num_tasks: int
    num_decoders: int
    features: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(
        self,
        z: jax.Array,
        dropout_rates: jax.Array | None = None,
        *,
        train: bool = False,
    ) -> jax.Array:
        """Applies every decoder to ``z``.

        Args:
          z: the shared representation, ``[B, d]``.
          dropout_rates: per-decoder input dropout rates ``[K, D]`` in ``[0, 1)``,
            or ``None`` for no dropout. Concrete rates outside ``[0, 1)`` raise;
            traced ones (inside ``jit``) cannot be checked here.
          train: if True, dropout is applied with the ``"dropout"`` RNG stream;
            otherwise (evaluation) it is off and no RNG is needed.

        Returns:
          Logits ``[K, D, B, features]``.

        Raises:
          ValueError: for a bad ``z`` or ``dropout_rates`` shape, or concrete
            rates outside ``[0, 1)`` (a rate of 1 drops every input and divides
            by zero; a negative one is not a probability).
        """
        _validate.check_int("num_tasks", self.num_tasks)
        _validate.check_int("num_decoders", self.num_decoders)
        _validate.check_int("features", self.features)
        if z.ndim != 2:
            raise ValueError(f"z must have shape [batch, d], got shape {z.shape}")
        k, n, d = self.num_tasks, self.num_decoders, z.shape[-1]

        def kernel_init(key, shape):
            keys = jax.random.split(key, k * n)
            w = jax.vmap(lambda kk: self.kernel_init(kk, shape[2:]))(keys)
            return w.reshape(shape)

        def bias_init(key, shape):
            keys = jax.random.split(key, k * n)
            b = jax.vmap(lambda kk: self.bias_init(kk, shape[2:]))(keys)
            return b.reshape(shape)

        kernel = self.param("kernel", kernel_init, (k, n, d, self.features))
        bias = self.param("bias", bias_init, (k, n, self.features))
        if dropout_rates is not None:
            dropout_rates = jnp.asarray(dropout_rates)
            if dropout_rates.shape != (k, n):
                raise ValueError(
                    f"dropout_rates must have shape (num_tasks, num_decoders) = {(k, n)}, "
                    f"got {dropout_rates.shape}"
                )
            _check_rates(dropout_rates)
        if dropout_rates is None or not train:
            y = jnp.einsum("bi,kdif->kdbf", z, kernel)
        else:
            keep = 1.0 - dropout_rates.astype(z.dtype)
            mask = jax.random.bernoulli(
                self.make_rng("dropout"), keep[:, :, None, None], (k, n, *z.shape)
            )
            zd = jnp.where(mask, z[None, None] / keep[:, :, None, None], 0.0)
            y = jnp.einsum("kdbi,kdif->kdbf", zd, kernel)
        return y + bias[:, :, None, :]


def pseudo_task_losses(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy of every pseudo-task, as a flat ``[K·D]`` loss vector.

    .. math::

       L_{k D + d} = \\frac{1}{B} \\sum_b -\\log \\operatorname{softmax}(y_{k d b})_{t_{b k}}

    Entry ``k·D + d`` is decoder ``d`` of task ``k`` (task-major), so any balancer
    in :mod:`mtl_jax.balancers` balances the ``K·D`` pseudo-tasks through
    :func:`mtl_jax.training.make_train_step`.

    Args:
      logits: ``[K, D, B, C]`` from :class:`PseudoTaskHeads`.
      labels: integer targets ``[B, K]`` (one column per task).

    Returns:
      ``[K·D]`` mean losses.
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must have shape [K, D, B, C], got {logits.shape}")
    k, n, b, _ = logits.shape
    if labels.shape != (b, k):
        raise ValueError(
            f"labels must have shape [batch, num_tasks] = {(b, k)}, got {labels.shape}"
        )
    tgt = jnp.broadcast_to(labels.T[:, None, :], (k, n, b))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, tgt)
    return jnp.mean(ce, axis=-1).reshape(k * n)


def decoder_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Accuracy of every decoder, ``[K, D]`` (the validation score PTA selects on).

    Args:
      logits: ``[K, D, B, C]``.
      labels: ``[B, K]`` integer targets.

    Returns:
      ``[K, D]`` float32 fractions of correct predictions.
    """
    if logits.ndim != 4 or labels.shape != (logits.shape[2], logits.shape[0]):
        raise ValueError(
            f"need logits [K, D, B, C] and labels [B, K]; got {logits.shape} and {labels.shape}"
        )
    pred = jnp.argmax(logits, axis=-1)
    return jnp.mean((pred == labels.T[:, None, :]).astype(jnp.float32), axis=-1)


def select_decoders(scores: jax.Array) -> jax.Array:
    """Each task's best decoder by validation score: ``argmax_d scores[k, d]``.

    Ties go to the lowest index.

    Args:
      scores: ``[K, D]``, higher is better (e.g. :func:`decoder_accuracy`).

    Returns:
      ``[K]`` int32 decoder indices.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape [K, D], got {scores.shape}")
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)


def selected_logits(logits: jax.Array, best: jax.Array) -> jax.Array:
    """Inference with each task's selected decoder: ``logits[k, best[k]]``.

    Args:
      logits: ``[K, D, B, C]``.
      best: ``[K]`` decoder indices (:func:`select_decoders`).

    Returns:
      ``[K, B, C]``.
    """
    if best.shape != (logits.shape[0],):
        raise ValueError(f"best must have shape ({logits.shape[0]},), got {best.shape}")
    idx = best.astype(jnp.int32)[:, None, None, None]
    return jnp.take_along_axis(logits, idx, axis=1)[:, 0]
