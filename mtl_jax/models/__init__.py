"""Flax multi-task models."""

from mtl_jax.models._benchmark_nets import ConvEncoder as ConvEncoder
from mtl_jax.models._benchmark_nets import MLPTrunk as MLPTrunk
from mtl_jax.models._benchmark_nets import conv_hps as conv_hps
from mtl_jax.models._benchmark_nets import mlp_hps as mlp_hps
from mtl_jax.models._dsmt import DSMTNet as DSMTNet
from mtl_jax.models._dsmt import DSMTTrainStep as DSMTTrainStep
from mtl_jax.models._dsmt import dsmt_losses as dsmt_losses
from mtl_jax.models._dsmt import dsmt_phase_weights as dsmt_phase_weights
from mtl_jax.models._dsmt import make_dsmt_train_step as make_dsmt_train_step
from mtl_jax.models._hps import HardParameterSharing as HardParameterSharing
from mtl_jax.models._hps import MultiHeadDense as MultiHeadDense

__all__ = [
    "ConvEncoder",
    "DSMTNet",
    "DSMTTrainStep",
    "HardParameterSharing",
    "MLPTrunk",
    "MultiHeadDense",
    "conv_hps",
    "dsmt_losses",
    "dsmt_phase_weights",
    "make_dsmt_train_step",
    "mlp_hps",
]
