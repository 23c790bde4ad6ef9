"""TFLearn backend: translates a ModelSpec into a TFLearn graph.

TFLearn switches TensorFlow into graph mode on import, so this module is only ever
imported inside a worker process of its own, never beside the Keras backend.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from backends.tflearn_compat import import_tflearn  # noqa: E402

tflearn = import_tflearn()
import tensorflow as tf  # noqa: E402
import tensorflow.experimental.numpy as tnp  # noqa: E402

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

NAME = "tflearn"
FACE_RESNET_SCOPE = "face_resnet"   # every variable of the face network, pretrained or not
MODEL_FILE = REGISTRY["tflearn"].saved_model
v1 = tf.compat.v1
# TFLearn's import turns off resource variables. With TF1 reference variables a
# backward op can read a weight after the same step's optimizer update has written it,
# so one seed gave different runs; resource variables read a consistent snapshot.
v1.enable_resource_variables()


class Model:
    """A TFLearn network with the graph it lives in, its input and output tensors and its
    max-norm clipping ops."""

    def __init__(self, graph, dnn, clip_ops, n_params, inputs, outputs, learning_rate=None):
        self.graph, self.dnn, self.clip_ops, self.n_params = graph, dnn, clip_ops, n_params
        self.inputs, self.outputs = inputs, outputs
        self.learning_rate = learning_rate   # a variable with a schedule; None: a constant in the graph


def _initializer(name: str):
    return {
        "glorot_uniform": lambda: v1.glorot_uniform_initializer(),
        "glorot_normal": lambda: v1.glorot_normal_initializer(),
        "he_normal": lambda: v1.variance_scaling_initializer(2.0, "fan_in", "truncated_normal"),
        "he_uniform": lambda: v1.variance_scaling_initializer(2.0, "fan_in", "uniform"),
        "truncated_normal": lambda: v1.truncated_normal_initializer(stddev=TRUNCATED_NORMAL_STDDEV),
    }[name]()


class _Kernels:
    """Applies the spec's regularizer to each kernel the trunk and head create.

    TFLearn's own ``regularizer=`` has no L1+L2 and halves L2 (``tf.nn.l2_loss``), so
    the penalties are added here with Keras' exact formulas. TFLearn has no max-norm
    constraint: it is built from a clip-by-norm op run after every training step.
    """

    def __init__(self, reg: Regularizer):
        self.reg, self.clip_ops = reg, []

    def __call__(self, layer):
        kernel, reg = layer.W, self.reg
        if reg.kind in ("l2", "l1_l2"):
            penalty = reg.l2 * tf.reduce_sum(tf.square(kernel))
            if reg.kind == "l1_l2":
                penalty += reg.l1 * tf.reduce_sum(tf.abs(kernel))
            v1.add_to_collection(v1.GraphKeys.REGULARIZATION_LOSSES, penalty)
        elif reg.kind == "max_norm":
            axes = kernel_axes(len(kernel.shape))
            self.clip_ops.append(v1.assign(kernel, tf.clip_by_norm(kernel, reg.max_norm, axes=axes)))
        return layer


def _dense(x, units, activation, arch, kernels):
    return kernels(tflearn.fully_connected(x, units, activation=activation,
                                           weights_init=_initializer(arch.initializer)))


def _trunk(arch, x, kernels):
    if isinstance(arch, FCN):
        if arch.standardize:   # zeros and ones until standardize_inputs sets them; restored by load
            features = int(np.prod(x.shape[1:]))
            x = tf.reshape(x, (-1, features))
            with v1.variable_scope(STANDARDIZE):
                mean = v1.get_variable("mean", (features,), initializer=v1.zeros_initializer(), trainable=False)
                std = v1.get_variable("std", (features,), initializer=v1.ones_initializer(), trainable=False)
            x = (x - mean) / std
        for width, rate in zip(arch.widths, arch.dropouts()):
            x = _dense(x, width, arch.activation, arch, kernels)
            if rate:
                x = tflearn.dropout(x, 1.0 - rate)   # TFLearn takes the KEEP probability
        return x
    if isinstance(arch, LeviHassner):
        for i, (filters, kernel) in enumerate(zip(arch.filters, arch.kernels)):
            x = kernels(tflearn.conv_2d(x, filters, kernel, strides=arch.first_stride if i == 0 else 1,
                                        padding="same", activation="relu",
                                        weights_init=_initializer(arch.initializer)))
            x = tflearn.max_pool_2d(x, 3, strides=2, padding="same")
            x = tflearn.local_response_normalization(x, **LRN)
        for width in arch.dense:
            x = tflearn.dropout(_dense(x, width, "relu", arch, kernels), 1.0 - arch.dropout)
        return x
    if isinstance(arch, FaceResNet):
        return _face_resnet(arch, x)
    if isinstance(arch, SmallCNN):
        for filters in arch.filters:
            x = kernels(tflearn.conv_2d(x, filters, 3, padding="same", activation="linear",
                                        weights_init=_initializer(arch.initializer)))
            x = tflearn.batch_normalization(x, epsilon=BATCH_NORM_EPSILON, decay=BATCH_NORM_DECAY)
            x = tflearn.activation(x, "relu")
            x = tflearn.max_pool_2d(x, 2, strides=2, padding="same")
        x = tflearn.global_avg_pool(x)
        for width in arch.dense:
            x = _dense(x, width, "relu", arch, kernels)
            if arch.dropout:
                x = tflearn.dropout(x, 1.0 - arch.dropout)
        return x
    raise ValueError(f"tflearn backend: unknown architecture {type(arch).__name__}")


def _face_resnet(arch: FaceResNet, x):
    """face_resnet.py's network in TF ops inside TFLearn's graph (TFLearn has no
    depthwise scale or zero-padded sum): variables named by the network's layers,
    initialised with dlib's weights, trainable as ``arch.train_from`` says."""
    input_gamma, input_beta, weights = face_resnet_weights(arch)
    init = _initializer(arch.initializer)

    def variable(name, shape, fresh):
        # dlib's value, or with weights: none a fresh one (kernels random, scales 1, shifts 0).
        initializer = v1.constant_initializer(weights[name]) if weights is not None else fresh
        return v1.get_variable(f"{FACE_RESNET_SCOPE}/{name}", shape=shape, initializer=initializer,
                               trainable=arch.trains(name))

    def conv_affine(x, conv: face_resnet.Conv):
        kernel = variable(f"{conv.name}/filters", (conv.kernel, conv.kernel, conv.inputs, conv.filters), init)
        x = tf.nn.conv2d(x, kernel, conv.stride, "SAME" if conv.padding else "VALID")
        x = tf.nn.bias_add(x, variable(f"{conv.name}/bias", (conv.filters,), v1.zeros_initializer()))
        affine = conv.name.replace("conv", "affine")
        return (x * variable(f"{affine}/gamma", (conv.filters,), v1.ones_initializer())
                + variable(f"{affine}/beta", (conv.filters,), v1.zeros_initializer()))

    def add_in_larger_shape(a, b):
        target = [max(p, q) for p, q in zip(a.shape[1:], b.shape[1:])]
        pad = lambda t: tf.pad(t, [[0, 0]] + [[0, n - m] for n, m in zip(target, t.shape[1:])])  # noqa: E731
        return pad(a) + pad(b)

    with_stem, chosen, pooled = face_resnet.span(arch.reads, arch.features)
    if with_stem:
        x = x * tf.constant(input_gamma) + tf.constant(input_beta)   # dlib's fixed normalisation
        x = tf.nn.max_pool2d(tf.nn.relu(conv_affine(x, face_resnet.stem())), 3, 2, "VALID")
    for block in chosen:
        inner = conv_affine(tf.nn.relu(conv_affine(x, block.first)), block.second)
        skip = tf.nn.avg_pool2d(x, 2, 2, "VALID") if block.downsample else x
        x = tf.nn.relu(add_in_larger_shape(inner, skip))
    if not pooled:
        return x   # the activations at a cut, for the cache
    x = tf.reduce_mean(x, axis=[1, 2])
    if arch.features == "pooled":
        return x
    return tf.matmul(x, variable("fc/weights", (face_resnet.POOLED_SIZE, face_resnet.EMBEDDING_SIZE), init))


