"""The PTA training driver: ``M`` jitted steps per meta-iteration, then a decoder update.

Meyerson & Miikkulainen, "Pseudo-task Augmentation", ICML 2018,
https://arxiv.org/abs/1803.04062 (Algorithm 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _validate
from mtl_jax.recipes._pta_control import (
    PTA_STRATEGIES,
    _check_scale,
    pta_identical_init,
    pta_trainable_mask,
    pta_update,
)
from mtl_jax.training import TrainState, make_train_step

__all__ = ["PTADriver", "PTAState", "make_pta_driver"]

PyTree = Any


class PTAState(NamedTuple):
    """The driver's state (a pytree of fixed-shape arrays)."""

    train: TrainState  # params, balancer and optimiser state, step
    dropout: jax.Array  # [K, D] float32 per-decoder dropout rates
    trainable: jax.Array  # [K, D] bool, False for frozen decoders
    best: jax.Array  # [K] int32 each task's selected decoder
    scores: jax.Array  # [K, D] float32 last validation scores
    key: jax.Array  # uint32 raw PRNG key data ([2] threefry, [4] rbg)
    perturbation_scale: jax.Array  # [] float32 std of the decoder perturbation
    dropout_scale: jax.Array  # [] float32 std of the dropout-rate perturbation


class PTADriver(NamedTuple):
    """``init(params, seed, **overrides) -> PTAState``; ``meta_step(state, batches)``.

    ``meta_step`` returns ``(state, metrics)``.
    """

    init: Callable[..., PTAState]
    meta_step: Callable[[PTAState, PyTree], tuple[PTAState, dict]]


def _get(tree: PyTree, path: tuple[str, ...]) -> PyTree:
    for p in path:
        tree = tree[p]
    return tree


def _set(tree: PyTree, path: tuple[str, ...], value: PyTree) -> PyTree:
    if not path:
        return value
    out = dict(tree)
    out[path[0]] = _set(tree[path[0]], path[1:], value)
    return out


