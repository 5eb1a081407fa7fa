"""Fixtures of the architecture tests; ``arch_zoo.py`` builds the models."""

import jax
import pytest

collect_ignore = ["arch_zoo.py"]


@pytest.fixture
def inputs():
    from arch_zoo import B, D

    return jax.random.normal(jax.random.key(1), (B, D))
