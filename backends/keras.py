"""Keras 3 backend: translates a ModelSpec into a functional Keras model, on any engine.

The same translation serves ``keras`` (TensorFlow) and ``keras-jax`` (JAX): the worker
sets ``KERAS_BACKEND`` before this module is imported (see
:func:`backends.loading.backend_module`), and nothing here imports TensorFlow unless
the engine is TensorFlow: layers and the loss use ``keras.ops``.

Imported only inside a worker process (never next to TFLearn, which switches
TensorFlow into graph mode and breaks Keras 3).
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from backends.common import (  # noqa: E402
    ADADELTA,
    ADAM,
    BATCH_NORM_DECAY,
    BATCH_NORM_EPSILON,
    LRN,
    PREDICT_BATCH,
    RMSPROP,
    STANDARDIZE,
    TRUNCATED_NORMAL_STDDEV,
    configure_converter,
    deterministic_on_cpu,
    device,
    face_resnet_weights,
    kernel_axes,
    thread_counts,
)
from harness.models import (  # noqa: E402
    face_resnet,  # noqa: E402
    heads,
    losses,
)
from harness.models.backends import REGISTRY  # noqa: E402
from harness.models.spec import FCN, FaceResNet, LeviHassner, ModelSpec, Regularizer, SmallCNN, TrainingSpec  # noqa: E402

NAME = "keras"
MODEL_FILE = REGISTRY["keras"].saved_model
ENGINE = keras.backend.backend()     # "tensorflow", "jax" or "torch"
if ENGINE != "tensorflow":
    # Keras imports TensorFlow whenever it is installed, even on another engine (to seed
    # it, to offer tf.data); here it runs as on a machine without TensorFlow, so that a
    # JAX trial computes with JAX alone (tests/e2e/test_backends.py checks sys.modules).
    from keras.src.utils import module_utils

    module_utils.tensorflow._available = False


@keras.saving.register_keras_serializable(package="harness")
class LocalResponseNormalization(layers.Layer):
    """Across-channel LRN as in AlexNet and Levi & Hassner (Keras 3 has none built in)."""

    def __init__(self, depth_radius=2, bias=1.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.params = {"depth_radius": depth_radius, "bias": bias, "alpha": alpha, "beta": beta}

    def call(self, inputs):
        if ENGINE == "tensorflow":   # TensorFlow's own kernel, as the published runs used
            import tensorflow as tf

            return tf.nn.local_response_normalization(inputs, **self.params)
        # The same formula in keras.ops: each channel over its 2r+1 neighbours.
        radius, channels = self.params["depth_radius"], inputs.shape[-1]
        squares = ops.pad(ops.square(inputs), [[0, 0]] * (len(inputs.shape) - 1) + [[radius, radius]])
        window = sum(squares[..., k:k + channels] for k in range(2 * radius + 1))
        return inputs / ops.power(self.params["bias"] + self.params["alpha"] * window, self.params["beta"])

    def get_config(self):
        return {**super().get_config(), **self.params}


@keras.saving.register_keras_serializable(package="harness")
class Standardize(layers.Layer):
    """(x - mean) / std per feature, both fixed (non-trainable): FCN's ``standardize``, set
    from the training faces by :func:`standardize_inputs` and saved with the model."""

    def build(self, input_shape):
        self.mean = self.add_weight(shape=(input_shape[-1],), initializer="zeros", trainable=False, name="mean")
        self.std = self.add_weight(shape=(input_shape[-1],), initializer="ones", trainable=False, name="std")

    def call(self, inputs):
        return (inputs - self.mean) / self.std


def standardize_inputs(model: keras.Model, mean: np.ndarray, std: np.ndarray) -> None:
    model.get_layer(STANDARDIZE).set_weights([mean, std])


@keras.saving.register_keras_serializable(package="harness")
class ZeroPadAdd(layers.Layer):
    """dlib's add_prev: the sum of two tensors in the larger of their shapes, each zero
    where it has no value (more channels on one side, a larger grid on the other)."""

    def compute_output_shape(self, shapes):
        return tuple(None if None in dims else max(dims) for dims in zip(*shapes))

    def call(self, inputs):
        first, second = inputs
        target = [max(a, b) for a, b in zip(first.shape[1:], second.shape[1:])]

        def padded(x):
            pads = [[0, 0]] + [[0, t - n] for t, n in zip(target, x.shape[1:])]
            return ops.pad(x, pads) if any(p[1] for p in pads) else x

        return padded(first) + padded(second)


def _face_resnet(arch: FaceResNet, x):
    """face_resnet.py's network in Keras layers; dlib's weights set as each layer is made."""
    input_gamma, input_beta, weights = face_resnet_weights(arch)

    def made(layer, x, arrays):
        x = layer(x)
        if arrays is not None:
            layer.set_weights(arrays)
        return x

    def affine(x, name, gamma, beta, trainable):
        # A per-channel scale and shift: a 1x1 depthwise convolution (built in, exported as one op).
        layer = layers.DepthwiseConv2D(1, use_bias=True, name=name, trainable=trainable)
        return made(layer, x, None if gamma is None else [gamma.reshape(1, 1, -1, 1), beta])

    def conv_affine(x, conv: face_resnet.Conv):
        found = (lambda key: weights[f"{conv.name}/{key}"]) if weights else (lambda key: None)
        layer = layers.Conv2D(conv.filters, conv.kernel, strides=conv.stride,
                              padding="same" if conv.padding else "valid", name=conv.name.replace("/", "_"),
                              trainable=arch.trains(conv.name), kernel_initializer=_initializer(arch.initializer))
        x = made(layer, x, None if weights is None else [found("filters"), found("bias")])
        name = conv.name.replace("conv", "affine")
        return affine(x, name.replace("/", "_"), weights[f"{name}/gamma"] if weights else None,
                      weights[f"{name}/beta"] if weights else None, arch.trains(name))

    with_stem, chosen, pooled = face_resnet.span(arch.reads, arch.features)
    if with_stem:
        x = affine(x, "face_resnet_input", input_gamma, input_beta, False)   # dlib's fixed normalisation
        x = layers.MaxPooling2D(3, 2, padding="valid")(layers.ReLU()(conv_affine(x, face_resnet.stem())))
    for block in chosen:
        inner = conv_affine(layers.ReLU()(conv_affine(x, block.first)), block.second)
        skip = layers.AveragePooling2D(2, 2, padding="valid")(x) if block.downsample else x
        x = layers.ReLU()(ZeroPadAdd(name=block.name.replace("/", "_") + "_add")([inner, skip]))
    if not pooled:
        return x   # the activations at a cut, for the cache
    x = layers.GlobalAveragePooling2D()(x)
    if arch.features == "pooled":
        return x
    projection = layers.Dense(face_resnet.EMBEDDING_SIZE, use_bias=False, name="face_resnet_fc",
                              trainable=arch.trains("fc"), kernel_initializer=_initializer(arch.initializer))
    return made(projection, x, None if weights is None else [weights["fc/weights"]])


def face_network(arch: FaceResNet) -> keras.Model:
    """The face ResNet alone: 150x150 chips scaled by 1/255 -> descriptors (or pooled features)."""
    inputs = keras.Input(shape=(face_resnet.INPUT_SIZE, face_resnet.INPUT_SIZE, 3))
    return keras.Model(inputs, _face_resnet(arch, inputs))


def with_face_network(model: keras.Model, features: str = "embedding") -> keras.Model:
    """The face ResNet (dlib's weights) in front of a model trained on its descriptors (or
    its pooled ``features``): one network from the 150x150 chip (scaled by 1/255) to the
    model's outputs."""
    inputs = keras.Input(shape=(face_resnet.INPUT_SIZE, face_resnet.INPUT_SIZE, 3))
    return keras.Model(inputs, model(_face_resnet(FaceResNet(features=features), inputs)))


