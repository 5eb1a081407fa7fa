"""Datasets: offline TFDS builders, numpy loaders and a Grain input pipeline."""

from mtl_jax.data._builders import DigitsAttributes as DigitsAttributes
from mtl_jax.data._builders import GradNormToy as GradNormToy
from mtl_jax.data._builders import LabelShiftedDigits as LabelShiftedDigits
from mtl_jax.data._builders import MultiDigits as MultiDigits
from mtl_jax.data._builders import ShiftedDigits as ShiftedDigits
from mtl_jax.data._digits import Digits as Digits
from mtl_jax.data._digits import load_digits as load_digits
from mtl_jax.data._digits import train_test_split as train_test_split
from mtl_jax.data._pipeline import iterator_state as iterator_state
from mtl_jax.data._pipeline import make_loader as make_loader
from mtl_jax.data._pipeline import restore_iterator as restore_iterator
from mtl_jax.data._tfds import data_source as data_source
from mtl_jax.data._tfds import default_data_dir as default_data_dir
from mtl_jax.data._tfds import get_builder as get_builder
from mtl_jax.data._tfds import list_builders as list_builders
from mtl_jax.data._tfds import prepare as prepare
from mtl_jax.data._toy_regression import ToyRegression as ToyRegression
from mtl_jax.data._toy_regression import toy_regression as toy_regression
from mtl_jax.data._views import CELEB_A_ATTRIBUTES as CELEB_A_ATTRIBUTES
from mtl_jax.data._views import multitask_view as multitask_view
from mtl_jax.data._views import nyuv2_source as nyuv2_source

__all__ = [
    "CELEB_A_ATTRIBUTES",
    "Digits",
    "DigitsAttributes",
    "GradNormToy",
    "LabelShiftedDigits",
    "MultiDigits",
    "ShiftedDigits",
    "ToyRegression",
    "data_source",
    "default_data_dir",
    "get_builder",
    "iterator_state",
    "list_builders",
    "load_digits",
    "make_loader",
    "multitask_view",
    "nyuv2_source",
    "prepare",
    "restore_iterator",
    "toy_regression",
    "train_test_split",
]
