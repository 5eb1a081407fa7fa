"""Datasets: offline builders and numpy iterators."""

from mtl_jax.data._digits import Digits as Digits
from mtl_jax.data._digits import load_digits as load_digits
from mtl_jax.data._digits import train_test_split as train_test_split
from mtl_jax.data._multi_digits import MultiTaskDigits as MultiTaskDigits
from mtl_jax.data._multi_digits import digits_attributes as digits_attributes
from mtl_jax.data._multi_digits import multi_digits as multi_digits
from mtl_jax.data._toy_regression import ToyRegression as ToyRegression
from mtl_jax.data._toy_regression import toy_regression as toy_regression

__all__ = [
    "Digits",
    "MultiTaskDigits",
    "ToyRegression",
    "digits_attributes",
    "load_digits",
    "multi_digits",
    "toy_regression",
    "train_test_split",
]
