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

from mtl_jax import _presence

__all__ = ["rlw_weights"]

Distribution = Literal["normal", "uniform", "dirichlet"]
DISTRIBUTIONS = ("normal", "uniform", "dirichlet")


def rlw_weights(
    key: jax.Array,
    *,
    num_tasks: int,
    distribution: Distribution = "normal",
    presence: jax.Array | None = None,
) -> jax.Array:
    """Random weights on the simplex, ``[num_tasks]``, summing to 1.

    With ``presence`` the weights are drawn on the simplex of the present tasks
    ``S`` (the absent tasks get 0). ``K`` variables are drawn as without presence
    and those of the present tasks are normalised: the ``"normal"`` and
    ``"uniform"`` weights are the softmax over ``S`` of i.i.d. draws, and the
    ``"dirichlet"`` weights are normalised i.i.d. ``Gamma(1)`` draws, i.e.
    ``Dir(1, …, 1)`` on ``S``. So the weights of ``S`` have exactly the
    distribution of an ``|S|``-task draw, but not its values: the same key gives
    an ``|S|``-task draw different numbers (the draws have ``K`` entries).

    Args:
      key: a JAX PRNG key.
      num_tasks: ``K``.
      distribution: ``"normal"`` (``softmax`` of ``N(0, I)``, the paper's and
        LibMTL's default), ``"uniform"`` (``softmax`` of ``U(0, 1)``) or
        ``"dirichlet"`` (``Dir(1, …, 1)``, sampled directly).
      presence: optional ``[K]`` bool array of the present tasks (``None``: all).

    Returns:
      ``[K]`` float32 weights with ``Σ w = 1`` (over the present tasks; all 0 if
      none is present).
    """
    if presence is not None:
        if distribution == "normal":
            draw = jax.random.normal(key, (num_tasks,), jnp.float32)
            return _presence.masked_softmax(draw, presence)
        if distribution == "uniform":
            draw = jax.random.uniform(key, (num_tasks,), jnp.float32)
            return _presence.masked_softmax(draw, presence)
        if distribution == "dirichlet":
            g = _presence.zero_absent(jax.random.gamma(key, jnp.ones((num_tasks,))), presence)
            total = jnp.sum(g)
            return (g / jnp.where(total > 0, total, 1.0)).astype(jnp.float32)
    if distribution == "normal":
        return jax.nn.softmax(jax.random.normal(key, (num_tasks,), jnp.float32))
    if distribution == "uniform":
        return jax.nn.softmax(jax.random.uniform(key, (num_tasks,), jnp.float32))
    if distribution == "dirichlet":
        return jax.random.dirichlet(key, jnp.ones((num_tasks,), jnp.float32))
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
