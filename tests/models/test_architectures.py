"""Shapes, gates, shared/task-specific masks and per-paper properties of the architectures."""

import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from arch_zoo import ARCHS, OUT, REPRESENTATION, B, K, apply, built


@pytest.mark.parametrize("name", ARCHS)
def test_shape_and_mask_match_dependencies(name):
    model, variables, inputs = built(name)
    key = jax.random.key(5)
    out = apply(model, variables, inputs, key=key)
    assert out.shape == (K, B, OUT)
    assert np.all(np.isfinite(out))
    # Which tasks' outputs each parameter entry reaches: differentiate each task alone.

    @jax.jit
    def per_task_grads(v):  # leaves [K, ...]: d sum(out[k]) / d v
        out, vjp = jax.vjp(lambda v: apply(model, v, inputs, key=key), v)
        cot = jnp.eye(K, dtype=out.dtype)[:, :, None, None] * jnp.ones_like(out)[None]
        return jax.vmap(lambda c: vjp(c)[0])(cot)

    grads = per_task_grads(variables)
    reach = jax.tree_util.tree_map(lambda g: np.sum(np.asarray(g) != 0, axis=0), grads)
    expected = jax.tree_util.tree_map(lambda r: bool(np.max(r) > 1), reach)
    assert model.shared_mask(variables) == expected
    # Every parameter reaches some task, and the mask has both kinds of leaves.
    assert all(np.max(r) >= 1 for r in jax.tree_util.tree_leaves(reach))
    leaves = jax.tree_util.tree_leaves(expected)
    assert any(leaves) and not all(leaves)
    # The mask works as shared= and matches on the "params" collection alone.
    assert model.shared_mask(variables["params"]) == expected["params"]


