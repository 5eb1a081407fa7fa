"""W1 and W2 of ``PEERS.md`` in PyTorch, trained through torchjd, for same-run comparisons.

torchjd 0.18's multi-task step: per-task losses, ``autojac.mtl_backward`` (the
Jacobian of the losses w.r.t. the shared encoder, plain gradients for the heads),
``autojac.jac_to_grad`` with the method's aggregator, then Adam (lr 1e-3). The
models, data and losses are the ones of :mod:`benchmarks.workloads` (the same
arrays; images transposed to PyTorch's NCHW).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# torchjd 0.18 aggregators by mtl_jax balancer name (default hyperparameters, as in
# PEERS.md's torchjd columns; CAGrad with c = 0.5, FairGrad with α = 1 as ours). The
# one table used by every same-run comparison (`python -m benchmarks` and its runners).
# Equal weighting is Mean in training steps (W1/W2, as PEERS.md's torchjd column) and
# Sum on W3, where our equal weighting is the plain sum over tasks; see aggregator().
AGGREGATORS: dict[str, Callable[[Any, int], Any]] = {
    "equal_weighting": lambda agg, k: agg.Mean(),
    "mgda": lambda agg, k: agg.MGDA(),
    "upgrad": lambda agg, k: agg.UPGrad(),
    "dualproj": lambda agg, k: agg.DualProj(),
    "pcgrad": lambda agg, k: agg.PCGrad(),
    "cagrad": lambda agg, k: agg.CAGrad(c=0.5),
    "nash_mtl": lambda agg, k: agg.NashMTL(n_tasks=k),
    "imtl": lambda agg, k: agg.IMTLG(),
    "aligned_mtl": lambda agg, k: agg.AlignedMTL(),
    "gradvac": lambda agg, k: agg.GradVac(),
    "fairgrad": lambda agg, k: agg.FairGrad(alpha=1.0),  # our default α
    "conflict_free": lambda agg, k: agg.ConFIG(),
    # torchjd 0.18's further aggregators, at our defaults.
    "constant": lambda agg, k: agg.Constant(__import__("torch").ones(k)),
    "rlw": lambda agg, k: agg.Random(),
    "graddrop": lambda agg, k: agg.GradDrop(),
    "krum": lambda agg, k: agg.Krum(n_byzantine=0, n_selected=1),
    "trimmed_mean": lambda agg, k: agg.TrimmedMean(trim_number=0),
    "excess_mtl": lambda agg, k: agg.ExcessMTL(),
    "pcd": lambda agg, k: agg.PCD(),
    # torchjd's weightings without an aggregator of their own, on the Gramian of the one
    # batch (as ours in a single-batch step: MoDo's and SDMGrad's J_1 J_2^T becomes J J^T).
    "cr_mogm": lambda agg, k: agg.GramianWeightedAggregator(
        agg.CRMOGMWeighting(agg.MGDAWeighting())
    ),
    "modo": lambda agg, k: agg.GramianWeightedAggregator(agg.MoDoWeighting()),
    "sdmgrad": lambda agg, k: agg.GramianWeightedAggregator(agg.SDMGradWeighting()),
}


def aggregator(name: str, num_tasks: int, *, workload: str = "w1"):
    """torchjd's aggregator for ``name``, or ``None`` if torchjd has no counterpart.

    Args:
      name: the mtl_jax balancer name; see :data:`AGGREGATORS`.
      num_tasks: ``K``.
      workload: ``"w1"``/``"w2"`` (a training step: equal weighting is torchjd's
        ``Mean``) or ``"w3"`` (the balancer alone on ``J``: equal weighting is
        ``Sum``, as ours, which returns ``Σ_k J_k``).
    """
    from torchjd import aggregation

    if workload not in ("w1", "w2", "w3"):
        raise ValueError(f"workload must be 'w1', 'w2' or 'w3', got {workload!r}")
    if name == "equal_weighting" and workload == "w3":
        return aggregation.Sum()
    make = AGGREGATORS.get(name)
    return None if make is None else make(aggregation, num_tasks)


def _conv_hps(torch, num_tasks: int):
    nn = torch.nn

    class ConvHPS(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(
                nn.Conv2d(3, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(64, 128, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(128, 128),
                nn.ReLU(),
            )
            self.heads = nn.ModuleList(nn.Linear(128, 1) for _ in range(num_tasks))

    return ConvHPS()


def _mlp_hps(torch, num_tasks: int):
    nn = torch.nn

    class MLPHPS(nn.Module):
        def __init__(self):
            super().__init__()
            layers = []
            for d_in in (250, 100, 100, 100):
                layers += [nn.Linear(d_in, 100), nn.ReLU()]
            self.encoder = nn.Sequential(*layers)
            self.heads = nn.ModuleList(nn.Linear(100, 100) for _ in range(num_tasks))

    return MLPHPS()


def train_step(workload: str, batch: Any, num_tasks: int, name: str, device: str = "cpu"):
    """A closure running one torchjd training step of ``workload`` (``"w1"``/``"w2"``).

    Args:
      workload: ``"w1"`` (conv-hps) or ``"w2"`` (gradnorm-toy).
      batch: the workload's ``(x, y)`` arrays (JAX or NumPy; W1 images NHWC).
      num_tasks: ``K``.
      name: the mtl_jax balancer name; see :data:`AGGREGATORS`.
      device: the torch device.

    Returns:
      A function of no arguments that runs one step and synchronises the device,
      or ``None`` when torchjd has no aggregator for ``name``.
    """
    import torch
    from torchjd import autojac

    agg = aggregator(name, num_tasks, workload=workload)
    if agg is None:
        return None
    torch.manual_seed(0)
    x, y = (np.array(a, np.float32) for a in batch)  # writable copies for torch
    if workload == "w1":
        model = _conv_hps(torch, num_tasks)
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        y = torch.from_numpy(np.ascontiguousarray(y.T))  # [K, batch]
        bce = torch.nn.functional.binary_cross_entropy_with_logits

        def losses(out):
            return [bce(o[:, 0], y[k].to(o.device)) for k, o in enumerate(out)]

    elif workload == "w2":
        model = _mlp_hps(torch, num_tasks)
        x, y = torch.from_numpy(x), torch.from_numpy(y)  # y: [K, batch, 100]
        mse = torch.nn.functional.mse_loss

        def losses(out):
            return [mse(o, y[k].to(o.device)) for k, o in enumerate(out)]

    else:
        raise ValueError(f"workload must be 'w1' or 'w2', got {workload!r}")
    model = model.to(device)
    x = x.to(device)
    y = y.to(device)
    shared = list(model.encoder.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step():
        opt.zero_grad()
        z = model.encoder(x)
        ls = losses([h(z) for h in model.heads])
        autojac.mtl_backward(ls, z)
        autojac.jac_to_grad(shared, agg)
        opt.step()
        sync()

    return step
