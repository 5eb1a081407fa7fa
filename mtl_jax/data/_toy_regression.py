"""The GradNorm synthetic multi-task regression (Chen et al. 2018, section 4).

https://arxiv.org/abs/1711.02257. Task ``i`` maps ``x ∈ R^250`` to
``y_i = σ_i tanh((B + ε_i) x) ∈ R^100`` with a shared ``B ~ N(0, 10²)`` and a
task-specific ``ε_i ~ N(0, 3.5²)`` (the paper's 10 and 3.5 read as standard
deviations, as public re-implementations do). The scales ``σ_i`` make the tasks'
losses differ by orders of magnitude, which is what GradNorm balances.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ToyRegression", "toy_regression"]


class ToyRegression(NamedTuple):
    x_train: np.ndarray  # [N_train, 250]
    y_train: np.ndarray  # [K, N_train, 100]
    x_test: np.ndarray  # [N_test, 250]
    y_test: np.ndarray  # [K, N_test, 100]
    sigmas: np.ndarray  # [K]


def toy_regression(
    num_tasks: int = 10,
    *,
    sigmas: np.ndarray | None = None,
    num_train: int = 100,
    num_test: int = 1000,
    in_dim: int = 250,
    out_dim: int = 100,
    b_std: float = 10.0,
    eps_std: float = 3.5,
    seed: int = 0,
) -> ToyRegression:
    """Generates the toy data; default ``σ = linspace(1, 100, K)`` (W2 in benchmarks/PEERS.md).

    Inputs are standard normal. Returns float32 arrays.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    rng = np.random.default_rng(seed)
    s = np.linspace(1.0, 100.0, num_tasks) if sigmas is None else np.asarray(sigmas, float)
    if s.shape != (num_tasks,):
        raise ValueError(f"sigmas must have shape ({num_tasks},), got {s.shape}")
    b = rng.normal(0.0, b_std, (out_dim, in_dim))
    eps = rng.normal(0.0, eps_std, (num_tasks, out_dim, in_dim))
    x = rng.normal(size=(num_train + num_test, in_dim))
    # y[k] = σ_k tanh(x (B + ε_k)ᵀ); inputs scaled by 1/sqrt(in_dim) would change the
    # task; we keep the paper's form.
    y = s[:, None, None] * np.tanh(np.einsum("ni,koi->kno", x, b[None] + eps))
    f32 = lambda a: a.astype(np.float32)
    return ToyRegression(
        f32(x[:num_train]),
        f32(y[:, :num_train]),
        f32(x[num_train:]),
        f32(y[:, num_train:]),
        f32(s),
    )
