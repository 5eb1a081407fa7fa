"""Domain-adversarial neural networks (DANN): domain loss and a training step.

References:
  Ganin et al. Domain-Adversarial Training of Neural Networks. JMLR 2016.
  https://arxiv.org/abs/1505.07818
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
import optax.losses
from jax.typing import ArrayLike

from mtl_jax.adaptation._gradient_reversal import dann_lambda, gradient_reversal

__all__ = ["DANNStep", "domain_adversarial_loss", "make_dann_step"]

ApplyFn = Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]
DiscriminatorFn = Callable[[Any, jax.Array], jax.Array]
DANNStep = Callable[..., tuple[Any, Any, dict[str, jax.Array]]]


def domain_adversarial_loss(
    source_domain_logits: ArrayLike, target_domain_logits: ArrayLike
) -> jax.Array:
    r"""Binary domain-classification loss of a discriminator.

    .. math::
        L_{adv} = -\frac{1}{n_s}\sum_{i} \log(1 - σ(d_i^s))
                  -\frac{1}{n_t}\sum_{j} \log σ(d_j^t),

    source labelled 0 and target 1 (as in the MSTN reference code; each domain
    is averaged separately so unequal batch sizes weigh the domains equally).

    Args:
      source_domain_logits: ``[n_s]`` or ``[n_s, 1]`` discriminator logits.
      target_domain_logits: ``[n_t]`` or ``[n_t, 1]`` discriminator logits.

    Returns:
      Scalar loss.
    """
    s = jnp.reshape(jnp.asarray(source_domain_logits), (-1,))
    t = jnp.reshape(jnp.asarray(target_domain_logits), (-1,))
    ls = optax.losses.sigmoid_binary_cross_entropy(s, jnp.zeros_like(s))
    lt = optax.losses.sigmoid_binary_cross_entropy(t, jnp.ones_like(t))
    return jnp.mean(ls) + jnp.mean(lt)


def _ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels))


def make_dann_step(
    apply_fn: ApplyFn,
    discriminator_fn: DiscriminatorFn,
    optimizer: optax.GradientTransformation,
    *,
    adversarial_weight: float = 1.0,
    gamma: float = 10.0,
) -> DANNStep:
    r"""Builds a (jit-able) DANN training step.

    The step minimises, over all parameters,

    .. math:: L = L_C(\text{source}) + w_{adv}\, L_{adv}\bigl(D(R_{λ_p}(f_s)), D(R_{λ_p}(f_t))\bigr)

    with :func:`gradient_reversal` ``R`` scaled by :func:`dann_lambda` so the
    discriminator descends ``L_adv`` while the features ascend ``λ_p · L_adv``.
    ``adversarial_weight = 0`` gives source-only training.

    Args:
      apply_fn: ``apply_fn(params, x) -> (features [B, D], logits [B, K])``.
      discriminator_fn: ``discriminator_fn(params, features) -> [B] logits``
        (reads its own sub-tree of the same ``params``).
      optimizer: any optax transformation over ``params``.
      adversarial_weight: ``w_adv``.
      gamma: ``γ`` of the ``λ_p`` schedule.

    Returns:
      ``step(params, opt_state, source_x, source_y, target_x, progress)`` returning
      ``(params, opt_state, metrics)``.

    References:
      Ganin et al. JMLR 2016. https://arxiv.org/abs/1505.07818
    """
    if adversarial_weight < 0:
        raise ValueError(f"adversarial_weight must be >= 0, got {adversarial_weight}")

    def loss_fn(params, source_x, source_y, target_x, progress):
        lam = dann_lambda(progress, gamma=gamma)
        fs, ls = apply_fn(params, source_x)
        ft, _ = apply_fn(params, target_x)
        cls = _ce(ls, source_y)
        adv = domain_adversarial_loss(
            discriminator_fn(params, gradient_reversal(fs, lam)),
            discriminator_fn(params, gradient_reversal(ft, lam)),
        )
        total = cls + adversarial_weight * adv
        return total, {"loss": total, "classification": cls, "adversarial": adv, "lambda": lam}

    def step(params, opt_state, source_x, source_y, target_x, progress):
        grads, metrics = jax.grad(loss_fn, has_aux=True)(
            params, source_x, source_y, target_x, progress
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return step