class FaceNetwork:
    """The face ResNet alone in a graph and session of its own (see :func:`face_network`);
    ``then(features)``, when given, builds what follows it in the same graph."""

    def __init__(self, arch: FaceResNet, then=None):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.inputs = v1.placeholder(tf.float32, (None, face_resnet.INPUT_SIZE, face_resnet.INPUT_SIZE, 3),
                                         name="chip")
            self.outputs = _face_resnet(arch, self.inputs)
            if then is not None:
                self.outputs = then(self.outputs)
            self.session = v1.Session(config=_session_config())
            self.session.run(v1.global_variables_initializer())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        chunks = [self.session.run(self.outputs, {self.inputs: x[i:i + PREDICT_BATCH]})
                  for i in range(0, len(x), PREDICT_BATCH)]
        return np.concatenate(chunks) if chunks else np.zeros((0, int(self.outputs.shape[-1])), np.float32)


def face_network(arch: FaceResNet) -> FaceNetwork:
    """The face ResNet alone: 150x150 chips scaled by 1/255 -> descriptors (or pooled features)."""
    return FaceNetwork(arch)


class WholeDoor(FaceNetwork):
    """The face ResNet (dlib's weights) in front of a trained model's inference graph: one
    network from the 150x150 chip (scaled by 1/255) to the model's outputs. The trained
    graph goes in reduced to its inference path with its weights as constants
    (:mod:`backends.tflearn_inference`), its input replaced by the face network's output."""

    def __init__(self, model: Model, features: str = "embedding"):
        from backends.tflearn_inference import inference_graph_def

        trained = inference_graph_def(model.dnn.session, model.inputs.name, model.outputs.name)

        def trained_on(face_features):
            (outputs,) = tf.import_graph_def(trained, input_map={model.inputs.name: face_features},
                                             return_elements=[model.outputs.name], name="trained")
            return outputs

        super().__init__(FaceResNet(features=features), trained_on)


