"""PCD (Priority-Constrained Descent): torchjd's ``PCD`` step by step, the KKT conditions
and a quadprog reference in float64, the two-task closed form, the special cases, scale
invariance, jit/vmap/scan, task presence, non-finite inputs and bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax import weighting as W

K = 4
P = 10


def _sequence(seed, steps=6, k=K):
    """Jacobians ``[k, P]`` whose rows drift around fixed directions, with per-task norms
    spanning two orders of magnitude, plus the special steps: an infeasible one (two
    opposite secondary gradients), one with ``g_1 = 0`` and one with a zero secondary."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(k, P)) * np.logspace(-1, 1, k)[:, None]
    out = []
    for t in range(steps):
        j = base + 0.8 * rng.normal(size=(k, P)) * np.abs(base).mean(1, keepdims=True)
        if t == 2 and k >= 3:
            j[2] = -3.0 * j[1]  # g_2 and g_3 opposite: no d meets both constraints
        if t == 3:
            j[0] = 0.0
        if t == 4:
            j[k - 1] = 0.0
        out.append(j)
    return out


def _update_fn(tx, k=K):
    return jax.jit(lambda s, j, p=None: tx.update({"w": j}, s, task_losses=jnp.ones(k)))


TAUS = [0.02, 0.4, [0.1, 0.6, 0.3]]


@pytest.mark.parametrize("tau", TAUS, ids=["default", "0.4", "vector"])
def test_matches_torchjd_step_by_step(tau):
    torch = pytest.importorskip("torch")
    agg = pytest.importorskip("torchjd.aggregation")

    beta = 0.9
    ref_tau = torch.tensor(tau, dtype=torch.float64) if isinstance(tau, list) else tau
    ref = agg.PCDWeighting(tau=ref_tau, beta=beta)
    tx = mtl.balancers.pcd(num_tasks=K, tau=tau, beta=beta)
    update = _update_fn(tx)
    state = tx.init(None)
    worst_w = worst_d = 0.0
    for t, j in enumerate(_sequence(seed=1)):
        expected = ref(torch.tensor(j @ j.T)).numpy()
        out, state = update(state, jnp.asarray(j, jnp.float32))
        got = np.asarray(mtl.balancers.task_weights(state), np.float64)
        scale = np.abs(expected).max() if np.any(expected) else 1.0
        np.testing.assert_allclose(got, expected, rtol=0, atol=5e-6 * scale, err_msg=f"step {t}")
        d_ref = expected @ j
        d = np.asarray(out["w"], np.float64)
        tol = 5e-6 * max(np.linalg.norm(j[0]), 1e-12)
        np.testing.assert_allclose(d, d_ref, rtol=0, atol=tol, err_msg=f"update, step {t}")
        worst_w = max(worst_w, float(np.abs(got - expected).max() / scale))
        worst_d = max(worst_d, float(np.linalg.norm(d - d_ref) / max(np.linalg.norm(j[0]), 1e-12)))
        if t == 2:  # infeasible: the update is g_1
            np.testing.assert_allclose(got, [1.0, 0.0, 0.0, 0.0], atol=1e-6)
        if t == 3:  # g_1 = 0: no update
            np.testing.assert_array_equal(got, np.zeros(K))
    # The moving averages agree too (torchjd keeps them in float64).
    np.testing.assert_allclose(
        np.asarray(state.sq_norm_ema), ref._sq_norm_ema.numpy(), rtol=1e-6, atol=0
    )
    print(f"[pcd tau={tau}] largest |w - torchjd|/max|w| = {worst_w:.1e}, ", end="")
    print(f"largest ‖d - d_torchjd‖/‖g_1‖ = {worst_d:.1e}")


