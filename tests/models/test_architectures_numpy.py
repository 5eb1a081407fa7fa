"""Forward passes against NumPy re-implementations of each paper's equations, same weights.

Each reference is written from the paper's equations (loops over tasks and
experts, float64), not from the module's code, with the module's parameters.
"""

import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from arch_zoo import K, built

import mtl_jax as mtl

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
    # Asymmetric units, so exchanging alpha_kl and alpha_lk would be caught.
    for j in (0, 1):
        p[f"unit_{j}"] = np.random.default_rng(j).uniform(-1, 1, (K, K))
    variables = {"params": jax.tree_util.tree_map(jnp.asarray, p)}
    s0, s1, s2 = (_stack(p[f"stage_{j}"]) for j in range(3))
    h = np.tanh(
        np.einsum("bd,kdf->kbf", x, s0["Dense_0"]["kernel"]) + s0["Dense_0"]["bias"][:, None]
    )
    mix = lambda a, h: np.stack([sum(a[k, m] * h[m] for m in range(K)) for k in range(K)])
    h = mix(p["unit_0"], h)  # the paper's Eq. 1: x~_k = sum_l alpha_kl x_l
    h = np.tanh(
        np.einsum("kbd,kdf->kbf", h, s1["Dense_0"]["kernel"]) + s1["Dense_0"]["bias"][:, None]
    )
    h = mix(p["unit_1"], h)
    ref = np.einsum("kbd,kdf->kbf", h, s2["kernel"]) + s2["bias"][:, None]
    np.testing.assert_allclose(_ours(model, variables, x), ref, rtol=1e-4, atol=1e-5)


def test_ple_matches_numpy():
    # Tang et al. (RecSys 2020), Eqs. 4-6: at layer j, task k's gate reads task k's
    # previous output and mixes its own experts (fed that output) with the shared
    # experts (fed the shared path's previous output); the shared gate mixes every
    # expert of the layer; the last layer has no shared gate.
    model, variables, x, p = _np("ple")
    kt, m, s, layers = K, model.num_task_experts, model.num_shared_experts, model.num_layers
    tanh_dense = lambda v, w: np.tanh(v @ w["kernel"] + w["bias"])
    q_task, q_shared = [x] * kt, x
    for j in range(layers):
        te = _stack(_stack(p[f"task_experts_{j}"]))["Dense_0"]  # [K, m, ...]
        se = _stack(p[f"shared_experts_{j}"])["Dense_0"]  # [s, ...]
        pick = lambda w, *i: {"kernel": w["kernel"][i], "bias": w["bias"][i]}
        h_shared = [tanh_dense(q_shared, pick(se, e)) for e in range(s)]
        h_task = [[tanh_dense(q_task[k], pick(te, k, e)) for e in range(m)] for k in range(kt)]
        new_task = []
        for k in range(kt):
            gw = p[f"task_gates_{j}"]
            gw = gw if j == 0 else _stack(gw)
            g = softmax(q_task[k] @ gw["kernel"][k] + gw["bias"][k])  # [B, m + s]
            experts = h_task[k] + h_shared
            new_task.append(sum(g[:, e : e + 1] * experts[e] for e in range(m + s)))
        if j < layers - 1:
            gs = p[f"shared_gates_{j}"]
            g = softmax(q_shared @ gs["kernel"] + gs["bias"])  # [B, K m + s]
            every = [h for k in range(kt) for h in h_task[k]] + h_shared
            q_shared = sum(g[:, e : e + 1] * every[e] for e in range(kt * m + s))
        q_task = new_task
    ref = _towers(p, np.stack(q_task))
    np.testing.assert_allclose(_ours(model, variables, x), ref, rtol=1e-4, atol=1e-5)


# MTAN (Liu, Johns & Davison, CVPR 2019, Eqs. 1-2 and the authors' SegNet-MTAN):
# a_k^1 = sigmoid(g_k^1(u^1)) * p^1 and
# a_k^j = sigmoid(g_k^j([u^j; maxpool(f^j(a_k^{j-1}))])) * p^j, where
# g_k^j = 1x1 conv -> BN -> ReLU -> 1x1 conv -> BN (task k's own) and
# f^j = 3x3 conv -> BN -> ReLU, ONE module shared by every task.

EPS = 1e-5  # BatchNorm's epsilon (Flax's and PyTorch's default)


def _bn(h, w, stats, train, axes):
    mean, var = (h.mean(axes), h.var(axes)) if train else (stats["mean"], stats["var"])
    return w["scale"] * (h - mean) / np.sqrt(var + EPS) + w["bias"]


