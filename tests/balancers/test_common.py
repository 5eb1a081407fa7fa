"""The matrix every balancer passes (STYLE.md habit 7).

Jitted and un-jitted updates agree; the update has the structure and shapes of
``params``; it is finite on degenerate Jacobians (zero, identical, opposite,
collinear task gradients, a single task); ``shared=`` routes task-specific
leaves to the plain sum; repeated updates descend on a two-task problem; the
recorded weights are those of the update just returned; the state keeps its
structure, shapes and dtypes (also under x64); and every state, with and without
``num_tasks``, round-trips through orbax and flax.serialization and continues
bit-identically.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl

NAMES = [
    "equal_weighting",
    "mgda",
    "uncertainty_weighting",
    "gradnorm",
    "pcgrad",
    "gradvac",
    "graddrop",
    "imtl",
    "cagrad",
    "nash_mtl",
    "aligned_mtl",
    "upgrad",
    "dualproj",
    "conflict_free",
    "fairgrad",
    "dwa",
    "rlw",
    "gls",
    "db_mtl",
    "famo",
    "stch",
]


# Balancers that cannot run without num_tasks (their state needs K).
NEEDS_K = {"uncertainty_weighting", "gradnorm", "gradvac", "dwa", "rlw", "db_mtl", "famo", "stch"}
# Balancers whose update is not Σ_k w_k g_k: what they record instead (GradDrop: ones).
NOT_WEIGHTED = {"graddrop"}


def make(name: str, k: int | None, **kwargs):
    """Builds balancer ``name`` for ``k`` tasks (``None``: no num_tasks) with defaults."""
    factory = getattr(mtl.balancers, name)
    sig = inspect.signature(factory).parameters
    if "num_tasks" in sig and k is not None:
        kwargs.setdefault("num_tasks", k)
    if "seed" in sig:
        kwargs.setdefault("seed", 0)
    return factory(**kwargs)


def _params():
    return {
        "encoder": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros((2,))},
        "heads": {"kernel": jnp.zeros((2, 2))},
    }


def _jac(rows: np.ndarray):
    """A task Jacobian over ``_params()`` from a ``[K, 12]`` matrix."""
    rows = jnp.asarray(rows, jnp.float32)
    k = rows.shape[0]
    return {
        "encoder": {"kernel": rows[:, :6].reshape(k, 3, 2), "bias": rows[:, 6:8]},
        "heads": {"kernel": rows[:, 8:].reshape(k, 2, 2)},
    }


def _losses(k):
    return jnp.linspace(1.0, 2.0, k)


def _run(tx, jac, losses, steps=2, jit=True, update=None):
    params = _params()
    state = tx.init(params)
    if update is None:
        update = _updater(tx, jit)
    outs = []
    for i in range(steps):
        out, state = update(jac, state, losses * (1.0 - 0.1 * i))
        outs.append(out)
    return outs, state


def _updater(tx, jit=True):
    params = _params()
    fn = lambda jac, state, losses: tx.update(jac, state, params, task_losses=losses)
    return jax.jit(fn) if jit else fn


@pytest.fixture(params=NAMES)
def name(request):
    return request.param


def test_jit_matches_eager_and_structure(name, rng):
    j = _jac(rng.normal(size=(3, 12)))
    jitted, s1 = _run(make(name, 3), j, _losses(3))
    eager, s2 = _run(make(name, 3), j, _losses(3), jit=False)
    for a, b in zip(jitted, eager):
        assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(_params())
        for x, y, p in zip(*(jax.tree_util.tree_leaves(t) for t in (a, b, _params()))):
            assert x.shape == p.shape
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    for x, y in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)):
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_finite_on_degenerate(name, rng):
    g = rng.normal(size=(12,))
    cases = {
        3: {
            "zero": np.zeros((3, 12)),
            "identical": np.stack([g, g, g]),
            "collinear": np.stack([g, 2 * g, 0.5 * g]),
        },
        2: {"opposite": np.stack([g, -g]), "one_zero": np.stack([g, np.zeros(12)])},
        1: {"single": g[None]},
    }
    for k, by_case in cases.items():
        tx = make(name, k)
        update = _updater(tx)
        for case, rows in by_case.items():
            outs, state = _run(tx, _jac(rows), _losses(k), update=update)
            for out in outs:
                for x in jax.tree_util.tree_leaves(out):
                    assert np.all(np.isfinite(x)), (name, case, out)
            for x in jax.tree_util.tree_leaves(state):
                if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
                    assert np.all(np.isfinite(x)), (name, case, state)


def test_shared_routing(name, rng):
    j = _jac(rng.normal(size=(3, 12)))
    shared = lambda path, _: "encoder" in jax.tree_util.keystr(path)
    (out,), _ = _run(make(name, 3, shared=shared), j, _losses(3), steps=1)
    np.testing.assert_allclose(out["heads"]["kernel"], jnp.sum(j["heads"]["kernel"], 0), rtol=1e-6)
    assert out["encoder"]["kernel"].shape == (3, 2)
    assert np.all(np.isfinite(out["encoder"]["kernel"]))


def test_rejects_bad_inputs(name, rng):
    tx = make(name, 3)
    params = _params()
    state = tx.init(params)
    j = _jac(rng.normal(size=(3, 12)))
    with pytest.raises(ValueError, match="task_losses"):
        tx.update(j, state, params, task_losses=jnp.ones(2))
    bad = dict(j, heads={"kernel": jnp.ones((2, 2))})
    with pytest.raises(ValueError):
        tx.update(bad, state, params, task_losses=jnp.ones(3))


def test_descends_on_two_task_problem(name):
    # Two quadratics with partly conflicting minima: L_k = ½‖A_k θ − b_k‖².
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.normal(size=(2, 6, 12)) / 3.0, jnp.float32)
    b = jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)

    def losses(p):
        theta = jnp.concatenate(
            [p["encoder"]["kernel"].ravel(), p["encoder"]["bias"], p["heads"]["kernel"].ravel()]
        )
        r = jnp.einsum("kij,j->ki", a, theta) - b
        return 0.5 * jnp.sum(r**2, axis=1)

    tx = optax.chain(make(name, 2), optax.sgd(0.05))
    params = _params()
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        values, jac = mtl.value_and_jacobian(losses)(p)
        u, s = tx.update(jac, s, p, task_losses=values)
        return optax.apply_updates(p, u), s

    start = losses(params)
    for _ in range(60):
        params, state = step(params, state)
    end = losses(params)
    assert np.all(np.isfinite(end))
    assert float(jnp.sum(end)) < 0.9 * float(jnp.sum(start)), (name, start, end)


def _orthonormal_jac(rng, k=3):
    q, _ = np.linalg.qr(rng.normal(size=(12, k)))
    return q.T  # [K, 12], orthonormal rows


def _flat(tree):
    p = tree
    return jnp.concatenate(
        [p["encoder"]["kernel"].ravel(), p["encoder"]["bias"], p["heads"]["kernel"].ravel()]
    )


def test_recorded_weights_are_the_weights_applied(name, rng):
    """On orthonormal task gradients ⟨update, g_k⟩ = w_k reveals the applied weights."""
    rows = _orthonormal_jac(rng)
    j = _jac(rows)
    tx = make(name, 3)
    update = _updater(tx)
    state = tx.init(_params())
    for i in range(3):
        out, state = update(j, state, _losses(3) * (1.0 - 0.2 * i))
        recorded = np.asarray(mtl.balancers.task_weights(state))
        if name in NOT_WEIGHTED:
            np.testing.assert_array_equal(recorded, np.ones(3))
            continue
        applied = np.asarray(rows, np.float32) @ np.asarray(_flat(out))
        np.testing.assert_allclose(recorded, applied, rtol=2e-4, atol=2e-5, err_msg=f"step {i}")


def _signature(state):
    leaves, treedef = jax.tree_util.tree_flatten(state)
    return treedef, [(jnp.shape(x), jnp.result_type(x)) for x in leaves]


@pytest.mark.parametrize("x64", [False, True])
def test_state_keeps_structure_shapes_dtypes(name, rng, x64):
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        j = jax.tree_util.tree_map(lambda x: x.astype(dtype), _jac(rng.normal(size=(3, 12))))
        losses = _losses(3).astype(dtype)
        tx = make(name, 3)
        state = tx.init(_params())
        before = _signature(state)
        update = _updater(tx)
        for i in range(3):
            _, state = update(j, state, losses * (1.0 - 0.1 * i))
            assert _signature(state) == before, (name, before, _signature(state))
        # A lax.scan carry needs exactly this.
        jax.lax.scan(lambda s, _: (update(j, s, losses)[1], None), tx.init(_params()), length=2)


def _variants(name):
    return [3] if name in NEEDS_K else [3, None]


def test_state_is_checkpointable_and_resumes_bit_identically(name, rng, tmp_path):
    import flax.serialization
    import orbax.checkpoint as ocp

    j = _jac(rng.normal(size=(3, 12)))
    for k in _variants(name):
        tx = make(name, k)
        update = _updater(tx)
        state = tx.init(_params())
        for i in range(2):
            _, state = update(j, state, _losses(3) * (1.0 - 0.1 * i))
        for x in jax.tree_util.tree_leaves(state):
            assert jnp.size(x) > 0, (name, k, "zero-size leaf")
            assert not jnp.issubdtype(jnp.result_type(x), jax.dtypes.prng_key), (name, k)
        if k is not None:
            assert mtl.balancers.task_weights(state).shape == (3,)
        else:
            assert mtl.balancers.task_weights(state, None) is None
        expected, _ = update(j, state, _losses(3) * 0.5)

        path = tmp_path / f"{name}_{k}"
        ckpt = ocp.StandardCheckpointer()
        ckpt.save(path, state)
        ckpt.wait_until_finished()
        from_orbax = ckpt.restore(path, state)
        from_flax = flax.serialization.from_bytes(state, flax.serialization.to_bytes(state))
        for restored in (from_orbax, from_flax):
            assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(state)
            got, _ = update(j, restored, _losses(3) * 0.5)
            for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
