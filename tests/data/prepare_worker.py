"""Subprocess entry point: once all workers are ready, load one builder into a shared cache."""

import os
import pathlib
import sys
import time

import numpy as np

from mtl_jax.data import _tfds

data_dir, barrier, n, out = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
(barrier / f"ready{os.getpid()}").touch()
deadline = time.time() + 120
while len(list(barrier.iterdir())) < n and time.time() < deadline:  # start together
    time.sleep(0.01)
arrays = _tfds.load("multi_digits", split="test", data_dir=data_dir, config={"seed": 7})
np.save(out, arrays["image"])