def with_face_network(model: Model, features: str = "embedding") -> WholeDoor:
    """The face ResNet in front of a model trained on its descriptors (or pooled features)."""
    return WholeDoor(model, features)


def describe(network: FaceNetwork, x: np.ndarray) -> np.ndarray:
    return network(x)


def _optimizer(training: TrainingSpec, lr=None, name=None):
    lr = training.learning_rate if lr is None else lr
    named = {"name": name} if name else {}
    return {
        "sgd": lambda: tflearn.optimizers.Momentum(lr, momentum=training.momentum, **named),
        "adam": lambda: tflearn.optimizers.Adam(lr, **ADAM, **named),
        "rmsprop": lambda: tflearn.optimizers.RMSProp(lr, decay=RMSPROP["rho"],
                                                      epsilon=RMSPROP["epsilon"], **named),
        "adadelta": lambda: tflearn.optimizers.AdaDelta(lr, **ADADELTA, **named),
    }[training.optimizer]()


class _ScaledForPretrained(v1.train.Optimizer):
    """The optimizer twice, each with its own slots: the pretrained face network's
    variables (``face_resnet/...``) at ``pretrained_lr_scale`` times the rate, the rest at
    the rate. TensorFlow 1 optimizers have one rate each, and scaling the gradients would
    do nothing for Adam, whose steps do not depend on the gradients' scale."""

    def __init__(self, training: TrainingSpec, rate):
        rate = training.learning_rate if rate is None else rate
        self._rest, self._pretrained = (_built(_optimizer(training, r, name))
                                        for r, name in ((rate, None), (rate * training.pretrained_lr_scale,
                                                                       f"{training.optimizer}_pretrained")))
        super().__init__(use_locking=False, name=self._rest.get_name())

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
        trunk = [(g, v) for g, v in pairs if v.op.name.startswith(FACE_RESNET_SCOPE + "/")]
        rest = [(g, v) for g, v in pairs if not v.op.name.startswith(FACE_RESNET_SCOPE + "/")]
        steps = [self._rest.apply_gradients(rest, global_step=global_step)] if rest else []
        if trunk:
            steps.append(self._pretrained.apply_gradients(trunk))
        return tf.group(*steps, name=name)