def _conv3(x, w):  # 3x3 cross-correlation with zero "same" padding, [B, H, W, C]
    if x.ndim == 2:
        return x @ w["kernel"] + w["bias"]
    hh, ww = x.shape[1:3]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = sum(xp[:, i : i + hh, j : j + ww] @ w["kernel"][i, j] for i in range(3) for j in range(3))
    return out + w["bias"]


def _maxpool(x, size):
    if size == 1:
        return x
    b, hh, ww, c = x.shape
    return x.reshape(b, hh // size, size, ww // size, size, c).max(axis=(2, 4))


def _mtan_reference(p, bs, us, ps, head, train):
    """Every task's attended output of the last stage, then its head."""
    relu = lambda v: np.maximum(v, 0)
    sig = lambda v: 1 / (1 + np.exp(-v))
    kt = p["attention_0"]["copies"]["module"]["g_0"]["kernel"].shape[0]
    axes = tuple(range(us[0].ndim - 1))  # batch and spatial axes
    a = [None] * kt
    for j, (u, pj) in enumerate(zip(us, ps)):
        if j > 0:  # the shared f on every task's a^{j-1}
            fp, fs = p[f"extractors_{j - 1}"], bs.get(f"extractors_{j - 1}", {})
            conv = [_conv3(a[k], fp["conv"]) for k in range(kt)]
            if train:  # documented deviation: statistics over all tasks' features
                stacked = np.concatenate(conv)
                mean, var = stacked.mean(axes), stacked.var(axes)
                stats = {"mean": mean, "var": var}
            else:
                stats = fs["bn"]
            f = [relu(_bn(c, fp["bn"], stats, False, axes)) for c in conv]
            ratio = a[0].shape[1] // u.shape[1] if u.ndim == 4 else 1
            f = [_maxpool(v, ratio) for v in f]
        for k in range(kt):
            g = jax.tree_util.tree_map(lambda t, k=k: t[k], p[f"attention_{j}"]["copies"]["module"])
            gs = jax.tree_util.tree_map(
                lambda t, k=k: t[k], bs.get(f"attention_{j}", {"copies": {"module": {}}})
            )["copies"]["module"]
            v = u if j == 0 else np.concatenate([u, f[k]], axis=-1)
            h = relu(
                _bn(
                    v @ g["g_0"]["kernel"] + g["g_0"]["bias"],
                    g["bn_0"],
                    gs.get("bn_0"),
                    train,
                    axes,
                )
            )
            h = _bn(
                h @ g["g_1"]["kernel"] + g["g_1"]["bias"], g["bn_1"], gs.get("bn_1"), train, axes
            )
            a[k] = sig(h) * pj
    return np.stack([head(k, a[k]) for k in range(kt)])


def _perturb_stats(variables, seed):
    """Random running statistics, so evaluation visibly reads them."""
    rng = np.random.default_rng(seed)
    stats = jax.tree_util.tree_map_with_path(
        lambda path, v: (rng.uniform(0.5, 2.0, v.shape) if "var" in str(path[-1])
                         else rng.normal(0, 0.3, v.shape)).astype(np.float32),
        variables["batch_stats"],
    )  # fmt: skip
    return {**variables, "batch_stats": stats}


def test_mtan_matches_numpy():
    model, variables, x, _ = _np("mtan")
    variables = _perturb_stats(variables, 0)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["params"])
    bs = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["batch_stats"])
    dense = lambda v, w: v @ w["kernel"] + w["bias"]
    p0 = np.tanh(dense(x, p["stages_0"]["Dense_0"]))  # stages return p only: u = p
    p1 = np.tanh(dense(p0, p["stages_1"]["Dense_0"]))
    hd = _stack(p["heads"])
    head = lambda k, a: a @ hd["kernel"][k] + hd["bias"][k]
    ref = _mtan_reference(p, bs, [p0, p1], [p0, p1], head, train=False)
    np.testing.assert_allclose(_ours(model, variables, x), ref, rtol=1e-4, atol=1e-5)


class _ConvStage(nn.Module):
    """A SegNet-like stage: optional 2x2 max-pool, then two 3x3 conv + ReLU; returns (u, p)."""

    features: int
    pool: bool

    @nn.compact
    def __call__(self, x):
        if self.pool:
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        u = nn.relu(nn.Conv(self.features, (3, 3), padding="SAME", name="c0")(x))
        return u, nn.relu(nn.Conv(self.features, (3, 3), padding="SAME", name="c1")(u))


