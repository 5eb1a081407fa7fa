"""Reproduction of pseudo-task augmentation on small-data digits, single task and with MTL.

Meyerson & Miikkulainen, "Pseudo-task Augmentation: From Deep Multitask Learning
to Intratask Sharing—and Back", ICML 2018, https://arxiv.org/abs/1803.04062.

Data: scikit-learn's digits through the TFDS builder ``digits_attributes``
(:class:`mtl_jax.data.DigitsAttributes`, both splits pooled: 1,797 images, a
10-class label and six binary attributes). Every seed draws a stratified 10
training and 4 validation images per class (the paper's 50/20 % split of an
Omniglot character's 20 drawings) and tests on all the remaining images; the
seed also draws the initialisation, the minibatches and the perturbations, the
same for every method, so methods are compared *paired* across seeds.

(a) **Single task** (10-way digits): an MLP trunk (64-128-64, ReLU) with ``D``
affine decoders, ``D ∈ {1, 2, 4, 8}`` (fast form ``{1, 4}``), under the control
strategies ``I`` (independent decoders), ``F`` (half of them frozen), ``P``
(greedy copy plus Gaussian perturbation, std 0.01) and ``HGD`` (greedy copy plus
hyperperturbed per-decoder input dropout: rate 0.2, steps of std 0.05, clipped
to ``[0, 0.7]``). ``D = 1`` is single-task learning (STL); ``HGD`` at ``D = 1``
(full form) is the dropout-only control. (b) **PTA + MTL** on the six
attributes: STL (full form), MTL (one decoder per attribute), MTL + PTA
(``D = 4``, ``HGD``) and, in both forms, the MTL + HGD ``D = 1`` control.
Every run trains with Adam (1e-3, batch 32, equal weighting of the ``[K·D]``
pseudo-task losses) through :func:`mtl_jax.recipes.make_pta_driver`: 40
meta-iterations of ``M = 20`` steps (the fast form: 20 meta-iterations, 5 seeds,
and STL, ``HGD D=4``, MTL, MTL + PTA and the control only). A task's test error is that of
its selected decoder at the meta-iteration with the best validation accuracy
(the latest among ties). One compiled program per ``(K, D, classes, strategy)``
is ``vmap``-ed over every (variant, seed) pair.

**Claims checked** (:data:`PARTS`, ``claim_held``), each a one-sided paired
t-test at 5 % over the seeds: (a) PTA-HGD ``D = 4`` has a lower test error than
STL; (b) MTL + PTA beats MTL and (c) the MTL + HGD ``D = 1`` control (both forms
run it, so a gain of MTL + PTA can be attributed to its decoders or to the dropout).

**Deviations from the paper:** digits instead of Omniglot, IMDB and CelebA; an
MLP trunk instead of the paper's convolutional network; the strategies' rules,
scales and ``M`` are ours (see :mod:`mtl_jax.recipes._pta_control`), fixed
before the runs and not tuned to any seed. What was measured, and which parts of
the paper could be read, is on the PTA page of the documentation.
"""

from __future__ import annotations

import functools
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax import balancers, recipes
from mtl_jax import models as M
from mtl_jax.experiments import _plots, _verdict
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
#: The claim's parts, declared before the run: one-sided paired t-tests at 5 % over the
#: seeds on test error in points (%): (a) STL's error - PTA-HGD D=4's > 0; (b) MTL's error -
#: MTL+PTA-HGD D=4's > 0, and (c) the MTL+HGD D=1 control's - MTL+PTA-HGD D=4's > 0 (the
#: gain comes from the decoders, not from HGD's dropout; both forms run the control).
#: The sd (1.0 point) is the order of the per-seed spread measured in the full form.
PARTS = (
    _verdict.ClaimPart("STL - PTA-HGD D=4 test error > 0 (single task)", sd=1.0),
    _verdict.ClaimPart("MTL - MTL+PTA-HGD D=4 test error > 0 (attributes)", sd=1.0),
    _verdict.ClaimPart("MTL+HGD D=1 - MTL+PTA-HGD D=4 test error > 0 (attributes)", sd=1.0),
)

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


