"""The built step inside the user's own ``jit`` + ``lax.scan`` and ``vmap``, in every route.

The loss draws a dropout mask from the step's key, so runs over different seeds
differ and a wrong per-step key (or one shared across seeds) changes the result.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import mtl_jax as mtl
from mtl_jax.training import _gramian, _plan

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from step_problem import K, decode, make_batch, make_params

N = 3
SEEDS = (0, 1, 2)


def _drop(x, key):
    return x * jax.random.bernoulli(key, 0.75, x.shape) / 0.75


def encode(p, b, *, key):
    return jnp.tanh(jnp.tanh(_drop(b["x"], key) @ p["enc"]["w1"]) @ p["enc"]["w2"])


def loss_fn(p, b, key):
    return decode(p, encode(p, b, key=jax.random.fold_in(key, 0)), b)


def decode_tasks(p, zs, b):
    pred = jnp.einsum("kbd,kd->bk", zs, p["heads"]["w"]) + p["heads"]["b"][None, :]
    return jnp.mean((pred - b["y"]) ** 2, axis=0)


def _enc_only(path, leaf):
    del leaf
    return "enc" in jax.tree_util.keystr(path)


REP = mtl.training.Representation(encode=encode, decode=decode)
SPLIT = mtl.training.Representation(encode=encode, decode=decode, decode_tasks=decode_tasks)

# route -> (balancer factory, mode, representation)
ROUTES = {
    "loss": (lambda: mtl.balancers.dwa(num_tasks=K), "loss", None),
    "gramian": (lambda: mtl.balancers.mgda(shared=_enc_only), "gramian", None),
    "split_gramian": (lambda: mtl.balancers.upgrad(shared=_enc_only), "gramian", SPLIT),
    "jacobian": (lambda: mtl.balancers.mgda(shared=_enc_only), "jacobian", None),
    "representation": (lambda: mtl.balancers.mgda(), "representation", REP),
}


def _build(route, mesh=None):
    make, mode, rep = ROUTES[route]
    return mtl.training.make_train_step(
        loss_fn, make(), optax.sgd(0.1), mode=mode, representation=rep, mesh=mesh
    )


def _batches(place=lambda b: b):
    return [place({k: jnp.asarray(v) for k, v in make_batch(seed=s).items()}) for s in range(N)]


def _top_level(ts, seed, batches):
    state = ts.init(make_params(), key=seed)
    for b in batches:
        state, _ = ts(state, b)
    return state


def _close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)


def _stack(batches):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *batches)


def _vmapped_scan(ts):
    """``jit(vmap over seeds of scan over batches)`` of the built (jitted) step."""

    def one(seed_key, batches):
        state = ts.init(make_params(), key=seed_key)
        state, metrics = jax.lax.scan(ts.step, state, batches)
        return state, metrics["losses"]

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


@pytest.mark.parametrize("route", list(ROUTES))
def test_scan_and_vmap_inside_jit_match_top_level_calls(route):
    ts = _build(route)
    if route == "split_gramian":  # the route under test really splits
        rep = SPLIT._replace(encode=lambda p, b: encode(p, b, key=jax.random.key(0)))
        params = make_params()
        plan = _plan.resolve(ts_balancer(route), "gramian", params)
        assert _gramian.split_applies(rep, plan, params, make_batch(), False)
    batches = _batches()
    runs = [_top_level(ts, s, batches) for s in SEEDS]
    assert not np.allclose(runs[0].params["enc"]["w1"], runs[1].params["enc"]["w1"])

    # lax.scan of N steps inside the user's jit = N top-level calls.
    scanned, _ = jax.jit(lambda s, bs: jax.lax.scan(ts.step, s, bs))(
        ts.init(make_params(), key=SEEDS[1]), _stack(batches)
    )
    _close(scanned.params, runs[1].params)
    assert int(scanned.step) == N

    # vmap over 3 seeds (each a scan) = 3 separate runs.
    keys = jnp.stack([jax.random.key(s) for s in SEEDS])
    states, losses = _vmapped_scan(ts)(keys, _stack(batches))
    for i, run in enumerate(runs):
        _close(jax.tree_util.tree_map(lambda x, i=i: x[i], states.params), run.params)
    assert losses.shape == (len(SEEDS), N, K)


def ts_balancer(route):
    return ROUTES[route][0]()


@pytest.mark.parametrize("route", list(ROUTES))
def test_nested_on_four_devices(route):
    mesh = jax.make_mesh((4,), ("data",))
    ts = _build(route, mesh=mesh)
    batches = _batches(lambda b: mtl.training.shard_batch(b, mesh))
    runs = [_top_level(ts, s, batches) for s in SEEDS[:2]]
    stacked = jax.device_put(_stack(batches), NamedSharding(mesh, P(None, "data")))
    keys = jnp.stack([jax.random.key(s) for s in SEEDS[:2]])
    states, _ = _vmapped_scan(ts)(keys, stacked)
    for i, run in enumerate(runs):
        _close(jax.tree_util.tree_map(lambda x, i=i: x[i], states.params), run.params)


def test_plain_vmap_of_the_step_over_seeds():
    ts = _build("gramian")
    batch = _batches()[0]
    states = jax.vmap(lambda k: ts.init(make_params(), key=k))(jnp.arange(3))
    new, metrics = jax.vmap(ts.step, in_axes=(0, None))(states, batch)
    for s in range(3):
        one, m1 = ts(ts.init(make_params(), key=s), batch)
        _close(jax.tree_util.tree_map(lambda x, s=s: x[s], new.params), one.params)
        _close(metrics["losses"][s], m1["losses"])
