"""Constants both translations must share, so the frameworks train the same network.

No framework is imported here: each backend imports this beside its own framework.
"""
from __future__ import annotations

import os

# Set by the runner so that N parallel workers share the cores instead of each
# starting one TensorFlow thread per core.
THREADS_ENV = "HARNESS_THREADS"

# Local response normalisation of Levi & Hassner (AlexNet's): size 5 -> radius 2.
LRN = {"depth_radius": 2, "bias": 1.0, "alpha": 1e-4, "beta": 0.75}
# TFLearn's batch-norm defaults; Keras is set to match (its own are 0.99 / 1e-3).
BATCH_NORM_DECAY, BATCH_NORM_EPSILON = 0.9, 1e-5
TRUNCATED_NORMAL_STDDEV = 0.05
# Optimizer constants not in the spec, pinned to one value for both frameworks.
ADAM = {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
RMSPROP = {"rho": 0.9, "epsilon": 1e-7}
ADADELTA = {"rho": 0.95, "epsilon": 1e-7}
PREDICT_BATCH = 256


def kernel_axes(ndim: int) -> list[int]:
    """Axes of one output unit's incoming weights (all but the last): max-norm's axes."""
    return list(range(ndim - 1))


def thread_limit() -> int | None:
    value = os.environ.get(THREADS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else None
