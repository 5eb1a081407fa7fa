"""A tiny two-layer-encoder, K-head regression shared by the training-step tests.

The batch is a dict of per-example arrays (leading axis = examples, so it shards
over a data-parallel mesh): ``x [B, 6]``, ``y [B, K]`` and two poison arrays
``loss_poison``/``grad_poison [B, K]`` (zero for a clean batch). A non-finite
entry in column ``k`` of ``loss_poison`` makes task ``k``'s loss non-finite; in
``grad_poison`` it makes task ``k``'s gradient w.r.t. the ``heads/w`` leaf
non-finite while every loss stays finite.
"""

import jax
import jax.numpy as jnp
import numpy as np

import mtl_jax as mtl

K = 3
BATCH = 16


@jax.custom_vjp
def _poison(w, v):
    """``0`` in value; its gradient w.r.t. ``w`` is ``v`` (where the cotangent is non-zero)."""
    return 0.0 * jnp.sum(w)


def _poison_fwd(w, v):
    return _poison(w, v), (w, v)


def _poison_bwd(res, ct):
    w, v = res
    return jnp.where(ct != 0, ct * v, 0.0) * jnp.ones_like(w), jnp.zeros_like(v)


_poison.defvjp(_poison_fwd, _poison_bwd)


def make_params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(
        rng.normal(size=s) / np.sqrt(s[-2] if len(s) > 1 else 1), jnp.float32
    )
    return {
        "enc": {"w1": f(6, 8), "w2": f(8, 8)},
        "heads": {"w": jnp.asarray(rng.normal(size=(K, 8)) / 3, jnp.float32), "b": jnp.zeros(K)},
    }


def make_batch(seed: int = 0, n: int = BATCH) -> dict:
    rng = np.random.default_rng(seed + 100)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (np.tanh(x[:, :K] * np.array([1.0, -2.0, 0.5])) + 0.1 * rng.normal(size=(n, K))).astype(
        np.float32
    )
    zeros = np.zeros((n, K), np.float32)
    return {"x": x, "y": y, "loss_poison": zeros, "grad_poison": zeros.copy()}


def encode(p, b):
    return jnp.tanh(jnp.tanh(b["x"] @ p["enc"]["w1"]) @ p["enc"]["w2"])


def decode(p, z, b):
    pred = z @ p["heads"]["w"].T + p["heads"]["b"][None, :]  # [B, K]
    losses = jnp.mean((pred - b["y"]) ** 2, axis=0) + jnp.mean(b["loss_poison"], axis=0)
    v = jnp.mean(b["grad_poison"], axis=0)
    poison = jnp.stack([_poison(p["heads"]["w"], v[k]) for k in range(K)])
    return losses + poison


def loss_fn(p, b):
    return decode(p, encode(p, b), b)


REPRESENTATION = mtl.training.Representation(encode=encode, decode=decode)


def shared_w1(path, leaf) -> bool:
    """A non-trivial ``shared=``: only the first encoder layer is balanced."""
    del leaf
    return "w1" in jax.tree_util.keystr(path)


# One balancer of each kind, in the full-parameter and the representation route:
# the cases of the scale-agreement and determinism tests.
NUM_STEPS = 10
SCALE_CASES = [
    ("dwa", "loss"),
    ("dwa", "representation"),
    ("mgda", "jacobian"),
    ("mgda", "representation"),
    ("graddrop", "jacobian"),
    ("graddrop", "representation"),
]


def make_balancer(name: str):
    b = mtl.balancers
    return {
        "dwa": lambda: b.dwa(num_tasks=K, shared=shared_w1),
        "mgda": lambda: b.mgda(shared=shared_w1),
        "graddrop": lambda: b.graddrop(seed=7, shared=shared_w1),
    }[name]()


def make_step(name: str, mode: str, *, mesh=None, optimizer=None, **kw):
    import optax

    return mtl.training.make_train_step(
        loss_fn,
        make_balancer(name),
        optimizer or optax.sgd(0.1),
        mode=mode,
        representation=REPRESENTATION,
        mesh=mesh,
        **kw,
    )


def train(step, *, num_steps: int = NUM_STEPS, place=lambda b: b) -> list[np.ndarray]:
    """``num_steps`` steps over two alternating batches; the final params' leaves."""
    batches = [place(make_batch(seed=s)) for s in range(2)]
    state = step.init(make_params())
    for i in range(num_steps):
        state, _ = step(state, batches[i % 2])
    return [np.asarray(jax.device_get(x)) for x in jax.tree_util.tree_leaves(state.params)]
