"""Flax NNX models in the functional training step: split once, merge inside the loss.

The step is a pure function of ``(TrainState, batch)``, and an NNX model is a
mutable Python object. :func:`nnx_loss` splits the model once with Flax's own
:func:`flax.nnx.split` into a static graph definition, the trainable
:class:`flax.nnx.Param` state (``TrainState.params``) and everything else
(BatchNorm statistics, RNG stream state: ``TrainState.model_state``), and gives
a loss that rebuilds the model with :func:`flax.nnx.merge` inside the step,
reseeds its RNG streams from the step's key (:func:`flax.nnx.reseed`), runs the
user's ``fn(model, batch)`` and splits the updated non-parameter state back out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["NNXLoss", "nnx_loss"]

PyTree = Any


class NNXLoss(NamedTuple):
    """An NNX model as the training step sees it (from :func:`nnx_loss`).

    Attributes:
      loss_fn: ``(params, batch, *, key, model_state) -> (losses, new_model_state)``
        (or ``(losses, aux, new_model_state)``), for
        ``make_train_step(..., has_model_state=True)``.
      params: the model's :class:`flax.nnx.Param` state, for ``init(params, ...)``.
      model_state: the model's other state (BatchNorm statistics, RNG stream
        counters...), for ``init(..., model_state=...)``.
      graphdef: the static graph definition from :func:`flax.nnx.split`.
      streams: the names of the model's RNG streams, reseeded every step.
    """

    loss_fn: Callable[..., Any]
    params: PyTree
    model_state: PyTree
    graphdef: Any
    streams: tuple[str, ...]

    def model(self, state: Any) -> Any:
        """The NNX model holding a :class:`~mtl_jax.training.TrainState`'s params and model state.

        A fresh module (``nnx.merge``); call its ``.eval()`` before evaluating.
        """
        from flax import nnx

        return nnx.merge(self.graphdef, state.params, state.model_state)


def _stream_names(model) -> tuple[str, ...]:
    from flax import nnx

    names = set()
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.RngStream):
            names.add(node.tag)
    return tuple(sorted(names))


def nnx_loss(fn: Callable[[Any, Any], Any], model: Any, *, has_aux: bool = False) -> NNXLoss:
    """Turns ``fn(model, batch) -> losses[K]`` on an NNX model into a training-step loss.

    Usage (Dropout, BatchNorm and any other NNX layer)::

        model = MyModel(rngs=nnx.Rngs(0))         # model.train() mode
        task = mtl.training.nnx_loss(lambda m, b: per_task_losses(m(b["x"]), b), model)
        train_step = mtl.training.make_train_step(
            task.loss_fn, balancer, optimizer, has_model_state=True)
        state = train_step.init(task.params, key=seed, model_state=task.model_state)
        state, metrics = train_step(state, batch)
        trained = task.model(state)               # an NNX model again
        trained.eval()

    Inside the step the loss rebuilds the module (``nnx.merge(graphdef,
    params, model_state)``), reseeds each of its RNG streams ``s_i`` (sorted by
    name) with ``fold_in(k_t, i)`` from the step's key ``k_t``, calls ``fn`` and
    returns the updated non-parameter state (``nnx.split``) as the new model
    state. Dropout therefore draws fresh noise every step, distinct per seed of
    ``init(..., key=seed)`` and replayed after a resume, and BatchNorm's
    statistics are updated once per step from the step's forward pass. The
    training/evaluation mode is part of the graph definition: call
    ``model.train()`` before ``nnx_loss``.

    Do not close over the module inside a loss for the step (``nnx.update(model,
    params)``): NNX refuses to mutate a module created outside the step's trace
    (``TraceContextError``).

    Args:
      fn: ``(model, batch) -> losses[K]``, or ``(losses, aux)`` with ``has_aux``.
      model: the NNX module (its current state is the initial state).
      has_aux: whether ``fn`` returns aux.

    Returns:
      An :class:`NNXLoss`.
    """
    from flax import nnx

    if not isinstance(model, nnx.Module):
        raise TypeError(
            f"model must be a flax.nnx.Module; got {type(model).__name__}. For a linen module, "
            "wrap it with flax.nnx.bridge.ToNNX(module, rngs=nnx.Rngs(0)) and "
            "nnx.bridge.lazy_init it on an example input first"
        )
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    streams = _stream_names(model)

    def fresh(model_state, key):
        """The state as new Variables of the current trace, RNG streams reseeded from ``key``.

        The Variables of a state that entered the step as a pytree belong to the
        step's outer trace; NNX refuses to mutate them inside ``jax.vjp`` (which
        BatchNorm and the RNG streams do), so each one is replaced by a copy.
        """

        def one(v):
            if key is not None and isinstance(v, nnx.RngKey):
                return v.replace(jax.random.fold_in(key, streams.index(v.tag)))
            if key is not None and isinstance(v, nnx.RngCount):
                return v.replace(jnp.zeros_like(v[...]))
            return v.replace(v[...])

        return jax.tree_util.tree_map(
            one, model_state, is_leaf=lambda x: isinstance(x, nnx.Variable)
        )

    def loss_fn(params, batch, *, key, model_state):
        model_state = fresh(model_state, key if streams else None)
        m = nnx.merge(graphdef, params, model_state)
        out = fn(m, batch)
        _, _, new_state = nnx.split(m, nnx.Param, ...)
        if has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(
                    f"fn must return (losses, aux) when has_aux=True; got {type(out).__name__}"
                )
            return out[0], out[1], new_state
        return out, new_state

    return NNXLoss(loss_fn, params, rest, graphdef, streams)
