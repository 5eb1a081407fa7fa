"""Pure task-weighting functions: Gram matrix or losses in, task weights out.

The balancers in :mod:`mtl_jax.balancers` wrap these; they are public so that
research code can, e.g., solve MGDA on a Gram matrix directly.
"""

from mtl_jax.weighting._aligned_mtl import aligned_mtl_weights as aligned_mtl_weights
from mtl_jax.weighting._cagrad import cagrad_dual as cagrad_dual
from mtl_jax.weighting._cagrad import cagrad_weights as cagrad_weights
from mtl_jax.weighting._conflict_free import conflict_free_weights as conflict_free_weights
from mtl_jax.weighting._db_mtl import db_mtl_log_grad_norms as db_mtl_log_grad_norms
from mtl_jax.weighting._db_mtl import db_mtl_weights as db_mtl_weights
from mtl_jax.weighting._dualproj import dualproj_weights as dualproj_weights
from mtl_jax.weighting._dwa import dwa_weights as dwa_weights
from mtl_jax.weighting._fairgrad import fairgrad_weights as fairgrad_weights
from mtl_jax.weighting._famo import famo_logit_grad as famo_logit_grad
from mtl_jax.weighting._famo import famo_weights as famo_weights
from mtl_jax.weighting._gls import gls_objective as gls_objective
from mtl_jax.weighting._gls import gls_weights as gls_weights
from mtl_jax.weighting._gradnorm import gradnorm_objective as gradnorm_objective
from mtl_jax.weighting._gradnorm import gradnorm_targets as gradnorm_targets
from mtl_jax.weighting._gradnorm import gradnorm_weights_grad as gradnorm_weights_grad
from mtl_jax.weighting._gradvac import gradvac_weights as gradvac_weights
from mtl_jax.weighting._imtl import imtl_weights as imtl_weights
from mtl_jax.weighting._mgda import mgda_normalizers as mgda_normalizers
from mtl_jax.weighting._mgda import mgda_weights as mgda_weights
from mtl_jax.weighting._mgda import min_norm_simplex as min_norm_simplex
from mtl_jax.weighting._nash_mtl import nash_mtl_weights as nash_mtl_weights
from mtl_jax.weighting._pcgrad import pcgrad_weights as pcgrad_weights
from mtl_jax.weighting._qp import box_qp as box_qp
from mtl_jax.weighting._qp import normalize_gram as normalize_gram
from mtl_jax.weighting._qp import simplex_qp as simplex_qp
from mtl_jax.weighting._rlw import rlw_weights as rlw_weights
from mtl_jax.weighting._simplex import project_simplex as project_simplex
from mtl_jax.weighting._stch import stch_objective as stch_objective
from mtl_jax.weighting._stch import stch_weights as stch_weights
from mtl_jax.weighting._uncertainty import (
    uncertainty_log_variance_grad as uncertainty_log_variance_grad,
)
from mtl_jax.weighting._uncertainty import uncertainty_objective as uncertainty_objective
from mtl_jax.weighting._uncertainty import uncertainty_weights as uncertainty_weights
from mtl_jax.weighting._upgrad import upgrad_weights as upgrad_weights

__all__ = [
    "aligned_mtl_weights",
    "box_qp",
    "cagrad_dual",
    "cagrad_weights",
    "conflict_free_weights",
    "db_mtl_log_grad_norms",
    "db_mtl_weights",
    "dualproj_weights",
    "dwa_weights",
    "fairgrad_weights",
    "famo_logit_grad",
    "famo_weights",
    "gls_objective",
    "gls_weights",
    "gradnorm_objective",
    "gradnorm_targets",
    "gradnorm_weights_grad",
    "gradvac_weights",
    "imtl_weights",
    "mgda_normalizers",
    "mgda_weights",
    "min_norm_simplex",
    "nash_mtl_weights",
    "normalize_gram",
    "pcgrad_weights",
    "project_simplex",
    "rlw_weights",
    "simplex_qp",
    "stch_objective",
    "stch_weights",
    "uncertainty_log_variance_grad",
    "uncertainty_objective",
    "uncertainty_weights",
    "upgrad_weights",
]

# 2025 baselines (torchjd 0.18 / LibMTL parity).
from mtl_jax.weighting._constant import constant_weights as constant_weights
from mtl_jax.weighting._cr_mogm import cr_mogm_update as cr_mogm_update
from mtl_jax.weighting._cr_mogm import mgda_present_weights as mgda_present_weights
from mtl_jax.weighting._excess_mtl import excess_mtl_risks as excess_mtl_risks
from mtl_jax.weighting._forum import forum_weights as forum_weights
from mtl_jax.weighting._imtl_hybrid import imtl_hybrid_weights as imtl_hybrid_weights
from mtl_jax.weighting._moco import moco_track as moco_track
from mtl_jax.weighting._moco import moco_weight_step as moco_weight_step
from mtl_jax.weighting._modo import modo_step as modo_step
from mtl_jax.weighting._modo import task_cross_gram as task_cross_gram
from mtl_jax.weighting._moml import moml_direction as moml_direction
from mtl_jax.weighting._moml import moml_hypergradients as moml_hypergradients
from mtl_jax.weighting._pcd import pcd_norms_update as pcd_norms_update
from mtl_jax.weighting._pcd import pcd_scales as pcd_scales
from mtl_jax.weighting._pcd import pcd_weights as pcd_weights
from mtl_jax.weighting._robust import krum_weights as krum_weights
from mtl_jax.weighting._robust import trimmed_mean as trimmed_mean
from mtl_jax.weighting._scalarization import cosmos_objective as cosmos_objective
from mtl_jax.weighting._scalarization import cosmos_weights as cosmos_weights
from mtl_jax.weighting._scalarization import pbi_objective as pbi_objective
from mtl_jax.weighting._scalarization import pbi_weights as pbi_weights
from mtl_jax.weighting._scale_invariant import imtl_l_objective as imtl_l_objective
from mtl_jax.weighting._scale_invariant import (
    imtl_l_scale_grad as imtl_l_scale_grad,
)
from mtl_jax.weighting._scale_invariant import imtl_l_weights as imtl_l_weights
from mtl_jax.weighting._scale_invariant import (
    scale_invariant_weights as scale_invariant_weights,
)
from mtl_jax.weighting._sdmgrad import sdmgrad_step as sdmgrad_step

__all__ += [
    "constant_weights",
    "cosmos_objective",
    "cosmos_weights",
    "cr_mogm_update",
    "excess_mtl_risks",
    "forum_weights",
    "imtl_hybrid_weights",
    "imtl_l_objective",
    "imtl_l_scale_grad",
    "imtl_l_weights",
    "krum_weights",
    "mgda_present_weights",
    "moco_track",
    "moco_weight_step",
    "modo_step",
    "moml_direction",
    "moml_hypergradients",
    "pbi_objective",
    "pbi_weights",
    "pcd_norms_update",
    "pcd_scales",
    "pcd_weights",
    "scale_invariant_weights",
    "sdmgrad_step",
    "task_cross_gram",
    "trimmed_mean",
]
