"""Where the balancers stand: every shipped balancer on three multi-task problems.

Each balancer of :data:`mtl_jax.balancers.METHODS`, built by name through
:func:`mtl_jax.balancers.make` (``shared=`` the network's shared trunk), trains the
same hard-parameter-sharing network from the same initialisation on the same
batches, with Adam, on

* ``multi_digits`` — two 10-way tasks (left and right digit of a pair), through the
  ``multi_digits`` TFDS builder as the architectures experiment loads it;
* ``digits_attributes`` — binary attributes of one digit, through the
  ``digits_attributes`` builder;
* ``toy_regression`` — GradNorm's synthetic regression (Chen et al. 2018, §4,
  https://arxiv.org/abs/1711.02257): ten tasks ``y_i = σ_i tanh((B + ε_i) x)`` with
  ``σ = 1 … 100``, through the ``grad_norm_toy`` builder, fitted by the W2 network
  (``models.mlp_hps``) on a fixed training set.

The headline metric is the test accuracy averaged over tasks on the two digit
problems (higher is better) and the task-normalised test loss ``Σ_i L_i / L_i(0)``
on the toy (lower is better), each reported as mean ± standard deviation over
seeds. Hyper-parameters are each method's defaults, untuned, so the table says
where the methods stand out of the box on small problems — not which is best.

**No claim**: it is a comparison, so ``claim_held`` is ``null`` in ``results.json``.
``--balancer a,b,c`` restricts the run to those methods (names of
``mtl_jax.balancers.METHODS``); by default the fast form runs :data:`FAST_METHODS`
and the full form every method.
"""

from __future__ import annotations

import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax import balancers, models, training
from mtl_jax.experiments import _data, _plots
from mtl_jax.experiments._registry import ExperimentResult, progress, register, seeds_from

__all__ = ["DATASETS", "FAST_METHODS", "compare", "run"]

DATASETS = ("multi_digits", "digits_attributes", "toy_regression")
#: Methods of the fast form (a CI-sized subset; ``--full`` runs every method).
FAST_METHODS = ("equal_weighting", "famo", "mgda")
#: (training steps, seeds) of the fast and full forms.
FAST = (50, 2)
FULL = (1000, 3)
#: Per dataset: (batch size, Adam learning rate, whether higher is better).
SETUP = {
    "multi_digits": (64, 3e-3, True),
    "digits_attributes": (64, 3e-3, True),
    "toy_regression": (100, 1e-3, False),
}
TOY_TASKS = 10
TOY_TRAIN = 2000
#: Steps per compiled ``lax.scan`` chunk.
CHUNK = 50
CLAIM = (
    "No claim: a comparison of every shipped balancer (default hyper-parameters) on "
    "MultiDigits, DigitsAttributes and GradNorm's toy; claim_held is null."
)
METRIC = {
    True: "test accuracy, mean over tasks (higher is better)",
    False: "task-normalised test loss Σ L_i/L_i(0) (lower is better)",
}


def _problem(dataset: str, seed: int, data_dir=None, quiet: bool = False):
    """``(model, loss_fn, x_train, y_train, x_test, y_test, metric)`` for ``dataset``."""
    if dataset == "toy_regression":
        ds = _data.toy_regression(
            TOY_TASKS, num_train=TOY_TRAIN, num_test=1000, seed=seed, data_dir=data_dir, quiet=quiet
        )
        model = models.mlp_hps(TOY_TASKS)

        def losses(p, x, y):  # y: [K, N, 100]
            return jnp.mean((model.apply(p, x) - y) ** 2, axis=(1, 2))

        y_tr, y_te = np.moveaxis(ds.y_train, 1, 0), np.moveaxis(ds.y_test, 1, 0)  # [N, K, .]
        x_tr, x_te = ds.x_train, ds.x_test

        def metric(p0, p):
            yt = jnp.moveaxis(jnp.asarray(y_te), 0, 1)
            return float(jnp.sum(losses(p, x_te, yt) / losses(p0, x_te, yt)))

    elif dataset in ("multi_digits", "digits_attributes"):
        ds = _data.multitask_digits(
            dataset, seed=seed, num_train=4000, num_test=1000, data_dir=data_dir, quiet=quiet
        )
        k = len(ds.task_names)
        trunk = models.MLPTrunk((64, 32))
        model = models.HardParameterSharing(trunk, num_tasks=k, head_features=ds.num_classes[0])

        def losses(p, x, y):  # y: [K, N]
            out = model.apply(p, jnp.reshape(x, (x.shape[0], -1)))
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y), axis=1)

        x_tr, y_tr, x_te, y_te = ds.x_train, ds.y_train, ds.x_test, ds.y_test  # y: [N, K]

        def metric(p0, p):
            del p0
            out = model.apply(p, jnp.reshape(jnp.asarray(x_te), (len(x_te), -1)))
            return float(np.mean(np.asarray(jnp.argmax(out, -1)) == y_te.T))

    else:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")

    def loss_fn(p, batch):
        x, y = batch
        return losses(p, x, jnp.moveaxis(y, 0, 1))

    return model, loss_fn, np.asarray(x_tr), np.asarray(y_tr), metric


