"""Shared building blocks of the multi-task architectures.

Copies of a user-supplied Flax module with their parameters stacked on a leading
axis (one copy per task or per expert, applied with ``nn.vmap``, no Python loop),
the configurable gate input of the mixture-of-experts models, and the
``shared=`` masks built from parameter paths.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax import _task_tree

__all__ = ["Stacked", "check_positive", "gate_features", "path_mask"]


class _Apply(nn.Module):
    module: nn.Module

    @nn.compact
    def __call__(self, *args):
        return self.module(*args)


class Stacked(nn.Module):
    """``num`` independent copies of ``module``, parameters stacked on axis 0.

    ``in_axis=None`` feeds the same input to every copy (output ``[num, ...]``);
    ``in_axis=0`` feeds copy ``i`` the slice ``x[i]``; a tuple gives one entry
    per positional argument.
    """

    module: nn.Module
    num: int
    in_axis: int | tuple | None = None

    @nn.compact
    def __call__(self, *args):
        vmapped = nn.vmap(
            _Apply,
            variable_axes={"params": 0, "batch_stats": 0},
            split_rngs={"params": True},
            in_axes=self.in_axis,
            out_axes=0,
            axis_size=self.num,
        )
        return vmapped(self.module.clone(parent=None), name="copies")(*args)


def gate_features(x: jax.Array, stem: nn.Module | None) -> jax.Array:
    """The gate input: ``stem(x)`` if a stem is given, else ``x`` flattened to ``[B, d]``."""
    if stem is not None:
        z = stem(x)
        return jnp.reshape(z, (z.shape[0], -1))
    return jnp.reshape(x, (x.shape[0], -1))


def check_positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def path_mask(params, is_shared: Callable[[tuple[str, ...]], bool]):
    """A ``shared=`` mask from a predicate on each leaf's key names.

    A leading ``"params"`` collection is skipped before ``is_shared`` sees the
    path, so the mask works on ``params`` and on the whole variables dict.
    """

    def leaf(path, _):
        names = tuple(_task_tree._key_name(k) for k in path)
        if names and names[0] == "params":
            names = names[1:]
        return bool(is_shared(names))

    return jax.tree_util.tree_map_with_path(leaf, params)
