"""Domain adaptation and label shift.

Domain adaptation: :func:`gradient_reversal` and DANN (Ganin et al. 2016),
MSTN's moving semantic centroids (Xie et al. 2018), REFORM model reuse across
feature spaces (Ye et al. 2018).

Label shift: :func:`bbse` (Lipton et al. 2018), :func:`rlls` (Azizzadenesheli et
al. 2019), :func:`mlls` with :func:`bcts_calibrate` (Saerens et al. 2002;
Alexandari et al. 2020), importance-weighted correction and
:func:`detect_label_shift`.
"""

from mtl_jax.adaptation._bbse import bbse as bbse
from mtl_jax.adaptation._bbse import confusion_matrix as confusion_matrix
from mtl_jax.adaptation._bbse import prediction_marginal as prediction_marginal
from mtl_jax.adaptation._dann import DANNStep as DANNStep
from mtl_jax.adaptation._dann import domain_adversarial_loss as domain_adversarial_loss
from mtl_jax.adaptation._dann import make_dann_step as make_dann_step
from mtl_jax.adaptation._detection import ShiftTestResult as ShiftTestResult
from mtl_jax.adaptation._detection import detect_label_shift as detect_label_shift
from mtl_jax.adaptation._gradient_reversal import dann_lambda as dann_lambda
from mtl_jax.adaptation._gradient_reversal import dann_learning_rate as dann_learning_rate
from mtl_jax.adaptation._gradient_reversal import gradient_reversal as gradient_reversal
from mtl_jax.adaptation._importance import (
    importance_weighted_cross_entropy as importance_weighted_cross_entropy,
)
from mtl_jax.adaptation._importance import reweight_posteriors as reweight_posteriors
from mtl_jax.adaptation._mlls import BCTSParams as BCTSParams
from mtl_jax.adaptation._mlls import apply_bcts as apply_bcts
from mtl_jax.adaptation._mlls import bcts_calibrate as bcts_calibrate
from mtl_jax.adaptation._mlls import mlls as mlls
from mtl_jax.adaptation._mlls import mlls_log_likelihood as mlls_log_likelihood
from mtl_jax.adaptation._mstn import MSTNState as MSTNState
from mtl_jax.adaptation._mstn import class_centroids as class_centroids
from mtl_jax.adaptation._mstn import make_mstn_step as make_mstn_step
from mtl_jax.adaptation._mstn import mstn_init as mstn_init
from mtl_jax.adaptation._mstn import semantic_loss as semantic_loss
from mtl_jax.adaptation._mstn import update_centroids as update_centroids
from mtl_jax.adaptation._reform import LinearModel as LinearModel
from mtl_jax.adaptation._reform import feature_meta_representations as feature_meta_representations
from mtl_jax.adaptation._reform import linear_model_predict as linear_model_predict
from mtl_jax.adaptation._reform import mahalanobis_cost as mahalanobis_cost
from mtl_jax.adaptation._reform import semantic_transport as semantic_transport
from mtl_jax.adaptation._reform import transform_model as transform_model
from mtl_jax.adaptation._reform_learning import learn_metric as learn_metric
from mtl_jax.adaptation._reform_learning import reform_refit as reform_refit
from mtl_jax.adaptation._rlls import rlls as rlls
from mtl_jax.adaptation._rlls import rlls_objective as rlls_objective
from mtl_jax.adaptation._shifts import dirichlet_shift as dirichlet_shift
from mtl_jax.adaptation._shifts import (
    sample_with_label_distribution as sample_with_label_distribution,
)
from mtl_jax.adaptation._shifts import tweak_one_shift as tweak_one_shift

__all__ = [
    "LinearModel",
    "feature_meta_representations",
    "learn_metric",
    "linear_model_predict",
    "mahalanobis_cost",
    "reform_refit",
    "semantic_transport",
    "transform_model",
    "DANNStep",
    "MSTNState",
    "class_centroids",
    "dann_lambda",
    "dann_learning_rate",
    "domain_adversarial_loss",
    "gradient_reversal",
    "make_dann_step",
    "make_mstn_step",
    "mstn_init",
    "semantic_loss",
    "update_centroids",
    "BCTSParams",
    "ShiftTestResult",
    "apply_bcts",
    "bbse",
    "bcts_calibrate",
    "confusion_matrix",
    "detect_label_shift",
    "dirichlet_shift",
    "importance_weighted_cross_entropy",
    "mlls",
    "mlls_log_likelihood",
    "prediction_marginal",
    "reweight_posteriors",
    "rlls",
    "rlls_objective",
    "sample_with_label_distribution",
    "tweak_one_shift",
]