@pytest.mark.parametrize("name", ["mmoe", "mmoe_stem", "cgc", "ple", "dselect_k"])
def test_gates_sum_to_one(name):
    model, variables, inputs = built(name)
    g = jax.jit(lambda v: model.apply(v, inputs, method="gates"))(variables)
    assert g.shape[:2] == (K, B)
    assert np.all(g >= 0)
    np.testing.assert_allclose(np.sum(g, axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(REPRESENTATION))
def test_encode_decode(name):
    model, variables, inputs = built(name)

    @jax.jit
    def both(v):
        z = model.apply(v, inputs, method="encode")
        args = (z, inputs) if REPRESENTATION[name] else (z,)
        return model.apply(v, *args, method="decode"), model.apply(v, inputs)

    np.testing.assert_allclose(*both(variables), rtol=1e-6)
    # The representation depends only on shared parameters.
    mask = model.shared_mask(variables)
    g = jax.jit(jax.grad(
        lambda v: sum(jnp.sum(t) for t in jax.tree_util.tree_leaves(
            model.apply(v, inputs, method="encode")))
    ))(variables)  # fmt: skip
    for m, leaf in zip(jax.tree_util.tree_leaves(mask), jax.tree_util.tree_leaves(g)):
        if not m and name != "ple":  # PLE's encode also runs task gates of layer L-2
            assert np.all(np.asarray(leaf) == 0)


def test_cross_stitch_initialisation_and_independence(inputs):
    stages = [nn.Dense(4), nn.Dense(OUT)]
    v = mtl.models.CrossStitch(stages, num_tasks=2).init(jax.random.key(0), inputs)
    np.testing.assert_allclose(v["params"]["unit_0"], [[0.9, 0.1], [0.1, 0.9]], rtol=1e-6)
    ones = mtl.models.CrossStitch(stages, num_tasks=2, unit_init="ones", per_channel=True)
    vo = ones.init(jax.random.key(0), inputs)
    np.testing.assert_array_equal(vo["params"]["unit_0"], np.ones((2, 2, 4)))
    # With identity units the task networks are independent.
    ident = mtl.models.CrossStitch(stages, num_tasks=3, alpha_self=1.0)
    vi = ident.init(jax.random.key(0), inputs)
    g = jax.grad(lambda p: jnp.sum(ident.apply(p, inputs)[0]))(vi)["params"]["stage_0"]
    assert np.all(g["copies"]["module"]["kernel"][1:] == 0)
    assert np.any(g["copies"]["module"]["kernel"][0] != 0)
    with pytest.raises(ValueError, match="unit_init"):
        mtl.models.CrossStitch(stages, num_tasks=2, unit_init="eye").init(jax.random.key(0), inputs)


def test_dselect_k_selects_k_experts_once_saturated(inputs):
    model = mtl.models.DSelectK(
        nn.Dense(3), nn.Dense(OUT), num_tasks=K, num_experts=8, k=2, gamma=0.5
    )
    variables = model.init(jax.random.key(0), inputs)
    # Before saturation (zero biases: every |z| << γ/2): every expert gets weight, and
    # the gradient reaches the selectors.
    p = jax.tree_util.tree_map(jnp.asarray, variables["params"])
    p["z_gate"] = {"kernel": p["z_gate"]["kernel"], "bias": jnp.zeros_like(p["z_gate"]["bias"])}
    variables = {"params": p}

    @jax.jit
    def probe(v):
        gates = model.apply(v, inputs, method="gates")
        grad = jax.grad(lambda v: jnp.sum(model.apply(v, inputs)[0] ** 2))(v)["params"]
        return gates, grad, model.apply(v, inputs, method="selector_entropy")

    g, grad, entropy = probe(variables)
    assert np.all(g > 0)
    assert np.any(grad["z_gate"]["kernel"][0] != 0)
    assert np.all(entropy > 0)
    # Saturate: z = ±γ (beyond γ/2) picks, for selector i of task t, expert codes[i].
    p = jax.tree_util.tree_map(jnp.asarray, variables["params"])
    bits = np.array([[1, 0, 1], [0, 1, 1]])  # experts 5 and 6 for every task
    bias = np.tile((2 * bits - 1).reshape(1, -1) * 0.5, (K, 1)).astype(np.float32)
    p["z_gate"] = {"kernel": jnp.zeros_like(p["z_gate"]["kernel"]), "bias": jnp.asarray(bias)}
    sat = {"params": p}
    g, grad, entropy = probe(sat)
    g = np.asarray(g)
    assert np.all(np.sum(g > 0, axis=-1) == 2)
    assert np.all(g[..., [0, 1, 2, 3, 4, 7]] == 0)
    np.testing.assert_allclose(g.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(entropy, 0.0)
    assert np.all(grad["z_gate"]["kernel"] == 0)
    # The smooth-step: 0 and 1 outside [-γ/2, γ/2], 1/2 at 0, continuous at the ends.
    s = mtl.models._dselect_k.smooth_step(jnp.array([-1.0, -0.25, 0.0, 0.25, 1.0]), 0.5)
    np.testing.assert_allclose(s, [0.0, 0.0, 0.5, 1.0, 0.0 + 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="num_experts"):
        mtl.models.DSelectK(nn.Dense(3), nn.Dense(1), num_tasks=2, num_experts=6).init(
            jax.random.key(0), inputs
        )


def test_ltb_gumbel_in_training_only():
    model, variables, inputs = built("ltb")
    p = jax.tree_util.tree_map(jnp.asarray, variables["params"])
    p["theta_1"] = jax.random.normal(jax.random.key(2), p["theta_1"].shape)
    p["theta_2"] = jax.random.normal(jax.random.key(3), p["theta_2"].shape)
    v = {"params": p}
    # Evaluation: deterministic, the argmax tree.
    ev = model.apply(v, inputs)
    x = np.asarray(inputs)
    np.testing.assert_array_equal(ev, model.apply(v, inputs, rngs={"gumbel": jax.random.key(9)}))
    parents = model.apply(v, method="parents")
    pn = jax.tree_util.tree_map(np.asarray, v["params"])
    nodes = lambda j: pn[f"nodes_{j}"]["copies"]["module"]["Dense_0"]
    h = np.stack([np.tanh(x @ nodes(0)["kernel"][i] + nodes(0)["bias"][i]) for i in range(K)])
    for j in (1, 2):
        w = nodes(j)
        h = np.stack(
            [np.tanh(h[parents[j - 1][i]] @ w["kernel"][i] + w["bias"][i]) for i in range(K)]
        )
    hd = pn["heads"]["copies"]["module"]
    manual = np.einsum("kbd,kdo->kbo", h, hd["kernel"]) + hd["bias"][:, None]
    np.testing.assert_allclose(ev, manual, rtol=1e-5, atol=1e-6)
    # Training: sampled, so two keys differ; a tiny temperature approaches a one-hot tree.
    a = apply(model, v, inputs, key=jax.random.key(0))
    b = apply(model, v, inputs, key=jax.random.key(1))
    assert not np.allclose(a, b)


def test_validation(inputs):
    with pytest.raises(ValueError, match="num_layers"):
        mtl.models.CGC(nn.Dense(2), nn.Dense(1), num_tasks=2, num_layers=2).init(
            jax.random.key(0), inputs
        )
    with pytest.raises(ValueError, match="num_experts"):
        mtl.models.MMoE(nn.Dense(2), nn.Dense(1), num_tasks=2, num_experts=0).init(
            jax.random.key(0), inputs
        )
    with pytest.raises(ValueError, match="widths"):
        mtl.models.LTB([nn.Dense(2), nn.Dense(2)], nn.Dense(1), num_tasks=2, widths=(2, 2)).init(
            jax.random.key(0), inputs
        )


@pytest.mark.parametrize(
    "initial, final, rate, steps",
    [(5.0, 0.1, 1.0, 10), (1.0, 2.0, 0.5, 10), (4.0, 0.5, 0.5, 3), (2.0, 2.0, 0.9, 1)],
)
def test_ltb_temperature_schedule_is_the_documented_formula(initial, final, rate, steps):
    sched = jax.jit(
        mtl.models.LTB.temperature_schedule(
            initial=initial, final=final, decay_rate=rate, decay_steps=steps
        )
    )
    t = np.array([0, 1, 2, 5, 10, 37, 1000])
    ref = np.maximum(final, initial * np.float64(rate) ** (t / steps))  # τ = max(τ_f, τ_0 r^{t/T})
    np.testing.assert_allclose([sched(s) for s in t], ref, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"initial": 0.0}, "initial"),
        ({"final": -1.0}, "final"),
        ({"initial": float("inf")}, "initial"),
        ({"final": float("nan")}, "final"),
        ({"decay_rate": 0.0}, "decay_rate"),
        ({"decay_rate": 1.5}, "decay_rate"),
        ({"decay_steps": 0}, "decay_steps"),
        ({"decay_steps": 2.5}, "decay_steps"),
    ],
)
def test_ltb_temperature_schedule_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtl.models.LTB.temperature_schedule(**{"decay_steps": 10, **kwargs})


