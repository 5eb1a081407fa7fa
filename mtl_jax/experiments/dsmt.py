"""DSMT-Nets vs supervised and naive multi-task networks with few labels (synthetic ICU alarms).

Schwab et al., "Not to Cry Wolf: Distantly Supervised Multitask Learning in
Critical Care", ICML 2018, https://arxiv.org/abs/1802.05027. The synthetic
alarm windows of the ``icu_alarms`` TFDS builder (the paper's ICU data is
private) are read through ``tfds.data_source`` from the data dir
(:func:`mtl_jax.data.load_icu_alarms`; the data seed is ``--seed``): a pool of
windows is available unlabelled and ``n`` of them (a per-seed random subset
holding both classes) carry the true/false-alarm label. The auxiliary targets
are features of the :func:`~mtl_jax.data.time_series_features` bank chosen by
:func:`~mtl_jax.data.auxiliary_targets` (FRESH relevance on the ``n`` labelled
windows, Benjamini–Yekutieli at 0.05, random choice among the relevant ones,
filled by smallest p-value when fewer are relevant). Methods: the plain
supervised network (DSMT-Net with ``K = 0``), DSMT-Nets with a few and with many
auxiliary tasks, and the naive multi-task network (all ``K`` auxiliary outputs
on one shared layer). All train for the same number of steps through
:func:`mtl_jax.recipes.make_dsmt_train_step` (equal weighting, Adam) with the
burn-in and alternating phases as a task-weight schedule; batches hold labelled
windows (label mask 1) and windows drawn from the whole pool (mask 0). No early
stopping. The metric is the test AUROC.

Each method is one compiled program, ``jax.vmap``-ed over every (seed, label
budget) pair: the budget is data (the number of usable entries of the labelled
order), not a shape, so nothing recompiles across seeds and budgets. The fast
form (CI) uses a 256-window pool, one perception stage and 80 steps at 12 and
100 labels; the full form a 1,000-window pool, two stages and 600 steps at 12,
25, 50 and 100 labels, both over 5 seeds.

**Verdict.** Only the full form tests the claim. Its two parts (:data:`PARTS`)
are one-sided paired t-tests over the seeds at level 0.05: DSMT (k=4) has a
higher test AUROC than the supervised network at 12 labels, and its per-seed
gain at 12 labels exceeds its gain at 100 labels; each is held, not held (the
opposite one-sided test rejects) or inconclusive, and the claim holds when both
hold. The fast form computes and records the same tests in ``results.json`` but
its verdict is ``"inconclusive"`` (``claim_held`` null) with the reason: with 5
seeds, 80 steps and a per-seed AUROC spread of about 0.1, its differences are
too noisy to decide the claim either way. Deviations from the paper: synthetic
alarm windows instead of its private ICU data, and phases counted in steps
rather than epochs. What the full form measured is
on the DSMT-Nets page of the documentation.
"""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax import balancers, data, models, recipes
from mtl_jax.experiments import _plots, _verdict
from mtl_jax.experiments._registry import ExperimentResult, progress, register, seeds_from

__all__ = ["run"]

CLAIM = (
    "Auxiliary tasks built from unlabelled windows (DSMT-Nets) raise AUROC over a "
    "supervised network, most when labels are scarce"
)
#: Level of the full form's one-sided paired t-tests.
ALPHA = 0.05
#: Why the fast form does not test the claim (recorded in results.json).
FAST_FORM_REASON = (
    "the fast form (5 seeds, 80 steps, a 256-window pool) does not test the claim: its "
    "per-seed AUROC spread (about 0.1) and undertrained networks at 100 labels make its "
    "differences noise-level; run --full for the verdict"
)
BUDGETS = (12, 25, 50, 100)
K_FEW, K_MANY = 4, 16
#: The claim's two parts, declared before the run: one-sided paired t-tests over the seeds.
#: The sds are the per-seed sds of the differences measured in the full form on seeds 0-4
#: (12-label gain: 0.014 s.e. x sqrt(5); the gain difference combines it with the
#: 100-label gain's 0.011 s.e.).
PARTS = (
    _verdict.ClaimPart(
        f"AUROC of DSMT k={K_FEW} > supervised at the fewest labels", alpha=ALPHA, sd=0.031
    ),
    _verdict.ClaimPart(
        f"gain of DSMT k={K_FEW} at the fewest labels > its gain at the most",
        alpha=ALPHA,
        sd=0.04,
    ),
)
METHODS = {
    "supervised": (0, "blocks"),
    f"DSMT k={K_FEW}": (K_FEW, "blocks"),
    f"DSMT k={K_MANY}": (K_MANY, "blocks"),
    f"naive MTL k={K_MANY}": (K_MANY, "naive"),
}
B_LAB, B_ALL = 8, 24
T, FS = 128, 32
#: Per form: unlabelled pool, test windows, training steps, perception channels, budgets.
FAST = {
    "num_seeds": 5,
    "pool": 256,
    "test": 256,
    "num_iters": 80,
    "channels": (8,),
    "budgets": (12, 100),
}
FULL = {
    "num_seeds": 5,
    "pool": 1000,
    "test": 1000,
    "num_iters": 600,
    "channels": (8, 16),
    "budgets": BUDGETS,
}