def describe(network: keras.Model, x: np.ndarray) -> np.ndarray:
    return predict(network, x)


def _kernel_options(reg: Regularizer, initializer: str, conv: bool = False) -> dict:
    options = {"kernel_initializer": _initializer(initializer)}
    if reg.kind == "l2":
        options["kernel_regularizer"] = keras.regularizers.L2(reg.l2)
    elif reg.kind == "l1_l2":
        options["kernel_regularizer"] = keras.regularizers.L1L2(l1=reg.l1, l2=reg.l2)
    elif reg.kind == "max_norm":
        options["kernel_constraint"] = keras.constraints.MaxNorm(
            reg.max_norm, axis=kernel_axes(4 if conv else 2))
    return options


def _initializer(name: str):
    if name == "truncated_normal":
        return keras.initializers.TruncatedNormal(stddev=TRUNCATED_NORMAL_STDDEV)
    return name


def _trunk(arch, x):
    if isinstance(arch, FCN):
        x = layers.Flatten()(x)
        if arch.standardize:
            x = Standardize(name=STANDARDIZE)(x)
        for width, rate in zip(arch.widths, arch.dropouts()):
            x = layers.Dense(width, activation=arch.activation,
                             **_kernel_options(arch.regularizer, arch.initializer))(x)
            if rate:
                x = layers.Dropout(rate)(x)
        return x
    conv = _kernel_options(arch.regularizer, arch.initializer, conv=True)
    dense = _kernel_options(arch.regularizer, arch.initializer)
    if isinstance(arch, LeviHassner):
        for i, (filters, kernel) in enumerate(zip(arch.filters, arch.kernels)):
            x = layers.Conv2D(filters, kernel, strides=arch.first_stride if i == 0 else 1,
                              padding="same", activation="relu", **conv)(x)
            x = layers.MaxPooling2D(3, 2, padding="same")(x)
            x = LocalResponseNormalization(**LRN)(x)
        x = layers.Flatten()(x)
        for width in arch.dense:
            x = layers.Dense(width, activation="relu", **dense)(x)
            x = layers.Dropout(arch.dropout)(x)
        return x
    if isinstance(arch, FaceResNet):
        return _face_resnet(arch, x)
    if isinstance(arch, SmallCNN):
        for filters in arch.filters:
            x = layers.Conv2D(filters, 3, padding="same", **conv)(x)
            x = layers.BatchNormalization(momentum=BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON)(x)
            x = layers.Activation("relu")(x)
            x = layers.MaxPooling2D(2, 2, padding="same")(x)
        x = layers.GlobalAveragePooling2D()(x)
        for width in arch.dense:
            x = layers.Dense(width, activation="relu", **dense)(x)
            if arch.dropout:
                x = layers.Dropout(arch.dropout)(x)
        return x
    raise ValueError(f"keras backend: unknown architecture {type(arch).__name__}")


