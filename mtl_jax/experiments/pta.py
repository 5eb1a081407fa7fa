"""Reproduction of pseudo-task augmentation (Meyerson & Miikkulainen, ICML 2018).

https://arxiv.org/abs/1803.04062. Two claims, on scikit-learn's real digits read
through the TFDS builder ``digits_attributes`` (:class:`mtl_jax.data.DigitsAttributes`,
both of its splits pooled: 1,797 images, a 10-class label and six binary attributes).

**Regime.** The paper's Omniglot protocol is a fixed random 50/20/30 %
train/validation/test split of every task (read in the paper's experimental
setup); an Omniglot character has 20 drawings, so a model trains on 10 and selects
on 4 drawings per class. We give the digits the same per-class budget: for every
seed, a stratified draw of 10 training and 4 validation images per class, and the
test set is *all* the remaining 1,657 images (a larger test set than the paper's
30 % only lowers the measurement noise). The earlier form of this experiment
trained on half of the digits (~90 per class), where the error is ≈ 2 % and no
variant differed beyond the seed spread; the small-data regime is where the paper
argues that pseudo-tasks regularise the shared model. A seed draws the split, the
initialisation, the minibatches and the perturbations, and every method sees the
same ones for a given seed (the trunk's initialisation, the batches and the split
are shared), so methods are compared *paired* across seeds.

(a) **Single task** (10-way digit classification): an MLP trunk (64-128-64, ReLU)
with ``D`` affine decoders, ``D ∈ {1, 2, 4, 8}`` (fast form: ``{1, 4}``), under each
control strategy: ``I`` independent decoders, no update; ``F`` independent
decoders, half of them frozen; ``P`` greedy copy of the best decoder plus Gaussian
perturbation of the others (std 0.01); ``HGD`` greedy copy plus hyperperturbation
of per-decoder input dropout (initial rate 0.2, Gaussian steps of std 0.05, clipped
to ``[0, 0.7]``). ``D = 1`` is single-task learning (STL); ``HGD`` at ``D = 1``
(full form) is STL with the same dropout, a control for the dropout alone.

(b) **PTA + MTL** on the six attributes: STL (one network per attribute; full form
only), MTL (shared trunk, one decoder per attribute) and MTL + PTA (shared trunk,
``D = 4`` decoders per attribute, ``HGD``). Metric: mean attribute error.

Every run trains with Adam (learning rate 1e-3, batch 32) on the ``[K·D]``
pseudo-task loss vector (equal weighting) through
:func:`mtl_jax.models.make_pta_driver`, ``M = 20`` steps per meta-iteration. After
each meta-iteration every task's decoder is selected on validation accuracy; the
reported test error of a task is that of its selected decoder at the
meta-iteration whose validation accuracy was highest (early stopping on
validation, the latest one among ties), the same rule for every method. The
strategies' exact rules and scales are our choices (see
:mod:`mtl_jax.models._pta_control`): they were fixed before these runs and not
tuned to any seed.

**Speed.** One compiled program per ``(K, D, classes, strategy)``: ``P`` and ``HGD``
are both the ``"hyperperturb"`` program (``P`` with zero dropout is exactly the
``"perturb"`` strategy), ``I`` and ``F`` both the ``"none"`` program, and each
program ``vmap``s over every (variant, seed) pair, initialisation included.

**Claims checked** (``claim_held``): (a) every ``D = 4`` variant has a lower mean
test error than STL and at least half of them are better by a one-sided paired
t-test at 5 % over the seeds; (b) MTL + PTA is better than MTL by the same test.
The paper's own numbers, for reference: CelebA error 8.00 % (previous state of the
art) → 7.94 % with PTA + MTL (read in the authors' summary; the Omniglot and IMDB
tables could not be read).
"""

from __future__ import annotations

import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax import balancers
from mtl_jax import models as M
from mtl_jax.experiments._registry import ExperimentResult, progress, register, seeds_from

__all__ = ["load_digits_attributes", "run", "small_data_split"]

CLAIM = (
    "Pseudo-task augmentation (several decoders per task) improves single-task "
    "performance, and combined with multitask learning it improves further "
    "(MTL + PTA beats MTL)."
)

#: Training images and validation images per class (the paper's 50 % / 20 % of
#: an Omniglot character's 20 drawings).
NUM_TRAIN_PER_CLASS = 10
NUM_VAL_PER_CLASS = 4

