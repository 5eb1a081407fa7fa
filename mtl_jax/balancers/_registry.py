"""Every shipped balancer by name: one constructor, its cost class, needs and peers.

:func:`make` builds any balancer from its name with the defaults an experiment
or benchmark needs (``num_tasks``, a uniform preference vector, unit constant
weights), so that callers keep no hand-written lists of which factory needs
what. :data:`METHODS` records, per method, its cost class, what it needs, its
paper and the names LibMTL and torchjd give it; the README's method table is
checked against it.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np

from mtl_jax import _validate

__all__ = ["METHODS", "MethodInfo", "make", "names"]

#: The cost classes: what one training step computes beyond the summed-loss gradient.
COST_CLASSES = ("loss-only", "Gram", "Jacobian", "bilevel")


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """One balancer's entry: cost class, needs, paper and its names in the peer libraries."""

    cost: str
    needs: str
    paper: str
    libmtl: str = ""
    torchjd: str = ""


_M = MethodInfo


class MethodTable(dict):
    """Every balancer :func:`make` builds, in the README table's order: name -> MethodInfo.

    A ``dict`` from each balancer's name to its :class:`MethodInfo` (cost class, what it
    needs, its paper, and the names LibMTL and torchjd give it).
    """


METHODS: MethodTable = MethodTable(
    {
        # loss-only: one backward pass of a weighted loss sum.
        "equal_weighting": _M(
            "loss-only", "—", "linear scalarization (baseline)", "EW", "Sum, Mean"
        ),
        "constant": _M("loss-only", "`weights`", "fixed linear scalarization", "", "Constant"),
        "scale_invariant": _M(
            "loss-only", "—", "Navon et al. 2022, https://arxiv.org/abs/2202.01017", "", ""
        ),
        "gls": _M(
            "loss-only",
            "—",
            "Chennupati et al. 2019, https://arxiv.org/abs/1904.08492",
            "GLS",
            "GeometricMean",
        ),
        "rlw": _M(
            "loss-only",
            "`num_tasks`",
            "Lin et al. 2022, https://arxiv.org/abs/2111.10603",
            "RLW",
            "Random",
        ),
        "dwa": _M(
            "loss-only",
            "`num_tasks`",
            "Liu et al. 2019, https://arxiv.org/abs/1803.10704",
            "DWA",
            "DWA",
        ),
        "uncertainty_weighting": _M(
            "loss-only",
            "`num_tasks`",
            "Kendall et al. 2018, https://arxiv.org/abs/1705.07115",
            "UW",
            "UW",
        ),
        "imtl_l": _M(
            "loss-only",
            "`num_tasks`",
            "Liu et al. 2021, https://openreview.net/forum?id=IMPnRXEWpvr",
            "",
            "IMTL-L",
        ),
        "famo": _M(
            "loss-only",
            "`num_tasks`",
            "Liu et al. 2023, https://arxiv.org/abs/2306.03792",
            "FAMO",
            "FAMO",
        ),
        "stch": _M(
            "loss-only",
            "`num_tasks`",
            "Lin et al. 2024, https://arxiv.org/abs/2402.19078",
            "STCH",
            "STCH",
        ),
        "cosmos": _M(
            "loss-only",
            "a preference",
            "Ruchte & Grabocka 2021, https://arxiv.org/abs/2103.13392",
            "",
            "COSMOS",
        ),
        "pbi": _M(
            "loss-only",
            "a preference",
            "Zhang & Li 2007, https://doi.org/10.1109/TEVC.2007.892759",
            "",
            "PBI",
        ),
        # Gram: the K×K Gram matrix of the task gradients (or their per-task norms).
        "mgda": _M(
            "Gram", "—", "Sener & Koltun 2018, https://arxiv.org/abs/1810.04650", "MGDA", "MGDA"
        ),
        "upgrad": _M(
            "Gram", "—", "Quinton & Rey 2024, https://arxiv.org/abs/2406.16232", "UPGrad", "UPGrad"
        ),
        "pcgrad": _M(
            "Gram", "—", "Yu et al. 2020, https://arxiv.org/abs/2001.06782", "PCGrad", "PCGrad"
        ),
        "imtl": _M(
            "Gram",
            "—",
            "Liu et al. 2021, https://openreview.net/forum?id=IMPnRXEWpvr",
            "",
            "IMTL-G",
        ),
        "imtl_hybrid": _M(
            "Gram",
            "`num_tasks`",
            "Liu et al. 2021, https://openreview.net/forum?id=IMPnRXEWpvr",
            "IMTL",
            "",
        ),
        "cagrad": _M(
            "Gram", "—", "Liu et al. 2021, https://arxiv.org/abs/2110.14048", "CAGrad", "CAGrad"
        ),
        "nash_mtl": _M(
            "Gram",
            "—",
            "Navon et al. 2022, https://arxiv.org/abs/2202.01017",
            "Nash_MTL",
            "Nash-MTL",
        ),
        "aligned_mtl": _M(
            "Gram",
            "—",
            "Senushkin et al. 2023, https://arxiv.org/abs/2305.19000",
            "Aligned_MTL",
            "AlignedMTL",
        ),
        "conflict_free": _M(
            "Gram", "—", "Liu et al. 2024, https://arxiv.org/abs/2408.11104", "", "ConFIG"
        ),
        "dualproj": _M(
            "Gram",
            "—",
            "Lopez-Paz & Ranzato 2017, https://arxiv.org/abs/1706.08840",
            "",
            "DualProj",
        ),
        "fairgrad": _M(
            "Gram", "—", "Ban & Ji 2024, https://arxiv.org/abs/2402.15638", "FairGrad", "FairGrad"
        ),
        "gradvac": _M(
            "Gram",
            "`num_tasks`",
            "Wang et al. 2021, https://arxiv.org/abs/2010.05874",
            "GradVac",
            "GradVac",
        ),
        "gradnorm": _M(
            "Gram",
            "`num_tasks`",
            "Chen et al. 2018, https://arxiv.org/abs/1711.02257",
            "GradNorm",
            "",
        ),
        "db_mtl": _M(
            "Gram", "`num_tasks`", "Lin et al. 2023, https://arxiv.org/abs/2308.12029", "DB_MTL", ""
        ),
        "cr_mogm": _M(
            "Gram",
            "`num_tasks`",
            "Zhou et al. 2022, https://proceedings.neurips.cc/paper_files/paper/2022/hash/f91bd64a3620aad8e70a27ad9cb3ca57-Abstract-Conference.html",
            "",
            "CR-MOGM",
        ),
        "modo": _M(
            "Gram",
            "`num_tasks`",
            "Chen et al. 2023, https://arxiv.org/abs/2305.20057",
            "MoDo",
            "MoDo",
        ),
        "sdmgrad": _M(
            "Gram",
            "`num_tasks`",
            "Xiao et al. 2023, https://arxiv.org/abs/2305.18409",
            "SDMGrad",
            "SDMGrad",
        ),
        "pcd": _M(
            "Gram",
            "`num_tasks`",
            "Varam & AlHajri 2026, https://arxiv.org/abs/2606.29521",
            "",
            "PCD",
        ),
        "krum": _M(
            "Gram", "—", "Blanchard et al. 2017, https://arxiv.org/abs/1703.02757", "", "Krum"
        ),
        # Jacobian: the full per-task gradients of the shared leaves.
        "graddrop": _M(
            "Jacobian",
            "—",
            "Chen et al. 2020, https://arxiv.org/abs/2010.06808",
            "GradDrop",
            "GradDrop",
        ),
        "trimmed_mean": _M(
            "Jacobian", "—", "Yin et al. 2018, https://arxiv.org/abs/1803.01498", "", "TrimmedMean"
        ),
        "excess_mtl": _M(
            "Jacobian",
            "`num_tasks`",
            "He et al. 2024, https://arxiv.org/abs/2402.02009",
            "ExcessMTL",
            "ExcessMTL",
        ),
        "moco": _M(
            "Jacobian",
            "`num_tasks`",
            "Fernando et al. 2023, https://arxiv.org/abs/2210.04650",
            "MoCo",
            "",
        ),
        # bilevel: a validation batch and a meta-update before each step.
        "auto_lambda": _M(
            "bilevel",
            "`task_loss_fn`, `inner_lr`, a validation batch",
            "Liu et al. 2022, https://arxiv.org/abs/2202.03091",
            "Auto-Lambda",
            "",
        ),
        "moml": _M(
            "bilevel",
            "`task_loss_fn`, `inner_lr`, a validation batch",
            "Ye et al. 2021, https://arxiv.org/abs/2102.07121",
            "MOML",
            "",
        ),
        "forum": _M(
            "bilevel",
            "`task_loss_fn`, `inner_lr`, a validation batch",
            "Ye et al. 2024, https://arxiv.org/abs/2401.09257",
            "FORUM",
            "",
        ),
    }
)


