"""Maximum-likelihood label shift (MLLS): EM of Saerens et al. with BCTS calibration.

The EM algorithm re-estimates the target class priors from calibrated source
posteriors; Alexandari et al. showed that with bias-corrected temperature scaling
(BCTS) it matches or beats BBSE and RLLS.

References:
  Saerens, Latinne, Decaestecker. Adjusting the Outputs of a Classifier to New a
  Priori Probabilities: A Simple Procedure. Neural Computation 14(1), 2002.
  Alexandari, Kundaje, Shrikumar. Maximum Likelihood with Bias-Corrected
  Calibration is Hard-To-Beat at Label Shift Adaptation. ICML 2020.
  https://arxiv.org/abs/1901.06852
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from mtl_jax._lbfgs import minimize
from mtl_jax.adaptation._bbse import _check_labels

__all__ = ["BCTSParams", "apply_bcts", "bcts_calibrate", "mlls", "mlls_log_likelihood"]


class BCTSParams(NamedTuple):
    """Bias-corrected temperature scaling: ``softmax(logits / temperature + bias)``."""

    temperature: jax.Array  # [] positive scalar
    bias: jax.Array  # [K]


def apply_bcts(logits: ArrayLike, params: BCTSParams) -> jax.Array:
    """Calibrated probabilities ``softmax(z / T + b)`` for ``[n, K]`` logits."""
    z = jnp.asarray(logits)
    return jax.nn.softmax(z / params.temperature + params.bias[None, :], axis=-1)


def bcts_calibrate(logits: ArrayLike, labels: ArrayLike, *, num_iters: int = 200) -> BCTSParams:
    r"""Fits bias-corrected temperature scaling on a labelled holdout.

    .. math::
        (T, b) = \arg\min_{T > 0,\, b} -\frac{1}{n}\sum_l
        \log \mathrm{softmax}(z_l / T + b)_{y_l},

    solved with L-BFGS (``optax.lbfgs``) over ``(log T, b)`` for ``num_iters``
    steps (jit-compatible). ``b`` is identifiable only up to a constant; the
    optimiser starts at 0 and the NLL is invariant to that shift.

    Args:
      logits: ``[n, K]`` uncalibrated logits on the holdout.
      labels: ``[n]`` integer labels.
      num_iters: L-BFGS iterations.

    Returns:
      :class:`BCTSParams`.

    References:
      Alexandari et al. ICML 2020. https://arxiv.org/abs/1901.06852
    """
    z = jnp.asarray(logits)
    y = jnp.asarray(labels)
    if z.ndim != 2 or y.shape != z.shape[:1]:
        raise ValueError(f"need logits [n, K] and labels [n], got {z.shape} and {y.shape}")
    if z.shape[0] == 0:
        raise ValueError("logits is empty (n = 0)")
    _check_labels("labels", y, z.shape[-1])
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    return _bcts(z, y, num_iters)


@functools.partial(jax.jit, static_argnums=2)
def _bcts(z, y, num_iters):
    onehot = jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)

    def nll(p):
        logp = jax.nn.log_softmax(z * jnp.exp(-p["log_t"]) + p["bias"][None, :], axis=-1)
        return -jnp.mean(jnp.sum(onehot * logp, axis=-1))

    params = {"log_t": jnp.zeros((), z.dtype), "bias": jnp.zeros(z.shape[-1], z.dtype)}
    params = minimize(nll, params, num_iters=num_iters)
    return BCTSParams(jnp.exp(params["log_t"]), params["bias"])


def mlls_log_likelihood(
    target_probs: ArrayLike, source_priors: ArrayLike, target_priors: ArrayLike
) -> jax.Array:
    r"""Mean target log-likelihood (up to a constant) of priors ``q``.

    .. math:: ℓ(q) = \frac1m \sum_l \log \sum_y \frac{q_y}{p_y}\, p(y \mid x_l).
    """
    p = jnp.asarray(target_probs)
    w = jnp.asarray(target_priors) / jnp.asarray(source_priors)
    return jnp.mean(jnp.log(p @ w))


def mlls(
    target_probs: ArrayLike,
    source_priors: ArrayLike,
    *,
    num_iters: int = 1000,
    tol: float = 1e-8,
) -> jax.Array:
    r"""EM estimate of the label-shift weights ``w = q(y) / p(y)`` (Saerens et al.).

    Starting from ``q⁰ = p``, iterate

    .. math::
        \tilde p_t(y \mid x_l) \propto \frac{q^t_y}{p_y}\, p(y \mid x_l), \qquad
        q^{t+1}_y = \frac1m \sum_l \tilde p_t(y \mid x_l),

    until ``max |q^{t+1} − q^t| < tol`` or ``num_iters`` steps. Each step does not
    decrease :func:`mlls_log_likelihood`; the fixed point is its maximiser over
    the simplex. ``target_probs`` should be calibrated source posteriors (e.g.
    :func:`apply_bcts`) and ``source_priors`` the class frequencies those
    posteriors were calibrated under. Jit-compatible (``lax.while_loop``).

    Args:
      target_probs: ``[m, K]`` calibrated source-model posteriors on target data.
      source_priors: ``[K]`` positive source class priors summing to one
        (checked to 1e-3 when concrete; a ``ValueError`` otherwise).
      num_iters: maximum EM steps.
      tol: convergence tolerance on the priors.

    Returns:
      ``[K]`` weights ``q̂ / p``; the target priors are ``w * source_priors``.

    Example:
      >>> import numpy as np
      >>> from mtl_jax.adaptation import mlls
      >>> probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9]], np.float32)
      >>> w = mlls(probs, np.array([0.5, 0.5], np.float32))
      >>> bool(w[0] > 1.0 > w[1])
      True

    References:
      Saerens et al. Neural Computation 2002; Alexandari et al. ICML 2020,
      https://arxiv.org/abs/1901.06852
    """
    p = jnp.asarray(target_probs)
    prior = jnp.asarray(source_priors, p.dtype)
    if p.ndim != 2 or prior.shape != p.shape[-1:]:
        raise ValueError(
            f"need target_probs [m, K] and source_priors [K], got {p.shape}, {prior.shape}"
        )
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    if p.shape[0] == 0:
        raise ValueError("target_probs is empty (m = 0)")
    if not isinstance(prior, jax.core.Tracer):
        if bool(jnp.any(prior <= 0)):
            raise ValueError(f"source_priors must be positive, got {prior}")
        total = float(jnp.sum(prior))
        if abs(total - 1.0) > 1e-3:
            raise ValueError(
                f"source_priors must sum to one (a distribution over the {prior.shape[0]} "
                f"classes), got sum {total:.6g} for {prior}; normalise them first"
            )
    return _em(p, prior, num_iters, tol)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _em(p, prior, num_iters, tol):
    def step(q):
        unnorm = p * (q / prior)[None, :]
        post = unnorm / jnp.sum(unnorm, axis=-1, keepdims=True)
        return jnp.mean(post, axis=0)

    def cond(carry):
        i, q, q_prev = carry
        return (i < num_iters) & (jnp.max(jnp.abs(q - q_prev)) >= tol)

    def body(carry):
        i, q, _ = carry
        return i + 1, step(q), q

    init = (jnp.asarray(1), step(prior), prior)
    _, q, _ = jax.lax.while_loop(cond, body, init)
    return q / prior
