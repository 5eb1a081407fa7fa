"""Forward passes against NumPy re-implementations of each paper's equations, same weights."""

import pathlib
import sys

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from arch_zoo import K, built

softmax = lambda a: (
    np.exp(a - a.max(-1, keepdims=True))
    / np.exp(a - a.max(-1, keepdims=True)).sum(-1, keepdims=True)
)


def _np(name):
    model, variables, x = built(name)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["params"])
    return model, variables, np.asarray(x, np.float64), p


def _ours(model, variables, x):
    return np.asarray(jax.jit(model.apply)(variables, x.astype(np.float32)), np.float64)


def _stack(d):
    return d["copies"]["module"]


def _towers(p, f):  # f: [K, B, d]
    t = _stack(p["towers"])
    return np.einsum("kbd,kdo->kbo", f, t["kernel"]) + t["bias"][:, None]


def test_mmoe_matches_numpy():
    model, variables, x, p = _np("mmoe")
    e = _stack(p["experts"])["Dense_0"]
    h = np.tanh(np.einsum("bd,edf->ebf", x, e["kernel"]) + e["bias"][:, None])  # [E, B, f]
    g = softmax(np.einsum("bd,kde->kbe", x, p["gate"]["kernel"]) + p["gate"]["bias"][:, None])
    ref = _towers(p, np.einsum("kbe,ebf->kbf", g, h))
    np.testing.assert_allclose(_ours(model, variables, x), ref, rtol=1e-4, atol=1e-5)


def test_cgc_matches_numpy():
    model, variables, x, p = _np("cgc")
    te = _stack(_stack(p["task_experts_0"]))["Dense_0"]  # kernel [K, m, D, f]
    se = _stack(p["shared_experts_0"])["Dense_0"]  # kernel [s, D, f]
    ht = np.tanh(np.einsum("bd,kmdf->kmbf", x, te["kernel"]) + te["bias"][:, :, None])
    hs = np.tanh(np.einsum("bd,sdf->sbf", x, se["kernel"]) + se["bias"][:, None])
    gw = p["task_gates_0"]
    g = softmax(np.einsum("bd,kde->kbe", x, gw["kernel"]) + gw["bias"][:, None])  # [K, B, m+s]
    m = ht.shape[1]
    f = np.einsum("kbm,kmbf->kbf", g[..., :m], ht) + np.einsum("kbs,sbf->kbf", g[..., m:], hs)
    np.testing.assert_allclose(_ours(model, variables, x), _towers(p, f), rtol=1e-4, atol=1e-5)


def test_dselect_k_matches_numpy():
    model, variables, x, p = _np("dselect_k")
    e = _stack(p["experts"])["Dense_0"]
    h = np.tanh(np.einsum("bd,edf->ebf", x, e["kernel"]) + e["bias"][:, None])
    num_e, k = h.shape[0], model.k
    bits = int(np.log2(num_e))
    z = np.einsum("bd,tdn->tbn", x, p["z_gate"]["kernel"]) + p["z_gate"]["bias"][:, None]
    z = z.reshape(K, -1, k, bits)
    a = softmax(
        np.einsum("bd,tdn->tbn", x, p["alpha_gate"]["kernel"]) + p["alpha_gate"]["bias"][:, None]
    )
    gamma = model.gamma

    def step(t):  # the paper's smooth-step
        if t <= -gamma / 2:
            return 0.0
        if t >= gamma / 2:
            return 1.0
        return -2 / gamma**3 * t**3 + 3 / (2 * gamma) * t + 0.5

    q = np.zeros((K, x.shape[0], num_e))
    for t in range(K):
        for b in range(x.shape[0]):
            for i in range(k):
                for ell in range(num_e):
                    r = 1.0
                    for j in range(bits):
                        s = step(z[t, b, i, j])
                        r *= s if (ell >> j) & 1 else 1 - s
                    q[t, b, ell] += a[t, b, i] * r
    ref = _towers(p, np.einsum("kbe,ebf->kbf", q, h))
    np.testing.assert_allclose(_ours(model, variables, x), ref, rtol=1e-4, atol=1e-5)


def test_cross_stitch_matches_numpy():
    model, variables, x, p = _np("cross_stitch")
    s0, s1, s2 = (_stack(p[f"stage_{j}"]) for j in range(3))
    h = np.tanh(
        np.einsum("bd,kdf->kbf", x, s0["Dense_0"]["kernel"]) + s0["Dense_0"]["bias"][:, None]
    )
    h = np.einsum("kl,lbf->kbf", p["unit_0"], h)
    h = np.tanh(
        np.einsum("kbd,kdf->kbf", h, s1["Dense_0"]["kernel"]) + s1["Dense_0"]["bias"][:, None]
    )
    h = np.einsum("kl,lbf->kbf", p["unit_1"], h)
    ref = np.einsum("kbd,kdf->kbf", h, s2["kernel"]) + s2["bias"][:, None]
    np.testing.assert_allclose(_ours(model, variables, x), ref, rtol=1e-4, atol=1e-5)


def test_mtan_matches_numpy():
    model, variables, x, p = _np("mtan")
    dense = lambda v, w: v @ w["kernel"] + w["bias"]
    relu = lambda v: np.maximum(v, 0)
    sig = lambda v: 1 / (1 + np.exp(-v))
    p0 = np.tanh(dense(x, p["stages_0"]["Dense_0"]))
    p1 = np.tanh(dense(p0, p["stages_1"]["Dense_0"]))
    outs = []
    for t in range(K):
        pick = lambda w, t=t: {"kernel": w["kernel"][t], "bias": w["bias"][t]}
        a0 = _stack(p["attention_0"])
        att = sig(dense(relu(dense(p0, pick(a0["g_0"]))), pick(a0["g_1"]))) * p0
        a1 = _stack(p["attention_1"])
        prev = relu(dense(att, pick(a1["f"])))
        u = np.concatenate([p1, prev], axis=-1)
        att = sig(dense(relu(dense(u, pick(a1["g_0"]))), pick(a1["g_1"]))) * p1
        outs.append(dense(att, pick(_stack(p["heads"]))))
    np.testing.assert_allclose(_ours(model, variables, x), np.stack(outs), rtol=1e-4, atol=1e-5)
