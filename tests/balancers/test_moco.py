"""MoCo against NumPy float64 transcriptions of the paper's Algorithm 1 and of LibMTL's variant.

Paper (Fernando et al. 2023, Algorithm 1): Y ← Y − β_t (Y − J); λ ← Π_Δ(λ − γ_t (YYᵀ + ρI) λ);
update Yᵀλ. LibMTL: each g_k rescaled to L_k g_k / (‖g_k‖ + 1e-8) first, softmax in place of Π_Δ.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl

PARAMS = {"a": jnp.zeros((3,)), "b": jnp.zeros((2, 2))}


def _jac(rows):
    rows = jnp.asarray(rows, jnp.float32)
    k = rows.shape[0]
    return {"a": rows[:, :3], "b": rows[:, 3:].reshape(k, 2, 2)}


def _flat(tree):
    return np.concatenate([np.asarray(tree["a"]), np.asarray(tree["b"]).ravel()])


def _proj_simplex(v):
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    idx = np.arange(1, len(v) + 1)
    rho = np.nonzero(u - css / idx > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1), 0.0)


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def _reference(seq, losses, *, beta, bs, gamma, gs, rho, libmtl):
    k, p = seq[0].shape
    y = np.zeros((k, p))
    lam = np.full(k, 1.0 / k)
    outs = []
    for t, (j, ls) in enumerate(zip(seq, losses), start=1):
        g = np.array(j, np.float64)
        if libmtl:
            g = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-8) * ls[:, None]
        y = y - beta / t**bs * (y - g)
        stepped = lam - gamma / t**gs * (y @ y.T + rho * np.eye(k)) @ lam
        lam = _softmax(stepped) if libmtl else _proj_simplex(stepped)
        outs.append((y.T @ lam, lam.copy(), y.copy()))
    return outs


@pytest.mark.parametrize("libmtl", [False, True])
def test_matches_numpy_transcription(libmtl):
    rng = np.random.default_rng(0)
    k, steps = 3, 8
    mean = rng.normal(size=(k, 7)) * rng.uniform(0.3, 2.0, size=(k, 1))
    seq = [mean + 0.5 * rng.normal(size=(k, 7)) for _ in range(steps)]
    losses = [rng.uniform(0.5, 2.0, size=k) for _ in range(steps)]
    hp = {"beta": 0.5, "bs": 0.5, "gamma": 0.3, "gs": 0.5, "rho": 0.1}
    expected = _reference(seq, losses, libmtl=libmtl, **hp)
    tx = mtl.balancers.moco(
        num_tasks=k,
        beta=hp["beta"],
        beta_decay=hp["bs"],
        gamma=hp["gamma"],
        gamma_decay=hp["gs"],
        rho=hp["rho"],
        normalization="loss" if libmtl else "none",
        projection="softmax" if libmtl else "simplex",
    )
    state = tx.init(PARAMS)
    update = jax.jit(lambda s, j, ls: tx.update(j, s, PARAMS, task_losses=ls))
    worst = 0.0
    for j, ls, (d, lam, y) in zip(seq, losses, expected):
        out, state = update(state, _jac(j), jnp.asarray(ls, jnp.float32))
        np.testing.assert_allclose(_flat(out), d, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(state.weights, lam, rtol=1e-5, atol=1e-6)
        got_y = np.concatenate(
            [np.asarray(state.tracked[0]), np.asarray(state.tracked[1]).reshape(k, -1)], axis=1
        )
        np.testing.assert_allclose(got_y, y, rtol=1e-5, atol=1e-6)
        worst = max(worst, float(np.max(np.abs(_flat(out) - d))))
    print(f"[moco libmtl={libmtl}] largest |update - numpy| = {worst:.2e}")


def test_absent_task_keeps_its_state_and_present_tasks_match_the_subset_run():
    tx4 = mtl.balancers.moco(num_tasks=4)
    tx3 = mtl.balancers.moco(num_tasks=3)
    idx = np.array([0, 1, 3])
    present = jnp.array([True, True, False, True])
    rng = np.random.default_rng(4)
    s4 = tx4.init(PARAMS)
    update4 = jax.jit(
        lambda s, j, p: tx4.update(j, s, PARAMS, task_losses=jnp.ones(4), task_presence=p)
    )
    for step in range(4):
        rows = rng.normal(size=(4, 7))
        if step % 2 == 0:
            _, s4 = update4(s4, _jac(rows), jnp.ones(4, bool))
            continue
        restricted = jax.tree_util.tree_map(lambda x: x[idx] if x.ndim else x, s4)
        bad = rows.copy()
        bad[2] = np.nan
        out4, new4 = update4(s4, _jac(bad), present)
        out3, new3 = tx3.update(_jac(rows[idx]), restricted, PARAMS, task_losses=jnp.ones(3))
        np.testing.assert_allclose(_flat(out4), _flat(out3), rtol=1e-5, atol=1e-6)
        assert new4.weights[2] == 0.0 and new4.lam[2] == s4.lam[2]
        for new, old in zip(new4.tracked, s4.tracked):
            np.testing.assert_array_equal(np.asarray(new)[2], np.asarray(old)[2])
        np.testing.assert_allclose(new4.lam[idx], new3.lam, rtol=1e-5, atol=1e-7)
        s4 = new4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": 0.0}, "beta"),
        ({"gamma": -1.0}, "gamma"),
        ({"normalization": "l2"}, "normalization"),
        ({"projection": "exp"}, "projection"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtl.balancers.moco(num_tasks=2, **kwargs)