def _built(optimizer):
    optimizer.build()
    return optimizer.get_tensor()


def _session_config():
    intra, inter = thread_counts()
    return v1.ConfigProto(allow_soft_placement=True, gpu_options=v1.GPUOptions(allow_growth=True),
                          intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter)


def build(spec: ModelSpec, training: TrainingSpec, input_shape: tuple[int, ...]) -> Model:
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(training.seed)
        v1.add_to_collection(v1.GraphKeys.GRAPH_CONFIG, _session_config())
        np.random.seed(training.seed)   # TFLearn shuffles batches with NumPy's global RNG
        arch = spec.architecture
        kernels = _Kernels(arch.regularizer)
        inputs = x = tflearn.input_data(shape=[None, *input_shape])
        x = _trunk(arch, x, kernels)
        outs = [_dense(x, p.units, p.activation, arch, kernels) for p in heads.parts(spec.head)]
        out = outs[0] if len(outs) == 1 else tf.concat(outs, axis=1)
        n_params = int(sum(np.prod(v.shape) for v in v1.trainable_variables()))

        def loss(y_pred, y_true):   # TFLearn's argument order
            return tf.reduce_mean(losses.per_sample(tnp, spec.head, training.loss, y_true, y_pred))

        # With a schedule the rate is a variable set before each epoch; without, the
        # constant it always was (so that earlier checkpoints hold the same variables).
        rate = (v1.Variable(training.learning_rate, trainable=False, name="learning_rate", dtype=tf.float32)
                if training.schedule is not None else None)
        optimizer = (_ScaledForPretrained(training, rate) if training.pretrained_lr_scale != 1.0
                     and isinstance(arch, FaceResNet) else _optimizer(training, rate))
        net = tflearn.regression(out, optimizer=optimizer, loss=loss,
                                 batch_size=training.batch_size)
        # clip_gradients=0: TFLearn clips to 5 by default, Keras does not clip at all.
        dnn = tflearn.DNN(net, clip_gradients=0.0, tensorboard_verbose=0)
    return Model(graph, dnn, kernels.clip_ops, n_params, inputs, out, rate)


def standardize_inputs(model: Model, mean: np.ndarray, std: np.ndarray) -> None:
    """FCN's ``standardize``: the training faces' statistics into the model's variables."""
    with model.graph.as_default():
        for name, value in (("mean", mean), ("std", std)):
            (variable,) = [v for v in v1.global_variables() if v.op.name == f"{STANDARDIZE}/{name}"]
            model.dnn.set_weights(variable, value)


def count_params(model: Model) -> int:
    return model.n_params


class _EpochReport(tflearn.callbacks.Callback):
    def __init__(self, model: Model, on_epoch):
        self.model, self.on_epoch = model, on_epoch

    def on_batch_end(self, training_state, snapshot=False):
        if self.model.clip_ops:
            self.model.dnn.session.run(self.model.clip_ops)

    def on_epoch_end(self, training_state):
        if self.on_epoch(training_state.epoch - 1, training_state.global_loss,
                         # global_acc is never set (a TFLearn bug: it starts at 0.0 and
                         # only accumulates while truthy); acc_value is its running mean.
                         training_state.acc_value, training_state.val_loss, training_state.val_acc) is False:
            raise _StopTraining   # TFLearn's fit has no stop flag; its finally block still cleans up


class _StopTraining(Exception):
    """``on_epoch`` asked to stop after this epoch."""


