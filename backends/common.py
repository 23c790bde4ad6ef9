"""Constants both translations must share, so the frameworks train the same network.

No framework is imported here: each backend imports this beside its own framework.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

# Set by the worker from the trial's config (its ``threads``), so that a trial computes
# the same numbers whatever else runs beside it; unset (predict) means TF's default.
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
# FCN's ``standardize``: the layer (Keras) or variable scope (TFLearn) holding the
# training faces' per-feature mean and standard deviation.
STANDARDIZE = "standardize"
STD_FLOOR = 1e-6   # a feature constant over the training faces is centred, not blown up


def input_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training inputs' per-feature mean and standard deviation (float32, flattened
    as the FCN reads them), computed once here for every backend."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return flat.mean(axis=0).astype(np.float32), np.maximum(flat.std(axis=0), STD_FLOOR).astype(np.float32)


def kernel_axes(ndim: int) -> list[int]:
    """Axes of one output unit's incoming weights (all but the last): max-norm's axes."""
    return list(range(ndim - 1))


def thread_counts() -> tuple[int, int]:
    """(intra-op, inter-op) TensorFlow threads for this worker; 0 means TensorFlow's default."""
    value = os.environ.get(THREADS_ENV, "")
    threads = int(value) if value.isdigit() else 0
    return threads, min(2, threads)


def device() -> str:
    """The device TensorFlow trains on here: the GPUs it sees, else the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return ", ".join(d.name for d in gpus) if gpus else "CPU"


def deterministic_on_cpu() -> None:
    """Same seed -> same metrics on CPU. On a GPU some kernels have no deterministic
    variant, and speed matters more there."""
    import tensorflow as tf

    if device() == "CPU":
        tf.config.experimental.enable_op_determinism()


# TFLite conversion: how each ``--quantize`` choice sets up TensorFlow's converter.
QUANTIZE_CHOICES = ("none", "dynamic", "int8")


def configure_converter(converter, quantize: str, representative=None):
    """none: float32 as trained. dynamic: int8 weights, float activations (no data
    needed). int8: weights and activations in int8, calibrated on ``representative``
    inputs; input and output stay float32 so callers feed and read the same arrays, and
    an op without an int8 kernel stays in float rather than failing the export."""
    import numpy as np
    import tensorflow as tf

    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"--quantize {quantize!r}: choose from {list(QUANTIZE_CHOICES)}")
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "int8":
        if representative is None or not len(representative):
            raise ValueError("int8 quantization needs representative inputs (the run's training images)")
        converter.representative_dataset = lambda: ([np.asarray(x[None], np.float32)] for x in representative)
    return converter


def cpu_model() -> str:
    """The CPU's model name, as env.json and benchmark results record it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def face_resnet_weights(arch):
    """The face ResNet's input layer and weights in the frameworks' layout, converted here
    once for both backends: -> (input_gamma, input_beta, arrays). The input layer's scale
    and shift turn a chip scaled by 1/255 into dlib's (pixel - mean) / 256; ``arrays``
    (None for ``weights: none``) holds convolution kernels as (rows, columns, inputs,
    filters) and the rest as dlib stores them."""
    import numpy as np

    from harness.models import face_resnet

    mean, arrays = np.asarray(face_resnet.INPUT_MEAN, np.float32), None
    if arch.weights == "dlib":
        from harness.models.dlib_weights import read_face_resnet

        loaded = read_face_resnet()
        mean = np.asarray(loaded.input_mean, np.float32)
        arrays = {name: np.ascontiguousarray(a.transpose(2, 3, 1, 0) if name.endswith("/filters") else a)
                  for name, a in loaded.arrays.items()}
    scale = np.float32(face_resnet.INPUT_SCALE)
    return np.full(3, np.float32(255.0) / scale, np.float32), -mean / scale, arrays
