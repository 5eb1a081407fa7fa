"""Training-step factories: jitted, data-parallel and multi-host; checkpoint and resume."""

from mtl_jax.training._checkpoint import Checkpointer as Checkpointer
from mtl_jax.training._checkpoint import CorruptCheckpointError as CorruptCheckpointError
from mtl_jax.training._nnx import NNXLoss as NNXLoss
from mtl_jax.training._nnx import nnx_loss as nnx_loss
from mtl_jax.training._precision import mixed_precision as mixed_precision
from mtl_jax.training._step import Representation as Representation
from mtl_jax.training._step import TrainState as TrainState
from mtl_jax.training._step import TrainStep as TrainStep
from mtl_jax.training._step import make_train_step as make_train_step
from mtl_jax.training._step import shard_batch as shard_batch

__all__ = [
    "Checkpointer",
    "CorruptCheckpointError",
    "NNXLoss",
    "Representation",
    "TrainState",
    "TrainStep",
    "make_train_step",
    "mixed_precision",
    "nnx_loss",
    "shard_batch",
]
