"""Flax multi-task models."""

from mtl_jax.models._benchmark_nets import ConvEncoder as ConvEncoder
from mtl_jax.models._benchmark_nets import MLPTrunk as MLPTrunk
from mtl_jax.models._benchmark_nets import conv_hps as conv_hps
from mtl_jax.models._benchmark_nets import mlp_hps as mlp_hps
from mtl_jax.models._cross_stitch import CrossStitch as CrossStitch
from mtl_jax.models._dselect_k import DSelectK as DSelectK
from mtl_jax.models._hps import HardParameterSharing as HardParameterSharing
from mtl_jax.models._hps import MultiHeadDense as MultiHeadDense
from mtl_jax.models._ltb import LTB as LTB
from mtl_jax.models._mmoe import MMoE as MMoE
from mtl_jax.models._mtan import MTAN as MTAN
from mtl_jax.models._ple import CGC as CGC
from mtl_jax.models._ple import PLE as PLE

__all__ = [
    "CGC",
    "ConvEncoder",
    "CrossStitch",
    "DSelectK",
    "HardParameterSharing",
    "LTB",
    "MLPTrunk",
    "MMoE",
    "MTAN",
    "MultiHeadDense",
    "PLE",
    "conv_hps",
    "mlp_hps",
]
