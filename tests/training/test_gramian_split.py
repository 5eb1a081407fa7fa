"""The Gramian route split at the representation (``Representation.decode_tasks``):
per-task backward passes through the encoder only, one through the heads; the same
update as the unsplit Gramian route and the Jacobian route, and a fallback to the
unsplit route when ``decode_tasks`` reads a shared leaf."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.training import _gramian, _plan, _routes

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import step_problem as sp
from test_representation_tasks import decode_tasks

REP = mtl.training.Representation(sp.encode, sp.decode, decode_tasks)
enc = lambda path, leaf: "enc" in jax.tree_util.keystr(path)
enc_w2 = lambda path, leaf: "w2" in jax.tree_util.keystr(path)


def _balancer(name, shared):
    kw = {"num_tasks": sp.K} if name in ("db_mtl", "gradnorm") else {}
    return getattr(mtl.balancers, name)(shared=shared, **kw)


def _no_loss_fn(p, b):
    raise AssertionError("the split route must not call loss_fn")


def _three_routes(balancer, *, rep=REP, chunk_size=None, batch=None, jacobian=True):
    params, batch = sp.make_params(), batch or sp.make_batch()
    state = balancer.init(params)

    def run(params, state, batch):
        plan = lambda route: _plan.resolve(balancer, route, params, chunk_size=chunk_size)
        split_fn = _no_loss_fn if _split(balancer, rep, params, batch) else sp.loss_fn
        s = _gramian.gramian_route(
            split_fn, plan("gramian"), params, state, batch, representation=rep
        )
        u = _gramian.gramian_route(sp.loss_fn, plan("gramian"), params, state, batch)
        if not jacobian:  # the unsplit route equals it: test_gramian_route.py
            return s, u, u
        j = _routes.jacobian_route(sp.loss_fn, plan("jacobian"), params, state, batch)
        return s, u, j

    return jax.jit(run)(params, state, batch)


def _split(balancer, rep, params, batch):
    return _gramian.split_applies(
        rep, _plan.resolve(balancer, "gramian", params), params, batch, False
    )


def _close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


CASES = [
    ("mgda", "enc"),
    # chunk_size=2 (K = 3 in chunks of 2 and 1); enc/w2 is not shared: it gets
    # the plain sum through the encoder
    ("upgrad", "w1"),
    ("pcgrad", "enc"),
    ("db_mtl", "enc"),  # diag(G) only, update wᵀJ
    ("gradnorm", "enc"),  # diag(G) of its layer (enc/w2) only, update by one encoder VJP
]


@pytest.mark.parametrize(("name", "shared"), CASES)
def test_split_equals_unsplit_and_jacobian(name, shared):
    mask = {"enc": enc, "w1": sp.shared_w1, "w2": enc_w2}[shared]
    balancer = _balancer(name, mask)
    assert _split(balancer, REP, sp.make_params(), sp.make_batch())
    chunk_size = 2 if name == "upgrad" else None
    s, u, j = _three_routes(
        balancer, chunk_size=chunk_size, jacobian=name == "mgda" and shared == "enc"
    )
    for ref in (u, j):
        _close(s.grads, ref.grads)  # heads (non-shared leaves) included
        _close(s.balancer_state, ref.balancer_state)
        _close(s.weights, ref.weights, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(s.losses), np.asarray(ref.losses), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(s.task_finite), np.asarray(u.task_finite))
    if name == "gradnorm":
        return  # its first weights are ones: the update is the plain sum
    # not trivially equal: the balanced update differs from the plain sum
    total = jax.grad(lambda p: jnp.sum(sp.loss_fn(p, sp.make_batch())))(sp.make_params())
    assert not np.allclose(np.asarray(s.grads["enc"]["w1"]), np.asarray(total["enc"]["w1"]))


def _reads_shared_decode_tasks(p, zs, b):
    return decode_tasks(p, zs, b) + 0.1 * jnp.sum(p["enc"]["w2"] ** 2)


@pytest.mark.parametrize("case", ["heads_shared", "decoder_reads_encoder_leaf"])
def test_no_split_when_decode_tasks_reads_a_shared_leaf(case):
    if case == "heads_shared":  # shared= every leaf, the heads included
        rep, balancer, loss_fn = REP, _balancer("mgda", lambda p, x: True), sp.loss_fn
    else:
        dec = lambda p, z, b: sp.decode(p, z, b) + 0.1 * jnp.sum(p["enc"]["w2"] ** 2)
        rep = mtl.training.Representation(sp.encode, dec, _reads_shared_decode_tasks)
        balancer, loss_fn = _balancer("mgda", enc), lambda p, b: dec(p, sp.encode(p, b), b)
    params, batch = sp.make_params(), sp.make_batch()
    assert not _split(balancer, rep, params, batch)
    if case == "heads_shared":
        return  # then the route is test_gramian_route.py's
    state = balancer.init(params)
    plan = lambda route, p: _plan.resolve(balancer, route, p)
    s = jax.jit(
        lambda p: _gramian.gramian_route(
            loss_fn, plan("gramian", p), p, state, batch, representation=rep
        )
    )(params)
    j = jax.jit(lambda p: _routes.jacobian_route(loss_fn, plan("jacobian", p), p, state, batch))(
        params
    )
    _close(s.grads, j.grads)


def _steps(rep, batches, *, mesh):
    aux = lambda f: lambda *a: (f(*a), {"n": jnp.float32(1.0)})
    rep = mtl.training.Representation(rep.encode, aux(rep.decode), aux(rep.decode_tasks))
    out = []
    for r in (rep, None):
        step = mtl.training.make_train_step(
            aux(sp.loss_fn),
            _balancer("upgrad", enc),
            optax.sgd(0.1),
            representation=r,
            has_aux=True,
            mesh=mesh,
        )
        assert step.mode == "gramian"
        state = step.init(sp.make_params())
        metrics = []
        for b in batches:
            state, m = step(state, mtl.training.shard_batch(b, mesh))
            metrics.append(m)
        out.append((state, metrics))
    return out


def test_make_train_step_splits_by_itself_with_aux_on_a_mesh_and_skips_alike():
    poisoned = sp.make_batch(seed=1)
    poisoned["grad_poison"][:, 1] = np.inf  # task 1's heads/w gradient is inf
    batches = [sp.make_batch(), sp.make_batch(seed=2), poisoned]
    (s, ms), (u, mu) = _steps(REP, batches, mesh=jax.make_mesh((4,), ("data",)))
    _close(jax.device_get(s.params), jax.device_get(u.params))
    for a, b in zip(ms[:2], mu[:2], strict=True):
        _close(a["weights"], b["weights"], rtol=1e-4, atol=1e-5)
        assert bool(a["finite"]) and float(a["aux"]["n"]) == 1.0
    assert not bool(ms[2]["finite"]) and not bool(mu[2]["finite"])
    np.testing.assert_array_equal(
        np.asarray(ms[2]["task_finite"]), np.asarray(mu[2]["task_finite"])
    )
    assert int(s.skipped) == int(u.skipped) == 1