class _PoolHead(nn.Module):
    @nn.compact
    def __call__(self, a):
        return nn.Dense(2, name="out")(jnp.mean(a, axis=(1, 2)))


@pytest.mark.parametrize("train", [False, True])
def test_mtan_on_images_matches_the_paper(train):
    model = mtl.models.MTAN([_ConvStage(3, False), _ConvStage(4, True)], _PoolHead(), num_tasks=2)
    x = jax.random.normal(jax.random.key(1), (3, 4, 4, 2))
    variables = _perturb_stats(jax.jit(model.init)(jax.random.key(0), x), 1)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["params"])
    bs = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["batch_stats"])
    # f is shared (one parameter set, no task axis) and task-specific only in g and heads.
    assert p["extractors_0"]["conv"]["kernel"].shape == (3, 3, 3, 4)
    mask = model.shared_mask(variables)
    assert all(jax.tree_util.tree_leaves(mask["params"]["extractors_0"]))
    assert not any(jax.tree_util.tree_leaves(mask["params"]["attention_1"]))
    xn = np.asarray(x, np.float64)
    relu = lambda v: np.maximum(v, 0)
    s0, s1 = p["stages_0"], p["stages_1"]
    u0 = relu(_conv3(xn, s0["c0"]))
    p0 = relu(_conv3(u0, s0["c1"]))
    u1 = relu(_conv3(_maxpool(p0, 2), s1["c0"]))
    p1 = relu(_conv3(u1, s1["c1"]))
    hd = _stack(p["heads"])["out"]
    head = lambda k, a: a.mean(axis=(1, 2)) @ hd["kernel"][k] + hd["bias"][k]
    ref = _mtan_reference(p, bs, [u0, u1], [p0, p1], head, train=train)
    if train:
        fwd = lambda v: model.apply(v, x, train=True, mutable=["batch_stats"])[0]
    else:
        fwd = lambda v: model.apply(v, x)
    np.testing.assert_allclose(jax.jit(fwd)(variables), ref, rtol=1e-4, atol=1e-5)


def test_ltb_gumbel_softmax_matches_the_paper():
    # Guo, Lee & Ulbricht (ICML 2020): child i of layer j reads sum_p s_ip h_p^{j-1} with
    # s_i = softmax((theta_i + G) / tau), G i.i.d. Gumbel(0, 1). As tau -> 0 the sample is
    # one-hot at argmax_p(theta_ip + G_p), which is parent p with probability
    # softmax(theta_i)_p (the Gumbel-max property).
    model, variables, x, p = _np("ltb")
    rng = np.random.default_rng(0)
    for j in (1, 2):
        p[f"theta_{j}"] = rng.normal(0, 1, p[f"theta_{j}"].shape)
    v = {"params": jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), p)}

    @jax.jit
    def sample(key, tau):
        out, st = model.apply(
            v, x.astype(np.float32), temperature=tau, train=True, rngs={"gumbel": key},
            mutable=["intermediates"],
        )  # fmt: skip
        s = st["intermediates"]
        return out, s["branch_weights_1"][0], s["branch_weights_2"][0]

    # The forward pass, from the sampled weights, in NumPy.
    out, s1, s2 = sample(jax.random.key(0), 0.7)
    node = lambda j, i, h: np.tanh(
        h @ _stack(p[f"nodes_{j}"])["Dense_0"]["kernel"][i]
        + _stack(p[f"nodes_{j}"])["Dense_0"]["bias"][i]
    )
    h = [node(0, i, x) for i in range(K)]
    for j, s in ((1, np.asarray(s1, np.float64)), (2, np.asarray(s2, np.float64))):
        np.testing.assert_allclose(s.sum(-1), 1.0, rtol=1e-6)
        h = [node(j, i, sum(s[i, q] * h[q] for q in range(K))) for i in range(K)]
    hd = _stack(p["heads"])
    ref = np.stack([h[k] @ hd["kernel"][k] + hd["bias"][k] for k in range(K)])
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)
    # Parent frequencies at a tiny temperature: softmax(theta) per child.
    n = 4000
    _, s1, _ = jax.vmap(lambda k: sample(k, 1e-3))(jax.random.split(jax.random.key(1), n))
    freq = np.mean(np.asarray(s1) > 0.5, axis=0)  # [K, K]
    np.testing.assert_allclose(freq.sum(-1), 1.0)
    np.testing.assert_allclose(freq, softmax(p["theta_1"]), atol=0.035)