def make_pta_driver(
    loss_fn: Callable[[PyTree, PyTree, jax.Array, jax.Array], jax.Array],
    score_fn: Callable[[PyTree], jax.Array],
    balancer: Any,
    optimizer: optax.GradientTransformation,
    *,
    num_tasks: int,
    num_decoders: int,
    num_iters: int,
    strategy: str = "perturb",
    init: str = "independent",
    num_frozen: int = 0,
    perturbation_scale: float = 0.0,
    dropout_rate: float = 0.0,
    dropout_scale: float = 0.0,
    max_dropout: float = 0.9,
    decoder_path: tuple[str, ...] = ("params", "heads"),
    key_impl: str | None = None,
    on_nonfinite: str = "skip",
    jit: bool = True,
) -> PTADriver:
    """Builds the pseudo-task augmentation training loop (Algorithm 1 of the paper).

    One *meta-iteration* is ``M = num_iters`` training steps, run as a
    ``lax.scan`` (no host round-trip per step), each the balanced step of
    :func:`mtl_jax.training.make_train_step` on the ``[K·D]`` pseudo-task loss
    vector; frozen decoders are then restored, every decoder is scored on
    validation data (``score_fn``) and :func:`~mtl_jax.recipes.pta_update`
    applies the control strategy:

    .. code-block:: text

       initialise F and the K×D decoders (independent or identical)
       repeat: for m = 1..M: θ ← step(θ, ∇ Σ_kd w_kd L_kd)     # jitted scan
               s_kd ← validation score of decoder (k, d)
               decoders, dropout ← update(decoders, dropout, s)   # strategy

    Args:
      loss_fn: ``(params, batch, dropout_rates [K, D], key) -> losses [K·D]``
        (e.g. :func:`~mtl_jax.models.pseudo_task_losses` of the heads' logits).
      score_fn: ``params -> [K, D]`` validation scores, higher is better.
      balancer: any :mod:`mtl_jax.balancers` balancer (over ``K·D`` pseudo-tasks).
      optimizer: the optax optimiser.
      num_tasks: ``K``.
      num_decoders: ``D``.
      num_iters: ``M``, gradient steps per meta-iteration.
      strategy: decoder update, one of :data:`~mtl_jax.recipes.PTA_STRATEGIES`.
      init: ``"independent"`` (decoders as the model initialised them) or
        ``"identical"`` (:func:`~mtl_jax.recipes.pta_identical_init`).
      num_frozen: decoders per task that gradient descent never moves.
      perturbation_scale: std of the parameter perturbation (``"perturb"``,
        ``"hyperperturb"``).
      dropout_rate: every decoder's initial dropout rate.
      dropout_scale: std of the dropout-rate perturbation (``"hyperperturb"``).
      max_dropout: upper clip of the dropout rates.
      decoder_path: keys leading from ``params`` to the decoder parameters.
      key_impl: the PRNG implementation of the state's key (``None``: JAX's
        default, threefry; ``"rbg"`` compiles much faster on CPU).
      on_nonfinite: what a non-finite step does, as in
        :func:`mtl_jax.training.make_train_step` (``"skip"``, ``"raise"``,
        ``"ignore"``).
      jit: whether to ``jax.jit`` the meta-step.

    Returns:
      A :class:`PTADriver`. ``init(params, seed, *, perturbation_scale=None,
      dropout_rate=None, dropout_scale=None, num_frozen=None)`` builds the state;
      ``seed`` is an int or a PRNG key, and the keyword arguments override this
      factory's values for one run. They are stored in the state as arrays, so
      ``init`` and ``meta_step`` may be ``jax.vmap``-ed over seeds *and* over
      variants of one strategy (one compiled program for, e.g., several
      perturbation scales). ``meta_step(state, batches)`` takes ``batches`` with
      a leading axis of length ``M`` and returns metrics ``"losses"``
      (``[M, K·D]``) and ``"scores"`` (``[K, D]``).

    References:
      Meyerson & Miikkulainen, ICML 2018, https://arxiv.org/abs/1803.04062.
    """
    for name, v in (
        ("num_tasks", num_tasks),
        ("num_decoders", num_decoders),
        ("num_iters", num_iters),
    ):
        _validate.check_int(name, v)
    if strategy not in PTA_STRATEGIES:
        raise ValueError(f"strategy must be one of {PTA_STRATEGIES}, got {strategy!r}")
    if init not in ("independent", "identical"):
        raise ValueError(f"init must be 'independent' or 'identical', got {init!r}")
    if not 0.0 <= dropout_rate <= max_dropout < 1.0:
        raise ValueError(
            f"need 0 <= dropout_rate <= max_dropout < 1, got {dropout_rate} and {max_dropout}"
        )
    for name, v in (("perturbation_scale", perturbation_scale), ("dropout_scale", dropout_scale)):
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    trainable0 = pta_trainable_mask(num_tasks, num_decoders, num_frozen=num_frozen)
    k, n = num_tasks, num_decoders
    dropout_rate_, perturbation_scale_, dropout_scale_ = (
        dropout_rate,
        perturbation_scale,
        dropout_scale,
    )

    def _scalar(name: str, value) -> jax.Array:
        _check_scale(name, value)
        if name == "dropout_rate" and isinstance(value, (int, float)) and value > max_dropout:
            raise ValueError(f"dropout_rate must be <= max_dropout = {max_dropout}, got {value}")
        return jnp.asarray(value, jnp.float32)

    try:
        key_shape = jax.random.key_data(jax.random.key(0, impl=key_impl)).shape
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"key_impl must name a JAX PRNG implementation, got {key_impl!r}") from e
    inner = make_train_step(
        lambda p, b: loss_fn(p, b["data"], b["dropout"], b["key"]),
        balancer,
        optimizer,
        jit=False,
        on_nonfinite=on_nonfinite,
    )

    def init_fn(
        params: PyTree,
        seed: int | jax.Array,
        *,
        perturbation_scale: float | jax.Array | None = None,
        dropout_rate: float | jax.Array | None = None,
        dropout_scale: float | jax.Array | None = None,
        num_frozen: int | jax.Array | None = None,
    ) -> PTAState:
        if isinstance(seed, bool) or not isinstance(seed, (int, jax.Array)):
            raise TypeError(f"seed must be an int or a PRNG key, got {seed!r}")
        dec = _get(params, decoder_path)
        for leaf in jax.tree_util.tree_leaves(dec):
            if leaf.shape[:2] != (k, n):
                raise ValueError(f"decoder leaves need leading axes {(k, n)}, got {leaf.shape}")
        if init == "identical":
            params = _set(params, decoder_path, pta_identical_init(dec))
        if isinstance(seed, int):
            key = jax.random.key_data(jax.random.key(seed, impl=key_impl))
        elif jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(seed)
        else:
            key = jnp.asarray(seed, jnp.uint32)
        if key.shape != key_shape:
            raise ValueError(
                f"seed must be a key of implementation {key_impl or 'default'} (data shape "
                f"{key_shape}), got key data of shape {key.shape}"
            )
        rate = _scalar("dropout_rate", dropout_rate_ if dropout_rate is None else dropout_rate)
        if num_frozen is None:
            trainable = trainable0
        elif isinstance(num_frozen, int):
            trainable = pta_trainable_mask(k, n, num_frozen=num_frozen)
        else:  # a traced count (e.g. vmapped over variants)
            row = jnp.arange(n) < n - jnp.asarray(num_frozen, jnp.int32)
            trainable = jnp.broadcast_to(row[None, :], (k, n))
        ps = perturbation_scale_ if perturbation_scale is None else perturbation_scale
        ds = dropout_scale_ if dropout_scale is None else dropout_scale
        return PTAState(
            train=inner.init(params),
            dropout=jnp.full((k, n), rate, jnp.float32),
            trainable=trainable,
            best=jnp.zeros((k,), jnp.int32),
            scores=jnp.zeros((k, n), jnp.float32),
            key=key,
            perturbation_scale=_scalar("perturbation_scale", ps),
            dropout_scale=_scalar("dropout_scale", ds),
        )

    def meta_step(state: PTAState, batches: PyTree) -> tuple[PTAState, dict]:
        key = jax.random.wrap_key_data(state.key, impl=key_impl)
        key, k_steps, k_update = jax.random.split(key, 3)

        def body(train, xs):
            batch, kk = xs
            old = _get(train.params, decoder_path)
            train, metrics = inner.step(train, {"data": batch, "dropout": state.dropout, "key": kk})
            new = _get(train.params, decoder_path)

            def keep_frozen(a, b):
                m = state.trainable.reshape((k, n) + (1,) * (a.ndim - 2))
                return jnp.where(m, a, b)

            dec = jax.tree_util.tree_map(keep_frozen, new, old)
            train = train._replace(params=_set(train.params, decoder_path, dec))
            return train, metrics["losses"]

        steps = jax.random.split(k_steps, num_iters)
        train, losses = jax.lax.scan(body, state.train, (batches, steps))
        scores = jnp.asarray(score_fn(train.params), jnp.float32)
        dec, rates, best = pta_update(
            _get(train.params, decoder_path),
            state.dropout,
            scores,
            k_update,
            strategy=strategy,
            perturbation_scale=state.perturbation_scale,
            dropout_scale=state.dropout_scale,
            max_dropout=max_dropout,
        )
        train = train._replace(params=_set(train.params, decoder_path, dec))
        new_state = state._replace(
            train=train, dropout=rates, best=best, scores=scores, key=jax.random.key_data(key)
        )
        return new_state, {"losses": losses, "scores": scores}

    return PTADriver(init_fn, jax.jit(meta_step) if jit else meta_step)
