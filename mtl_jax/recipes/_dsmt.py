"""The DSMT-Nets training procedure: per-task losses, phase schedule and training step.

Schwab et al., "Not to Cry Wolf: Distantly Supervised Multitask Learning in
Critical Care", ICML 2018, https://arxiv.org/abs/1802.05027. Training goes
through :func:`mtl_jax.training.make_train_step`: the main loss (masked to the
labelled windows) and the auxiliary losses of a :class:`~mtl_jax.models.DSMTNet`
are tasks; the phase schedule (:func:`dsmt_phase_weights`) and the batches
without a labelled window say which tasks are present in each step, and any
balancer weights the present ones. Deviation from the paper: the authors
alternate phases per epoch; here a phase is a fixed number of steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax._presence import TaskLosses
from mtl_jax.balancers._base import Balancer
from mtl_jax.models._dsmt import DSMTNet
from mtl_jax.training._step import TrainState, make_train_step

__all__ = [
    "DSMTTrainStep",
    "dsmt_losses",
    "dsmt_phase_weights",
    "make_dsmt_train_step",
]


def dsmt_phase_weights(
    step: jax.Array,
    *,
    num_aux_tasks: int,
    burn_in_steps: int,
    phase_steps: int,
) -> jax.Array:
    r"""The per-task weights of the DSMT schedule at ``step`` (main task first).

    The authors train the auxiliary tasks alone for a burn-in, then alternate an
    auxiliary phase (all windows) and a main phase (labelled windows) in every
    epoch. As task weights :math:`(w_\text{main}, w_1, \dots, w_K)`:

    .. math::
       w = \begin{cases} (0, 1, \dots, 1) & s < b \text{ or }
       \lfloor (s - b) / p \rfloor \text{ even} \\ (1, 0, \dots, 0) & \text{otherwise}
       \end{cases}

    with :math:`b` = ``burn_in_steps`` and :math:`p` = ``phase_steps``. With no
    auxiliary tasks the main task always has weight 1.

    Schwab et al., "Not to Cry Wolf", ICML 2018, https://arxiv.org/abs/1802.05027.

    Args:
      step: the (traced) step counter.
      num_aux_tasks: ``K``.
      burn_in_steps: steps of auxiliary-only training at the start (``>= 0``).
      phase_steps: steps per phase after the burn-in (``>= 1``).

    Returns:
      ``[K + 1]`` float32 weights.
    """
    if not isinstance(num_aux_tasks, int) or num_aux_tasks < 0:
        raise ValueError(f"num_aux_tasks must be an int >= 0; got {num_aux_tasks!r}")
    if burn_in_steps < 0:
        raise ValueError(f"burn_in_steps must be >= 0; got {burn_in_steps}")
    if phase_steps < 1:
        raise ValueError(f"phase_steps must be >= 1; got {phase_steps}")
    if num_aux_tasks == 0:
        return jnp.ones((1,), jnp.float32)
    step = jnp.asarray(step)
    aux_phase = (step < burn_in_steps) | (((step - burn_in_steps) // phase_steps) % 2 == 0)
    main = jnp.where(aux_phase, 0.0, 1.0)
    return jnp.concatenate([main[None], jnp.broadcast_to(1.0 - main, (num_aux_tasks,))]).astype(
        jnp.float32
    )


def dsmt_losses(
    logit: jax.Array,
    aux: jax.Array,
    *,
    labels: jax.Array,
    label_mask: jax.Array,
    aux_targets: jax.Array,
) -> jax.Array:
    r"""The per-task losses of a DSMT-Net: masked main BCE first, then the auxiliary MSEs.

    .. math::
       L_\text{main} = \frac{\sum_i m_i\, \mathrm{BCE}(z_i, y_i)}{\max(1, \sum_i m_i)},
       \qquad L_k = \frac{1}{B}\sum_i (\hat a_{ik} - a_{ik})^2

    with the label mask :math:`m_i \in \{0, 1\}`: an unlabelled window
    (:math:`m_i = 0`) contributes nothing to the main loss or its gradient,
    whatever its label entry holds (distant supervision: the auxiliary targets
    exist for every window).

    **Contract.** Every ``label_mask`` entry is 0 or 1 and every label of a
    labelled window (:math:`m_i = 1`) is 0 or 1. With concrete inputs a
    violation raises ``ValueError`` naming the argument and the bad value. Under
    a trace (inside ``jit``, ``grad``, ``vmap``, ``scan``) values cannot be
    inspected, so a violation makes :math:`L_\text{main}` NaN instead: the
    training step's non-finite policy (skip, raise) then sees it, and a bad
    batch never yields a plausible-looking loss.

    Schwab et al., "Not to Cry Wolf", ICML 2018, https://arxiv.org/abs/1802.05027.

    Args:
      logit: ``[B]`` main-output logits.
      aux: ``[B, K]`` auxiliary predictions.
      labels: ``[B]`` binary labels (any value, NaN included, where ``label_mask`` is 0).
      label_mask: ``[B]`` 1 for labelled windows, 0 otherwise (bool or numeric).
      aux_targets: ``[B, K]`` standardised auxiliary targets.

    Returns:
      ``[K + 1]`` losses.

    Raises:
      ValueError: mismatched shapes, or (concrete inputs) a ``label_mask`` entry
        other than 0/1 or a labelled window's label other than 0/1.
    """
    if aux.shape != aux_targets.shape:
        raise ValueError(f"aux {aux.shape} and aux_targets {aux_targets.shape} differ in shape")
    batch = (jnp.shape(logit)[0],) if jnp.ndim(logit) == 1 else None
    for name, value in (("labels", labels), ("label_mask", label_mask)):
        if batch is None or jnp.shape(value) != batch:
            raise ValueError(
                f"logit must be [B] and {name} the same shape; got logit {jnp.shape(logit)}, "
                f"{name} {jnp.shape(value)}"
            )
    _check_labels_if_concrete(labels, label_mask)
    m = jnp.asarray(label_mask, logit.dtype)
    raw_y = jnp.asarray(labels, logit.dtype)
    # Traced inputs: a value outside the contract turns the main loss into NaN.
    mask_ok = (m == 0) | (m == 1)
    label_ok = (m != 1) | (raw_y == 0) | (raw_y == 1)
    valid = jnp.all(mask_ok & label_ok)
    y = jnp.where((m > 0) & label_ok, raw_y, 0.0)  # no NaN label reaches the gradient
    bce = optax.sigmoid_binary_cross_entropy(logit, y)
    main = jnp.sum(jnp.where(m > 0, bce, 0.0)) / jnp.maximum(jnp.sum(m), 1.0)
    main = jnp.where(valid, main, jnp.nan)
    mse = jnp.mean((aux - aux_targets) ** 2, axis=0)
    return jnp.concatenate([main[None], mse])


def _check_labels_if_concrete(labels, label_mask) -> None:
    """Raises ``ValueError`` for a mask entry or a labelled window's label outside {0, 1}."""
    if isinstance(labels, jax.core.Tracer) or isinstance(label_mask, jax.core.Tracer):
        return
    import numpy as np

    m = np.asarray(label_mask)
    m = m.astype(np.float64) if m.dtype == bool else m
    bad = ~np.isin(m, (0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"label_mask must hold 0 (unlabelled) or 1 (labelled); got {m[i].item()!r} at index {i}"
        )
    y = np.asarray(labels)
    bad = (m == 1) & ~np.isin(y, (0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            "labels of labelled windows (label_mask 1) must be 0 or 1; "
            f"got {y[i].item()!r} at index {i}"
        )


class DSMTTrainStep(NamedTuple):
    """A DSMT step: ``init(variables, key=...) -> state``, ``step(state, batch)``.

    ``state`` is a :class:`~mtl_jax.training.TrainState`: the trainable ``params``,
    the BatchNorm statistics in ``model_state["batch_stats"]`` and the run's PRNG
    key in ``key`` (dropout and noise get ``fold_in(key, step)``).
    """

    init: Callable[..., TrainState]
    step: Callable[[TrainState, Any], tuple[TrainState, dict]]


def make_dsmt_train_step(
    model: DSMTNet,
    balancer: Balancer,
    optimizer: optax.GradientTransformation,
    *,
    burn_in_steps: int,
    phase_steps: int,
    jit: bool = True,
    on_nonfinite: str = "skip",
) -> DSMTTrainStep:
    r"""A DSMT training step built on :func:`mtl_jax.training.make_train_step`.

    The loss function returns the ``K + 1`` losses of :func:`dsmt_losses` as a
    :class:`~mtl_jax.TaskLosses` whose presence is the phase schedule: task
    ``k`` is present at step ``s`` when :func:`dsmt_phase_weights` gives it
    weight 1, and the main task also needs a labelled window in the batch,

    .. math::
       \mathrm{present}_k(s) = [w_k(s) = 1] \wedge
       (k \ne \text{main} \vee \textstyle\sum_i m_i > 0).

    An absent task is left out of the balancer's problem (weight exactly 0, its
    rows of the Jacobian and its state untouched), so every balancer trains the
    phases -- MGDA included, which on 0/1-multiplied losses would put all its
    weight on a task whose gradient is zero and make no update. A batch with no
    task present (the main phase, no labelled window) is skipped and counted.
    BatchNorm's statistics are the step's model state (``has_model_state=True``):
    they are updated once per step from its forward pass and, like the
    parameters, left unchanged by a skipped step (one NaN in a batch would
    otherwise make every running mean NaN). Dropout and the auxiliary blocks'
    noise draw from the step's key ``fold_in(state.key, step)``, split into one
    key each.

    ``batch`` is a dict with ``windows [B, S, T]``, ``missing [B, S]``,
    ``labels [B]``, ``label_mask [B]`` and ``aux_targets [B, K]``. The built
    step nests in a caller's ``jit``, ``scan`` and ``vmap`` (over seeds:
    ``vmap`` over ``init(variables, key=k)``).

    Schwab et al., "Not to Cry Wolf", ICML 2018, https://arxiv.org/abs/1802.05027.

    Args:
      model: the :class:`~mtl_jax.models.DSMTNet`.
      balancer: any balancer from :mod:`mtl_jax.balancers`.
      optimizer: the optax optimiser.
      burn_in_steps: auxiliary-only steps at the start.
      phase_steps: steps per auxiliary/main phase after the burn-in.
      jit: whether to jit the step.
      on_nonfinite: passed to :func:`~mtl_jax.training.make_train_step`
        (``"skip"``, ``"skip_task"``, ``"raise"`` or ``"ignore"``).

    Returns:
      A :class:`DSMTTrainStep`: ``init(variables, key=None)`` takes the model's
      ``{"params", "batch_stats"}`` and an int seed or PRNG key (``None``: seed
      0); ``metrics`` holds the (unweighted) ``"losses"``, ``"present"`` and the
      inner step's other entries.
    """
    k = model.num_aux_tasks
    dsmt_phase_weights(0, num_aux_tasks=k, burn_in_steps=burn_in_steps, phase_steps=phase_steps)

    def loss_fn(params, batch, *, key, model_state):
        drop_key, noise_key = jax.random.split(key)
        (logit, aux), updates = model.apply(
            {"params": params, **model_state},
            batch["windows"],
            batch["missing"],
            train=True,
            rngs={"dropout": drop_key, "noise": noise_key},
            mutable=["batch_stats"],
        )
        losses = dsmt_losses(
            logit,
            aux,
            labels=batch["labels"],
            label_mask=batch["label_mask"],
            aux_targets=batch["aux_targets"],
        )
        w = dsmt_phase_weights(
            batch["step"], num_aux_tasks=k, burn_in_steps=burn_in_steps, phase_steps=phase_steps
        )
        labelled = jnp.any(jnp.asarray(batch["label_mask"]) != 0)
        present = (w > 0) & jnp.concatenate([labelled[None], jnp.ones((k,), bool)])
        return TaskLosses(losses, present), {"batch_stats": updates["batch_stats"]}

    inner = make_train_step(
        loss_fn, balancer, optimizer, jit=False, on_nonfinite=on_nonfinite, has_model_state=True
    )

    def init(variables, *, key=None):
        stats = {"batch_stats": variables.get("batch_stats", {})}
        return inner.init(variables["params"], key=key, model_state=stats, num_tasks=k + 1)

    def step(state, batch):
        return inner.step(state, dict(batch, step=state.step))

    return DSMTTrainStep(init, jax.jit(step) if jit else step)