def train(model: Model, training: TrainingSpec, x_train, y_train, x_val, y_val,
          on_epoch, tensorboard_dir: Path, epoch_inputs=None, before_epoch=None) -> None:
    """``epoch_inputs(epoch)``, when given, supplies each epoch's (augmented) images;
    ``before_epoch(epoch)`` sets the epoch up and returns False to stop; ``on_epoch``
    returning False stops after that epoch. Driven epoch by epoch when the training asks for it: TFLearn's training state (epoch count, optimizer
    slots) carries over between its ``fit`` calls."""
    model.dnn.trainer.tensorboard_dir = str(tensorboard_dir) + os.sep
    options = dict(validation_set=(x_val, y_val) if len(x_val) else None, show_metric=True,
                   batch_size=training.batch_size, shuffle=True, run_id="tflearn",
                   callbacks=[_EpochReport(model, on_epoch)])
    with model.graph.as_default(), contextlib.suppress(_StopTraining):
        if not training.epoch_by_epoch:
            model.dnn.fit(x_train, y_train, n_epoch=training.epochs, **options)
            return
        for epoch in range(training.epochs):
            if before_epoch is not None and before_epoch(epoch) is False:
                return
            model.dnn.fit(epoch_inputs(epoch) if epoch_inputs else x_train, y_train, n_epoch=1, **options)


def set_learning_rate(model: Model, rate: float) -> None:
    model.learning_rate.load(rate, model.dnn.session)


def get_weights(model: Model) -> list:
    """Every variable's value (the network's, batch norm's averages, the optimizer's slots)."""
    return model.dnn.session.run(model.graph.get_collection("variables"))


def set_weights(model: Model, values: list) -> None:
    for variable, value in zip(model.graph.get_collection("variables"), values, strict=True):
        variable.load(value, model.dnn.session)


def predict(model: Model, x: np.ndarray) -> np.ndarray:
    with model.graph.as_default():
        chunks = [np.asarray(model.dnn.predict(x[i:i + PREDICT_BATCH]))
                  for i in range(0, len(x), PREDICT_BATCH)]
    return np.concatenate(chunks) if chunks else np.zeros((0,))


def save(model: Model, directory: Path) -> None:
    with model.graph.as_default():
        model.dnn.save(str(directory / MODEL_FILE))


def load(directory: Path, spec: ModelSpec, training: TrainingSpec, input_shape) -> Model:
    model = build(spec, training, input_shape)
    with model.graph.as_default():
        model.dnn.load(str(directory / MODEL_FILE))
    return model


def release(model: Model) -> None:
    """Close a finished trial's session so that a reused worker does not hold its graph."""
    model.dnn.session.close()


def to_tflite(model: Model, quantize: str = "none", representative=None) -> bytes:
    """The network as a TFLite flatbuffer: its inference path with the weights as
    constants (see :mod:`backends.tflearn_inference`), converted from a fresh session."""
    from backends.tflearn_inference import inference_graph_def

    if isinstance(model, WholeDoor):   # its variables are the face network's, frozen by the converter
        converter = v1.lite.TFLiteConverter.from_session(model.session, [model.inputs], [model.outputs])
        return configure_converter(converter, quantize, representative).convert()
    graph_def = inference_graph_def(model.dnn.session, model.inputs.name, model.outputs.name)
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
        with v1.Session(graph=graph) as session:
            converter = v1.lite.TFLiteConverter.from_session(
                session, [graph.get_tensor_by_name(model.inputs.name)],
                [graph.get_tensor_by_name(model.outputs.name)])
            return configure_converter(converter, quantize, representative).convert()


def environment() -> dict:
    from importlib.metadata import version

    return {"framework": "tflearn", "tflearn": version("tflearn"), "tensorflow": tf.__version__,
            "device": device()}


def configure(seed: int) -> None:
    """Every trial builds its own graph and session (see :func:`build`); the process-wide
    state left here is the default graph and the seeds, reset for each trial."""
    import random

    v1.reset_default_graph()
    random.seed(seed)
    np.random.seed(seed)
    deterministic_on_cpu()
