"""Tiny instances of every multi-task architecture, shared by the tests in this folder."""

import functools

import flax.linen as nn
import jax

import mtl_jax as mtl

K, B, D, OUT = 3, 8, 5, 2
ARCHS = ["cross_stitch", "mmoe", "mmoe_stem", "mtan", "cgc", "ple", "dselect_k", "ltb"]
# Architectures with an encode/decode split: whether decode also reads the input x.
REPRESENTATION = {"mmoe": True, "mmoe_stem": True, "mtan": False, "cgc": True, "ple": True}
REPRESENTATION["dselect_k"] = True


class Tanh(nn.Module):
    """A smooth dense layer, so no gradient entry is zero by accident."""

    features: int

    @nn.compact
    def __call__(self, x):
        return nn.tanh(nn.Dense(self.features)(x))


def build(name: str):
    """The model of one architecture, K=3 tasks of 2 outputs on inputs of width 5."""
    if name == "cross_stitch":
        return mtl.models.CrossStitch([Tanh(4), Tanh(4), nn.Dense(OUT)], num_tasks=K)
    if name == "mmoe":
        return mtl.models.MMoE(Tanh(4), nn.Dense(OUT), num_tasks=K, num_experts=3)
    if name == "mmoe_stem":
        return mtl.models.MMoE(
            Tanh(4), nn.Dense(OUT), num_tasks=K, num_experts=3, gate_stem=Tanh(3)
        )
    if name == "mtan":
        return mtl.models.MTAN([Tanh(4), Tanh(4)], nn.Dense(OUT), num_tasks=K)
    if name == "cgc":
        return mtl.models.CGC(
            Tanh(4), nn.Dense(OUT), num_tasks=K, num_task_experts=2, num_shared_experts=1
        )
    if name == "ple":
        return mtl.models.PLE(
            Tanh(4), nn.Dense(OUT), num_tasks=K, num_task_experts=1, num_shared_experts=2,
            num_layers=3,
        )  # fmt: skip
    if name == "dselect_k":
        return mtl.models.DSelectK(Tanh(4), nn.Dense(OUT), num_tasks=K, num_experts=4, k=2)
    if name == "ltb":
        return mtl.models.LTB([Tanh(4), Tanh(4), Tanh(4)], nn.Dense(OUT), num_tasks=K)
    raise ValueError(name)


def apply(model, variables, x, *, key=None):
    """``model.apply``; LTB runs in training mode (Gumbel-softmax) when given a key."""
    if isinstance(model, mtl.models.LTB) and key is not None:
        return model.apply(variables, x, train=True, temperature=0.7, rngs={"gumbel": key})
    return model.apply(variables, x)


@functools.cache
def built(name: str):
    """``(model, variables, x)`` for one architecture, initialised once per test session."""
    model = build(name)
    x = jax.random.normal(jax.random.key(1), (B, D))
    return model, jax.jit(model.init)(jax.random.key(0), x), x
