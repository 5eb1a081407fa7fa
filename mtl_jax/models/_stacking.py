"""Shared building blocks of the multi-task architectures.

Copies of a user-supplied Flax module with their variables stacked on a leading
axis (one copy per task or per expert, applied with ``nn.vmap``, no Python loop),
the train/evaluation flag passed on to user modules, the configurable gate input
of the mixture-of-experts models, and the ``shared=`` masks built from parameter
paths.

The train/evaluation rule, common to every architecture in :mod:`mtl_jax.models`:
each architecture's ``__call__`` (and ``encode``/``decode``/``gates``) takes a
keyword ``train: bool = False`` and passes it on, as ``train=train``, to every
user-supplied submodule whose ``__call__`` declares a parameter named ``train``
(Flax's convention, e.g. ``def __call__(self, x, train: bool)`` driving
``nn.Dropout(deterministic=not train)`` and
``nn.BatchNorm(use_running_average=not train)``). Submodules without such a
parameter (``nn.Dense``, ``nn.Sequential``, ...) are called without it; a
``**kwargs`` catch-all does not count, so ``nn.Sequential`` is never handed a
keyword its first layer would reject.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax import _task_tree, _validate

__all__ = ["Stacked", "call", "check_positive", "gate_features", "path_mask", "takes_train"]


def takes_train(module) -> bool:
    """Whether ``module.__call__`` declares a parameter named ``train``."""
    if not callable(module):
        return False
    try:
        params = inspect.signature(type(module).__call__).parameters
    except (TypeError, ValueError):
        return False
    p = params.get("train")
    return p is not None and p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def call(module, *args, train: bool):
    """``module(*args, train=train)`` if the module takes ``train``, else ``module(*args)``."""
    if takes_train(module):
        return module(*args, train=train)
    return module(*args)


class _Apply(nn.Module):
    module: nn.Module
    train: bool = False

    @nn.compact
    def __call__(self, *args):
        return call(self.module, *args, train=self.train)


class Stacked(nn.Module):
    """``num`` independent copies of ``module``, variables stacked on axis 0.

    ``in_axis=None`` feeds the same input to every copy (output ``[num, ...]``);
    ``in_axis=0`` feeds copy ``i`` the slice ``x[i]``; a tuple gives one entry
    per positional argument.

    Every variable collection (``"params"``, ``"batch_stats"``, anything the
    module creates or mutates) is stacked on axis 0, and every PRNG stream
    (``"params"``, ``"dropout"``, ...) is split, so each copy has its own
    initialisation, its own BatchNorm statistics and its own dropout masks.
    ``__call__(*args, train=False)`` passes ``train`` on to ``module`` when its
    ``__call__`` declares it.
    """

    module: nn.Module
    num: int
    in_axis: int | tuple | None = None

    @nn.compact
    def __call__(self, *args, train: bool = False):
        vmapped = nn.vmap(
            _Apply,
            variable_axes={True: 0},
            split_rngs={True: True},
            in_axes=self.in_axis,
            out_axes=0,
            axis_size=self.num,
        )
        return vmapped(self.module.clone(parent=None), bool(train), name="copies")(*args)


def gate_features(x: jax.Array, stem: nn.Module | None, *, train: bool = False) -> jax.Array:
    """The gate input: ``stem(x)`` if a stem is given, else ``x`` flattened to ``[B, d]``."""
    if stem is not None:
        z = call(stem, x, train=train)
        return jnp.reshape(z, (z.shape[0], -1))
    return jnp.reshape(x, (x.shape[0], -1))


def check_positive(**values: int) -> None:
    """Raises ``ValueError`` unless every keyword's value is a positive int."""
    for name, v in values.items():
        _validate.check_int(name, v)


def path_mask(params, is_shared: Callable[[tuple[str, ...]], bool]):
    """A ``shared=`` mask from a predicate on each leaf's key names.

    On a whole variables dict (top-level keys are collections, one of them
    ``"params"``) the collection name (``"params"``, ``"batch_stats"``, ...) is
    skipped before ``is_shared`` sees the path, so the mask works on ``params``
    and on everything ``init`` returns.
    """
    variables = isinstance(params, Mapping) and "params" in params

    def leaf(path, _):
        names = tuple(_task_tree._key_name(k) for k in path)
        if variables:
            names = names[1:]
        return bool(is_shared(names))

    return jax.tree_util.tree_map_with_path(leaf, params)