# Variants: name -> (strategy, per-run overrides of make_pta_driver's values).
# ``num_frozen`` is a fraction of D here (resolved per D).
_VARIANTS = {
    "I": ("none", dict(num_frozen=0.0)),
    "F": ("none", dict(num_frozen=0.5)),
    "P": ("hyperperturb", dict(perturbation_scale=0.01, dropout_rate=0.0, dropout_scale=0.0)),
    "HGD": ("hyperperturb", dict(perturbation_scale=0.0, dropout_rate=0.2, dropout_scale=0.05)),
}
_MAX_DROPOUT = 0.7
_LEARNING_RATE = 1e-3
_STEPS, _BATCH = 20, 32
# The rbg PRNG and no non-finite guard (cross-entropy on these data stays finite)
# compile about 3x faster on CPU than threefry with the guard.
_KEY_IMPL = "rbg"


def load_digits_attributes(data_dir=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """All 1,797 digits of the TFDS ``digits_attributes`` builder (train and test pooled).

    Args:
      data_dir: the TFDS cache directory (``None``: :func:`mtl_jax.data.default_data_dir`).

    Returns:
      ``(x [N, 64] float32, labels [N] int32, attributes [N, A] int32, names)``,
      the attributes in the sorted order of their ``names``.
    """
    from mtl_jax import data

    recs = []
    for split in ("train", "test"):
        src = data.data_source("digits_attributes", split=split, data_dir=data_dir)
        recs += [src[i] for i in range(len(src))]
    names = tuple(sorted(recs[0]["attributes"]))
    x = np.stack([np.asarray(r["image"], np.float32).reshape(-1) for r in recs])
    y = np.asarray([int(r["label"]) for r in recs], np.int32)
    a = np.asarray([[int(r["attributes"][n]) for n in names] for r in recs], np.int32)
    return x, y, a, names


def small_data_split(labels: np.ndarray, seed: int, *, num_train: int, num_val: int):
    """A stratified draw of ``num_train`` + ``num_val`` images per class; the rest is test.

    Args:
      labels: ``[N]`` class labels.
      seed: seeds the draw.
      num_train: training images per class.
      num_val: validation images per class.

    Returns:
      ``(train, val, test)`` index arrays (sorted), disjoint and covering ``0..N-1``.

    Raises:
      ValueError: a class has fewer than ``num_train + num_val + 1`` images.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 1803])
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= num_train + num_val:
            raise ValueError(
                f"class {c} has {len(idx)} images, need more than num_train + num_val = "
                f"{num_train + num_val}"
            )
        pick = rng.permutation(idx)
        train.append(pick[:num_train])
        val.append(pick[num_train : num_train + num_val])
    train, val = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    test = np.setdiff1d(np.arange(len(labels)), np.concatenate([train, val]))
    return train, val, test


class _Net(nn.Module):
    num_tasks: int
    num_decoders: int
    num_classes: int
    width: int = 64

    def setup(self):
        self.trunk = nn.Sequential(
            [nn.Dense(2 * self.width), nn.relu, nn.Dense(self.width), nn.relu]
        )
        self.heads = M.PseudoTaskHeads(self.num_tasks, self.num_decoders, self.num_classes)

    def __call__(self, x, rates=None, deterministic=True):
        return self.heads(self.trunk(x), rates, deterministic=deterministic)


@functools.cache
def _program(k: int, n: int, c: int, strategy: str, num_meta: int):
    """``run(x, keys, hyper, y, val, test, batches) -> test errors [R, K]``, jitted.

    Vmapped over runs ``R`` (variant × seed): raw ``keys [R, 2]``, ``hyper`` (dict
    of ``[R]`` driver overrides), ``y [R, N, K]``, validation and test indices
    ``[R, ·]``, training minibatch indices ``batches [R, meta, M, B]``.
    """
    net = _Net(k, n, c)
    dropout = strategy == "hyperperturb"  # the other programs never drop out

    def run_one(x, key, hyper, y, val, test, batches):
        k_init, k_drv = jax.random.split(jax.random.wrap_key_data(key, impl=_KEY_IMPL))

        def loss_fn(p, idx, rates, kk):
            rates = rates if dropout else None
            logits = net.apply(p, x[idx], rates, False, rngs={"dropout": kk})
            return M.pseudo_task_losses(logits, y[idx])

        def score_fn(p):
            return M.decoder_accuracy(net.apply(p, x[val]), y[val])

        drv = M.make_pta_driver(
            loss_fn, score_fn, balancers.equal_weighting(), optax.adam(_LEARNING_RATE),
            num_tasks=k, num_decoders=n, num_steps=_STEPS, strategy=strategy,
            max_dropout=_MAX_DROPOUT, key_impl=_KEY_IMPL, on_nonfinite="ignore", jit=False,
        )  # fmt: skip
        state = drv.init(net.init(k_init, x[:2]), k_drv, **hyper)

        def meta(state, b):
            state, metrics = drv.meta_step(state, b)
            val_acc = jnp.max(metrics["scores"], axis=-1)  # [K], the selected decoders
            logits = M.selected_logits(net.apply(state.train.params, x[test]), state.best)
            err = jnp.mean(jnp.argmax(logits, -1) != y[test].T, axis=-1)  # [K]
            return state, (val_acc, err)

        _, (val_acc, err) = jax.lax.scan(meta, state, batches)  # [meta, K] each
        last_best = num_meta - 1 - jnp.argmax(val_acc[::-1], axis=0)  # latest among ties
        return jnp.take_along_axis(err, last_best[None], axis=0)[0]

    fn = jax.vmap(run_one, in_axes=(None, 0, 0, 0, 0, 0, 0))
    return jax.jit(fn)


def _train_eval(x, y, splits, seeds, *, k, n, c, variants, num_meta):
    """Test errors ``[len(variants), S, K]`` of every variant (same strategy) and seed."""
    strategy = {_VARIANTS[v][0] for v in variants}
    assert len(strategy) == 1, variants
    strategy = strategy.pop()
    s_count = len(seeds)
    keys, hyper, ys, vals, tests, batches = [], [], [], [], [], []
    for v in variants:
        over = dict(_VARIANTS[v][1])
        if "num_frozen" in over:
            over["num_frozen"] = int(over["num_frozen"] * n) if n > 1 else 0
        for s, (tr, va, te), ys_s in zip(seeds, splits, y):
            keys.append(jax.random.key_data(jax.random.key(s, impl=_KEY_IMPL)))
            hyper.append(over)
            ys.append(ys_s)
            vals.append(va)
            tests.append(te)
            rng = np.random.default_rng([s, 7])  # the same batches for every variant
            batches.append(tr[rng.integers(0, len(tr), (num_meta, _STEPS, _BATCH))])
    hyper = {name: np.asarray([h[name] for h in hyper]) for name in hyper[0]}
    hyper = {
        name: v.astype(np.int32) if name == "num_frozen" else v.astype(np.float32)
        for name, v in hyper.items()
    }
    args = [np.stack(a) for a in (keys, ys, vals, tests, batches)]
    fn = _program(k, n, c, strategy, num_meta)
    keys_, ys_, vals_, tests_, batches_ = (jnp.asarray(a) for a in args)
    hyper_ = {name: jnp.asarray(v) for name, v in hyper.items()}
    err = fn(jnp.asarray(x), keys_, hyper_, ys_, vals_, tests_, batches_)
    return np.asarray(err).reshape(len(variants), s_count, k)


def _mean_std(v):
    v = np.asarray(v, np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _paired(base, other):
    """Paired improvement ``base - other`` (points): mean, std, t statistic, one-sided p."""
    from scipy import stats

    d = np.asarray(base, np.float64) - np.asarray(other, np.float64)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        t = np.inf if mean > 0 else (-np.inf if mean < 0 else 0.0)
    else:
        t = mean / (sd / np.sqrt(d.size))
    p = float(stats.t.sf(t, d.size - 1))
    return {"mean": mean, "std": sd, "t": float(t), "p": p}


@register("pta", help="pseudo-task augmentation on small-data digits: single task and with MTL",
          claim=CLAIM, num_seeds=(5, 20))  # fmt: skip
def run(*, fast: bool, out_dir: pathlib.Path, seed: int = 0) -> ExperimentResult:
    """Pseudo-task augmentation (Meyerson & Miikkulainen 2018) on digits: STL and MTL."""
    seeds = seeds_from(seed, 5 if fast else 20)
    num_meta = 40  # 800 steps; the fast form has fewer seeds and variants, same training
    x, labels, attrs, names = load_digits_attributes()
    splits = [
        small_data_split(labels, s, num_train=NUM_TRAIN_PER_CLASS, num_val=NUM_VAL_PER_CLASS)
        for s in seeds
    ]
    per_seed: dict[str, list[float]] = {}

    def record(name, err):  # err [S, K] fractions -> mean over tasks, in %
        per_seed[name] = [100 * float(e) for e in np.asarray(err).mean(axis=1)]

    # (a) single task
    y1 = [labels[:, None]] * len(seeds)
    decoders = (4,) if fast else (2, 4, 8)
    groups = [("STL (D=1)", 1, ["I"])]
    if not fast:
        groups.append(("HGD D=1", 1, ["HGD"]))
    for n in decoders:  # the fast form runs the HGD program only (compile time)
        groups += [(None, n, ["HGD"])] if fast else [(None, n, ["I", "F"]), (None, n, ["P", "HGD"])]
    for name, n, variants in progress(groups, "pta single-task"):
        err = _train_eval(
            x, y1, splits, seeds, k=1, n=n, c=10, variants=variants, num_meta=num_meta
        )
        for i, v in enumerate(variants):
            record(name or f"{v} D={n}", err[i])

    # (b) with multitask learning on the attributes
    k = attrs.shape[1]
    ya = [attrs] * len(seeds)
    if not fast:  # STL: one network per attribute, all vmapped in one program
        stl = np.zeros((len(seeds), k))
        for t in progress(range(k), "pta attributes STL"):
            yt = [attrs[:, t : t + 1]] * len(seeds)
            stl[:, t] = _train_eval(
                x, yt, splits, seeds, k=1, n=1, c=2, variants=["I"], num_meta=num_meta
            )[0, :, 0]
        record("attr STL", stl)
    mtl = _train_eval(x, ya, splits, seeds, k=k, n=1, c=2, variants=["I"], num_meta=num_meta)
    record("attr MTL", mtl[0])
    pta = _train_eval(x, ya, splits, seeds, k=k, n=4, c=2, variants=["HGD"], num_meta=num_meta)
    record("attr MTL+PTA-HGD D=4", pta[0])
    if not fast:  # control: MTL with HGD's dropout and its hyperperturbation, one decoder
        hgd1 = _train_eval(x, ya, splits, seeds, k=k, n=1, c=2, variants=["HGD"], num_meta=num_meta)
        record("attr MTL+HGD D=1", hgd1[0])

    stats = {m: _mean_std(v) for m, v in per_seed.items()}
    stl_a = per_seed["STL (D=1)"]
    tests_a = {v: _paired(stl_a, per_seed[f"{v} D=4"]) for v in _VARIANTS if f"{v} D=4" in per_seed}
    crit = 0.05
    held_a = all(t["mean"] > 0 for t in tests_a.values()) and (
        sum(t["p"] < crit for t in tests_a.values()) >= len(tests_a) / 2
    )
    test_b = _paired(per_seed["attr MTL"], per_seed["attr MTL+PTA-HGD D=4"])
    held_b = test_b["mean"] > 0 and test_b["p"] < crit
    paired = {f"{v} D=4 vs STL": t for v, t in tests_a.items()}
    paired["MTL+PTA vs MTL"] = test_b
    if "attr STL" in per_seed:
        paired["MTL vs attr STL"] = _paired(per_seed["attr STL"], per_seed["attr MTL"])
    rows = [[m, s[0], s[1]] for m, s in stats.items()]
    png = _plot(stats, pathlib.Path(out_dir))
    summary = {m: s[0] for m, s in stats.items()}
    summary |= {"held_a": bool(held_a), "held_b": bool(held_b), "paired": paired}
    return ExperimentResult(
        title=(
            f"PTA on digits ({NUM_TRAIN_PER_CLASS} train / {NUM_VAL_PER_CLASS} validation "
            f"images per class): test error (%), mean ± std over {len(seeds)} seeds"
        ),
        columns=["variant", "error %", "std"],
        rows=rows,
        files=[png],
        summary=summary,
        seeds=seeds,
        metric="test error (%)",
        per_seed=per_seed,
        claim=CLAIM,
        claim_held=bool(held_a and held_b),
    )


def _plot(stats, out_dir: pathlib.Path) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(stats)
    single = [m for m in names if not m.startswith("attr")]
    multi = [m for m in names if m.startswith("attr")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    for ax, group, title in ((axes[0], single, "(a) single task"), (axes[1], multi, "(b) + MTL")):
        mu = [stats[m][0] for m in group]
        sd = [stats[m][1] for m in group]
        ax.bar(range(len(group)), mu, yerr=sd, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(group)), [m.replace("attr ", "") for m in group], rotation=60)
        ax.set_ylabel("test error (%)")
        ax.set_title(title)
        lo = min(m - s for m, s in zip(mu, sd))
        ax.set_ylim(max(0.0, lo - 1.0), None)
    fig.tight_layout()
    path = out_dir / "pta.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
