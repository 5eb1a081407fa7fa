"""Gram matrix, task norms and the task-axis contraction against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax import _task_tree
from mtl_jax._task_tree import resolve_mask


@pytest.fixture
def jac(rng):
    return {
        "a": jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32),
        "b": [jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)],
    }


def _flat(jac, keep=None):
    leaves = jax.tree_util.tree_leaves(jac)
    keep = keep or [True] * len(leaves)
    return np.concatenate([np.asarray(x).reshape(3, -1) for x, k in zip(leaves, keep) if k], axis=1)


def test_gram_and_norms(jac):
    j = _flat(jac)
    np.testing.assert_allclose(mtl.gram(jac), j @ j.T, rtol=1e-5)
    np.testing.assert_allclose(mtl.task_norms(jac), np.linalg.norm(j, axis=1), rtol=1e-5)


def test_gram_mask(jac):
    mask = {"a": False, "b": [True]}
    j = _flat(jac, [False, True])
    np.testing.assert_allclose(mtl.gram(jac, mask), j @ j.T, rtol=1e-5)
    by_path = lambda path, _: jax.tree_util.keystr(path).startswith("['b']")
    np.testing.assert_allclose(mtl.gram(jac, by_path), j @ j.T, rtol=1e-5)
    with pytest.raises(ValueError, match="selects no leaf"):
        mtl.gram(jac, {"a": False, "b": [False]})
    with pytest.raises(ValueError, match="does not match"):
        resolve_mask({"a": True}, jac)


def test_combine_and_sum(jac):
    w = jnp.array([0.5, -1.0, 2.0])
    out = mtl.combine(w, jac)
    np.testing.assert_allclose(out["a"], np.tensordot(np.asarray(w), jac["a"], 1), rtol=1e-5)
    np.testing.assert_allclose(mtl.sum_tasks(jac)["b"][0], np.sum(jac["b"][0], 0), rtol=1e-6)
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        mtl.combine(jnp.ones(2), jac)


def test_num_tasks_errors():
    with pytest.raises(ValueError, match="disagree"):
        mtl.num_tasks({"a": jnp.ones((2, 3)), "b": jnp.ones((3,))})
    with pytest.raises(ValueError, match="scalar"):
        mtl.num_tasks({"a": jnp.ones(())})


@pytest.mark.parametrize("parts", [1, 2, 3, 8])
@pytest.mark.parametrize("n", [16, 40, 43, 100])
def test_blocked_gram_matches_float64(n, parts, monkeypatch):
    """Blocked contraction (independent scans over column blocks, a tail) = the plain Gram."""
    from mtl_jax import _task_tree

    monkeypatch.setattr(_task_tree, "GRAM_BLOCK", 8)
    monkeypatch.setattr(_task_tree, "GRAM_PARTS", parts)
    rng = np.random.default_rng(n)
    leaf = rng.normal(size=(3, n)).astype(np.float32)
    small = rng.normal(size=(3, 2, 2)).astype(np.float32)
    g = jax.jit(_task_tree.gram)({"a": jnp.asarray(leaf), "b": jnp.asarray(small)})
    flat = np.concatenate([leaf, small.reshape(3, -1)], axis=1).astype(np.float64)
    np.testing.assert_allclose(g, flat @ flat.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3, 64, 65, 130])
def test_sum_leading_matches_numpy(k):
    x = np.random.default_rng(k).normal(size=(k, 5, 3)).astype(np.float32)
    got = jax.jit(_task_tree.sum_leading)(jnp.asarray(x))
    assert got.shape == (5, 3)
    np.testing.assert_allclose(np.asarray(got), x.astype(np.float64).sum(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("k", "symmetric"),
    [(1, True), (2, True), (7, True), (7, False), (40, True), (5, None), (6, None)],
)
def test_symmetric_gram_matches_float64(k, symmetric, monkeypatch):
    """The upper-block-triangle contraction (mirrored) and the plain one both equal
    ``J Jᵀ`` in float64 and are bitwise symmetric; ``symmetric=None`` switches to the
    triangle exactly from ``GRAM_SYM_MIN_TASKS`` tasks on (set to 6 here: K = 5, 6)."""
    monkeypatch.setattr(_task_tree, "GRAM_BLOCK", 8)
    monkeypatch.setattr(_task_tree, "GRAM_SYM_MIN_TASKS", 6)
    calls = []
    sym = _task_tree._sym_blocked_gram
    monkeypatch.setattr(
        _task_tree, "_sym_blocked_gram", lambda *a: calls.append(a[0].shape) or sym(*a)
    )
    rng = np.random.default_rng(k)
    leaf = rng.normal(size=(k, 43)).astype(np.float32)  # 5 blocks of 8 and a tail of 3
    small = rng.normal(size=(k, 3)).astype(np.float32)  # one dot
    g = np.asarray(jax.jit(lambda j: _task_tree.gram(j, symmetric=symmetric))((leaf, small)))
    flat = np.concatenate([leaf, small], axis=1).astype(np.float64)
    np.testing.assert_allclose(g, flat @ flat.T, rtol=1e-5, atol=1e-4)
    assert np.array_equal(g, g.T)
    want = symmetric if symmetric is not None else k >= 6
    assert calls == ([(k, 43)] if want and k > 1 else [])


def test_gram_symmetric_argument_checked(jac):
    with pytest.raises(TypeError, match="symmetric must be a bool or None, got 'yes'"):
        mtl.gram(jac, symmetric="yes")
