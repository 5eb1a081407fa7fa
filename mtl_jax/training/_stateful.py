"""What the training step carries besides the parameters: a PRNG key and model state.

* **Keys.** :class:`~mtl_jax.training.TrainState` holds the raw ``uint32`` data of
  one PRNG key, fixed for the whole run. Step ``t`` derives its key as
  ``k_t = fold_in(wrap_key_data(state.key), t)`` and hands it to the loss as the
  keyword ``key=`` when the loss takes one. ``fold_in`` by the step counter gives
  a fresh key every step without carrying a changing key, and a run resumed from
  a checkpoint at step ``t`` replays exactly the keys of the original run.
* **Model state.** Flax's mutable collections (``batch_stats``, ...) travel in
  ``TrainState.model_state``. The step calls ``loss_fn(params, batch,
  model_state=...)`` and the loss returns the new collections next to the losses;
  the routes see a loss whose aux carries them, so the new model state is the
  aux of the step's one primal forward pass (the per-task backward passes of the
  Gramian and Jacobian routes re-use that pass's VJP and never re-run the
  forward pass).
* **Nesting.** :class:`NestableJit` is the jitted step: at top level it runs the
  program compiled with the platform's compiler options, inside a caller's
  ``jit``/``scan``/``vmap`` it traces the plain step into the caller's program.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


# -- keys ---------------------------------------------------------------------------------
def _default_key_shape() -> tuple[int, ...]:
    return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape)


def key_data(key: Any) -> jax.Array:
    """The raw key data ``TrainState.key`` holds, from an int seed or a PRNG key.

    Accepts ``None`` (seed 0), a Python or NumPy/JAX integer scalar (a seed, also
    a traced one under ``vmap``), a typed key (``jax.random.key(s)``) of the
    default implementation, or raw ``uint32`` key data (``jax.random.PRNGKey(s)``).
    """
    if key is None:
        key = 0
    if isinstance(key, bool):
        raise ValueError(f"key must be an int seed or a PRNG key; got {key!r}")
    if isinstance(key, int | np.integer):
        return jax.random.key_data(jax.random.key(key))
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", ()))
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(
                f"key must be a single PRNG key (shape ()); got a key array of shape {shape}. "
                "For several seeds, jax.vmap over init(params, key=k) instead"
            )
        data = jax.random.key_data(key)
        if tuple(data.shape) != _default_key_shape():
            raise ValueError(
                f"key uses the PRNG implementation {jax.random.key_impl(key)}, whose key data has "
                f"shape {tuple(data.shape)}; the step wraps TrainState.key with the default "
                f"implementation (key data of shape {_default_key_shape()}). Pass "
                "jax.random.key(seed) or change jax_default_prng_impl"
            )
        return data
    if dtype is not None and jnp.issubdtype(dtype, jnp.integer):
        if shape == ():
            return jax.random.key_data(jax.random.key(key))
        if dtype == jnp.uint32 and shape == _default_key_shape():
            return jnp.asarray(key)
    raise ValueError(
        "key must be None, an int seed, a PRNG key (jax.random.key(seed)) or its raw uint32 "
        f"data of shape {_default_key_shape()}; got {type(key).__name__}"
        + (f" of dtype {dtype} and shape {shape}" if dtype is not None else "")
    )


def step_key(state_key: jax.Array | None, step: jax.Array) -> jax.Array:
    """``k_t = fold_in(wrap_key_data(state.key), t)``: the typed key of step ``t``."""
    if state_key is None:
        raise ValueError(
            "the loss takes a key= argument but TrainState.key is None (a state built by hand): "
            "build the state with train_step.init(params, key=seed)"
        )
    return jax.random.fold_in(jax.random.wrap_key_data(state_key), step)


def takes_keyword(fn: Callable, name: str) -> bool | None:
    """Whether ``fn`` accepts the keyword argument ``name`` (a ``**kwargs`` counts).

    ``None`` when the signature cannot be read.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return True
        if p.name == name and p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            return True
    return False


def resolve_takes_key(fn: Callable, override: bool | None, name: str = "loss_fn") -> bool:
    """``loss_takes_key`` resolved: the override, else ``fn``'s signature."""
    if override is not None:
        if not isinstance(override, bool):
            raise ValueError(f"loss_takes_key must be True, False or None; got {override!r}")
        return override
    found = takes_keyword(fn, "key")
    return bool(found)


