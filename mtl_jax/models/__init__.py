"""Flax multi-task models.

Training and evaluation: every architecture (:class:`HardParameterSharing`,
:class:`CrossStitch`, :class:`MMoE`, :class:`MTAN`, :class:`CGC`, :class:`PLE`,
:class:`DSelectK`, :class:`LTB`, :class:`PseudoTaskHeads`, :class:`DSMTNet`) takes
one call-time keyword ``train: bool`` (``False``, evaluation, by default; DSMTNet
requires it). It is passed on, as ``train=train``, to every user-supplied
submodule whose ``__call__`` declares a parameter named ``train`` (Flax's
convention: such a module builds ``nn.Dropout(deterministic=not train)`` and
``nn.BatchNorm(use_running_average=not train)``); submodules without one
(``nn.Dense``, ``nn.Sequential``, ...) are called without it, and a ``**kwargs``
catch-all does not count. Copies of a submodule (one per task, expert or node)
keep their own variables in every collection (``"batch_stats"`` included) and
draw their own keys from every PRNG stream, so each copy gets its own dropout
mask. In training pass ``rngs={"dropout": key}`` and
``mutable=["batch_stats"]``; evaluation needs neither.
"""

from mtl_jax.models._benchmark_nets import ConvEncoder as ConvEncoder
from mtl_jax.models._benchmark_nets import MLPTrunk as MLPTrunk
from mtl_jax.models._benchmark_nets import conv_hps as conv_hps
from mtl_jax.models._benchmark_nets import mlp_hps as mlp_hps
from mtl_jax.models._cross_stitch import CrossStitch as CrossStitch
from mtl_jax.models._dselect_k import DSelectK as DSelectK
from mtl_jax.models._dsmt import DSMTNet as DSMTNet
from mtl_jax.models._hps import HardParameterSharing as HardParameterSharing
from mtl_jax.models._hps import MultiHeadDense as MultiHeadDense
from mtl_jax.models._ltb import LTB as LTB
from mtl_jax.models._mmoe import MMoE as MMoE
from mtl_jax.models._mtan import MTAN as MTAN
from mtl_jax.models._ple import CGC as CGC
from mtl_jax.models._ple import PLE as PLE
from mtl_jax.models._pseudo_task import PseudoTaskHeads as PseudoTaskHeads
from mtl_jax.models._pseudo_task import decoder_accuracy as decoder_accuracy
from mtl_jax.models._pseudo_task import pseudo_task_losses as pseudo_task_losses
from mtl_jax.models._pseudo_task import select_decoders as select_decoders
from mtl_jax.models._pseudo_task import selected_logits as selected_logits

__all__ = [
    "CGC",
    "ConvEncoder",
    "CrossStitch",
    "DSMTNet",
    "DSelectK",
    "HardParameterSharing",
    "LTB",
    "MLPTrunk",
    "MMoE",
    "MTAN",
    "MultiHeadDense",
    "PLE",
    "PseudoTaskHeads",
    "decoder_accuracy",
    "pseudo_task_losses",
    "select_decoders",
    "selected_logits",
    "conv_hps",
    "mlp_hps",
]