def test_matches_torchjd_in_float64_on_hard_cases():
    """Nearly opposite secondary gradients (large multipliers, or infeasible) and more
    tasks than dimensions (dependent gradients): the same weights as torchjd, including
    its infeasibility decisions, when both work in float64."""
    torch = pytest.importorskip("torch")
    agg = pytest.importorskip("torchjd.aggregation")
    rng = np.random.default_rng(11)
    infeasible = 0
    with jax.enable_x64(True):
        for trial in range(24):
            k, p = (5, 20) if trial % 2 else (6, 3)
            j = rng.normal(size=(k, p)) * 10 ** rng.uniform(-2, 2, size=(k, 1))
            if trial % 3 == 0:  # g_3 nearly opposite to g_2
                angle = 10 ** rng.uniform(-3, -0.5)
                v = rng.normal(size=p)
                j[2] = -2.0 * (j[1] + angle * np.linalg.norm(j[1]) * v / np.linalg.norm(v))
            tau = float(rng.choice([0.0, 0.02, 0.3, 0.9]))
            g = j @ j.T
            expected = agg.PCDWeighting(tau=tau, eps=0.0)(torch.tensor(g)).numpy()
            got = np.asarray(W.pcd_weights(jnp.asarray(g), tau=tau))
            scale = np.abs(expected).max()
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8 * scale, err_msg=str(trial))
            infeasible += int(np.array_equal(expected, np.eye(k)[0]))
    assert 3 <= infeasible <= 21, infeasible  # both decisions are exercised


def test_nearly_dependent_active_set_is_infeasible_in_float64():
    """Five tasks in two dimensions, g_2 and g_3 nearly opposite (both become active with
    multipliers ~6e7): g_4 is then a combination of them whose orthogonal part is only
    rounding error. torchjd finds the constraints infeasible (update g_1); the solver
    used to take that rounding error for an independent direction and return w = 0."""
    j = np.array(
        [
            [-2.9265622150442097, 1.662412029726959],
            [7.596543982200407, -2.298287480187404],
            [-15.195360767201757, 4.598913886096025],
            [0.7078142759023055, -8.210898215926099],
            [-0.014712874494892522, 0.011381268817535732],
        ]
    )
    with jax.enable_x64(True):
        w = np.asarray(W.pcd_weights(jnp.asarray(j @ j.T), tau=0.3))
    np.testing.assert_allclose(w, [1.0, 0.0, 0.0, 0.0, 0.0], atol=1e-12)


def _quadprog_direction(gt, taus):
    """``argmin ½‖d − g̃_1‖²`` s.t. ``g̃_jᵀd ≥ τ_j‖g̃_j‖²`` by quadprog, in float64."""
    import quadprog

    g1, gs = gt[0], gt[1:]
    c = taus * np.sum(gs * gs, axis=1)
    # quadprog: min ½ xᵀGx − aᵀx s.t. Cᵀx ≥ b
    return quadprog.solve_qp(np.eye(gt.shape[1]), g1, gs.T.copy(), c, 0)[0]


def test_kkt_and_quadprog_reference_in_float64():
    pytest.importorskip("quadprog")
    rng = np.random.default_rng(3)
    fn = jax.jit(lambda g, t: W.pcd_weights(g, tau=t))  # a traced τ
    active, worst = 0, 0.0
    with jax.enable_x64(True):
        for trial in range(12):
            k = 5
            j = rng.normal(size=(k, 7)) * rng.uniform(0.1, 10.0, size=(k, 1))
            taus = rng.uniform(0.05, 0.6, size=k - 1)
            w = np.asarray(fn(jnp.asarray(j @ j.T), jnp.asarray(taus)), np.float64)
            assert w.dtype == np.float64
            s = 1.0 / np.linalg.norm(j, axis=1)  # scales=None: the first step with ε = 0
            gt = j * s[:, None]
            ratio = w[0] / s[0]  # w = ratio · s ∘ (e_1 + μ)
            mu = w[1:] / s[1:] / ratio
            d_tilde = gt[0] + mu @ gt[1:]
            slack = gt[1:] @ d_tilde - taus * np.sum(gt[1:] ** 2, axis=1)
            assert np.all(mu >= 0.0), (trial, mu)
            assert np.all(slack >= -1e-12), (trial, slack)
            np.testing.assert_allclose(mu * slack, 0.0, atol=1e-12, err_msg=str(trial))
            ref = _quadprog_direction(gt, taus)
            np.testing.assert_allclose(d_tilde, ref, atol=1e-12, err_msg=str(trial))
            worst = max(worst, float(np.abs(d_tilde - ref).max()), float(-slack.min()))
            # The update has the primary gradient's norm.
            np.testing.assert_allclose(np.linalg.norm(w @ j), np.linalg.norm(j[0]), rtol=1e-10)
            active += int(np.sum(mu > 1e-9))
    print(f"[pcd float64] largest |d - quadprog| or violation: {worst:.1e}")
    assert active >= 10  # the draws exercise the constraints


