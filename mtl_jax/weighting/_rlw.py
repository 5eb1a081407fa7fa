"""Random Loss Weighting (RLW): fresh random task weights at every step.

Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random Weighting: A Litmus
Test for Multi-Task Learning", TMLR 2022, https://arxiv.org/abs/2111.10603
(Algorithm 1). Weights are ``softmax(λ̃)`` for ``λ̃`` drawn from a chosen
distribution, so they lie on the probability simplex.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

__all__ = ["rlw_weights"]

Distribution = Literal["normal", "uniform", "dirichlet"]
DISTRIBUTIONS = ("normal", "uniform", "dirichlet")


def rlw_weights(
    key: jax.Array, *, num_tasks: int, distribution: Distribution = "normal"
) -> jax.Array:
    """Random weights on the simplex, ``[num_tasks]``, summing to 1.

    Args:
      key: a JAX PRNG key.
      num_tasks: ``K``.
      distribution: ``"normal"`` (``softmax`` of ``N(0, I)``, the paper's and
        LibMTL's default), ``"uniform"`` (``softmax`` of ``U(0, 1)``) or
        ``"dirichlet"`` (``Dir(1, …, 1)``, sampled directly).

    Returns:
      ``[K]`` float32 weights with ``Σ w = 1``.
    """
    if distribution == "normal":
        return jax.nn.softmax(jax.random.normal(key, (num_tasks,), jnp.float32))
    if distribution == "uniform":
        return jax.nn.softmax(jax.random.uniform(key, (num_tasks,), jnp.float32))
    if distribution == "dirichlet":
        return jax.random.dirichlet(key, jnp.ones((num_tasks,), jnp.float32))
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
