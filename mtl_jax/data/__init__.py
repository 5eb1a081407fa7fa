"""Datasets: offline TFDS builders, numpy loaders and a Grain input pipeline."""

from mtl_jax.data._builders import DigitsAttributes as DigitsAttributes
from mtl_jax.data._builders import GradNormToy as GradNormToy
from mtl_jax.data._builders import LabelShiftedDigits as LabelShiftedDigits
from mtl_jax.data._builders import MultiDigits as MultiDigits
from mtl_jax.data._builders import ShiftedDigits as ShiftedDigits
from mtl_jax.data._digits import Digits as Digits
from mtl_jax.data._digits import load_digits as load_digits
from mtl_jax.data._digits import train_test_split as train_test_split
from mtl_jax.data._domain_shift import sample_digit_shift as sample_digit_shift
from mtl_jax.data._domain_shift import shift_digits as shift_digits
from mtl_jax.data._icu_alarms import ALARM_TYPES as ALARM_TYPES
from mtl_jax.data._icu_alarms import ICU_STREAMS as ICU_STREAMS
from mtl_jax.data._icu_alarms import ICUAlarms as ICUAlarms
from mtl_jax.data._icu_alarms import icu_alarms as icu_alarms
from mtl_jax.data._icu_builder import ICUAlarmsBuilder as ICUAlarmsBuilder
from mtl_jax.data._multi_digits import MultiTaskDigits as MultiTaskDigits
from mtl_jax.data._multi_digits import attribute_labels as attribute_labels
from mtl_jax.data._multi_digits import digits_attributes as digits_attributes
from mtl_jax.data._multi_digits import multi_digits as multi_digits
from mtl_jax.data._physionet2015 import PHYSIONET_STREAMS as PHYSIONET_STREAMS
from mtl_jax.data._physionet2015 import PhysioNetAlarms as PhysioNetAlarms
from mtl_jax.data._physionet2015 import load_physionet_2015 as load_physionet_2015
from mtl_jax.data._pipeline import iterator_state as iterator_state
from mtl_jax.data._pipeline import make_loader as make_loader
from mtl_jax.data._pipeline import restore_iterator as restore_iterator
from mtl_jax.data._relevance import AuxiliaryTargets as AuxiliaryTargets
from mtl_jax.data._relevance import FeatureRelevance as FeatureRelevance
from mtl_jax.data._relevance import auxiliary_targets as auxiliary_targets
from mtl_jax.data._relevance import select_relevant_features as select_relevant_features
from mtl_jax.data._tfds import data_source as data_source
from mtl_jax.data._tfds import default_data_dir as default_data_dir
from mtl_jax.data._tfds import get_builder as get_builder
from mtl_jax.data._tfds import list_builders as list_builders
from mtl_jax.data._tfds import load as load
from mtl_jax.data._tfds import load_icu_alarms as load_icu_alarms
from mtl_jax.data._tfds import prepare as prepare
from mtl_jax.data._toy_regression import ToyRegression as ToyRegression
from mtl_jax.data._toy_regression import toy_regression as toy_regression
from mtl_jax.data._ts_features import TS_FEATURE_NAMES as TS_FEATURE_NAMES
from mtl_jax.data._ts_features import time_series_features as time_series_features
from mtl_jax.data._views import CELEB_A_ATTRIBUTES as CELEB_A_ATTRIBUTES
from mtl_jax.data._views import multitask_view as multitask_view
from mtl_jax.data._views import nyuv2_source as nyuv2_source

__all__ = [
    "ALARM_TYPES",
    "AuxiliaryTargets",
    "CELEB_A_ATTRIBUTES",
    "Digits",
    "DigitsAttributes",
    "FeatureRelevance",
    "GradNormToy",
    "ICUAlarms",
    "ICUAlarmsBuilder",
    "ICU_STREAMS",
    "LabelShiftedDigits",
    "MultiDigits",
    "MultiTaskDigits",
    "PHYSIONET_STREAMS",
    "PhysioNetAlarms",
    "ShiftedDigits",
    "TS_FEATURE_NAMES",
    "ToyRegression",
    "attribute_labels",
    "auxiliary_targets",
    "data_source",
    "default_data_dir",
    "digits_attributes",
    "get_builder",
    "icu_alarms",
    "iterator_state",
    "list_builders",
    "load",
    "load_digits",
    "load_icu_alarms",
    "load_physionet_2015",
    "make_loader",
    "multi_digits",
    "multitask_view",
    "nyuv2_source",
    "prepare",
    "restore_iterator",
    "sample_digit_shift",
    "select_relevant_features",
    "shift_digits",
    "time_series_features",
    "toy_regression",
    "train_test_split",
]
