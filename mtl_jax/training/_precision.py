"""Mixed precision: forward and backward passes in a low-precision dtype, the rest in float32."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["mixed_precision"]

_LOW = (jnp.bfloat16, jnp.float16)


def _cast_floats(tree: Any, dtype: Any) -> Any:
    """Casts every floating-point leaf of ``tree`` to ``dtype``; other leaves pass through."""

    def one(x):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating):
            return jnp.asarray(x).astype(dtype)
        return x

    return jax.tree_util.tree_map(one, tree)


def mixed_precision(fn: Callable[..., Any], *, compute_dtype: Any = jnp.bfloat16) -> Callable:
    """Wraps a loss (or encoder/decoder) function to compute in ``compute_dtype``.

    ``mixed_precision(fn)(params, *args) = cast_f32(fn(cast_c(params), *cast_c(args)))``:
    every floating-point leaf of the parameters and of the other arguments (inputs,
    targets, a representation ``z``) is cast to ``compute_dtype`` inside the function,
    and every floating-point leaf of the result (losses, aux, a representation) is cast
    back to float32. Integer and boolean leaves (labels, masks) are left as they are.

    Differentiating the wrapped function w.r.t. float32 parameters gives float32
    gradients (the transpose of the cast ``f32 → bf16`` is the cast back), so with
    :func:`~mtl_jax.training.make_train_step` the forward and backward passes run in
    ``compute_dtype`` while the task Jacobian or Gram matrix, the balancer's solver,
    the optimiser state and the parameter update all stay float32 — the usual
    "float32 master weights" recipe. bfloat16 keeps float32's exponent range, so no
    loss scaling is needed; with float16, small gradients may underflow (no loss
    scaling is applied here).

    Args:
      fn: ``fn(params, *args)`` returning an array or pytree of arrays, e.g. a
        ``loss_fn(params, batch) -> losses[K]``, ``Representation.encode(params, batch)``
        or ``Representation.decode(params, z, batch)``.
      compute_dtype: the dtype of the forward and backward passes,
        ``jnp.bfloat16`` (default) or ``jnp.float16``.

    Returns:
      A function with ``fn``'s signature whose floating-point outputs are float32.

    Raises:
      TypeError: ``fn`` is not callable, or ``compute_dtype`` is not bfloat16/float16.

    References:
      Micikevicius et al., "Mixed Precision Training", ICLR 2018,
      https://arxiv.org/abs/1710.03740; Kalamkar et al., "A Study of BFLOAT16 for
      Deep Learning Training", 2019, https://arxiv.org/abs/1905.12322
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}: {fn!r}")
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError as e:
        raise TypeError(f"compute_dtype must be a dtype, got {compute_dtype!r}") from e
    if dtype not in [jnp.dtype(d) for d in _LOW]:
        raise TypeError(f"compute_dtype must be bfloat16 or float16, got {compute_dtype!r}")

    @functools.wraps(fn)
    def wrapped(params, *args, **kwargs):
        out = fn(_cast_floats(params, dtype), *_cast_floats(args, dtype), **kwargs)
        return _cast_floats(out, jnp.float32)

    return wrapped
