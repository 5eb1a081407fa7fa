"""Gradient balancers: optax transforms from a task Jacobian to a params-shaped update.

See :mod:`mtl_jax.balancers._base` for the protocol. Each method lives in its own
private module; this package re-exports the public names.
"""

from mtl_jax.balancers._aligned_mtl import aligned_mtl as aligned_mtl
from mtl_jax.balancers._auto_lambda import AutoLambdaState as AutoLambdaState
from mtl_jax.balancers._auto_lambda import auto_lambda as auto_lambda
from mtl_jax.balancers._auto_lambda_hypergradient import (
    auto_lambda_hypergradient as auto_lambda_hypergradient,
)
from mtl_jax.balancers._base import Balancer as Balancer
from mtl_jax.balancers._base import BalancerSpec as BalancerSpec
from mtl_jax.balancers._base import check_balancer as check_balancer
from mtl_jax.balancers._base import gram_balancer as gram_balancer
from mtl_jax.balancers._base import jacobian_balancer as jacobian_balancer
from mtl_jax.balancers._base import loss_balancer as loss_balancer
from mtl_jax.balancers._cagrad import CAGradState as CAGradState
from mtl_jax.balancers._cagrad import cagrad as cagrad
from mtl_jax.balancers._conflict_free import conflict_free as conflict_free
from mtl_jax.balancers._db_mtl import DBMTLState as DBMTLState
from mtl_jax.balancers._db_mtl import db_mtl as db_mtl
from mtl_jax.balancers._dualproj import dualproj as dualproj
from mtl_jax.balancers._dwa import DWAState as DWAState
from mtl_jax.balancers._dwa import dwa as dwa
from mtl_jax.balancers._equal_weighting import equal_weighting as equal_weighting
from mtl_jax.balancers._fairgrad import fairgrad as fairgrad
from mtl_jax.balancers._famo import FAMOState as FAMOState
from mtl_jax.balancers._famo import famo as famo
from mtl_jax.balancers._gls import gls as gls
from mtl_jax.balancers._graddrop import GradDropState as GradDropState
from mtl_jax.balancers._graddrop import graddrop as graddrop
from mtl_jax.balancers._gradnorm import GradNormState as GradNormState
from mtl_jax.balancers._gradnorm import gradnorm as gradnorm
from mtl_jax.balancers._gradvac import GradVacState as GradVacState
from mtl_jax.balancers._gradvac import gradvac as gradvac
from mtl_jax.balancers._imtl import imtl as imtl
from mtl_jax.balancers._mgda import mgda as mgda
from mtl_jax.balancers._nash_mtl import NashMTLState as NashMTLState
from mtl_jax.balancers._nash_mtl import nash_mtl as nash_mtl
from mtl_jax.balancers._pcgrad import PCGradState as PCGradState
from mtl_jax.balancers._pcgrad import pcgrad as pcgrad
from mtl_jax.balancers._registry import METHODS as METHODS
from mtl_jax.balancers._registry import MethodInfo as MethodInfo
from mtl_jax.balancers._registry import make as make
from mtl_jax.balancers._registry import names as names
from mtl_jax.balancers._rlw import RLWState as RLWState
from mtl_jax.balancers._rlw import rlw as rlw
from mtl_jax.balancers._state import WeightsState as WeightsState
from mtl_jax.balancers._state import task_weights as task_weights
from mtl_jax.balancers._stch import STCHState as STCHState
from mtl_jax.balancers._stch import stch as stch
from mtl_jax.balancers._uncertainty_weighting import (
    UncertaintyWeightingState as UncertaintyWeightingState,
)
from mtl_jax.balancers._uncertainty_weighting import (
    uncertainty_weighting as uncertainty_weighting,
)
from mtl_jax.balancers._upgrad import upgrad as upgrad

__all__ = [
    "AutoLambdaState",
    "auto_lambda",
    "auto_lambda_hypergradient",
    "METHODS",
    "MethodInfo",
    "Balancer",
    "BalancerSpec",
    "CAGradState",
    "DBMTLState",
    "DWAState",
    "FAMOState",
    "GradDropState",
    "GradNormState",
    "GradVacState",
    "NashMTLState",
    "PCGradState",
    "RLWState",
    "STCHState",
    "UncertaintyWeightingState",
    "WeightsState",
    "aligned_mtl",
    "cagrad",
    "check_balancer",
    "conflict_free",
    "db_mtl",
    "dualproj",
    "dwa",
    "equal_weighting",
    "fairgrad",
    "famo",
    "gls",
    "graddrop",
    "gradnorm",
    "gradvac",
    "gram_balancer",
    "imtl",
    "jacobian_balancer",
    "loss_balancer",
    "make",
    "mgda",
    "names",
    "nash_mtl",
    "pcgrad",
    "rlw",
    "stch",
    "task_weights",
    "uncertainty_weighting",
    "upgrad",
]

# 2025 baselines (torchjd 0.18 / LibMTL parity).
from mtl_jax.balancers._constant import constant as constant
from mtl_jax.balancers._cr_mogm import CRMOGMState as CRMOGMState
from mtl_jax.balancers._cr_mogm import cr_mogm as cr_mogm
from mtl_jax.balancers._excess_mtl import ExcessMTLState as ExcessMTLState
from mtl_jax.balancers._excess_mtl import excess_mtl as excess_mtl
from mtl_jax.balancers._forum import FORUMState as FORUMState
from mtl_jax.balancers._forum import forum as forum
from mtl_jax.balancers._imtl_hybrid import IMTLHybridState as IMTLHybridState
from mtl_jax.balancers._imtl_hybrid import imtl_hybrid as imtl_hybrid
from mtl_jax.balancers._moco import MoCoState as MoCoState
from mtl_jax.balancers._moco import moco as moco
from mtl_jax.balancers._modo import MoDoState as MoDoState
from mtl_jax.balancers._modo import modo as modo
from mtl_jax.balancers._moml import MOMLState as MOMLState
from mtl_jax.balancers._moml import moml as moml
from mtl_jax.balancers._pcd import PCDState as PCDState
from mtl_jax.balancers._pcd import pcd as pcd
from mtl_jax.balancers._robust import krum as krum
from mtl_jax.balancers._robust import trimmed_mean as trimmed_mean
from mtl_jax.balancers._scalarization import cosmos as cosmos
from mtl_jax.balancers._scalarization import pbi as pbi
from mtl_jax.balancers._scale_invariant import IMTLLState as IMTLLState
from mtl_jax.balancers._scale_invariant import imtl_l as imtl_l
from mtl_jax.balancers._scale_invariant import scale_invariant as scale_invariant
from mtl_jax.balancers._sdmgrad import SDMGradState as SDMGradState
from mtl_jax.balancers._sdmgrad import sdmgrad as sdmgrad

__all__ += [
    "CRMOGMState",
    "ExcessMTLState",
    "FORUMState",
    "IMTLHybridState",
    "IMTLLState",
    "MoCoState",
    "MoDoState",
    "MOMLState",
    "PCDState",
    "SDMGradState",
    "constant",
    "cosmos",
    "cr_mogm",
    "excess_mtl",
    "forum",
    "imtl_hybrid",
    "imtl_l",
    "krum",
    "moco",
    "modo",
    "moml",
    "pbi",
    "pcd",
    "scale_invariant",
    "sdmgrad",
    "trimmed_mean",
]
