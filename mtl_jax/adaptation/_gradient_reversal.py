"""The gradient reversal layer and the DANN schedules.

References:
  Ganin, Lempitsky. Unsupervised Domain Adaptation by Backpropagation. ICML 2015.
  https://arxiv.org/abs/1409.7495
  Ganin et al. Domain-Adversarial Training of Neural Networks. JMLR 2016.
  https://arxiv.org/abs/1505.07818
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

__all__ = ["dann_lambda", "dann_learning_rate", "gradient_reversal"]


@jax.custom_vjp
def _reverse(x: jax.Array, scale: jax.Array) -> jax.Array:
    return x


def _reverse_fwd(x, scale):
    return x, scale


def _reverse_bwd(scale, g):
    return (-scale.astype(g.dtype) * g, jnp.zeros_like(scale))


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def gradient_reversal(x: ArrayLike, scale: ArrayLike = 1.0) -> jax.Array:
    r"""Identity in the forward pass; multiplies the gradient by ``-scale`` backward.

    .. math:: R_λ(x) = x, \qquad \frac{\partial R_λ}{\partial x} = -λ I .

    Placed between a feature extractor and a domain discriminator, minimising the
    discriminator loss trains the discriminator while the features *maximise* it.
    ``scale`` may be a traced scalar (e.g. the λ_p schedule); no gradient flows
    into it.

    Args:
      x: any array.
      scale: scalar ``λ`` (non-negative in the usual use).

    Returns:
      ``x`` unchanged.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from mtl_jax.adaptation import gradient_reversal
      >>> jax.grad(lambda x: jnp.sum(gradient_reversal(x, 0.5)))(jnp.ones(2))
      Array([-0.5, -0.5], dtype=float32)

    References:
      Ganin, Lempitsky. ICML 2015. https://arxiv.org/abs/1409.7495
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"gradient_reversal needs a floating-point input, got {x.dtype}")
    scale = jnp.asarray(scale, dtype=x.dtype)
    if scale.ndim != 0:
        raise ValueError(f"scale must be a scalar, got shape {scale.shape}")
    return _reverse(x, scale)


def dann_lambda(progress: ArrayLike, *, gamma: float = 10.0) -> jax.Array:
    r"""The adaptation-weight schedule ``λ_p = 2 / (1 + exp(-γ p)) - 1``.

    Rises from 0 at ``p = 0`` to almost 1 at ``p = 1`` (``γ = 10``), suppressing the
    noisy domain/semantic signal early in training.

    Args:
      progress: training progress ``p ∈ [0, 1]``.
      gamma: steepness ``γ``.

    Returns:
      Scalar ``λ_p``.
    """
    p = jnp.asarray(progress, jnp.float32)
    return 2.0 / (1.0 + jnp.exp(-gamma * p)) - 1.0


def dann_learning_rate(
    init_value: float, total_steps: int, *, alpha: float = 10.0, beta: float = 0.75
) -> optax.Schedule:
    r"""Annealed learning rate ``η_p = η_0 / (1 + α p)^β`` with ``p = step / total_steps``.

    Args:
      init_value: ``η_0``.
      total_steps: number of steps that map to ``p = 1``.
      alpha: ``α`` (10 in the papers).
      beta: ``β`` (0.75 in the papers).

    Returns:
      An ``optax`` schedule.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if init_value <= 0:
        raise ValueError(f"init_value must be > 0, got {init_value}")

    def schedule(step):
        p = jnp.minimum(jnp.asarray(step, jnp.float32) / total_steps, 1.0)
        return init_value / (1.0 + alpha * p) ** beta

    return schedule
