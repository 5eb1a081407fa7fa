"""Datasets: offline builders and numpy iterators."""

from mtl_jax.data._digits import Digits as Digits
from mtl_jax.data._digits import load_digits as load_digits
from mtl_jax.data._digits import train_test_split as train_test_split
from mtl_jax.data._icu_alarms import ALARM_TYPES as ALARM_TYPES
from mtl_jax.data._icu_alarms import ICU_STREAMS as ICU_STREAMS
from mtl_jax.data._icu_alarms import ICUAlarms as ICUAlarms
from mtl_jax.data._icu_alarms import icu_alarms as icu_alarms
from mtl_jax.data._physionet2015 import PHYSIONET_STREAMS as PHYSIONET_STREAMS
from mtl_jax.data._physionet2015 import PhysioNetAlarms as PhysioNetAlarms
from mtl_jax.data._physionet2015 import load_physionet_2015 as load_physionet_2015
from mtl_jax.data._relevance import AuxiliaryTargets as AuxiliaryTargets
from mtl_jax.data._relevance import FeatureRelevance as FeatureRelevance
from mtl_jax.data._relevance import auxiliary_targets as auxiliary_targets
from mtl_jax.data._relevance import select_relevant_features as select_relevant_features
from mtl_jax.data._toy_regression import ToyRegression as ToyRegression
from mtl_jax.data._toy_regression import toy_regression as toy_regression
from mtl_jax.data._ts_features import TS_FEATURE_NAMES as TS_FEATURE_NAMES
from mtl_jax.data._ts_features import time_series_features as time_series_features

__all__ = [
    "ALARM_TYPES",
    "AuxiliaryTargets",
    "Digits",
    "FeatureRelevance",
    "ICUAlarms",
    "ICU_STREAMS",
    "PHYSIONET_STREAMS",
    "PhysioNetAlarms",
    "TS_FEATURE_NAMES",
    "ToyRegression",
    "auxiliary_targets",
    "icu_alarms",
    "load_digits",
    "load_physionet_2015",
    "select_relevant_features",
    "time_series_features",
    "toy_regression",
    "train_test_split",
]
