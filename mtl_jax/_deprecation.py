"""Deprecated spellings kept working with a ``DeprecationWarning``.

The package convention (see :mod:`mtl_jax`): hyperparameters and ``num_tasks``
are keyword-only, iteration counts are ``num_iters``, step sizes
``learning_rate``. Old spellings that notebooks, experiments or the README used
are accepted through :func:`renamed_kwargs` for a deprecation period.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable

__all__ = ["renamed_kwargs"]


def renamed_kwargs(**renames: str) -> Callable[[Callable], Callable]:
    """Decorator: accept ``old=value`` for each ``old -> new`` rename, with a warning.

    Passing both spellings raises ``TypeError``.
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{fn.__name__}() got both {old}= (deprecated) and {new}=; pass {new}="
                        )
                    warnings.warn(
                        f"{fn.__name__}({old}=...) is deprecated: use {new}=",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        wrapper.__signature__ = inspect.signature(fn)
        return wrapper

    return decorate
