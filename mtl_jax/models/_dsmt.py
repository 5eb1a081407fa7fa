"""DSMT-Nets: distantly supervised multi-task networks for false-alarm suppression.

Schwab et al., "Not to Cry Wolf: Distantly Supervised Multitask Learning in
Critical Care", ICML 2018, https://arxiv.org/abs/1802.05027. One perception
block per input stream, one auxiliary block per auxiliary task (trained on every
window, labelled or not), and a main head that reads the stream representation
and every auxiliary block's hidden state. Training goes through
:func:`mtl_jax.training.make_train_step`: the main loss (masked to the labelled
windows) and the auxiliary losses are tasks; the phase schedule
(:func:`dsmt_phase_weights`) and the batches without a labelled window say
which tasks are present in each step, and any balancer weights the present ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mtl_jax._presence import TaskLosses
from mtl_jax.balancers._base import Balancer
from mtl_jax.training._step import TrainState, make_train_step

__all__ = [
    "DSMTNet",
    "DSMTTrainStep",
    "dsmt_losses",
    "dsmt_phase_weights",
    "make_dsmt_train_step",
]


class _Conv1D(nn.Module):
    """A bias-free 1-D convolution with ``"SAME"`` padding: ``[B, T, C] -> [B, ⌈T/s⌉, F]``.

    Computed as a sum of ``width`` shifted matrix products rather than with
    ``lax.conv_general_dilated``: the result is the same, but under ``jax.vmap``
    over parameters (several seeds trained at once) XLA's CPU backend turns a
    convolution into a slow grouped convolution, while batched matrix products
    stay fast. The kernel ``[width, C, F]`` has ``nn.Conv``'s default initialiser.
    """

    features: int
    width: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param(
            "kernel", nn.initializers.lecun_normal(), (self.width, x.shape[-1], self.features)
        )
        t, s = x.shape[-2], self.stride
        out = -(-t // s)
        pad = max((out - 1) * s + self.width - t, 0)
        xp = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
        span = (out - 1) * s + 1
        patches = jnp.concatenate([xp[:, j : j + span : s] for j in range(self.width)], axis=-1)
        return patches @ w.reshape(-1, self.features).astype(x.dtype)


class _ResidualEncoder(nn.Module):
    """A 1-D residual network over one stream ``[B, T]`` ending in global average pooling."""

    channels: tuple[int, ...]
    train: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        bn = lambda **kw: nn.BatchNorm(use_running_average=not self.train, **kw)
        h = x[..., None]
        for c in self.channels:
            h = nn.relu(bn()(_Conv1D(c, 7, stride=2)(h)))
            r = nn.relu(bn()(_Conv1D(c, 3)(h)))
            r = bn(scale_init=nn.initializers.zeros)(_Conv1D(c, 3)(r))
            h = nn.relu(h + r)
        return jnp.mean(h, axis=-2)


# One perception block per stream, with the streams' parameters and BatchNorm
# statistics stacked on a leading axis: the same network as S separate encoders,
# traced (and compiled) once instead of S times.
_StreamEncoders = nn.vmap(
    _ResidualEncoder,
    in_axes=1,
    out_axes=1,
    variable_axes={"params": 0, "batch_stats": 0},
    split_rngs={"params": True},
)


class _TaskDense(nn.Module):
    """``K`` independent affine maps: ``[B, K, d] -> [B, K, f]`` (or ``[B, d]`` shared input)."""

    num_tasks: int
    features: int
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        kernel = self.param("kernel", init, (self.num_tasks, d, self.features))
        bias = self.param("bias", self.bias_init, (self.num_tasks, self.features))
        if x.ndim == 2:
            return jnp.einsum("bd,kdf->bkf", x, kernel) + bias[None]
        return jnp.einsum("bkd,kdf->bkf", x, kernel) + bias[None]


def _highway(x, gate_bias, dense):
    """``T ⊙ relu(W_h x) + (1 - T) ⊙ x`` with ``T = σ(W_t x + b_t)``, ``b_t`` init ``gate_bias``."""
    h = nn.relu(dense(x.shape[-1], nn.initializers.zeros)(x))
    gate = nn.sigmoid(dense(x.shape[-1], nn.initializers.constant(gate_bias))(x))
    return gate * h + (1.0 - gate) * x


class DSMTNet(nn.Module):
    r"""A distantly supervised multi-task network (DSMT-Net).

    Each of the ``S`` streams passes its own perception block (a 1-D residual
    network with ``channels`` stages ending in global average pooling); the
    stream representations are concatenated with the ``S`` missing-stream
    indicators into :math:`r`. With ``aux_mode="blocks"`` each auxiliary task
    :math:`k` has its own block

    .. math::
       h_k = \mathrm{Highway}(\mathrm{Dropout}(\mathrm{ReLU}(\mathrm{BN}(W_k r)))),
       \quad \hat a_k = v_k^\top (h_k + \epsilon), \ \epsilon \sim \mathcal N(0, s^2)

    (the highway gate bias starts at ``gate_bias`` < 0, so the block starts
    close to the identity; the noise acts in training only). The main head reads
    :math:`[r, h_1, \dots, h_K]` through Dense(2·units) → BN → ReLU → Dropout →
    Highway → Dense(1) and gives the logit of a true alarm. ``aux_mode="naive"``
    is the naive multi-task baseline: one shared hidden block with all ``K``
    auxiliary outputs on one layer. ``num_aux_tasks=0`` is the plain supervised
    network.

    Dropout needs the ``"dropout"`` RNG and the noise the ``"noise"`` RNG when
    ``train=True``; BatchNorm keeps its running statistics in the mutable
    ``"batch_stats"`` collection.

    Schwab et al., "Not to Cry Wolf: Distantly Supervised Multitask Learning in
    Critical Care", ICML 2018, https://arxiv.org/abs/1802.05027.

    Attributes:
      num_aux_tasks: ``K >= 0``.
      channels: channels of the perception blocks' residual stages.
      units: hidden units of each auxiliary block (the head uses ``2 * units``).
      dropout_rate: dropout rate of the auxiliary blocks and the head.
      noise_std: standard deviation ``s`` of the auxiliary blocks' Gaussian noise.
      gate_bias: initial bias of the highway gates.
      aux_mode: ``"blocks"`` (DSMT-Net) or ``"naive"`` (all outputs on one layer).
    """

    num_aux_tasks: int
    channels: tuple[int, ...] = (16, 32)
    units: int = 16
    dropout_rate: float = 0.2
    noise_std: float = 0.35
    gate_bias: float = -3.0
    aux_mode: str = "blocks"

    def _check(self):
        if not isinstance(self.num_aux_tasks, int) or self.num_aux_tasks < 0:
            raise ValueError(f"num_aux_tasks must be an int >= 0; got {self.num_aux_tasks!r}")
        if self.aux_mode not in ("blocks", "naive"):
            raise ValueError(f"aux_mode must be 'blocks' or 'naive'; got {self.aux_mode!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1); got {self.dropout_rate}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0; got {self.noise_std}")

    @nn.compact
    def __call__(
        self, windows: jax.Array, missing: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """Applies the network.

        Args:
          windows: ``[B, S, T]`` stream samples.
          missing: ``[B, S]`` missing-stream indicators (1 = absent).
          train: training mode (batch statistics, dropout and noise).

        Returns:
          ``(logit [B], aux [B, K])``: the main output's logit and the auxiliary
          predictions.
        """
        self._check()
        if windows.ndim != 3 or missing.shape != windows.shape[:2]:
            raise ValueError(
                f"windows must be [B, S, T] and missing [B, S]; got {windows.shape}, "
                f"{missing.shape}"
            )
        k = self.num_aux_tasks
        reps = _StreamEncoders(self.channels, train, name="streams")(windows)  # [B, S, C]
        r = jnp.concatenate(
            [reps.reshape(reps.shape[0], -1), missing.astype(windows.dtype)], axis=-1
        )
        bn = lambda: nn.BatchNorm(use_running_average=not train)
        drop = lambda h: nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        head_in = [r]
        aux = jnp.zeros((windows.shape[0], 0), windows.dtype)
        if k and self.aux_mode == "blocks":
            h = _TaskDense(k, self.units, name="aux_dense")(r)  # [B, K, U]
            h = drop(nn.relu(bn()(h)))
            dense = lambda f, b: _TaskDense(k, f, bias_init=b)
            h = _highway(h, self.gate_bias, dense)
            head_in.append(h.reshape(h.shape[0], -1))
            if train and self.noise_std > 0:
                h = h + self.noise_std * jax.random.normal(self.make_rng("noise"), h.shape)
            aux = _TaskDense(k, 1, name="aux_out")(h)[..., 0]
        elif k:
            h = drop(nn.relu(bn()(nn.Dense(self.units, name="aux_dense")(r))))
            h = _highway(h, self.gate_bias, lambda f, b: nn.Dense(f, bias_init=b))
            head_in.append(h)
            if train and self.noise_std > 0:
                h = h + self.noise_std * jax.random.normal(self.make_rng("noise"), h.shape)
            aux = nn.Dense(k, name="aux_out")(h)
        z = jnp.concatenate(head_in, axis=-1)
        z = drop(nn.relu(bn()(nn.Dense(2 * self.units, name="head_dense")(z))))
        z = _highway(z, self.gate_bias, lambda f, b: nn.Dense(f, bias_init=b))
        logit = nn.Dense(1, name="head_out")(z)[:, 0]
        return logit, aux


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
      model: the :class:`DSMTNet`.
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
