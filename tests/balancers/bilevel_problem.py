"""Quadratic tasks and a jitted meta-train loop shared by the bilevel balancers' tests."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


def quadratic_problem(k: int, d: int, *, seed: int, theta_scale: float = 1.0):
    """``K`` training and ``K`` validation quadratics ``(M, c)`` and a start ``θ`` (float64)."""
    rng = np.random.default_rng(seed)
    mats = []
    for _ in range(2 * k):
        m = rng.normal(size=(d, d))
        mats.append(m @ m.T / d + 0.5 * np.eye(d))
    a, b = rng.normal(size=(k, d)), rng.normal(size=(k, d))
    return np.stack(mats[:k]), np.stack(mats[k:]), a, b, theta_scale * rng.normal(size=d)


def task_losses(params, batch):
    """``L_k = ½ (θ − c_k)ᵀ M_k (θ − c_k)``; the batch holds ``(M, c)``."""
    m, c = batch
    r = params["theta"][None] - c
    return 0.5 * jnp.einsum("ki,kij,kj->k", r, m, r)


def meta_train(tx, step):
    """A jitted step that runs ``tx.meta_update`` on a validation batch, then the train step."""

    @jax.jit
    def train(state, batch, val):
        bstate = tx.meta_update(state.balancer_state, state.params, batch, val)
        return step.step(state._replace(balancer_state=bstate), batch)

    return train


def assert_resumes_bit_identically(train, state, batch, val, directory):
    """The balancer state survives orbax and flax round trips: the next step is bit-identical."""
    expected, _ = train(state, batch, val)
    bstate = state.balancer_state
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(directory, bstate)
    ckpt.wait_until_finished()
    from_orbax = ckpt.restore(directory, bstate)
    from_flax = flax.serialization.from_bytes(bstate, flax.serialization.to_bytes(bstate))
    for restored in (from_orbax, from_flax):
        assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(bstate)
        got, _ = train(state._replace(balancer_state=restored), batch, val)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