def load_digits_attributes(
    data_dir=None, *, quiet: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """All 1,797 digits of the TFDS ``digits_attributes`` builder (train and test pooled).

    Args:
      data_dir: the TFDS cache directory (``None``: :func:`mtl_jax.data.default_data_dir`).
      quiet: hide the preparation's progress bar.

    Returns:
      ``(x [N, 64] float32, labels [N] int32, attributes [N, A] int32, names)``,
      the attributes in the sorted order of their ``names``.
    """
    from mtl_jax import data

    recs = []
    for split in ("train", "test"):
        src = data.data_source("digits_attributes", split=split, data_dir=data_dir, quiet=quiet)
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
        return self.heads(self.trunk(x), rates, train=not deterministic)


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

        drv = recipes.make_pta_driver(
            loss_fn, score_fn, balancers.equal_weighting(), optax.adam(_LEARNING_RATE),
            num_tasks=k, num_decoders=n, num_iters=_STEPS, strategy=strategy,
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


def _prepare(x, labels, splits, seeds, *, k, n, c, variants, num_meta):
    """Lowers one program's runs: every variant (one strategy) × label set × seed.

    Args:
      labels: a list of label sets ``[N, K]`` (several for STL on each attribute).

    Returns:
      ``(lowered, shape)``: the lowered (not yet compiled) program and its
      arguments, and the ``[V, L, S, K]`` shape of its test errors.
    """
    strategy = {_VARIANTS[v][0] for v in variants}
    if len(strategy) != 1:
        raise ValueError(f"variants of one program share a strategy, got {variants}")
    strategy = strategy.pop()
    keys, hyper, ys, vals, tests, batches = [], [], [], [], [], []
    for v in variants:
        over = dict(_VARIANTS[v][1])
        if "num_frozen" in over:
            over["num_frozen"] = int(over["num_frozen"] * n) if n > 1 else 0
        for y in labels:
            for s, (tr, va, te) in zip(seeds, splits):
                keys.append(jax.random.key_data(jax.random.key(s, impl=_KEY_IMPL)))
                hyper.append(over)
                ys.append(y)
                vals.append(va)
                tests.append(te)
                rng = np.random.default_rng([s, 7])  # the same batches for every method
                batches.append(tr[rng.integers(0, len(tr), (num_meta, _STEPS, _BATCH))])
    hyper = {
        name: jnp.asarray(
            [h[name] for h in hyper], jnp.int32 if name == "num_frozen" else jnp.float32
        )
        for name in hyper[0]
    }
    stacked = (jnp.asarray(np.stack(a)) for a in (ys, vals, tests, batches))
    args = (jnp.asarray(x), jnp.asarray(np.stack(keys)), hyper, *stacked)
    lowered = _program(k, n, c, strategy, num_meta).lower(*args)
    return (lowered, args), (len(variants), len(labels), len(seeds), k)


def _run_all(jobs: list, *, quiet: bool = False) -> list[np.ndarray]:
    """Lowers every job, compiles them two at a time (XLA releases the GIL), runs them.

    Args:
      jobs: ``_prepare`` keyword arguments, one dict per program.
      quiet: hide the progress bar.

    Returns:
      Each job's test errors ``[V, L, S, K]``.
    """
    from concurrent.futures import ThreadPoolExecutor

    prepared = [_prepare(**job) for job in jobs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        compiled = list(pool.map(lambda p: p[0][0].compile(), prepared))
    out = []
    for fn, ((_, args), shape) in progress(
        zip(compiled, prepared), "pta", total=len(jobs), quiet=quiet
    ):
        out.append(np.asarray(fn(*args)).reshape(shape))
    return out


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
          claim=CLAIM, num_seeds=(5, 20), parts=PARTS)  # fmt: skip
def run(
    *,
    fast: bool,
    out_dir: pathlib.Path,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    quiet: bool = False,
) -> ExperimentResult:
    """Pseudo-task augmentation (Meyerson & Miikkulainen 2018) on digits: STL and MTL."""
    seeds = seeds_from(seed, 5 if fast else 20)
    num_meta = 20 if fast else 40  # 400 or 800 steps
    x, labels, attrs, names = load_digits_attributes(data_dir, quiet=quiet)
    splits = [
        small_data_split(labels, s, num_train=NUM_TRAIN_PER_CLASS, num_val=NUM_VAL_PER_CLASS)
        for s in seeds
    ]
    per_seed: dict[str, list[float]] = {}

    def record(name, err):  # err [S, K] fractions -> mean over tasks, in %
        per_seed[name] = [100 * float(e) for e in np.asarray(err).mean(axis=1)]

    # (a) single task; (b) with multitask learning on the attributes.
    common = dict(x=x, splits=splits, seeds=seeds, num_meta=num_meta)
    single = dict(common, labels=[labels[:, None]], k=1, c=10)
    k = attrs.shape[1]
    multi = dict(common, labels=[attrs], k=k, c=2)
    jobs = [("STL (D=1)", dict(single, n=1, variants=["I"]))]
    if not fast:
        jobs.append(("HGD D=1", dict(single, n=1, variants=["HGD"])))
    for n in (4,) if fast else (2, 4, 8):  # the fast form runs the HGD program only
        for variants in (["HGD"],) if fast else (["I", "F"], ["P", "HGD"]):
            jobs.append((n, dict(single, n=n, variants=variants)))
    if not fast:  # STL: one network per attribute, all in one vmapped program
        per_attr = [attrs[:, t : t + 1] for t in range(k)]
        jobs.append(("attr STL", dict(common, labels=per_attr, k=1, c=2, n=1, variants=["I"])))
    jobs.append(("attr MTL", dict(multi, n=1, variants=["I"])))
    jobs.append(("attr MTL+PTA-HGD D=4", dict(multi, n=4, variants=["HGD"])))
    # The control, in both forms: MTL with HGD's dropout and hyperperturbation, one decoder
    # (does a gain over MTL come from the pseudo-tasks or from the dropout?).
    jobs.append(("attr MTL+HGD D=1", dict(multi, n=1, variants=["HGD"])))
    results = _run_all([job for _, job in jobs], quiet=quiet)
    for (name, job), err in zip(jobs, results):  # err [V, L, S, K]
        if name == "attr STL":  # [1, K attributes, S, 1] -> [S, K]
            record(name, err[0, :, :, 0].T)
        elif isinstance(name, str):
            record(name, err[0, 0])
        else:
            for i, v in enumerate(job["variants"]):
                record(f"{v} D={name}", err[i, 0])

    stats = {m: _mean_std(v) for m, v in per_seed.items()}
    stl_a = per_seed["STL (D=1)"]
    tests_a = {v: _paired(stl_a, per_seed[f"{v} D=4"]) for v in _VARIANTS if f"{v} D=4" in per_seed}
    pta_b = per_seed["attr MTL+PTA-HGD D=4"]
    claims = [
        PARTS[0].test(stl_a, per_seed["HGD D=4"]),
        PARTS[1].test(per_seed["attr MTL"], pta_b),
        PARTS[2].test(per_seed["attr MTL+HGD D=1"], pta_b),
    ]
    tests_b = {
        "MTL+PTA vs MTL": _paired(per_seed["attr MTL"], pta_b),
        # the gain must come from the decoders, not from the dropout
        "MTL+PTA vs MTL+HGD D=1": _paired(per_seed["attr MTL+HGD D=1"], pta_b),
    }
    paired = {f"{v} D=4 vs STL": t for v, t in tests_a.items()}
    if "HGD D=1" in per_seed:
        paired["HGD D=4 vs HGD D=1"] = _paired(per_seed["HGD D=1"], per_seed["HGD D=4"])
    paired |= tests_b
    if "attr STL" in per_seed:
        paired["MTL vs attr STL"] = _paired(per_seed["attr STL"], per_seed["attr MTL"])
    rows = [[m, s[0], s[1]] for m, s in stats.items()]
    png = _plot(per_seed, pathlib.Path(out_dir))
    summary = {m: s[0] for m, s in stats.items()}
    summary |= {"paired": paired}
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
        claim_held=_verdict.claim_held(claims),
        claims=claims,
    )


def _plot(per_seed: dict[str, list[float]], out_dir: pathlib.Path) -> pathlib.Path:
    """Test error per variant: every seed as a dot, mean ± sd over seeds as dot and bar."""
    plt = _plots.pyplot()
    names = list(per_seed)
    single = [m for m in names if not m.startswith("attr")]
    multi = [m for m in names if m.startswith("attr")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 1.2]})
    for ax, group, title in ((axes[0], single, "(a) single task"), (axes[1], multi, "(b) + MTL")):
        _plots.dots_and_intervals(
            ax, list(range(len(group))), [per_seed[m] for m in group], color="tab:blue"
        )
        ax.set_xticks(range(len(group)), [m.replace("attr ", "") for m in group], rotation=60)
        ax.set_xlabel("variant")
        ax.set_ylabel("test error (%)")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    num = len(next(iter(per_seed.values())))
    fig.suptitle(f"PTA on small-data digits, {num} seeds: {_plots.AGGREGATE}", fontsize=9)
    return _plots.save(fig, pathlib.Path(out_dir) / "pta.png", dpi=100)
