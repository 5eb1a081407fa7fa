"""Diagonal Fisher information of a classifier, as L2-SP-Fisher defines it.

Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks", ICML 2018, https://arxiv.org/abs/1802.01483, estimate the
diagonal of the Fisher information for the L2-SP-Fisher and GL-SP-Fisher penalties
(borrowed from elastic weight consolidation, Kirkpatrick et al., 2017,
https://arxiv.org/abs/1612.00796) on the *inputs* of the source data, with the
outputs drawn from the model's own predictive distribution (the estimator stated
right after their L2-SP-Fisher penalty, Eq. 4):

    F̂_j = 1/m Σ_i Σ_k f_k(x_i; w⁰) (∂ log f_k(x_i; w⁰) / ∂w_j)²

where f_k(x; w) = p(k | x; w) is the network's softmax output. The outer mean
estimates the expectation over inputs and the inner weighted sum is the exact
conditional expectation over the categorical output. Three estimators are offered:

* ``kind="true"`` (default): the formula above, summed exactly over the K classes;
* ``kind="sampled"``: one label per input drawn from p(· | x_i; w⁰) with a PRNG key,
  an unbiased Monte Carlo estimate of the same quantity at 1/K of the cost;
* ``kind="empirical"``: the dataset's labels, F̃_j = 1/m Σ_i (∂ log f_{y_i}(x_i) / ∂w_j)²
  (the "empirical Fisher"; it is *not* what the paper uses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import _validate

__all__ = ["fisher_diagonal"]

_KINDS = ("true", "sampled", "empirical")


def fisher_diagonal(
    log_probs: Callable[[Any, Any], jax.Array],
    params: Any,
    inputs: Any,
    *,
    kind: str = "true",
    labels: Any = None,
    key: jax.Array | None = None,
    chunk_size: int | None = None,
) -> Any:
    """Diagonal Fisher information of a classifier at ``params``, in one jitted pass.

    With ``f_k(x; w) = exp(log_probs(w, x)[k])``, the default (``kind="true"``)
    computes the estimator of Li et al. (2018) given with their L2-SP-Fisher
    penalty (Eq. 4), the Fisher of the model's predictive distribution averaged
    over the given inputs:

        F̂_j = 1/N Σ_i Σ_k f_k(x_i; w) (∂ log f_k(x_i; w) / ∂w_j)².

    ``kind="sampled"`` replaces the sum over k by one draw ``k_i ~ f(x_i; w)``
    (unbiased; needs ``key``); ``kind="empirical"`` uses the dataset's labels,
    F̃_j = 1/N Σ_i (∂ log f_{y_i}(x_i; w) / ∂w_j)² (needs ``labels``).

    Per-input gradients are formed with ``jax.vmap``; with ``chunk_size`` they are
    formed ``chunk_size`` inputs at a time inside a ``lax.scan`` (the last chunk is
    zero-padded and masked), bounding memory to one chunk (times K for
    ``kind="true"``, which takes the Jacobian of all K log-probabilities).

    Args:
      log_probs: ``log_probs(params, x) -> [K]``, the normalised log-probabilities
        of the K classes for *one* input ``x`` (e.g. ``jax.nn.log_softmax`` of the
        logits); ``x`` is one slice of ``inputs`` along its leading axis.
      params: the parameters w⁰ at which the Fisher is evaluated.
      inputs: a pytree of arrays with a common leading axis N (the inputs x_i).
      kind: ``"true"`` (default, the paper's), ``"sampled"`` or ``"empirical"``.
      labels: integer class labels ``[N]``; required for, and only used by,
        ``kind="empirical"``.
      key: a PRNG key; required for, and only used by, ``kind="sampled"``.
      chunk_size: inputs per vectorised chunk; ``None`` processes all N at once.

    Returns:
      A pytree like ``params`` holding F̂ (float32, non-negative).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> lp = lambda w, x: jax.nn.log_softmax(jnp.stack([w * x, -w * x]))
      >>> x = jnp.array([1.0, 2.0])
      >>> f = fisher_diagonal(lp, jnp.array(0.0), x)  # p = (1/2, 1/2): mean(4 x² / 4)
      >>> round(float(f), 4)
      2.5

    References:
      Li et al., 2018, https://arxiv.org/abs/1802.01483 (L2-SP-Fisher, Eq. 4);
      Kirkpatrick et al., 2017, https://arxiv.org/abs/1612.00796 (EWC).
    """
    if not callable(log_probs):
        raise TypeError(f"log_probs must be callable, got {type(log_probs).__name__}")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    leaves = jax.tree.leaves(inputs)
    if not leaves:
        raise ValueError("inputs has no arrays")
    n = int(np.shape(leaves[0])[0]) if np.ndim(leaves[0]) else 0
    if n == 0 or any(np.ndim(x) == 0 or int(np.shape(x)[0]) != n for x in leaves):
        shapes = [np.shape(x) for x in leaves]
        raise ValueError(f"inputs leaves need one common, non-zero leading axis; got {shapes}")
    _validate.check_int("chunk_size", chunk_size, allow_none=True)
    if kind == "empirical":
        if labels is None:
            raise ValueError("kind='empirical' needs labels (the dataset's class labels)")
        labels = jnp.asarray(labels)
        if labels.shape != (n,) or not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(
                f"labels must be integers of shape ({n},), got {labels.dtype}{labels.shape}"
            )
    elif labels is not None:
        raise ValueError(f"labels is only used by kind='empirical', not kind={kind!r}")
    if kind == "sampled":
        if key is None:
            raise ValueError("kind='sampled' needs a PRNG key")
    elif key is not None:
        raise ValueError(f"key is only used by kind='sampled', not kind={kind!r}")

    first = jax.tree.map(lambda x: jnp.asarray(x)[0], inputs)
    out = jax.eval_shape(log_probs, params, first)
    if not hasattr(out, "shape") or len(out.shape) != 1 or out.shape[0] < 2:
        raise ValueError(
            "log_probs(params, x) must return the [K] log-probabilities of K >= 2 classes "
            f"for one input; got {out}"
        )
    if kind == "empirical":
        labels = labels.astype(jnp.int32)
    else:
        labels = jnp.zeros((n,), jnp.int32)
    if key is None:
        key = jax.random.key(0)
    elif not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    chunk = n if chunk_size is None else min(chunk_size, n)
    return _fisher_jit(log_probs, chunk, kind, params, inputs, labels, key)


def _per_input(log_probs, kind: str, params, x, label, key):
    """Σ_k q_k (∂ log f_k(x) / ∂w)² for one input: q = f (true) or a one-hot draw."""
    if kind == "true":
        jac = jax.jacrev(log_probs)(params, x)
        p = jnp.exp(jax.lax.stop_gradient(log_probs(params, x))).astype(jnp.float32)

        def weigh(j):
            j32 = j.astype(jnp.float32)
            return jnp.tensordot(p, j32 * j32, axes=1)

        return jax.tree.map(weigh, jac)
    if kind == "sampled":
        label = jax.random.categorical(key, log_probs(params, x))
    g = jax.grad(lambda w: log_probs(w, x)[label])(params)
    return jax.tree.map(lambda t: jnp.square(t.astype(jnp.float32)), g)


def _fisher_impl(log_probs, chunk: int, kind: str, params, inputs, labels, key):
    n = labels.shape[0]
    num_chunks = -(-n // chunk)
    pad = num_chunks * chunk - n

    def padded(x):
        x = jnp.asarray(x)
        widths = [(0, pad)] + [(0, 0)] * (x.ndim - 1)
        return jnp.pad(x, widths).reshape((num_chunks, chunk, *x.shape[1:]))

    index = jnp.arange(num_chunks * chunk)
    weights = (index < n).astype(jnp.float32).reshape(num_chunks, chunk)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index).reshape(num_chunks, chunk)
    xs = (jax.tree.map(padded, inputs), padded(labels), keys, weights)
    per_input = jax.vmap(
        lambda x, y, k: _per_input(log_probs, kind, params, x, y, k), in_axes=(0, 0, 0)
    )

    def body(acc, batch):
        x, y, k, w = batch
        sq = per_input(x, y, k)

        def add(a, s):
            return a + jnp.tensordot(w, s, axes=1)

        return jax.tree.map(add, acc, sq), None

    zeros = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
    total, _ = jax.lax.scan(body, zeros, xs)
    return jax.tree.map(lambda t: t / n, total)


_fisher_jit = jax.jit(_fisher_impl, static_argnums=(0, 1, 2))
