"""mtl_jax: pure-functional JAX multi-task and transfer learning.

API conventions (every public factory and function follows them):

* **Keyword-only hyperparameters.** Only the data a function acts on is
  positional (``gram``, ``losses``, ``features``, ``labels``, ...); every
  hyperparameter, and ``num_tasks``, is passed by name:
  ``mtl.balancers.uncertainty_weighting(num_tasks=3, learning_rate=1e-2)``.
  ``num_tasks`` is required where the method's state needs ``K`` (the loss-based
  balancers, GradNorm, GradVac) and optional elsewhere, where it makes the state
  record the applied weights (:func:`mtl_jax.balancers.task_weights`).
* **Names.** Iteration counts are ``num_iters``; step sizes ``learning_rate``;
  tolerances ``tol``; ridge terms ``reg_eps``. Randomised balancers take
  ``seed: int`` and keep their key in the state (as raw ``uint32`` key data, so
  the state is checkpointable); pure functions take an explicit ``key``.
* **Paper symbols.** A hyperparameter named after a Greek letter keeps the
  symbol of the paper it comes from, and its docstring says what it is, so the
  same letter means different things in different methods: ``alpha`` is
  GradNorm's asymmetry, FairGrad's fairness exponent, the L2-SP weight of the
  distance to the starting point, and a significance level in shift detection;
  ``beta`` is an EMA rate in GradVac and DB-MTL and the L2-SP weight of the
  new parameters; ``gamma`` is a weight decay (FAMO), the GRL schedule's
  steepness (DANN, MSTN) or a penalty weight (L2T); ``lam`` is RLLS's amount of
  correction and REFORM's weight of the distance to the transported model;
  ``c`` is CAGrad's radius.
* **Validation.** Arguments are checked eagerly: a ``ValueError`` (or
  ``TypeError``) names the argument and the offending value.
* **No deprecation shims.** In this 0.x series a renamed argument is simply
  renamed; CHANGELOG.md lists every old name.
"""

from mtl_jax import adaptation as adaptation
from mtl_jax import balancers as balancers
from mtl_jax import models as models
from mtl_jax import recipes as recipes
from mtl_jax import training as training
from mtl_jax import transfer as transfer
from mtl_jax import weighting as weighting
from mtl_jax._jacobian import value_and_jacobian as value_and_jacobian
from mtl_jax._presence import TaskLosses as TaskLosses
from mtl_jax._presence import masked_task_losses as masked_task_losses
from mtl_jax._task_tree import combine as combine
from mtl_jax._task_tree import gram as gram
from mtl_jax._task_tree import num_tasks as num_tasks
from mtl_jax._task_tree import sum_tasks as sum_tasks
from mtl_jax._task_tree import task_norms as task_norms

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``mtl_jax.data`` (TFDS builders, the Grain pipeline) loads on first use, so that
    # ``import mtl_jax`` pulls in no dataset machinery.
    if name == "data":
        import importlib

        return importlib.import_module("mtl_jax.data")
    raise AttributeError(f"module 'mtl_jax' has no attribute {name!r}")


__all__ = [
    "TaskLosses",
    "adaptation",
    "balancers",
    "combine",
    "data",
    "gram",
    "masked_task_losses",
    "models",
    "num_tasks",
    "recipes",
    "sum_tasks",
    "task_norms",
    "training",
    "transfer",
    "value_and_jacobian",
    "weighting",
]