def test_float_tau_equals_the_constant_vector_and_traced_tau():
    """A float τ, the same value as a vector and as a traced vector give the same weights;
    a traced τ out of [0, 1] gives NaN weights."""
    j = _sequence(seed=4)[0]
    g = jnp.asarray(j @ j.T, jnp.float32)
    a = W.pcd_weights(g, tau=0.3)
    b = W.pcd_weights(g, tau=np.full(K - 1, 0.3))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    traced = jax.jit(lambda t: W.pcd_weights(g, tau=t))
    np.testing.assert_allclose(traced(jnp.full(K - 1, 0.3)), a, rtol=1e-6, atol=1e-7)
    assert np.all(np.isnan(np.asarray(traced(jnp.asarray([0.3, 1.2, 0.3])))))


def _two_task_closed_form(j, tau):
    g1, g2 = j[0] / np.linalg.norm(j[0]), j[1] / np.linalg.norm(j[1])
    mu = max(0.0, (tau * (g2 @ g2) - g2 @ g1) / (g2 @ g2))
    d = g1 + mu * g2
    return d * np.linalg.norm(j[0]) / np.linalg.norm(d), np.linalg.norm(d)


@pytest.mark.parametrize("angle", [30.0, 95.0, 150.0, 179.0])
@pytest.mark.parametrize("tau", [0.0, 0.3])
def test_two_tasks_closed_form(angle, tau):
    """In float64, and in float32 to a tolerance that grows as ‖d̃‖ shrinks: ‖d̃‖² is read
    from the Gram matrix, so its rounding error is ε_mach relative to ‖g̃_1‖² (at 179°
    with τ = 0, ‖d̃‖ = sin 1° ≈ 0.017 and the float32 rescaling is off by ~2e-4)."""
    a = np.deg2rad(angle)
    j = np.array([[3.0, 0.0, 0.0], [0.5 * np.cos(a), 0.5 * np.sin(a), 0.0]])
    expected, d_tilde = _two_task_closed_form(j, tau)
    with jax.enable_x64(True):
        w = np.asarray(W.pcd_weights(jnp.asarray(j @ j.T), tau=tau))
    np.testing.assert_allclose(w @ j, expected, atol=1e-7 * 3.0)
    w = np.asarray(W.pcd_weights(jnp.asarray(j @ j.T, jnp.float32), tau=tau), np.float64)
    np.testing.assert_allclose(w @ j, expected, atol=1e-5 * 3.0 / d_tilde**2)


def test_special_cases():
    g = np.array([1.0, 2.0, -1.0])
    h = np.array([0.5, -1.0, 2.0])

    def weights(rows, tau):
        rows = np.asarray(rows, np.float32)
        return np.asarray(W.pcd_weights(jnp.asarray(rows @ rows.T), tau=tau))

    # d̃ = 0: the only direction with ⟨−g_1, d⟩ ≥ 0 closest to g_1 is 0.
    np.testing.assert_array_equal(weights([g, -g], 0.0), [0.0, 0.0])
    # τ > 0 with g_2 = −g_1: d̃ = g̃_1 + μ g̃_2 with μ = 1 + τ, a multiple of g_2.
    w = weights([g, -g], 0.5)
    np.testing.assert_allclose(w @ np.stack([g, -g]), -g, atol=1e-5)
    # Opposite secondary gradients with τ > 0: infeasible, the update is g_1.
    np.testing.assert_allclose(weights([g, h, -2.0 * h], 0.1), [1.0, 0.0, 0.0], atol=1e-6)
    # ... but feasible with τ = 0 (d ⊥ h): g_1 minus its projection on h.
    w = weights([g, h, -2.0 * h], 0.0)
    d = g - (g @ h) / (h @ h) * h
    np.testing.assert_allclose(
        w @ np.stack([g, h, -2.0 * h]), d * np.linalg.norm(g) / np.linalg.norm(d), atol=1e-5
    )
    # g_1 = 0: no update; a zero secondary gradient does not constrain.
    np.testing.assert_array_equal(weights([0 * g, h], 0.5), [0.0, 0.0])
    np.testing.assert_allclose(weights([g, 0 * h], 0.5), [1.0, 0.0], atol=1e-7)
    # A single task: its own gradient.
    np.testing.assert_allclose(weights([g], 0.5), [1.0], atol=1e-7)