def _labelled_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation whose every prefix of length >= 4 holds both classes twice."""
    perm = rng.permutation(len(labels))
    pos = [i for i in perm if labels[i] == 1][:2]
    neg = [i for i in perm if labels[i] == 0][:2]
    head = pos + neg
    rng.shuffle(head)
    return np.asarray(head + [i for i in perm if i not in set(head)])


def _train_fn(model: models.DSMTNet, *, num_iters: int, pool: int):
    """``(keys, windows, missing, labels, orders, n_lab, aux, test_w, test_m) -> logits``.

    Vmapped over instances (a seed and a label budget each: ``keys``, ``orders``,
    ``n_lab`` and ``aux`` carry the instance axis); the pool and the test windows
    are shared. The label budget is data (``n_lab``), so one compiled program
    serves every budget and seed.
    """
    burn_in = num_iters // 5
    ts = recipes.make_dsmt_train_step(
        model,
        balancers.equal_weighting(),
        optax.adam(1e-3),
        burn_in_steps=burn_in,
        phase_steps=max(1, num_iters // 20),
        jit=False,
    )
    mask = jnp.concatenate([jnp.ones(B_LAB), jnp.zeros(B_ALL)])

    def one(key, windows, missing, labels, order, n_lab, aux_targets, test_w, test_m):
        init_key, key = jax.random.split(key)
        variables = model.init({"params": init_key}, windows[:2], missing[:2], train=False)
        state_key, key = jax.random.split(key)
        state = ts.init(variables, key=state_key)

        def body(state, k):
            k1, k2 = jax.random.split(k)
            li = order[jnp.floor(jax.random.uniform(k1, (B_LAB,)) * n_lab).astype(jnp.int32)]
            idx = jnp.concatenate([li, jax.random.randint(k2, (B_ALL,), 0, pool)])
            batch = {
                "windows": windows[idx],
                "missing": missing[idx],
                "labels": labels[idx],
                "label_mask": mask,
                "aux_targets": aux_targets[idx],
            }
            state, metrics = ts.step(state, batch)
            return state, metrics["losses"][0]

        train_state, _ = jax.lax.scan(body, state, jax.random.split(key, num_iters))
        logit, _ = model.apply(
            {"params": train_state.params, **train_state.model_state}, test_w, test_m, train=False
        )
        return logit

    shared = None
    return jax.jit(jax.vmap(one, in_axes=(0, shared, shared, shared, 0, 0, 0, shared, shared)))


def _load(seed: int, *, pool: int, test: int, data_dir, quiet: bool):
    """The unlabelled pool (``train``) and the test windows, through the ``icu_alarms`` builder.

    Read with :func:`mtl_jax.data.load_icu_alarms` (``tfds.data_source`` over the
    builder's ``array_record`` files in ``data_dir``, prepared on first use); the
    data seed is the run's ``--seed``.
    """
    params = {"num_train": pool, "num_test": test, "num_samples": T, "sampling_rate": FS}
    return [
        data.load_icu_alarms(split, data_dir=data_dir, quiet=quiet, seed=seed, **params)
        for split in ("train", "test")
    ]


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _compile_all(fns: dict, args: dict) -> dict:
    """Compiles every method's program, two at a time (XLA compiles outside the GIL).

    At XLA's backend optimisation level 0, which halves the CPU compile time of
    these small networks for a few per cent more run time per step.
    """
    from concurrent.futures import ThreadPoolExecutor

    opts = {"xla_backend_optimization_level": 0}
    lowered = {name: fns[name].lower(*args[name]) for name in fns}
    with ThreadPoolExecutor(2) as pool:
        futures = {
            name: pool.submit(lo.compile, compiler_options=opts) for name, lo in lowered.items()
        }
        return {name: f.result() for name, f in futures.items()}


@register(
    "dsmt",
    help="DSMT-Nets vs supervised/naive MTL at 12-100 labels (synthetic ICU alarms)",
    claim=CLAIM,
    num_seeds=(FAST["num_seeds"], FULL["num_seeds"]),
    parts=PARTS,
)
def run(
    *,
    fast: bool,
    out_dir: pathlib.Path,
    seed: int,
    data_dir: str | os.PathLike | None = None,
    quiet: bool = False,
) -> ExperimentResult:
    """DSMT-Nets vs a supervised and a naive multi-task network at 12-100 labels."""
    cfg = FAST if fast else FULL
    seeds = seeds_from(seed, cfg["num_seeds"])
    budgets = cfg["budgets"]
    train, test = _load(seed, pool=cfg["pool"], test=cfg["test"], data_dir=data_dir, quiet=quiet)
    pool = len(train["label"])
    feats = np.asarray(data.time_series_features(train["windows"])).reshape(pool, -1)
    orders = {s: _labelled_order(train["label"], np.random.default_rng([s, 1])) for s in seeds}
    inst = [(s, n) for s in seeds for n in budgets]
    keys = jnp.stack([jax.random.key(s * 1000 + n) for s, n in inst])
    order_arr = jnp.asarray(np.stack([orders[s][: max(budgets)] for s, _ in inst]), jnp.int32)
    n_lab = jnp.asarray([n for _, n in inst], jnp.float32)
    shared = [jnp.asarray(train[k], jnp.float32) for k in ("windows", "missing", "label")]
    test_in = [jnp.asarray(test[k]) for k in ("windows", "missing")]

    fns, args = {}, {}
    for name, (k, mode) in METHODS.items():
        aux = []
        for s, n in inst:
            partial = np.full(pool, -1, np.int64)
            partial[orders[s][:n]] = train["label"][orders[s][:n]]
            aux.append(data.auxiliary_targets(feats, partial, num_tasks=k, seed=s).targets)
        model = models.DSMTNet(num_aux_tasks=k, aux_mode=mode, channels=cfg["channels"])
        fns[name] = _train_fn(model, num_iters=cfg["num_iters"], pool=pool)
        args[name] = (keys, *shared, order_arr, n_lab, jnp.asarray(np.stack(aux)), *test_in)
    compiled = _compile_all(fns, args)

    per_seed: dict[str, list[float]] = {}
    for name in progress(METHODS, "dsmt methods", total=len(METHODS), quiet=quiet):
        logits = np.asarray(compiled[name](*args[name]))
        for j, (_, n) in enumerate(inst):
            per_seed.setdefault(f"{name} n={n}", []).append(_auroc(logits[j], test["label"]))
        print(
            f"  {name:18s} "
            + "  ".join(f"n={n}: {np.mean(per_seed[f'{name} n={n}']):.3f}" for n in budgets)
        )

    mean = {key: float(np.mean(v)) for key, v in per_seed.items()}
    std = {key: float(np.std(v, ddof=1)) for key, v in per_seed.items()}
    rows = [
        [name] + [f"{mean[f'{name} n={n}']:.3f} ± {std[f'{name} n={n}']:.3f}" for n in budgets]
        for name in METHODS
    ]
    gains = {}
    for n in budgets:
        d = np.asarray(per_seed[f"DSMT k={K_FEW} n={n}"]) - np.asarray(
            per_seed[f"supervised n={n}"]
        )
        gains[n] = (float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))))
    few, many = budgets[0], budgets[-1]
    claims = _paired_verdict(per_seed, few, many, untestable=FAST_FORM_REASON if fast else None)

    png = _plot(per_seed, budgets, pathlib.Path(out_dir) / "dsmt.png")
    return ExperimentResult(
        title=f"DSMT-Nets: test AUROC (mean ± sd over {len(seeds)} seeds)",
        columns=["method", *(f"n={n}" for n in budgets)],
        rows=rows,
        files=[png],
        summary={f"gain k={K_FEW} n={n} (mean, s.e.)": g for n, g in gains.items()},
        seeds=seeds,
        metric="test AUROC",
        per_seed=per_seed,
        claim=CLAIM,
        claim_held=_verdict.claim_held(claims),
        claims=claims,
    )


def _paired_verdict(
    per_seed: dict, few: int, many: int, *, untestable: str | None = None
) -> list[dict]:
    """The claim's parts (:data:`PARTS`) tested by one-sided paired t-tests over the seeds.

    (1) AUROC of DSMT k=4 > supervised at ``few`` labels; (2) the per-seed gain
    at ``few`` labels > the gain at ``many`` labels. Each part is ``held`` when its
    p-value is below :data:`ALPHA`, ``not held`` when the opposite one-sided test
    rejects, and ``inconclusive`` otherwise or when the form is ``untestable``.
    """
    dsmt = {n: np.asarray(per_seed[f"DSMT k={K_FEW} n={n}"]) for n in (few, many)}
    sup = {n: np.asarray(per_seed[f"supervised n={n}"]) for n in (few, many)}
    gain = {n: dsmt[n] - sup[n] for n in (few, many)}
    return [
        PARTS[0].test(dsmt[few], sup[few], untestable=untestable),
        PARTS[1].test(gain[few], gain[many], untestable=untestable),
    ]


def _plot(per_seed: dict[str, list[float]], budgets, path: pathlib.Path) -> pathlib.Path:
    """Test AUROC against the labelled budget: each method's mean ± sd over seeds and its seeds."""
    plt = _plots.pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    num = len(per_seed[f"{next(iter(METHODS))} n={budgets[0]}"])
    series = {m: [per_seed[f"{m} n={n}"] for n in budgets] for m in METHODS}
    _plots.series_over_seeds(ax, budgets, series)
    ax.set_xlabel("labelled windows (log scale)")
    ax.set_ylabel("test AUROC")
    ax.set_title(f"DSMT-Nets on synthetic ICU alarms: mean ± sd over {num} seeds (dots: seeds)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    return _plots.save(fig, path, dpi=120)