def test_bad_hyperparameters_raise(inputs):
    key = jax.random.key(0)
    # PseudoTaskHeads: dropout rates outside [0, 1) (1.0 gave all-NaN gradients).
    heads = mtl.models.PseudoTaskHeads(2, 2, 3)
    z = inputs[:, :4]
    hv = heads.init(key, z)
    for rate in (1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"dropout_rates must lie in \[0, 1\)"):
            heads.apply(hv, z, jnp.full((2, 2), rate), train=True, rngs={"dropout": key})
    ok = heads.apply(hv, z, jnp.full((2, 2), 0.5), train=True, rngs={"dropout": key})
    assert np.all(np.isfinite(ok))
    # LTB: a zero or negative temperature in training (gave NaN outputs).
    ltb = mtl.models.LTB([nn.Dense(2), nn.Dense(2)], nn.Dense(1), num_tasks=2)
    lv = ltb.init(key, inputs)
    for t in (0.0, -1.0, jnp.array(0.0)):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            ltb.apply(lv, inputs, temperature=t, train=True, rngs={"gumbel": key})
    # DSelect-k: more selectors than experts.
    with pytest.raises(ValueError, match=r"k must be at most num_experts=4.*k=8"):
        mtl.models.DSelectK(nn.Dense(2), nn.Dense(1), num_tasks=2, num_experts=4, k=8).init(
            key, inputs
        )
    # MTAN: attention_features=0 was silently read as None.
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="attention_features"):
            mtl.models.MTAN([nn.Dense(3)], nn.Dense(1), num_tasks=2, attention_features=bad).init(
                key, inputs
            )
