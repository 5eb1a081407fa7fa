"""Training procedures from papers, built on :func:`mtl_jax.training.make_train_step`.

A recipe is what a paper adds to the plain balanced step: a custom step with
its own losses and task schedule, or a driver that runs steps and then changes
the model between them. The networks they train are Flax modules in
:mod:`mtl_jax.models`.

- DSMT-Nets (Schwab et al., "Not to Cry Wolf: Distantly Supervised Multitask
  Learning in Critical Care", ICML 2018, https://arxiv.org/abs/1802.05027):
  :func:`make_dsmt_train_step` trains a :class:`~mtl_jax.models.DSMTNet` with
  the auxiliary/main phase schedule :func:`dsmt_phase_weights` and the masked
  losses :func:`dsmt_losses`.
- Pseudo-task augmentation (Meyerson & Miikkulainen, "Pseudo-task Augmentation:
  From Deep Multitask Learning to Intratask Sharing—and Back", ICML 2018,
  https://arxiv.org/abs/1803.04062): :func:`make_pta_driver` runs ``M`` steps
  of a :class:`~mtl_jax.models.PseudoTaskHeads` model per meta-iteration, then
  updates the decoders with a control strategy (:func:`pta_update`).
"""

from mtl_jax.recipes._dsmt import DSMTTrainStep as DSMTTrainStep
from mtl_jax.recipes._dsmt import dsmt_losses as dsmt_losses
from mtl_jax.recipes._dsmt import dsmt_phase_weights as dsmt_phase_weights
from mtl_jax.recipes._dsmt import make_dsmt_train_step as make_dsmt_train_step
from mtl_jax.recipes._pta_control import PTA_STRATEGIES as PTA_STRATEGIES
from mtl_jax.recipes._pta_control import pta_greedy_copy as pta_greedy_copy
from mtl_jax.recipes._pta_control import pta_identical_init as pta_identical_init
from mtl_jax.recipes._pta_control import pta_perturb as pta_perturb
from mtl_jax.recipes._pta_control import pta_perturb_dropout as pta_perturb_dropout
from mtl_jax.recipes._pta_control import pta_trainable_mask as pta_trainable_mask
from mtl_jax.recipes._pta_control import pta_update as pta_update
from mtl_jax.recipes._pta_driver import PTADriver as PTADriver
from mtl_jax.recipes._pta_driver import PTAState as PTAState
from mtl_jax.recipes._pta_driver import make_pta_driver as make_pta_driver

__all__ = [
    "DSMTTrainStep",
    "PTADriver",
    "PTAState",
    "PTA_STRATEGIES",
    "dsmt_losses",
    "dsmt_phase_weights",
    "make_dsmt_train_step",
    "make_pta_driver",
    "pta_greedy_copy",
    "pta_identical_init",
    "pta_perturb",
    "pta_perturb_dropout",
    "pta_trainable_mask",
    "pta_update",
]
