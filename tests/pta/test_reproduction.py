"""The PTA reproduction runs end to end (fast form in CI, ``--full-repro`` for full)."""

import numpy as np
import pytest

from mtl_jax.experiments import get
from mtl_jax.experiments.pta import digits_attributes


def test_digits_attributes_truth_table():
    a = digits_attributes(np.arange(10))
    np.testing.assert_array_equal(a[:, 0], [0, 1, 0, 1, 0, 1, 0, 1, 0, 1])  # odd
    np.testing.assert_array_equal(a[:, 1], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])  # >= 5
    np.testing.assert_array_equal(a[:, 2], [0, 0, 1, 1, 0, 1, 0, 1, 0, 0])  # prime
    np.testing.assert_array_equal(a[:, 3], [1, 0, 0, 0, 0, 0, 1, 0, 1, 1])  # closed loop
    with pytest.raises(ValueError, match="labels"):
        digits_attributes(np.array([3, 11]))


@pytest.mark.reproduction
def test_pta_reproduction(repro_fast, tmp_path):
    res = get("pta").fn(fast=repro_fast, out_dir=tmp_path, seed=0)
    assert res.files[0].exists() and res.files[0].stat().st_size > 1000
    assert len(res.seeds) >= 5 and all(len(v) == len(res.seeds) for v in res.per_seed.values())
    s = res.summary
    # every variant learns (chance: 90 % error single-task, ~50 % per attribute)
    for name in res.per_seed:
        assert s[name] < (6.0 if name.startswith("attr") else 8.0), (name, s[name])
    # claim_held is what this run's numbers say
    assert res.claim_held == bool(s["held_a"] and s["held_b"])
    # The paper's claim does not reproduce beyond the seed spread on digits (see the
    # experiment's docstring); claim_held reports it. What holds on every seed set we
    # ran: extra decoders do not break training (the fast form's 400 steps leave D = 4
    # somewhat undertrained: up to +1.2 points over STL), and PTA does not hurt MTL.
    assert s["I D=4"] < s["STL (D=1)"] + 2.5
    assert s["HGD D=4"] < s["STL (D=1)"] + 2.5
    assert s["attr MTL+PTA-HGD D=4"] < s["attr MTL"] + 1.0
