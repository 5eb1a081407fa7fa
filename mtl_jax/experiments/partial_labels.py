"""Partially labelled tasks: the naive masked mean against presence-aware balancing.

Each task of MultiDigits (``left``, ``right``) and DigitsAttributes (``odd``,
``ge5``, ``prime``, ``loop``) keeps its label on a random fraction of the
training examples, drawn per seed and independently per task: the fractions
:data:`FRACTIONS` (100 %, 10 %, 30 %) cycle over the tasks, so ``right`` is
labelled on 10 % of MultiDigits and ``ge5`` on 10 %, ``prime`` on 30 % of
DigitsAttributes. Batches are small (:data:`BATCH` = 8), so a task labelled on
10 % of the examples has no label at all in ``0.9^8 ≈ 43 %`` of the batches.
A hard-parameter-sharing MLP is trained with equal weighting, MGDA
(https://arxiv.org/abs/1810.04650), UPGrad (https://arxiv.org/abs/2406.16232)
and GradNorm (https://arxiv.org/abs/1711.02257) (the fast form: MGDA only, the
balancer of the claim), each in two variants:

* ``naive``: the per-task loss is the masked mean
  ``(ce * mask).sum(0) / max(mask.sum(0), 1)`` and every task counts as present;
  a task with no label in the batch enters the balancer with loss 0 and a zero
  gradient, which MGDA's min-norm problem then picks (a zero update) and
  GradNorm's weight update reads as a zero loss ratio and a zero gradient norm.
* ``presence``: the loss returns :func:`mtl_jax.masked_task_losses`, so the
  training step tells the balancer which tasks are present; an absent task gets
  weight 0 and is left out of the balancer's problem and its state update.

Unlabelled entries carry the placeholder label 0 (a valid class), so both
variants see only finite per-example losses. The test accuracy of every task is
measured on the fully labelled test split.

**Claim checked** (:data:`CLAIM`, declared before running as :data:`PART`):
presence-aware MGDA beats naive MGDA when some tasks are sparsely labelled.
Statistic: per seed, the test accuracy averaged over the six tasks of both
datasets; a one-sided paired t-test over the seeds at level :data:`ALPHA`
through the experiments' shared verdict (``held`` when it rejects, ``not held``
when presence-aware MGDA is significantly worse, ``inconclusive`` otherwise). The
fast form records the test but cannot decide it: in the full form the effect's
sign depends on training length. The other balancers' and each dataset's paired
tests are reported in the summary, without a verdict.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtl_jax as mtl
from mtl_jax import balancers, models, training
from mtl_jax.experiments import _data, _plots, _verdict
from mtl_jax.experiments._registry import ExperimentResult, progress, register, seeds_from

__all__ = ["BALANCERS", "CLAIM", "PART", "FRACTIONS", "VARIANTS", "compare", "label_masks", "run"]

DATASETS = ("multi_digits", "digits_attributes")
BALANCERS = ("ew", "mgda", "upgrad", "gradnorm")
#: The fast form runs only the balancer of the claim (CI: about half a minute of CPU time).
FAST_BALANCERS = ("mgda",)
VARIANTS = ("naive", "presence")
#: Fraction of the training examples labelled for task ``k``: ``FRACTIONS[k % 3]``.
FRACTIONS = (1.0, 0.1, 0.3)
BATCH = 8
LEARNING_RATE = 3e-3
# (training steps, seeds) of the fast and full forms.
FAST = (150, 3)
FULL = (1500, 5)
#: Level of the one-sided paired t-test.
ALPHA = 0.05
#: The balancer whose presence-aware variant the claim is about.
CLAIM_BALANCER = "mgda"
CLAIM = (
    "Presence-aware MGDA beats naive MGDA (masked mean, every task present) when some "
    "tasks are sparsely labelled: per-seed test accuracy averaged over the tasks of "
    "MultiDigits and DigitsAttributes is higher (one-sided paired t-test over seeds, "
    f"level {ALPHA})."
)
#: The claim as a declared comparison over seeds: presence-aware minus naive MGDA, the
#: per-seed test accuracy averaged over the six tasks. ``sd``: the spread of that paired
#: difference in the first full run (seeds 0-4: 0.016), rounded up.
PART = _verdict.ClaimPart(
    "presence-aware MGDA - naive MGDA test accuracy (mean over the six tasks) > 0",
    alpha=ALPHA,
    sd=0.02,
)


def label_masks(num_examples: int, num_tasks: int, *, seed: int) -> np.ndarray:
    """Which training examples keep each task's label: ``[N, K]`` bool.

    Task ``k`` is labelled on ``round(FRACTIONS[k % 3] * N)`` examples (at least
    one) drawn without replacement, independently per task.

    Args:
      num_examples: ``N``, the number of training examples.
      num_tasks: ``K``.
      seed: seeds the draw.

    Returns:
      The ``[N, K]`` label mask.
    """
    if num_examples < 1 or num_tasks < 1:
        raise ValueError(
            f"num_examples and num_tasks must be >= 1, got {num_examples} and {num_tasks}"
        )
    rng = np.random.default_rng([seed, 22])
    mask = np.zeros((num_examples, num_tasks), bool)
    for k in range(num_tasks):
        n = max(1, round(FRACTIONS[k % len(FRACTIONS)] * num_examples))
        mask[rng.choice(num_examples, n, replace=False), k] = True
    return mask


def _balancer(name: str, k: int, mask) -> balancers.Balancer:
    """The balancer ``name`` (``"ew"`` for equal weighting) from the one registry."""
    if name not in BALANCERS:
        raise ValueError(f"unknown balancer {name!r}; choose from {BALANCERS}")
    full = "equal_weighting" if name == "ew" else name
    return balancers.make(full, num_tasks=k, shared=mask)


def make_loss_fn(model: nn.Module, variant: str = "batch"):
    """The step's loss: per-task cross-entropy over each task's labelled examples.

    Args:
      model: a multi-task model returning ``[K, B, C]`` logits.
      variant: ``"naive"`` returns the ``[K]`` masked means
        ``(ce * mask).sum(0) / max(mask.sum(0), 1)`` (a task without a label in
        the batch gets loss 0 and still counts as present); ``"presence"``
        returns :func:`mtl_jax.masked_task_losses` (the same losses, and which
        tasks are present); ``"batch"`` reads the choice from the batch's
        ``"aware"`` ``[B]`` bool (its first entry): presence-aware where true,
        else the naive masked mean with every task present, as a
        :class:`~mtl_jax.TaskLosses` whose ``present`` is all true (the same step
        as the naive losses array). ``"batch"`` lets both variants share one
        compiled program.

    Returns:
      ``loss_fn(params, batch)`` for :func:`mtl_jax.training.make_train_step`;
      ``batch`` holds ``"x"``, ``"y"`` ``[B, K]`` and ``"mask"`` ``[B, K]``.
    """
    if variant not in (*VARIANTS, "batch"):
        raise ValueError(f"variant must be one of {(*VARIANTS, 'batch')}, got {variant!r}")

    def loss_fn(params, batch):
        logits = model.apply(params, batch["x"])  # [K, B, C]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"].T).T  # [B, K]
        if variant == "naive":
            m = batch["mask"].astype(ce.dtype)
            return (ce * m).sum(0) / jnp.maximum(m.sum(0), 1.0)
        out = mtl.masked_task_losses(ce, batch["mask"])
        if variant == "presence":
            return out
        return mtl.TaskLosses(out.losses, out.present | ~batch["aware"][0])

    return loss_fn


def _stack(sets, attr):
    return jnp.asarray(np.stack([getattr(ds, attr) for ds in sets]))


def compare(
    dataset: str,
    *,
    balancer_names: Sequence[str] = BALANCERS,
    variants: Sequence[str] = VARIANTS,
    seeds: Sequence[int] = (0, 1, 2),
    num_iters: int = 150,
    data_dir: str | os.PathLike | None = None,
    quiet: bool = False,
) -> list[dict]:
    """Trains every balancer × variant on the partially labelled ``dataset`` for each seed.

    Both variants and all seeds of a balancer run together under one ``vmap``
    (one compiled program); each seed has its own data split, label masks,
    initialisation and batches, shared by every cell (paired over seeds).

    Args:
      dataset: ``"multi_digits"`` or ``"digits_attributes"``.
      balancer_names: names from :data:`BALANCERS`.
      variants: names from :data:`VARIANTS`.
      seeds: one run per seed.
      num_iters: Adam steps of batch :data:`BATCH`.

    Returns:
      One dict per (balancer, variant) with ``accuracy`` ``[seeds, K]`` test
      accuracies and ``weights`` ``[seeds, K]``, the mean task weights applied.
    """
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if not variants or any(v not in VARIANTS for v in variants):
        raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {variants!r}")
    sets = [
        _data.multitask_digits(
            dataset, seed=s, num_train=4000, num_test=1000, data_dir=data_dir, quiet=quiet
        )
        for s in seeds
    ]
    first = sets[0]
    k, c, n = len(first.task_names), first.num_classes[0], len(first.y_train)
    if any(len(ds.y_train) != n or len(ds.y_test) != len(first.y_test) for ds in sets):
        raise ValueError(f"{dataset}: the seeds' splits differ in size")
    masks = np.stack([label_masks(n, k, seed=s) for s in seeds])  # [S, N, K]
    y_tr = np.where(masks, np.stack([ds.y_train for ds in sets]), 0)  # placeholder label 0
    idx = np.stack([np.random.default_rng(s).integers(0, n, (num_iters, BATCH)) for s in seeds])
    absent = ~np.take_along_axis(masks, idx.reshape(len(seeds), -1, 1), 1)
    absent = absent.reshape(len(seeds), num_iters, BATCH, k).all(axis=2).mean(axis=(0, 1))
    x_tr, x_te = _stack(sets, "x_train"), _stack(sets, "x_test")
    y_te = np.stack([ds.y_test for ds in sets])  # [S, M, K]
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])

    model = models.HardParameterSharing(models.MLPTrunk((64, 32)), num_tasks=k, head_features=c)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x_tr[0, :1])
    shared = model.shared_mask(shapes)
    rows = []
    # Both variants of a balancer share one compiled program: (variant, seed) pairs under vmap.
    reps = len(variants)
    tile = lambda a: jnp.concatenate([jnp.asarray(a)] * reps)
    aware = jnp.repeat(jnp.asarray([v == "presence" for v in variants]), len(seeds))
    args = (tile(keys), tile(x_tr), tile(y_tr), tile(masks), tile(idx), tile(x_te), aware)
    for bname in progress(balancer_names, f"partial-labels {dataset}"):
        step = training.make_train_step(
            make_loss_fn(model, "batch"),
            _balancer(bname, k, shared),
            optax.adam(LEARNING_RATE),
            jit=False,
        )

        def one_run(key, x, y, m, ix, xte, aware, step=step):
            init_key, step_key = jax.random.split(jax.random.wrap_key_data(key))
            state = step.init(model.init(init_key, x[:1]), key=step_key)
            flag = jnp.full((BATCH,), aware)

            def body(state, i):
                batch = {"x": x[i], "y": y[i], "mask": m[i], "aware": flag}
                state, metrics = step.step(state, batch)
                return state, metrics["weights"]

            state, weights = jax.lax.scan(body, state, ix)
            return jnp.argmax(model.apply(state.params, xte), axis=-1), weights.mean(0)

        pred, weights = jax.jit(jax.vmap(one_run))(*args)
        pred = np.asarray(pred).reshape(reps, len(seeds), k, -1)
        weights = np.asarray(weights).reshape(reps, len(seeds), k)
        for j, variant in enumerate(variants):
            acc = np.mean(pred[j] == np.moveaxis(y_te, 1, 2), axis=2)  # [S, K]
            rows.append(
                {
                    "dataset": dataset,
                    "balancer": bname,
                    "variant": variant,
                    "accuracy": acc,
                    "weights": weights[j],
                    "task_names": first.task_names,
                    "fractions": [FRACTIONS[t % len(FRACTIONS)] for t in range(k)],
                    "absent_rate": absent,
                }
            )
            print(
                f"  {dataset:17s} {bname:8s} {variant:8s} acc {acc.mean():.3f}  per task "
                + " ".join(f"{a:.3f}" for a in acc.mean(0))
            )
    return rows


def _compare(label: str, presence: np.ndarray, naive: np.ndarray) -> dict:
    """The paired test of ``presence > naive`` (a secondary comparison, no claim)."""
    part = _verdict.ClaimPart(f"{label}: presence-aware - naive test accuracy > 0", alpha=ALPHA)
    return part.test(presence, naive)


@register(
    "partial-labels",
    help="partially labelled tasks: naive masked mean vs presence-aware EW/MGDA/UPGrad/GradNorm",
    claim=CLAIM,
    num_seeds=(FAST[1], FULL[1]),
    parts=(PART,),
)
def run(
    *,
    fast: bool,
    out_dir: pathlib.Path,
    seed: int,
    data_dir: str | os.PathLike | None = None,
    quiet: bool = False,
) -> ExperimentResult:
    """Partially labelled MultiDigits and DigitsAttributes: each balancer with the naive
    masked mean against presence-aware balancing (:func:`mtl_jax.masked_task_losses`).
    """
    num_iters, n_seeds = FAST if fast else FULL
    seeds = seeds_from(seed, n_seeds)
    names = FAST_BALANCERS if fast else BALANCERS
    rows = []
    for ds in DATASETS:
        rows += compare(
            ds,
            balancer_names=names,
            seeds=seeds,
            num_iters=num_iters,
            data_dir=data_dir,
            quiet=quiet,
        )
    return _result(rows, seeds, num_iters, pathlib.Path(out_dir), fast=fast)


def _result(rows, seeds, num_iters, out_dir: pathlib.Path, *, fast: bool) -> ExperimentResult:
    table, per_seed = [], {}
    for r in rows:
        acc = r["accuracy"]  # [S, K]
        cell = f"{r['dataset']}/{r['balancer']}/{r['variant']}"
        per_seed[cell] = [float(a) for a in acc.mean(axis=1)]
        for t, name in enumerate(r["task_names"]):
            per_seed[f"{cell}/{name}"] = [float(a) for a in acc[:, t]]
        mean_task = acc.mean(axis=1)
        std = float(mean_task.std(ddof=1)) if len(mean_task) > 1 else 0.0
        table.append(
            [
                r["dataset"],
                r["balancer"],
                r["variant"],
                f"{mean_task.mean():.3f} ± {std:.3f}",
                " ".join(
                    f"{n}({f:.0%}) {a:.3f}"
                    for n, f, a in zip(r["task_names"], r["fractions"], acc.mean(0))
                ),
                " ".join(f"{w:.2f}" for w in r["weights"].mean(0)),
            ]
        )
    # Per seed: accuracy averaged over every task of every dataset, per balancer x variant.
    pooled = {}
    for b in dict.fromkeys(r["balancer"] for r in rows):
        for v in VARIANTS:
            accs = [r["accuracy"] for r in rows if r["balancer"] == b and r["variant"] == v]
            if accs:
                pooled[(b, v)] = np.concatenate(accs, axis=1).mean(axis=1)
    balancers_run = [
        b
        for b in dict.fromkeys(r["balancer"] for r in rows)
        if (b, "presence") in pooled and (b, "naive") in pooled
    ]
    untestable = (
        f"fast form ({num_iters} steps, {len(seeds)} seeds, MGDA only) cannot test the claim: "
        "the effect's sign depends on training length; run --full"
        if fast
        else None
    )
    if CLAIM_BALANCER in balancers_run:
        a, b = pooled[(CLAIM_BALANCER, "presence")], pooled[(CLAIM_BALANCER, "naive")]
        claims = [PART.test(a, b, untestable=untestable)]
    else:
        claims = [_verdict.not_tested(PART, f"{CLAIM_BALANCER} was not run in both variants")]
    summary = {
        "metric": "per-seed test accuracy averaged over the tasks of both datasets",
        # Secondary (no verdict on the claim): the other balancers, and each dataset alone.
        "other_balancers": {
            b: _compare(b, pooled[(b, "presence")], pooled[(b, "naive")])
            for b in balancers_run
            if b != CLAIM_BALANCER
        },
        "per_dataset": {
            ds: {
                b: _compare(
                    f"{ds}, {b}",
                    _cell(rows, ds, b, "presence").mean(axis=1),
                    _cell(rows, ds, b, "naive").mean(axis=1),
                )
                for b in balancers_run
            }
            for ds in dict.fromkeys(r["dataset"] for r in rows)
        },
        "label_fractions": {r["dataset"]: dict(zip(r["task_names"], r["fractions"])) for r in rows},
        "absent_rate": {
            r["dataset"]: dict(zip(r["task_names"], map(float, r["absent_rate"]))) for r in rows
        },
    }
    png = _plot(rows, out_dir / "partial_labels.png")
    return ExperimentResult(
        title=(
            f"Partially labelled tasks (label fractions {FRACTIONS} cycling over tasks), "
            f"{num_iters} Adam steps of batch {BATCH}, {len(seeds)} seeds: test accuracy "
            "(mean over tasks ± std over seeds), per task, mean weights"
        ),
        columns=["dataset", "balancer", "variant", "accuracy", "per task", "mean weights"],
        rows=table,
        files=[png],
        seeds=list(seeds),
        metric="test accuracy, mean over tasks",
        per_seed=per_seed,
        summary=summary,
        claim=CLAIM,
        claim_held=_verdict.claim_held(claims),
        claims=claims,
    )


def _cell(rows, dataset, balancer, variant) -> np.ndarray:
    return next(
        r["accuracy"]
        for r in rows
        if (r["dataset"], r["balancer"], r["variant"]) == (dataset, balancer, variant)
    )


def _plot(rows, path: pathlib.Path) -> pathlib.Path:
    plt = _plots.pyplot()
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 3.8), squeeze=False)
    colors = {"naive": "tab:gray", "presence": "tab:blue"}
    for ax, ds in zip(axes[0], datasets):
        sub = [r for r in rows if r["dataset"] == ds]
        bals = list(dict.fromkeys(r["balancer"] for r in sub))
        for j, v in enumerate(VARIANTS):
            cells = [r for b in bals for r in sub if r["balancer"] == b and r["variant"] == v]
            if not cells:
                continue
            per = [np.asarray(r["accuracy"]).mean(axis=1) for r in cells]
            xs = np.arange(len(cells)) + (j - 0.5) * 0.25
            _plots.dots_and_intervals(ax, xs, per, color=colors[v], label=v, seed_offset=0.06)
        ax.set_xticks(np.arange(len(bals)), bals)
        ax.set_xlabel("balancer")
        ax.set_ylabel("test accuracy (mean over tasks)")
        ax.set_title(ds)
        ax.legend(title="variant", fontsize=8)
    fig.suptitle(f"Partially labelled tasks: {_plots.AGGREGATE}", fontsize=10)
    return _plots.save(fig, path, dpi=90)