def compare(
    dataset: str,
    *,
    methods=None,
    seeds=(0, 1, 2),
    num_iters: int = FULL[0],
    data_dir: str | os.PathLike | None = None,
    quiet: bool = False,
) -> dict[str, dict]:
    """Trains every method in ``methods`` on ``dataset`` for each seed.

    Args:
      dataset: one of :data:`DATASETS`.
      methods: names of :data:`mtl_jax.balancers.METHODS` (all by default).
      seeds: one run per seed (data, initialisation, batches).
      num_iters: Adam steps, a positive multiple of :data:`CHUNK` or smaller than it.
      data_dir: the data cache (``None``: :func:`mtl_jax.data.default_data_dir`).
      quiet: hide the data preparation's progress bar.

    Returns:
      Per method: ``values`` (the metric per seed) and ``ms_per_step`` (median over
      chunks, compilation excluded).
    """
    methods = tuple(balancers.names() if methods is None else methods)
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    chunk = min(CHUNK, num_iters)
    if num_iters % chunk:
        raise ValueError(f"num_iters must be a multiple of {CHUNK} or below it, got {num_iters}")
    batch_size, lr, _ = SETUP[dataset]
    problems = {s: _problem(dataset, s, data_dir, quiet) for s in seeds}
    model, loss_fn, x0, y0, _ = problems[seeds[0]]
    k = int(jax.eval_shape(loss_fn, _init(model, x0, 0), (x0[:2], y0[:2])).shape[0])
    out = {}
    for name in methods:
        values, times = [], []
        step = None
        for s in seeds:
            model, loss_fn, x_tr, y_tr, metric = problems[s]
            params0 = _init(model, x_tr, s)
            if step is None:
                shared = models.HardParameterSharing.shared_mask(params0)
                bilevel = balancers.METHODS[name].cost == "bilevel"
                extra = {"task_loss_fn": loss_fn, "inner_lr": lr} if bilevel else {}
                tx = balancers.make(name, num_tasks=k, shared=shared, **extra)
                step = training.make_train_step(loss_fn, tx, optax.adam(lr))
                run_chunk = jax.jit(_chunk_fn(step, getattr(tx, "meta_update", None)))
            state = step.init(params0, key=jax.random.key(s))
            rng = np.random.default_rng(s)
            idx = rng.integers(0, len(x_tr), (num_iters, 2, batch_size))  # [:, 1]: validation
            xs, ys = jnp.asarray(x_tr), jnp.asarray(y_tr)
            for c in progress(range(num_iters // chunk), f"{dataset} {name} seed {s}"):
                sel = jnp.asarray(idx[c * chunk : (c + 1) * chunk])
                t0 = time.perf_counter()
                state = jax.block_until_ready(run_chunk(state, xs, ys, sel))
                if c > 0 or s != seeds[0]:
                    times.append((time.perf_counter() - t0) / chunk)
            v = metric(params0, state.params)
            values.append(v if np.isfinite(v) else float("nan"))
        ms = 1e3 * float(np.median(times)) if times else float("nan")
        out[name] = {"values": values, "ms_per_step": ms}
        print(f"  {dataset:17s} {name:22s} {np.mean(values):.4f} ± {np.std(values):.4f}")
    return out


def _init(model, x, seed):
    return model.init(jax.random.key(seed), jnp.asarray(x[:1]).reshape(1, -1))


def _chunk_fn(step, meta_update=None):
    def run_chunk(state, xs, ys, sel):
        def body(st, i):  # i: [2, batch] training and validation indices
            batch = (xs[i[0]], ys[i[0]])
            if meta_update is not None:  # a bilevel method: its meta-update first
                val = (xs[i[1]], ys[i[1]])
                bstate = meta_update(st.balancer_state, st.params, batch, val)
                st = st._replace(balancer_state=bstate)
            st, _ = step.step(st, batch)
            return st, None

        state, _ = jax.lax.scan(body, state, sel)
        return state

    return run_chunk


def _methods(balancer: str | None, fast: bool) -> tuple[str, ...]:
    if balancer is None:
        return FAST_METHODS if fast else balancers.names()
    names = tuple(n.strip() for n in balancer.split(",") if n.strip())
    unknown = [n for n in names if n not in balancers.METHODS]
    if not names or unknown:
        raise ValueError(
            f"balancer must be a comma-separated list of {', '.join(balancers.names())}; "
            f"got {balancer!r}"
        )
    return names


@register(
    "balancers",
    help="every balancer on MultiDigits, DigitsAttributes and GradNorm's toy (a comparison)",
    claim=CLAIM,
    num_seeds=(FAST[1], FULL[1]),
)
def run(
    *,
    fast: bool,
    out_dir: pathlib.Path,
    seed: int,
    balancer: str | None = None,
    data_dir: str | os.PathLike | None = None,
    quiet: bool = False,
) -> ExperimentResult:
    """Every balancer (or ``--balancer a,b``) on three problems; metric mean ± std, no claim."""
    num_iters, n_seeds = FAST if fast else FULL
    methods = _methods(balancer, fast)
    seeds = seeds_from(seed, n_seeds)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {
        ds: compare(
            ds,
            methods=methods,
            seeds=seeds,
            num_iters=num_iters,
            data_dir=data_dir,
            quiet=quiet,
        )
        for ds in DATASETS
    }
    rows, per_seed = [], {}
    for ds, res in results.items():
        for name, r in res.items():
            v = np.asarray(r["values"])
            std = float(v.std(ddof=1)) if v.size > 1 else 0.0
            per_seed[f"{ds}/{name}"] = [float(x) for x in v]
            cost = balancers.METHODS[name].cost
            rows.append([ds, name, cost, f"{v.mean():.4f} ± {std:.4f}", r["ms_per_step"]])
    png = _plot(results, out_dir / "balancers.png")
    return ExperimentResult(
        title=(
            f"Balancers, {num_iters} Adam steps, {len(seeds)} seeds: accuracy (digits, higher "
            "is better) or Σ L_i/L_i(0) (toy, lower is better), mean ± std over seeds"
        ),
        columns=["dataset", "method", "cost", "metric", "ms/step"],
        rows=rows,
        files=[png],
        seeds=list(seeds),
        metric="; ".join(f"{d}: {METRIC[SETUP[d][2]]}" for d in DATASETS),
        per_seed=per_seed,
        claim=CLAIM,
        claim_held=None,
        claim_test={"reason": "a comparison of methods; no claim is tested"},
        summary={"num_iters": num_iters, "methods": list(methods)},
    )


def _plot(results: dict, path: pathlib.Path) -> pathlib.Path:
    plt = _plots.pyplot()
    colors = dict(zip(balancers._registry.COST_CLASSES, ("C0", "C1", "C2", "C3")))
    methods = list(next(iter(results.values())))
    height = 2.0 + 0.25 * len(methods)
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), height), squeeze=False)
    for ax, (ds, res) in zip(axes[0], results.items()):
        seen, drawn = set(), []
        for j, name in enumerate(methods):
            cost = balancers.METHODS[name].cost
            label = None if cost in seen else cost
            seen.add(cost)
            drawn += _plots.dots_and_intervals(
                ax, [j], [res[name]["values"]], color=colors[cost], label=label, horizontal=True,
                seed_offset=0.15,
            )  # fmt: skip
        # one margin for the whole panel (each method's own call pads only by its own spread,
        # so a method with a tiny spread at the edge would have its marker clipped)
        every = np.concatenate([np.ravel(res[name]["values"]) for name in methods])
        lo = min(float(every.min()), min(a for a, _ in drawn))
        hi = max(float(every.max()), max(b for _, b in drawn))
        _plots.contain(ax, lo, hi, axis="x")
        ax.set_yticks(range(len(methods)), methods if ax is axes[0, 0] else [""] * len(methods))
        ax.set_ylabel("method")
        ax.invert_yaxis()
        ax.set_title(ds)
        ax.set_xlabel(
            "test accuracy (mean over tasks)" if SETUP[ds][2] else "Σ L_i / L_i(0) on test"
        )
        ax.grid(axis="x", alpha=0.3)
    handles = {}
    for ax in axes[0]:
        handles.update(zip(*ax.get_legend_handles_labels()[::-1]))
    fig.legend(
        handles.values(),
        handles.keys(),
        title=f"cost class ({_plots.AGGREGATE})",
        loc="lower center",
        ncol=len(handles),
        fontsize=8,
        title_fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.9 / height, 1, 1))
    return _plots.save(fig, path, dpi=90, tight=False)