def names() -> tuple[str, ...]:
    """The names :func:`make` accepts, in :data:`METHODS` order."""
    return tuple(METHODS)


def make(name: str, *, num_tasks: int, shared: Any = None, **overrides: Any):
    """Builds the balancer ``name`` for ``num_tasks`` tasks with defaults that always work.

    Every factory gets ``num_tasks`` (when it takes it) and ``shared``; ``constant``
    gets unit weights (equal weighting) and ``cosmos``/``pbi`` the uniform
    preference ``1/K`` unless ``overrides`` say otherwise; the bilevel methods
    (``auto_lambda``, ``moml``, ``forum``) must be given ``task_loss_fn=`` and
    ``inner_lr=``. Loss-only methods weight only the losses, so ``shared`` does not
    change their update.

    Args:
      name: a key of :data:`METHODS`.
      num_tasks: ``K``, a positive int.
      shared: the ``shared=`` mask passed to the factory.
      **overrides: further keyword arguments for the factory (they win over the defaults).

    Returns:
      The :class:`~mtl_jax.balancers.Balancer`.

    Raises:
      ValueError: an unknown ``name`` or a bad ``num_tasks``.
    """
    import mtl_jax.balancers as balancers

    if name not in METHODS:
        raise ValueError(f"name must be one of {', '.join(METHODS)}; got {name!r}")
    _validate.check_num_tasks(num_tasks, required=True)
    factory = getattr(balancers, name)
    params = inspect.signature(factory).parameters
    kwargs: dict[str, Any] = {"shared": shared}
    if "num_tasks" in params:
        kwargs["num_tasks"] = int(num_tasks)
    if name == "constant":
        kwargs["weights"] = np.ones(num_tasks, np.float32)
    if METHODS[name].cost == "bilevel" and not {"task_loss_fn", "inner_lr"} <= set(overrides):
        raise ValueError(
            f"{name} needs task_loss_fn= and inner_lr= in make's overrides (and a "
            f"validation batch at each meta_update); got {sorted(overrides)}"
        )
    if name in ("cosmos", "pbi"):
        kwargs["pref_vector"] = np.full(num_tasks, 1.0 / num_tasks, np.float32)
    kwargs.update(overrides)
    return factory(**kwargs)