def test_secondary_scale_invariance_and_primary_scale():
    """Scaling a secondary task's gradient by c at every step leaves the updates as they
    were (up to ε); scaling the primary's scales the update by c."""
    seq = _sequence(seed=5, steps=4)
    tx = mtl.balancers.pcd(num_tasks=K, tau=0.4, beta=0.9, eps=0.0)
    update = _update_fn(tx)

    def run(factors):
        state, outs = tx.init(None), []
        for j in seq:
            out, state = update(state, jnp.asarray(j * factors[:, None], jnp.float32))
            outs.append(np.asarray(out["w"], np.float64))
        return outs

    base = run(np.ones(K))
    for a, b in zip(run(np.array([1.0, 100.0, 0.01, 7.0])), base):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max() + 1e-7)
    for a, b in zip(run(np.array([10.0, 1.0, 1.0, 1.0])), base):
        np.testing.assert_allclose(a, 10.0 * b, rtol=0, atol=1e-4 * np.abs(b).max() + 1e-6)


def test_vmap_and_scan_inside_jit():
    seq = [jnp.asarray(j, jnp.float32) for j in _sequence(seed=6, steps=4)]
    grams = jnp.stack([j @ j.T for j in seq])
    scales = jnp.asarray(np.random.default_rng(0).uniform(0.5, 2.0, size=(4, K)), jnp.float32)
    batched = jax.jit(jax.vmap(lambda g, s: W.pcd_weights(g, s, tau=0.3)))(grams, scales)
    for g, s, w in zip(grams, scales, batched):
        np.testing.assert_allclose(w, W.pcd_weights(g, s, tau=0.3), rtol=1e-5, atol=1e-6)

    tx = mtl.balancers.pcd(num_tasks=K, tau=0.3)

    @jax.jit
    def scanned(jacs):
        def body(state, j):
            out, state = tx.update({"w": j}, state, task_losses=jnp.ones(K))
            return state, out["w"]

        return jax.lax.scan(body, tx.init(None), jacs)

    final, outs = scanned(jnp.stack(seq))
    update = _update_fn(tx)
    state = tx.init(None)
    for j, o in zip(seq, outs):
        out, state = update(state, j)
        np.testing.assert_allclose(o, out["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.sq_norm_ema, state.sq_norm_ema, rtol=1e-6)
    np.testing.assert_array_equal(final.task_steps, [4, 4, 4, 4])


@pytest.mark.parametrize("absent", [2, 0], ids=["secondary_absent", "primary_absent"])
def test_absent_task_is_left_out(absent):
    """With task ``absent`` missing (NaN gradient) the K-task step equals PCD on the
    present tasks alone (their τ entries; with the primary absent the first present task
    leads), and the absent task's moving average and step count do not move."""
    tau = [0.1, 0.6, 0.3]
    present = [i for i in range(K) if i != absent]
    # The |S|-task τ: the secondaries' entries, after the leader's when the primary is absent.
    tau_s = [tau[i - 1] for i in present[1:]]
    tx = mtl.balancers.pcd(num_tasks=K, tau=tau, beta=0.9)
    tx_s = mtl.balancers.pcd(num_tasks=K - 1, tau=tau_s, beta=0.9)
    step = jax.jit(lambda s, j, m: tx.update({"w": j}, s, task_losses=jnp.ones(K), task_presence=m))
    step_s = _update_fn(tx_s, K - 1)
    seq = _sequence(seed=7, steps=4)
    state = tx.init(None)
    for j in seq[:2]:
        _, state = step(state, jnp.asarray(j, jnp.float32), jnp.ones(K, bool))
    idx = np.asarray(present)
    state_s = tx_s.init(None)._replace(
        sq_norm_ema=state.sq_norm_ema[idx], task_steps=state.task_steps[idx]
    )
    mask = jnp.asarray([i != absent for i in range(K)])
    for j in seq[2:]:
        j = np.array(j)
        j[absent] = np.nan
        before = state
        out, state = step(state, jnp.asarray(j, jnp.float32), mask)
        out_s, state_s = step_s(state_s, jnp.asarray(j[idx], jnp.float32))
        w = np.asarray(mtl.balancers.task_weights(state))
        assert w[absent] == 0.0 and np.all(np.isfinite(w)), w
        np.testing.assert_allclose(out["w"], out_s["w"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w[idx], state_s.weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.sq_norm_ema[idx], state_s.sq_norm_ema, rtol=1e-6)
        assert state.sq_norm_ema[absent] == before.sq_norm_ema[absent]
        assert state.task_steps[absent] == before.task_steps[absent] == 2


def test_non_finite_gradient_gives_nan_and_keeps_the_state():
    tx = mtl.balancers.pcd(num_tasks=K)
    update = _update_fn(tx)
    seq = _sequence(seed=8, steps=2)
    _, state = update(tx.init(None), jnp.asarray(seq[0], jnp.float32))
    bad = np.array(seq[1])
    bad[1, 3] = np.inf
    out, new = update(state, jnp.asarray(bad, jnp.float32))
    assert np.all(np.isnan(np.asarray(mtl.balancers.task_weights(new))))
    assert not np.all(np.isfinite(np.asarray(out["w"])))
    np.testing.assert_array_equal(new.sq_norm_ema, state.sq_norm_ema)
    np.testing.assert_array_equal(new.task_steps, state.task_steps)


def test_pure_functions_on_a_known_case():
    """The moving average, its bias correction and the scales, by hand."""
    g = jnp.diag(jnp.asarray([4.0, 9.0, 0.0]))
    v, n = W.pcd_norms_update(jnp.zeros(3), jnp.zeros(3, jnp.int32), g, beta=0.5)
    np.testing.assert_allclose(v, [2.0, 4.5, 0.0])
    np.testing.assert_array_equal(n, [1, 1, 1])
    s = W.pcd_scales(v, n, beta=0.5, eps=0.0)
    np.testing.assert_allclose(s, [0.5, 1.0 / 3.0, 0.0], rtol=1e-6)  # v̂ = ‖g‖² at step 1
    v, n = W.pcd_norms_update(v, n, g * 4.0, beta=0.5, presence=jnp.asarray([True, False, True]))
    np.testing.assert_allclose(v, [9.0, 4.5, 0.0])  # 0.5·2 + 0.5·16; task 2 kept
    np.testing.assert_array_equal(n, [2, 1, 2])
    s = W.pcd_scales(v, n, beta=0.5, eps=0.0)
    np.testing.assert_allclose(s[0], 1.0 / np.sqrt(9.0 / 0.75), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": -0.1}, r"tau must be in \[0, 1\], got -0.1"),
        ({"tau": 1.5}, r"tau must be in \[0, 1\], got 1.5"),
        ({"tau": float("nan")}, "tau must be in"),
        ({"tau": True}, "tau must be a real number"),
        ({"tau": "0.1"}, "tau must be a real number"),
        ({"tau": [0.1, 0.2]}, r"one entry per secondary task \(3 for num_tasks=4\), got 2"),
        ({"tau": [0.1, 2.0, 0.3]}, r"tau must have every entry in \[0, 1\]"),
        ({"tau": [[0.1, 0.2, 0.3]]}, "tau must be a float or a 1-D vector"),
        ({"beta": 1.0}, r"beta must be"),
        ({"beta": -0.1}, r"beta must be"),
        ({"eps": -1e-3}, r"eps must be"),
        ({"num_tasks": None}, "num_tasks"),
        ({"max_iters": 0}, "max_iters"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtl.balancers.pcd(**({"num_tasks": K} | kwargs))


def test_weighting_rejects_bad_arguments():
    g = jnp.eye(3)
    with pytest.raises(ValueError, match=r"tau must have one entry per secondary task"):
        W.pcd_weights(g, tau=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"scales must have shape \(3,\)"):
        W.pcd_weights(g, jnp.ones(2))
    with pytest.raises(ValueError, match="max_iters"):
        W.pcd_weights(g, max_iters=0)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        W.pcd_norms_update(jnp.zeros(3), jnp.zeros(3, jnp.int32), g, beta=1.0)
    with pytest.raises(ValueError, match="presence must have shape"):
        W.pcd_weights(g, presence=jnp.ones(2, bool))
