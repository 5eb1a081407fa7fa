"""Multi-task training steps that pay only for what the balancer needs.

``make_train_step(loss_fn, balancer, optimizer)`` builds one jitted step: the
per-task losses, whatever gradient information the balancer's
:class:`~mtl_jax.balancers.BalancerSpec` asks for, the balancer, the optimiser
and the parameter update. The routes:

* ``"loss"`` (loss-only balancers): one forward pass recording the VJP, the
  weights from the losses, and a single backward pass with cotangent ``w`` — the
  gradient of ``Σ_k w_k L_k`` — without ever building the task Jacobian.
* ``"gramian"`` (Gram balancers: MGDA, PCGrad, UPGrad, IMTL-G, CAGrad, ...): the
  per-task gradients of the leaves the balancer's Gram matrix covers only, in
  chunks of ``chunk_size`` tasks of VJPs of one forward pass; ``G = J Jᵀ``; the
  weights ``w = f(G)``; the update ``Σ_k w_k ∇L_k`` without the balancer's
  Jacobian-space ``update`` (same result as ``"jacobian"``). Given
  ``representation=Representation(..., decode_tasks=...)`` whose ``decode_tasks``
  reads no shared leaf, the route splits at ``z``: one backward pass through the
  heads gives every ``∂L_k/∂z``, and the per-task backward passes run through the
  encoder only (same result; W2: about half the step time).
* ``"jacobian"``: the full task Jacobian w.r.t. the parameters
  (:func:`mtl_jax.value_and_jacobian`, optionally chunked), then the balancer.
* ``"representation"`` (MGDA-UB, Sener & Koltun 2018,
  https://arxiv.org/abs/1810.04650): the per-task gradients w.r.t. the shared
  representation ``z = encode(params, batch)`` are balanced, and the combined
  cotangent flows through the encoder in one VJP; the decoder's parameters get
  the plain sum of their gradients (loss-only balancers: same as ``"loss"``).
  With ``Representation.decode_tasks`` (separable heads) the per-task gradients
  w.r.t. ``z`` cost one backward pass through the heads instead of ``K``.

In every route the leaves the balancer's ``shared=`` selects get the balanced
gradient and every other leaf the plain sum ``∇ Σ_k L_k``. A non-finite loss or
gradient is skipped (the whole step, or only the bad task), raised or ignored
(``on_nonfinite=``), and ``metrics["weights"]`` always holds the ``[K]`` weights
applied.

**Task presence.** A partially labelled batch may hold no labelled example of
some task. ``loss_fn`` says so by returning a :class:`~mtl_jax.TaskLosses`
``(losses, present)`` in place of the losses array (built from per-example
losses and a label mask by :func:`mtl_jax.masked_task_losses`). The step hands
``present`` to the balancer in every route: an absent task gets weight 0 and
is left out of the balancer's problem and state, its per-task gradient is
zeroed with ``where``, and its head (a non-shared leaf) gets no gradient, so the
step equals the balancer's step on the present tasks alone. Presence is data:
it may change from batch to batch in one compiled step; under ``mesh=`` the
loss runs on the global batch, so a task labelled on one device only is
present. A batch with no task present is skipped and counted in
``TrainState.skipped``.

**Keys and model state.** :class:`TrainState` carries the run's PRNG key and
the model's mutable collections. Step ``t`` hands a loss that takes a ``key``
keyword ``fold_in(wrap_key_data(state.key), t)`` (fresh noise every step, distinct
per seed, replayed exactly after a resume); with ``has_model_state=True`` the loss
also gets ``model_state=`` and returns the updated collections, which the step
stores once per step from its one forward pass.

**Nesting.** The built step (jitted or not) runs inside the caller's own
``jax.jit``, ``lax.scan``, ``jax.vmap`` and under a mesh. Called at top level,
the jitted step is compiled with the platform's compiler options (on CPU, the
memory-optimised scheduler for the per-task routes); nested, it is traced into
the caller's program, which the caller compiles with its own options.

With ``mesh=``, the step is compiled with the batch sharded along ``data_axis``
and the state replicated; XLA then reduces across devices, so the balancer
sees the global-batch per-task gradients and the result equals the
single-device step up to float reordering. The same code runs multi-host after
``jax.distributed.initialize`` (see :func:`shard_batch`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mtl_jax import _validate
from mtl_jax.balancers._base import Balancer
from mtl_jax.training import _checks, _gramian, _nonfinite, _plan, _routes, _stateful
from mtl_jax.training._data_parallel import put_replicated
from mtl_jax.training._data_parallel import shard_batch as shard_batch
from mtl_jax.training._route_common import RouteOut

__all__ = ["Representation", "TrainState", "TrainStep", "make_train_step", "shard_batch"]

PyTree = Any
Mode = Literal["auto", "loss", "gramian", "jacobian", "representation"]
NonFinite = Literal["skip", "skip_task", "raise", "ignore"]


class TrainState(NamedTuple):
    """Everything a training step carries from one batch to the next (a pytree).

    Attributes:
      params: the model parameters (any pytree).
      balancer_state: the balancer's state (its recorded weights, keys, moving
        averages, ...), as returned by ``balancer.init`` / ``balancer.update``.
      opt_state: the optax optimiser's state.
      step: ``[]`` int32, the number of steps taken, skipped ones included; the
        ``"raise"`` policy reports this index.
      skipped: ``[]`` int32, the number of steps the non-finite policy skipped
        (always 0 under ``"ignore"``). ``None`` in a state built by hand with four
        fields; the step then starts counting from 0.
      key: the raw ``uint32`` data (:func:`jax.random.key_data`) of the run's PRNG
        key. It never changes: step ``t`` hands the loss
        ``jax.random.fold_in(jax.random.wrap_key_data(key), t)``, so every step
        gets fresh noise and a resumed run replays the same keys. ``None`` in a
        state built by hand without it (then only a loss that takes no ``key``
        can be trained).
      model_state: the model's mutable collections (Flax's ``batch_stats`` and
        any other, e.g. ``{"batch_stats": ...}``), updated once per step from the
        step's forward pass (``make_train_step(..., has_model_state=True)``);
        ``None`` when the model has none.
      task_skipped: ``[K]`` int32, per task, the number of steps in which the
        task was present but left out because its loss or per-task gradient was
        non-finite (``on_nonfinite="skip_task"``; stays 0 under the other
        policies). ``init`` sets it to zeros when ``K`` is known (``num_tasks=``
        or a balancer built with ``num_tasks``; required under ``"skip_task"``),
        else ``None``, which the other policies keep. Under ``"skip_task"`` a
        ``None`` (a state from before this field) starts counting from 0.
    """

    params: PyTree
    balancer_state: Any
    opt_state: Any
    step: jax.Array  # [] int32
    skipped: jax.Array | None = None  # [] int32
    key: jax.Array | None = None  # raw uint32 key data
    model_state: PyTree = None
    task_skipped: jax.Array | None = None  # [K] int32


class Representation(NamedTuple):
    """How to split a model at its shared representation (for representation mode).

    Representation mode needs the per-task gradients ``∂L_k/∂z``. From ``decode``
    alone they cost ``K`` backward passes through the whole decoder (every head
    is traversed for every task: ``K²`` head backward passes for hard parameter
    sharing). A decoder whose heads are separable -- task ``k``'s loss depends on
    ``z`` only through head ``k`` -- can also be given as ``decode_tasks``, which
    takes one copy of ``z`` per task, ``zs[k]``; then
    ``∂(Σ_k L_k(zs[k]))/∂zs[k] = ∂L_k/∂z`` at ``zs[k] = z``, so one backward pass
    through the heads gives every per-task gradient (the cost of equal weighting).

    Attributes:
      encode: ``(params, batch) -> z``, the shared representation (any pytree).
      decode: ``(params, z, batch) -> losses[K]`` (or ``(losses, aux)`` with
        ``has_aux``); must not use the encoder's parameters, and its losses must
        depend on ``z`` (checked at trace time).
      decode_tasks: optional ``(params, zs, batch) -> losses[K]`` (or
        ``(losses, aux)``), where every leaf of ``zs`` is the matching leaf of ``z``
        with a leading task axis of size ``K``; loss ``k`` must depend on ``zs``
        only through ``zs[k]``, and with every ``zs[k] = z`` it must equal
        ``decode(params, z, batch)``. For hard parameter sharing with stacked
        heads ``W [K, d, f]``: ``einsum("kbd,kdf->kbf", zs, W)`` instead of
        ``einsum("bd,kdf->kbf", z, W)``. When given, representation mode uses it
        instead of ``decode`` (same result, one backward pass through the heads);
        a ``decode_tasks`` that breaks the contract gives wrong gradients, which the
        step cannot detect.
    """

    encode: Callable[[PyTree, Any], PyTree]
    decode: Callable[[PyTree, PyTree, Any], Any]
    decode_tasks: Callable[[PyTree, PyTree, Any], Any] | None = None


class TrainStep(NamedTuple):
    """A built step: ``state = init(params, key=seed)``, then ``step(state, batch)``.

    Calling the ``TrainStep`` itself (``train_step(state, batch)``) runs ``step``
    plus the host-side checks: the batch size against the mesh, and the
    ``"raise"`` non-finite policy. Calling the ``step`` field directly (e.g. to
    ``.lower(...).compile()`` it) skips those host checks.

    Both the ``TrainStep`` and its ``step`` run inside a caller's ``jax.jit``,
    ``lax.scan`` and ``jax.vmap`` (e.g. ``lax.scan(train_step.step, state,
    batches)``; over seeds, ``vmap`` over ``init(params, key=k)``), except that
    the ``"raise"`` policy needs a host read and raises a ``ValueError`` there.
    ``jax.jit(train_step)`` itself fails (JAX cannot take a weak reference to a
    tuple): jit ``train_step.step`` or a function that calls ``train_step``.

    Attributes:
      init: ``(params, *, key=None, model_state=None, num_tasks=None) ->
        TrainState`` (replicated over the mesh when one is given). ``key``: an
        int seed, a PRNG key (``jax.random.key(s)``) or its raw data; ``None`` is
        seed 0. ``model_state``: the model's mutable collections (required with
        ``has_model_state=True``, refused without). ``num_tasks``: ``K``, for the
        ``[K]`` counter ``TrainState.task_skipped`` (read from the balancer's
        state when it records ``[K]`` weights).
      step: ``(TrainState, batch) -> (TrainState, metrics)``, jitted unless
        ``jit=False`` (the jitted step's ``lower``/``trace`` are the top-level
        program's). ``metrics`` holds ``"losses"`` ``[K]``, ``"aux"``,
        ``"weights"`` (the ``[K]`` task weights applied this step), ``"finite"``
        (``[]`` bool: the present tasks' losses, per-task gradients the route
        formed, the balanced gradient and the update are all finite),
        ``"task_finite"`` (``[K]`` bool, task ``k``'s loss and the per-task
        gradient the route formed are finite), ``"present"`` (``[K]`` bool, the
        tasks the loss function said are present; all true for a plain losses
        array), ``"used"`` (``[K]`` bool, the tasks this step trained on:
        present, and under ``"skip_task"`` finite; all false in a skipped step),
        ``"skipped"`` (``[]`` int32, the running count of skipped steps),
        ``"task_skipped"`` (``[K]`` int32, the running per-task count of
        ``"skip_task"``) and ``"unattributed"`` (``[]`` bool: under
        ``"skip_task"``, the step was skipped because a non-finite value could
        not be pinned on a task).
      mode: the resolved route, ``"loss"``, ``"gramian"``, ``"jacobian"`` or
        ``"representation"``.
      on_nonfinite: the non-finite policy, ``"skip"``, ``"skip_task"``,
        ``"raise"`` or ``"ignore"``.
      check_batch: host-side check of a batch before the step runs (batch size
        divisible by the mesh's data axis), or ``None``.
      diagnose: ``(state, batch) -> [K]`` bool, per-task gradient finiteness at
        the state a flagged step returned (its params and model state, the key of
        step ``state.step - 1``), used by the ``"raise"`` policy to name the
        task(s) when the route formed no per-task gradient (compiled on first
        use). ``train_step._replace(on_nonfinite="raise")`` turns a ``"skip"``
        step into a raising one without recompiling.
    """

    init: Callable[..., TrainState]
    step: Callable[[TrainState, Any], tuple[TrainState, dict]]
    mode: str
    on_nonfinite: str = "skip"
    check_batch: Callable[[Any], None] | None = None
    diagnose: Callable[[PyTree, Any], Any] | None = None

    def __call__(self, state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        if self.on_nonfinite == "raise" and _stateful.is_traced(state, batch):
            raise ValueError(
                "on_nonfinite='raise' reads metrics['finite'] on the host after every step, which "
                "is impossible inside your jax.jit / lax.scan / jax.vmap. Build the step with "
                "on_nonfinite='skip' (a non-finite step leaves the state unchanged, inside the "
                "compiled program) and read metrics['finite'] or metrics['skipped'] (or "
                "TrainState.skipped) once your jitted function has returned"
            )
        if self.check_batch is not None:
            self.check_batch(batch)
        new_state, metrics = self.step(state, batch)
        if self.on_nonfinite == "raise" and not bool(metrics["finite"]):
            diagnose = None
            if self.diagnose is not None:
                diagnose = lambda: self.diagnose(new_state, batch)
            err = _nonfinite.nonfinite_error(int(new_state.step) - 1, metrics, diagnose)
            err.state = new_state  # unchanged by the step: the run can go on from here
            raise err
        return new_state, metrics


# XLA CPU's default scheduler keeps the zero-filled buffers of every per-task
# max-pool backward (select-and-scatter, expanded into scatters on CPU) alive from
# the start of the step: ~12.6 MB per task on W1. Its memory-optimised scheduler
# allocates them when they are needed; with the per-task VJPs chained
# (``_jacobian.task_map``) the step's temporary memory then no longer grows with K
# (W1: 87.5 MB at K = 10 and 40, against 208.7 / 673 MB before).
_CPU_PER_TASK_OPTIONS = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def _compiler_options(mode: str, platform: str) -> dict | None:
    """XLA options for the step: the memory-optimised CPU scheduler for per-task VJPs."""
    if platform == "cpu" and mode in ("gramian", "jacobian"):
        return dict(_CPU_PER_TASK_OPTIONS)
    return None


def _resolve_mode(mode: Mode, balancer: Balancer, representation: Representation | None) -> str:
    kind = balancer.spec.kind
    if mode == "auto":
        return {"loss": "loss", "gram": "gramian"}.get(kind, "jacobian")
    if mode == "loss" and kind != "loss":
        raise ValueError(f"mode='loss' needs a loss-only balancer; this one is of kind {kind!r}")
    if mode == "gramian" and kind != "gram":
        raise ValueError(f"mode='gramian' needs a Gram balancer; this one is of kind {kind!r}")
    if mode == "representation":
        if representation is None:
            raise ValueError("mode='representation' needs representation=Representation(...)")
        if kind != "loss" and not balancer.spec.representation:
            raise ValueError("this balancer does not support representation mode")
    if mode not in ("loss", "gramian", "jacobian", "representation"):
        raise ValueError(f"unknown mode {mode!r}")
    return mode


def make_train_step(
    loss_fn: Callable[..., Any],
    balancer: Balancer,
    optimizer: optax.GradientTransformation,
    *,
    has_aux: bool = False,
    mode: Mode = "auto",
    representation: Representation | None = None,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    data_axis: str = "data",
    jit: bool = True,
    donate: bool = False,
    on_nonfinite: NonFinite = "skip",
    has_model_state: bool = False,
    loss_takes_key: bool | None = None,
) -> TrainStep:
    """Builds a multi-task training step.

    Every route gives the leaves selected by the balancer's ``shared=`` the
    balanced gradient and every other leaf the plain sum ``∇ Σ_k L_k``; for a
    loss-only balancer the three routes compute the same update.

    **Per-step key.** If ``loss_fn`` takes a keyword parameter ``key`` (or
    ``**kwargs``; read once with :func:`inspect.signature`, or set by
    ``loss_takes_key``), step ``t`` calls it with
    ``key=jax.random.fold_in(jax.random.wrap_key_data(state.key), t)``, a typed
    key: split or fold it for each use (dropout, stochastic depth, Gumbel noise).
    ``state.key`` itself never changes, so the keys depend only on the seed and
    the step index: a run resumed from a checkpoint replays them exactly, and
    ``vmap`` over ``init(params, key=k_i)`` gives each seed its own noise. A loss
    without ``key`` is called as ``loss_fn(params, batch)``. Representation
    functions that take ``key`` get ``fold_in(k_t, 0)`` (``encode``) and
    ``fold_in(k_t, 1)`` (``decode``, ``decode_tasks``).

    **Model state.** With ``has_model_state=True`` the step calls
    ``loss_fn(params, batch, model_state=state.model_state[, key=k_t])``, which
    returns ``(losses, new_model_state)`` (``(losses, aux, new_model_state)``
    with ``has_aux``), e.g. Flax's ``apply(..., mutable=["batch_stats"])``. The
    step stores the new model state from its one primal forward pass: the
    per-task routes (``"gramian"``, ``"jacobian"``) take their ``K`` backward
    passes through that pass's VJP, so the statistics are updated once per step,
    from the batch at the pre-step parameters. A skipped step keeps the old
    model state (a non-finite new model state also counts as non-finite);
    under ``mesh=`` it is replicated like the parameters. Not combined with
    ``representation=`` yet.

    **Nesting and memory.** The returned step runs inside the caller's
    ``jit``/``scan``/``vmap`` in every route. Compiler options can only be set on
    a top-level ``jit``, so a nested step is compiled with the caller's: on CPU
    the per-task routes then lose the memory-optimised scheduler, and their XLA
    temporary buffers grow with ``K`` again (W1, MGDA, Gramian route: 87.5 MB
    at top level against 208.8 MB nested at K = 10, 90.3 against 587.6 MB at
    K = 40); pass ``compiler_options={"xla_cpu_scheduler_type":
    "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}`` to your own ``jax.jit`` to get it
    back. Other platforms pass no options, so nothing is lost there.

    **Task presence.** ``loss_fn`` may return ``mtl.TaskLosses(losses,
    present)`` in place of ``losses`` (also inside ``(…, aux)`` and ``(…,
    new_model_state)``), e.g. ``mtl.masked_task_losses(per_example [B, K],
    label_mask [B, K])``: see the module docstring. ``representation.decode``
    and ``decode_tasks`` may do the same.

    Args:
      loss_fn: ``(params, batch) -> losses[K]`` (or ``(losses, aux)``), one array
        or a :class:`~mtl_jax.TaskLosses`; optionally with keywords ``key`` and
        ``model_state`` (see above).
      balancer: a balancer from :mod:`mtl_jax.balancers`.
      optimizer: the optax optimiser applied to the balanced update (e.g. Adam).
      has_aux: whether ``loss_fn`` (and ``representation.decode``) return aux.
      mode: ``"auto"`` (``"loss"`` for loss-only balancers, ``"gramian"`` for
        Gram balancers, ``"jacobian"`` for the others, e.g. GradDrop), ``"loss"``,
        ``"gramian"``, ``"jacobian"`` or ``"representation"``.
      representation: the encoder/decoder split, for representation mode. With
        ``decode_tasks`` it also speeds up the ``"gramian"`` route: when
        ``decode_tasks`` reads none of the balancer's shared leaves (checked on its
        jaxpr at trace time), the per-task backward passes run through ``encode``
        only, with cotangents ``∂L_k/∂z`` from one backward pass through
        ``decode_tasks``; the losses and aux then come from ``decode_tasks`` and
        ``loss_fn`` is not called. Otherwise the route runs on ``loss_fn``
        unsplit. Same result either way (up to float rounding) when
        ``decode_tasks`` keeps its contract.
      chunk_size: tasks per chunk of per-task VJPs in the ``"gramian"`` and
        ``"jacobian"`` routes; the chunks run one after another, so one chunk's
        backward intermediates are live at a time. ``None``: in the ``"gramian"``
        route one task at a time (chunks of 1: on W1 the fastest and the
        smallest, its temporary memory flat in ``K`` on CPU); in the
        ``"jacobian"`` route all ``K`` tasks at once (one ``vmap``).
      mesh: if given, a data-parallel step over ``mesh`` (batch sharded along
        ``data_axis``, state replicated); ``Explicit`` and ``Auto`` axes both work.
      data_axis: mesh axis name the batch's leading axis is sharded over.
      jit: whether to ``jax.jit`` the step. Both nest in a caller's ``jit``; the
        un-jitted step is the pure function to compose by hand (or to debug),
        and at top level it runs op by op without the compiler options.
      donate: donate the input state's buffers to the jitted step.
      on_nonfinite: what a non-finite loss, gradient or update does:
        ``"skip"`` (default; the step leaves params, balancer and optimiser states
        unchanged and counts it in ``TrainState.skipped``, all inside the jitted
        step), ``"skip_task"`` (a task whose loss or per-task gradient is
        non-finite is treated as absent for this step and counted in
        ``TrainState.task_skipped``; the other tasks train. Where the
        non-finite value cannot be pinned on a task -- a finite loss with a
        non-finite gradient in the ``"loss"`` route's single backward pass, a
        non-finite balanced gradient, update or model state -- the whole step is
        skipped as under ``"skip"`` and ``metrics["unattributed"]`` is true),
        ``"raise"`` (the same, then ``FloatingPointError`` naming the step
        and task(s), from a host read of a scalar flag each step) or
        ``"ignore"``. "skip" is the default because it costs no host round-trip
        and a long run survives an occasional bad batch; watch
        ``metrics["skipped"]``. ``"raise"`` needs the host read, so inside your
        own ``jit``/``scan`` use ``"skip"`` and read ``metrics["finite"]``.
      has_model_state: whether ``loss_fn`` takes ``model_state=`` and returns
        the new model state (see above).
      loss_takes_key: whether to pass ``key=`` to ``loss_fn``; ``None`` reads it
        from ``loss_fn``'s signature (set it for a callable whose signature
        cannot be read).

    Returns:
      A :class:`TrainStep`; see its ``step`` attribute for the metrics.

    Raises:
      TypeError: ``balancer`` is not a balancer (e.g. an optax optimiser), or
        ``optimizer`` is not an optax transform.
      ValueError: an unknown ``mode`` or ``on_nonfinite``, a ``mode`` the balancer's
        kind does not allow, a ``chunk_size`` that is not a positive int,
        ``has_model_state`` with ``representation``; from ``init``, a params leaf
        that is not floating point (named), a missing or unexpected
        ``model_state``, an unusable ``key``; at trace time, losses
        not of shape ``[K]`` with ``K ≥ 1``, ``K`` differing from the balancer's
        ``num_tasks``, an empty batch, or a ``decode`` that ignores ``z``; at
        call time, a batch not divisible by the mesh's data axis.

    References:
      Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
      NeurIPS 2018 (representation mode, MGDA-UB), https://arxiv.org/abs/1810.04650
    """
    _checks.check_factory_args(balancer, optimizer, on_nonfinite)
    _validate.check_int("chunk_size", chunk_size, allow_none=True)
    if not isinstance(has_model_state, bool):
        raise ValueError(f"has_model_state must be True or False; got {has_model_state!r}")
    resolved = _resolve_mode(mode, balancer, representation)
    takes_key = _stateful.resolve_takes_key(loss_fn, loss_takes_key)
    if has_model_state and representation is not None:
        raise ValueError(
            "has_model_state=True does not combine with representation= yet: the encoder and "
            "decoder would each need the model state. Leave representation out (mode='gramian' "
            "or 'jacobian' run on loss_fn and carry the model state)"
        )
    rep_takes_key = representation is not None and any(
        fn is not None and _stateful.takes_keyword(fn, "key")
        for fn in (representation.encode, representation.decode, representation.decode_tasks)
    )

    def init(params, *, key=None, model_state=None, num_tasks=None) -> TrainState:
        _stateful.check_float_params(params)
        _validate.check_int("num_tasks", num_tasks, allow_none=True)
        if has_model_state and model_state is None:
            raise ValueError(
                "the step was built with has_model_state=True but init got no model_state: pass "
                "init(params, model_state=...), e.g. {'batch_stats': variables['batch_stats']}"
            )
        if not has_model_state and model_state is not None:
            raise ValueError(
                "init got a model_state but the step was built without has_model_state=True, so "
                "loss_fn would never see or update it: build the step with has_model_state=True"
            )
        zero = jnp.zeros((), jnp.int32)
        bal_state = balancer.init(params)
        if num_tasks is None:
            num_tasks = _checks.balancer_num_tasks(bal_state)
        if num_tasks is None and on_nonfinite == "skip_task":
            raise ValueError(
                "on_nonfinite='skip_task' counts skipped steps per task in "
                "TrainState.task_skipped [K], but K is unknown here: pass "
                "init(params, num_tasks=K) or build the balancer with num_tasks=K"
            )
        task_skipped = None if num_tasks is None else jnp.zeros((num_tasks,), jnp.int32)
        return TrainState(
            params,
            bal_state,
            optimizer.init(params),
            zero,
            zero,
            _stateful.key_data(key),
            model_state,
            task_skipped,
        )

    def bind_rep(k_t):
        if representation is None or not rep_takes_key:
            return representation

        def bind(fn, i):
            if fn is None or not _stateful.takes_keyword(fn, "key"):
                return fn
            sub = jax.random.fold_in(k_t, i)
            return lambda *a: fn(*a, key=sub)

        # The encoder gets fold_in(k_t, 0); decode and decode_tasks both fold_in(k_t, 1).
        return Representation(
            bind(representation.encode, 0),
            bind(representation.decode, 1),
            bind(representation.decode_tasks, 1),
        )

    per_task = on_nonfinite == "skip_task"

    def route(f, rep, params, bal_state, batch) -> RouteOut:
        # The balancer's spec and masks, resolved once per traced step; every
        # route (and the balancer's update in the Jacobian route) reads the plan.
        plan = _plan.resolve(
            balancer,
            resolved,
            params,
            chunk_size=chunk_size,
            has_aux=has_aux or has_model_state,
            per_task=per_task,
        )
        if resolved == "loss":
            return _routes.loss_route(f, plan, params, bal_state, batch)
        if resolved == "gramian":
            return _gramian.gramian_route(f, plan, params, bal_state, batch, representation=rep)
        if resolved == "jacobian":
            return _routes.jacobian_route(f, plan, params, bal_state, batch)
        return _routes.representation_route(f, plan, rep, params, bal_state, batch)

    def step(state: TrainState, batch) -> tuple[TrainState, dict]:
        if not isinstance(state, TrainState):
            state = TrainState(*state)
        _checks.check_batch(batch)
        _stateful.check_float_params(state.params)
        if has_model_state and state.model_state is None:
            raise ValueError(
                "the step was built with has_model_state=True but TrainState.model_state is "
                "None: build the state with train_step.init(params, model_state=...)"
            )
        k_t = _stateful.step_key(state.key, state.step) if takes_key or rep_takes_key else None
        f = _stateful.bind_loss(
            loss_fn,
            key=k_t if takes_key else None,
            model_state=state.model_state,
            has_aux=has_aux,
            has_model_state=has_model_state,
        )
        try:
            r = route(f, bind_rep(k_t), state.params, state.balancer_state, batch)
        except Exception as err:
            if type(err).__name__ == "TraceContextError":  # flax.errors, from an NNX module
                raise ValueError(
                    "loss_fn mutates a Flax NNX module (its parameters, BatchNorm statistics or "
                    "Rngs) created outside the training step, which NNX refuses inside a "
                    f"transformation ({err}). Build the loss with "
                    "task = mtl_jax.training.nnx_loss(lambda model, batch: losses, model), "
                    "make_train_step(task.loss_fn, ..., has_model_state=True) and "
                    "init(task.params, key=seed, model_state=task.model_state)"
                ) from err
            raise
        aux, model_state = r.aux if has_model_state else (r.aux, state.model_state)
        updates, opt_state = optimizer.update(r.grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        k = r.losses.shape[0]
        task_finite = jnp.isfinite(r.losses) & r.task_finite
        grads_ok = _nonfinite.tree_finite(r.grads) & _nonfinite.tree_finite(updates)
        if has_model_state:
            grads_ok = grads_ok & _nonfinite.tree_finite(model_state)
        # An absent task's loss and gradient take no part in the step.
        finite = jnp.all(task_finite | ~r.presence) & grads_ok
        any_used = jnp.any(r.used)
        skipped = jnp.zeros((), jnp.int32) if state.skipped is None else state.skipped
        task_skipped = state.task_skipped
        keep_none = task_skipped is None and on_nonfinite != "skip_task"
        if task_skipped is None:
            task_skipped = jnp.zeros((k,), jnp.int32)
        elif task_skipped.shape != (k,):
            raise ValueError(
                f"TrainState.task_skipped has shape {tuple(task_skipped.shape)} but loss_fn "
                f"returned K={k} task losses"
            )
        if on_nonfinite == "skip_task":
            ok = any_used & grads_ok
            dropped = r.presence & ~r.used
            # Every present task dropped, one of them for its gradient alone: a
            # non-finite value in one task's branch reaches every task's VJP
            # (0·NaN), so the step cannot say which task it was.
            ambiguous = ~any_used & jnp.any(dropped & jnp.isfinite(r.losses))
            unattributed = (any_used & ~grads_ok) | ambiguous
            task_skipped = task_skipped + (dropped & ~unattributed).astype(jnp.int32)
        elif on_nonfinite == "ignore":
            ok = any_used  # a batch without a present task is still skipped
            unattributed = jnp.zeros((), bool)
        else:
            ok = finite & any_used
            unattributed = jnp.zeros((), bool)
        new = (params, r.balancer_state, opt_state, model_state)
        old = (state.params, state.balancer_state, state.opt_state, state.model_state)
        new = _nonfinite.select(ok, new, old)
        skipped = skipped + (~ok).astype(jnp.int32)
        metrics = {
            "losses": r.losses,
            "aux": aux,
            "weights": r.weights,
            "finite": finite,
            "task_finite": task_finite,
            "present": r.presence,
            "used": r.used & ok,
            "skipped": skipped,
            "task_skipped": task_skipped,
            "unattributed": unattributed,
        }
        params, bal_state, opt_state, model_state = new
        new_state = TrainState(
            params,
            bal_state,
            opt_state,
            state.step + 1,
            skipped,
            state.key,
            model_state,
            None if keep_none else task_skipped,  # the state's structure is kept
        )
        return new_state, metrics

    diagnose_fn = _nonfinite.make_diagnose(loss_fn, has_aux, takes_key, has_model_state)

    def diagnose(state: TrainState, batch):
        k_t = _stateful.step_key(state.key, state.step - 1) if takes_key else None
        return diagnose_fn(state.params, batch, k_t, state.model_state)

    built = lambda fn, init_fn, check=None: TrainStep(
        init_fn, fn, resolved, on_nonfinite, check, diagnose
    )
    if not jit:
        if mesh is not None:
            raise ValueError("mesh= needs jit=True")
        return built(step, init)
    donate_argnums = (0,) if donate else ()
    if mesh is None:
        options = _compiler_options(resolved, jax.default_backend())
        jitted = jax.jit(step, donate_argnums=donate_argnums, compiler_options=options)
        return built(_stateful.NestableJit(step, jitted), init)
    if data_axis not in mesh.axis_names:
        raise ValueError(f"data_axis {data_axis!r} is not an axis of the mesh {mesh.axis_names}")
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P(data_axis))
    jitted = jax.jit(
        step,
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=donate_argnums,
        compiler_options=_compiler_options(resolved, mesh.devices.flat[0].platform),
    )
    num_devices = mesh.shape[data_axis]

    def init_replicated(params, *, key=None, model_state=None, num_tasks=None) -> TrainState:
        state = init(params, key=key, model_state=model_state, num_tasks=num_tasks)
        return put_replicated(state, replicated)

    def check(batch) -> None:
        _checks.check_divisible(batch, num_devices, data_axis)

    return built(_stateful.NestableJit(step, jitted), init_replicated, check)