def build(spec: ModelSpec, training: TrainingSpec, input_shape: tuple[int, ...]) -> keras.Model:
    keras.utils.set_random_seed(training.seed)
    inputs = keras.Input(shape=input_shape)
    x = _trunk(spec.architecture, inputs)
    arch = spec.architecture
    outs = [layers.Dense(p.units, activation=p.activation, name=f"head_{i}",
                         **_kernel_options(arch.regularizer, arch.initializer))(x)
            for i, p in enumerate(heads.parts(spec.head))]
    outputs = outs[0] if len(outs) == 1 else layers.Concatenate(name="head")(outs)
    model = keras.Model(inputs, outputs)

    def loss(y_true, y_pred):
        return losses.per_sample(ops, spec.head, training.loss, y_true, y_pred)

    # CategoricalAccuracy is argmax equality, the same thing TFLearn's default metric
    # computes; both are logged as "framework accuracy" and never used as a result.
    # The trunk's variables that train (a fine-tuned face network's levels) at their own rate.
    pretrained = [v for layer in model.layers if not layer.name.startswith("head") for v in layer.trainable_weights]
    model.compile(optimizer=_optimizer(training, pretrained if isinstance(arch, FaceResNet) else ()), loss=loss,
                  metrics=[keras.metrics.CategoricalAccuracy()])
    return model