# -- model state --------------------------------------------------------------------------
def bind_loss(
    loss_fn: Callable,
    *,
    key: jax.Array | None,
    model_state: PyTree,
    has_aux: bool,
    has_model_state: bool,
    name: str = "loss_fn",
) -> Callable[[PyTree, Any], Any]:
    """``loss_fn`` as the routes call it: ``(params, batch) -> losses`` or ``(losses, aux)``.

    ``key`` (when not ``None``) and ``model_state`` (when ``has_model_state``) are
    passed as keywords. With ``has_model_state`` the result is ``(losses, (aux,
    new_model_state))`` so that the routes carry the new model state as aux.
    """
    kwargs = {}
    if key is not None:
        kwargs["key"] = key
    if has_model_state:
        kwargs["model_state"] = model_state

    if not has_model_state:
        return (lambda p, b: loss_fn(p, b, **kwargs)) if kwargs else loss_fn

    def bound(p, b):
        out = loss_fn(p, b, **kwargs)
        n = 3 if has_aux else 2
        if not (isinstance(out, tuple) and len(out) == n):
            want = "(losses, aux, new_model_state)" if has_aux else "(losses, new_model_state)"
            got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
            raise TypeError(
                f"{name} must return {want} with has_model_state=True"
                f"{' and has_aux=True' if has_aux else ''}; got {got}"
            )
        losses, aux, new = (out[0], out[1], out[2]) if has_aux else (out[0], None, out[1])
        check_same_structure(model_state, new, name)
        return losses, (aux, new)

    return bound


def check_same_structure(old: PyTree, new: PyTree, name: str) -> None:
    """Raises unless ``new`` has ``old``'s tree structure, shapes and dtypes."""
    s_old, s_new = jax.tree_util.tree_structure(old), jax.tree_util.tree_structure(new)
    if s_old != s_new:
        raise ValueError(
            f"{name} returned a new model state of another structure than TrainState.model_state: "
            f"{s_new} vs {s_old}. Return the updated collections in the same form as the "
            "model_state given to init (e.g. the dict returned by apply(..., mutable=[...]))"
        )
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(old), jax.tree_util.tree_leaves(new)
    ):
        if jnp.shape(a) != jnp.shape(b) or jnp.result_type(a) != jnp.result_type(b):
            raise ValueError(
                f"{name} returned model_state leaf {jax.tree_util.keystr(path)} with shape "
                f"{jnp.shape(b)} and dtype {jnp.result_type(b)}; TrainState.model_state has "
                f"{jnp.shape(a)} and {jnp.result_type(a)}"
            )


# -- parameters ---------------------------------------------------------------------------
def check_float_params(params: PyTree) -> None:
    """Raises ``ValueError`` naming the first leaf of ``params`` that is not floating point."""
    for path, x in jax.tree_util.tree_leaves_with_path(params):
        dtype = jnp.result_type(x) if hasattr(x, "dtype") or np.isscalar(x) else None
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            where = jax.tree_util.keystr(path) or "<root>"
            what = f"dtype {dtype}" if dtype is not None else type(x).__name__
            raise ValueError(
                f"params leaf {where} has {what}; every leaf of params is trained and must be "
                "floating point. Cast it (e.g. jnp.asarray(x, jnp.float32)), or keep constants "
                "and integer state out of params (in the batch, a closure or model_state)"
            )


# -- nesting ------------------------------------------------------------------------------
def is_traced(*trees: PyTree) -> bool:
    """Whether any leaf of ``trees`` is a tracer (the call is inside a transformation)."""
    return any(isinstance(x, jax.core.Tracer) for t in trees for x in jax.tree_util.tree_leaves(t))


class NestableJit:
    """A jitted step that also runs inside a caller's ``jit``, ``scan`` or ``vmap``.

    At top level it calls ``jax.jit(fn, compiler_options=...)`` (so the
    platform's tuning applies). Compiler options are only allowed on a
    top-level ``jit``: when the inputs are tracers (or JAX refuses the options
    because the call is being traced) it calls ``fn`` itself, so the step is
    traced into the caller's program, which the caller's ``jit`` compiles with
    its own options. ``lower``/``trace``/``eval_shape`` and other attributes are
    the top-level jitted function's.
    """

    def __init__(self, fn: Callable, jitted: Callable):
        self.fn = fn
        self.jitted = jitted
        self.__wrapped__ = fn

    def __call__(self, *args):
        if is_traced(args):
            return self.fn(*args)
        try:
            return self.jitted(*args)
        except ValueError as err:
            if "compiler_options can only be passed to top-level" not in str(err):
                raise
            return self.fn(*args)

    def __getattr__(self, name):
        return getattr(self.jitted, name)
