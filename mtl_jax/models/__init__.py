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
from mtl_jax.models._dsmt import DSMTTrainStep as DSMTTrainStep
from mtl_jax.models._dsmt import dsmt_losses as dsmt_losses
from mtl_jax.models._dsmt import dsmt_phase_weights as dsmt_phase_weights
from mtl_jax.models._dsmt import make_dsmt_train_step as make_dsmt_train_step
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
from mtl_jax.models._pta_control import PTA_STRATEGIES as PTA_STRATEGIES
from mtl_jax.models._pta_control import pta_greedy_copy as pta_greedy_copy
from mtl_jax.models._pta_control import pta_identical_init as pta_identical_init
from mtl_jax.models._pta_control import pta_perturb as pta_perturb
from mtl_jax.models._pta_control import pta_perturb_dropout as pta_perturb_dropout
from mtl_jax.models._pta_control import pta_trainable_mask as pta_trainable_mask
from mtl_jax.models._pta_control import pta_update as pta_update
from mtl_jax.models._pta_driver import PTADriver as PTADriver
from mtl_jax.models._pta_driver import PTAState as PTAState
from mtl_jax.models._pta_driver import make_pta_driver as make_pta_driver

__all__ = [
    "CGC",
    "ConvEncoder",
    "CrossStitch",
    "DSMTNet",
    "DSMTTrainStep",
    "DSelectK",
    "HardParameterSharing",
    "LTB",
    "MLPTrunk",
    "MMoE",
    "MTAN",
    "MultiHeadDense",
    "PLE",
    "PTADriver",
    "PTAState",
    "PTA_STRATEGIES",
    "PseudoTaskHeads",
    "decoder_accuracy",
    "make_pta_driver",
    "pseudo_task_losses",
    "pta_greedy_copy",
    "pta_identical_init",
    "pta_perturb",
    "pta_perturb_dropout",
    "pta_trainable_mask",
    "pta_update",
    "select_decoders",
    "selected_logits",
    "conv_hps",
    "dsmt_losses",
    "dsmt_phase_weights",
    "make_dsmt_train_step",
    "mlp_hps",
]