def count_params(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _optimizer(training: TrainingSpec, pretrained=()):
    lr = training.learning_rate
    kind, options = {
        "sgd": (keras.optimizers.SGD, dict(momentum=training.momentum)),
        "adam": (keras.optimizers.Adam, dict(beta_1=ADAM["beta1"], beta_2=ADAM["beta2"], epsilon=ADAM["epsilon"])),
        "rmsprop": (keras.optimizers.RMSprop, RMSPROP),
        "adadelta": (keras.optimizers.Adadelta, ADADELTA),
    }[training.optimizer]
    if training.pretrained_lr_scale == 1.0 or not pretrained:
        return kind(lr, **options)
    return _scaled_for_pretrained(kind)(lr, pretrained=pretrained, scale=training.pretrained_lr_scale, **options)


def _scaled_for_pretrained(kind):
    """``kind`` with the pretrained variables' steps taken at ``scale`` times the rate.

    Keras has one rate per optimizer; every optimizer's ``update_step`` receives the rate
    per variable, so the multiplier goes there. (Scaling the gradients would do nothing
    for Adam, whose steps do not depend on the gradients' scale.) Saved models are loaded
    without their optimizer, so the class needs no registration."""

    class PretrainedScaled(kind):
        def __init__(self, learning_rate, pretrained, scale, **options):
            super().__init__(learning_rate, **options)
            self._pretrained_keys = {self._var_key(v) for v in pretrained}
            self._pretrained_scale = scale

        def update_step(self, gradient, variable, learning_rate):
            if self._var_key(variable) in self._pretrained_keys:
                learning_rate = learning_rate * self._pretrained_scale
            return super().update_step(gradient, variable, learning_rate)

    PretrainedScaled.__name__ = f"PretrainedScaled{kind.__name__}"
    return PretrainedScaled


class _EpochReport(keras.callbacks.Callback):
    def __init__(self, on_epoch):
        super().__init__()
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.on_epoch(epoch, logs.get("loss"), logs.get("categorical_accuracy"),
                         logs.get("val_loss"), logs.get("val_categorical_accuracy")) is False:
            self.model.stop_training = True


def train(model: keras.Model, training: TrainingSpec, x_train, y_train, x_val, y_val,
          on_epoch, tensorboard_dir: Path, epoch_inputs=None, before_epoch=None) -> None:
    """``epoch_inputs(epoch)``, when given, supplies each epoch's (augmented) images;
    ``before_epoch(epoch)`` sets the epoch up and returns False to stop; ``on_epoch``
    returning False stops after that epoch. Driven epoch by epoch (one ``fit`` an epoch)
    only when the training asks for it."""
    callbacks = [_EpochReport(on_epoch)]
    if ENGINE == "tensorflow":   # Keras' TensorBoard callback writes through tf.summary
        callbacks.append(keras.callbacks.TensorBoard(str(tensorboard_dir)))
    options = dict(batch_size=training.batch_size, validation_data=(x_val, y_val) if len(x_val) else None,
                   shuffle=True, verbose=2, callbacks=callbacks)
    if not training.epoch_by_epoch:
        model.fit(x_train, y_train, epochs=training.epochs, **options)
        return
    for epoch in range(training.epochs):
        if before_epoch is not None and before_epoch(epoch) is False:
            return
        model.fit(epoch_inputs(epoch) if epoch_inputs else x_train, y_train, initial_epoch=epoch, epochs=epoch + 1,
                  **options)


def set_learning_rate(model: keras.Model, rate: float) -> None:
    model.optimizer.learning_rate.assign(rate)


def get_weights(model: keras.Model) -> list:
    return model.get_weights()


def set_weights(model: keras.Model, values: list) -> None:
    model.set_weights(values)


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    # predict_on_batch: the compiled inference function without Model.predict's data
    # pipeline (~0.1 s a call). Calling the model eagerly costs as much again on a deep
    # network: 102 ms against 11 ms for one face through the face ResNet.
    chunks = [np.asarray(model.predict_on_batch(x[i:i + PREDICT_BATCH]))
              for i in range(0, len(x), PREDICT_BATCH)]
    return np.concatenate(chunks) if chunks else np.zeros((0,) + tuple(model.output_shape[1:]), np.float32)


def save(model: keras.Model, directory: Path) -> None:
    model.save(directory / MODEL_FILE)


def load(directory: Path, spec: ModelSpec, training: TrainingSpec, input_shape) -> keras.Model:
    return keras.saving.load_model(directory / MODEL_FILE, compile=False, safe_mode=True)


def release(model: keras.Model) -> None:
    """Drop a finished trial's model from Keras' global state, so that a reused worker
    does not hold it until the next trial's :func:`configure`."""
    keras.backend.clear_session(free_memory=False)


def to_tflite(model: keras.Model, quantize: str = "none", representative=None) -> bytes:
    """The model as a TFLite flatbuffer, through a SavedModel (Keras 3's own export).

    Needs the TensorFlow engine; a model trained on another engine is loaded on this
    one for export (the ``.keras`` file is engine-independent)."""
    import tempfile

    import tensorflow as tf

    if ENGINE != "tensorflow":
        raise ValueError(f"TFLite export needs Keras on TensorFlow; this process runs Keras on {ENGINE}")
    with tempfile.TemporaryDirectory() as saved:
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        return configure_converter(converter, quantize, representative).convert()


def environment() -> dict:
    from importlib.metadata import version

    engine_package = {"tensorflow": "tensorflow-cpu", "jax": "jax", "torch": "torch"}[ENGINE]
    try:
        engine_version = version(engine_package)
    except Exception:   # tensorflow instead of tensorflow-cpu, a GPU build, ...
        engine_version = __import__(ENGINE).__version__
    return {"framework": "keras" if ENGINE == "tensorflow" else f"keras-{ENGINE}", "keras": keras.__version__,
            "engine": ENGINE, ENGINE: engine_version, "device": engine_device()}


def engine_device() -> str:
    """The device the engine computes on: its GPUs when it sees any, else the CPU."""
    if ENGINE == "tensorflow":
        return device()
    if ENGINE == "jax":
        import jax

        accelerators = [d for d in jax.devices() if d.platform != "cpu"]
        return ", ".join(f"{d.platform}:{d.id} {d.device_kind}" for d in accelerators) or "CPU"
    import torch

    return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"


def configure(seed: int) -> None:
    """Start a trial from a blank Keras state: in a reused worker process the previous
    trial's models, layer names and global seed generator go, so the trial computes
    what it would in a fresh process."""
    # Without its gc.collect(): that took 0.5 s a trial; Python's own collector frees the
    # previous trial's cycles.
    keras.backend.clear_session(free_memory=False)
    if ENGINE == "tensorflow":
        import tensorflow as tf

        intra, inter = thread_counts()
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    keras.utils.set_random_seed(seed)
    if ENGINE == "tensorflow":
        deterministic_on_cpu()
