"""Framework-neutral model and training specs: plain, JSON/YAML-serializable data.

A backend's only job is to translate these; nothing here knows a framework. Invalid
values fail validation here, before any process imports TensorFlow.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_serializer, model_validator

Activation = Literal["relu", "tanh", "sigmoid", "elu", "softplus", "linear"]
Initializer = Literal["glorot_uniform", "glorot_normal", "he_normal", "he_uniform",
                      "truncated_normal"]
HeadName = Literal["two_heads", "softmax10", "joint16", "tuple_original", "tuple_sound", "years_softmax",
                   "years_regression"]
LossName = Literal["categorical_crossentropy", "mean_squared_error", "hinge", "squared_hinge"]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
# Validation measures that early stopping and the plateau schedule can watch (history.csv columns).
StopMetric = Literal["val_joint_accuracy", "val_age_mae", "val_loss"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Regularizer(_Spec):
    """Weight penalty or constraint on every kernel (never on biases)."""

    kind: Literal["none", "l2", "l1_l2", "max_norm"] = "none"
    l1: float = Field(0.0, ge=0.0, description="l1_l2: coefficient of sum |w|")
    l2: float = Field(0.001, ge=0.0, description="l2, l1_l2: coefficient of sum w^2")
    max_norm: float = Field(3.0, gt=0.0, description="max_norm: bound on each unit's incoming-weight norm")


class FCN(_Spec):
    """Fully connected trunk: flatten, then one dense layer per width."""

    type: Literal["fcn"] = "fcn"
    widths: list[PositiveInt] = Field(min_length=1)
    activation: Activation = "relu"
    # Fraction of units DROPPED after each layer (Keras' convention). TFLearn's
    # ``dropout(x, 0.8)`` keeps 80 %: the study's "dropout 0.8" is 0.2 here.
    dropout: Rate | list[Rate] = 0.0
    regularizer: Regularizer = Regularizer()
    initializer: Initializer = "glorot_uniform"
    standardize: bool = Field(False, description="inputs minus the training faces' per-feature mean, over their "
                                                 "standard deviation (kept in the model: saved and exported)")

    @model_serializer(mode="wrap")
    def _drop_neutral(self, handler):
        return drop_neutral(handler(self), {"standardize": False})

    @model_validator(mode="after")
    def _dropout_per_layer(self):
        if isinstance(self.dropout, list) and len(self.dropout) != len(self.widths):
            raise ValueError(f"dropout has {len(self.dropout)} values for {len(self.widths)} layers")
        return self

    def dropouts(self) -> list[float]:
        return self.dropout if isinstance(self.dropout, list) else [self.dropout] * len(self.widths)


class LeviHassner(_Spec):
    """Levi & Hassner 2015: three conv blocks (ReLU, max-pool 3/2, LRN), two dense + dropout.

    Defaults are the paper's (227x227 input); shrink ``filters``/``dense`` for CPUs.
    """

    type: Literal["levi_hassner"] = "levi_hassner"
    filters: tuple[PositiveInt, PositiveInt, PositiveInt] = (96, 256, 384)
    kernels: tuple[PositiveInt, PositiveInt, PositiveInt] = (7, 5, 3)
    first_stride: PositiveInt = 4
    dense: list[PositiveInt] = [512, 512]
    dropout: Rate = 0.5
    regularizer: Regularizer = Regularizer()
    initializer: Initializer = "glorot_uniform"


class SmallCNN(_Spec):
    """A small modern CNN: (conv 3x3, batch norm, ReLU, max-pool 2) blocks, global average pool."""

    type: Literal["small_cnn"] = "small_cnn"
    filters: list[PositiveInt] = Field(default=[32, 64, 128], min_length=1)
    dense: list[PositiveInt] = []
    dropout: Rate = 0.0
    regularizer: Regularizer = Regularizer()
    initializer: Initializer = "he_normal"


class FaceResNet(_Spec):
    """dlib's face-recognition ResNet (:mod:`harness.models.face_resnet`) as a trunk on
    150×150 aligned RGB chips; the head reads its 128-D descriptor (``embedding``) or the
    256 pooled features before the projection (``pooled``).

    ``weights: dlib`` loads the weights dlib ships (read by :mod:`harness.models.dlib_weights`),
    so that the trunk computes dlib's own descriptor; ``none`` starts from random weights.
    ``train_from`` says which levels train with the heads, counted as dlib does, from the
    output (``level0`` is the last residual level, ``level3`` the second after the stem):
    ``head`` freezes the whole trunk, ``levelK`` trains levels 0..K and the projection,
    ``all`` everything, the stem too (``trainable: true`` is ``all``). The input must be the
    aligned chip at 150 pixels, RGB, scaled by 1/255
    (``preprocessing: {align: dlib, size: 150, scaling: unit}``).
    """

    type: Literal["face_resnet"] = "face_resnet"
    weights: Literal["dlib", "none"] = "dlib"
    # What the trunk hands the heads; a cut (levelK_input) only for the frozen part the port
    # computes and caches (harness.models.face_resnet.CUTS).
    features: Literal["embedding", "pooled", "level0_input", "level1_input", "level2_input",
                      "level3_input"] = "embedding"
    trainable: bool = False
    train_from: Literal["head", "level0", "level1", "level2", "level3", "all"] = "head"
    # Left out in an experiment: the cut wherever the frozen part can be computed once (see
    # harness.runs.model_inputs); a trial's config always says which (left out: the chip).
    input: Literal["chip", "cut"] | None = Field(
        None, description="chip: the aligned 150x150 face, the frozen part run every epoch; cut: the activations "
                          "below train_from's level, computed once by the frozen part and cached; left out: the "
                          "cut where it can be (weights dlib, train_from level0..level3, no pixel augmentation)")
    regularizer: Regularizer = Regularizer()   # the head's kernels (a frozen trunk has no penalty)
    initializer: Initializer = "he_normal"      # the head's, and the trunk's with weights: none

    @model_serializer(mode="wrap")
    def _drop_neutral(self, handler):
        return drop_neutral(handler(self), {"train_from": "head", "input": None})

    @model_validator(mode="after")
    def _one_way_to_say_it(self):
        if self.trainable and self.train_from not in ("head", "all"):
            raise ValueError(f"trainable: true trains every level; with train_from {self.train_from!r} leave "
                             "trainable out")
        if self.input == "cut" and not self.has_cut:
            if self.weights != "dlib":
                raise ValueError("input: cut reads activations the port computes with dlib's weights; weights: "
                                 "none has no such frozen part (allowed: weights dlib, or input chip)")
            raise ValueError(f"input: cut reads the activations below the first level that trains; train_from "
                             f"{'all' if self.trainable else self.train_from!r} has no such cut (allowed: level0, "
                             "level1, level2, level3)")
        return self

    @property
    def fine_tunes(self) -> bool:
        """Whether any of dlib's pretrained levels (or the projection) train."""
        return self.weights == "dlib" and (self.trainable or self.train_from != "head")

    @property
    def has_cut(self) -> bool:
        """Whether a frozen part below the levels that train can be computed once: dlib's
        weights, and a ``train_from`` between level0 and level3."""
        return self.weights == "dlib" and not self.trainable and self.train_from not in ("head", "all")

    @property
    def reads(self) -> str:
        """``chip``, or the cut this trunk starts from (``levelK_input``)."""
        from harness.models.face_resnet import cut_of

        return cut_of(self.train_from) if self.input == "cut" else "chip"

    def trains(self, name: str) -> bool:
        """Whether the trunk's layer or variable ``name`` (``stem/...``, ``level<i>/...``,
        ``fc/...``) trains (:func:`harness.models.face_resnet.trains`)."""
        from harness.models.face_resnet import trains

        return trains(name, "all" if self.trainable else self.train_from)


Architecture = Annotated[Union[FCN, LeviHassner, SmallCNN, FaceResNet], Field(discriminator="type")]


class ModelSpec(_Spec):
    architecture: Architecture
    head: HeadName = "two_heads"


class Augmentation(_Spec):
    """Random changes to each training image, drawn anew every epoch (pixel inputs only).

    Inputs are floats in [0, 1]; the result is clipped back into that range.
    """

    flip: bool = Field(False, description="mirror left-right with probability 1/2")
    shift: float = Field(0.0, ge=0.0, le=0.25,
                         description="pad-and-crop: move by up to this fraction of the side, each axis")
    brightness: float = Field(0.0, ge=0.0, le=0.5, description="add a uniform offset in [-b, b]")
    contrast: float = Field(0.0, ge=0.0, le=0.9,
                            description="scale deviations from the image mean by a factor in [1-c, 1+c]")

    @property
    def active(self) -> bool:
        return self.flip or any((self.shift, self.brightness, self.contrast))


AgeTarget = Literal["onehot", "soft"]


def drop_neutral(data: dict, neutral: dict) -> dict:
    """Leave options added after results were published out of a dump while they sit at
    their neutral value, so that every earlier trial id (a hash of the dump) stays valid."""
    for key, value in neutral.items():
        if data.get(key, value) == value:
            data.pop(key, None)
    return data


class Schedule(_Spec):
    """The learning rate per epoch (harness.models.schedules computes it, for every backend)."""

    kind: Literal["constant", "cosine", "step", "plateau"] = "constant"
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up from lr/(warmup+1) over these first epochs")
    step_every: PositiveInt = Field(10, description="step: multiply by factor every this many epochs")
    factor: float = Field(0.1, gt=0.0, lt=1.0, description="step, plateau: the multiplier")
    patience: PositiveInt = Field(3, description="plateau: epochs without improvement before a step down")
    metric: StopMetric = Field("val_loss", description="plateau: the validation measure watched")
    floor: float = Field(0.0, ge=0.0, lt=1.0, description="cosine: the last epoch's rate, as a share of lr")


class EarlyStopping(_Spec):
    """Stop when the validation measure has not improved for ``patience`` epochs."""

    metric: StopMetric = "val_joint_accuracy"
    patience: PositiveInt = 5
    restore_best: bool = Field(True, description="keep the best epoch's weights, not the last epoch's")


class TrainingSpec(_Spec):
    optimizer: Literal["sgd", "adam", "rmsprop", "adadelta"] = "adam"
    learning_rate: float = Field(0.001, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    balance: Literal["none", "group"] = Field(
        "none", description="group: the training faces of every group (UTKFace's race) repeated until each "
                            "group counts as many as the largest (harness.models.balance)")
    pretrained_lr_scale: float = Field(
        1.0, gt=0.0, le=10.0, description="the learning rate of a pretrained face network's levels that train, "
                                          "as a multiple of learning_rate (the heads keep learning_rate)")
    loss: LossName | None = Field(None, description="None: the head's own default")
    batch_size: PositiveInt = 64
    epochs: PositiveInt = 10
    seed: int = 0
    augmentation: Augmentation | None = Field(None, description="pixel inputs only; None: none")
    age_target: AgeTarget = Field(
        "onehot", description="soft: spread each face's age target over neighbouring groups "
                              "(years, for years_softmax) from its exact age (needs exact ages)")
    age_sigma: float = Field(3.0, gt=0.0, le=30.0, description="soft targets: Gaussian width in years")
    schedule: Schedule | None = Field(None, description="the learning rate per epoch; None: constant")
    early_stopping: EarlyStopping | None = None

    @model_serializer(mode="wrap")
    def _drop_neutral(self, handler):
        data = drop_neutral(handler(self), {"augmentation": None, "age_target": "onehot", "schedule": None,
                                            "early_stopping": None, "pretrained_lr_scale": 1.0,
                                            "balance": "none"})
        if "age_target" not in data:   # the width means nothing without soft targets
            data.pop("age_sigma", None)
        return data

    @property
    def augments(self) -> bool:
        return self.augmentation is not None and self.augmentation.active

    @property
    def epoch_by_epoch(self) -> bool:
        """Whether training is driven one epoch at a time (a rate that changes, a run that
        may stop early, or fresh augmented images each epoch)."""
        return self.augments or self.schedule is not None or self.early_stopping is not None

    def extras(self) -> str:
        """The options beyond the study's, in a few words for tables ('' when none is used)."""
        words = []
        if self.age_target == "soft":
            words.append(f"soft-age σ={self.age_sigma:g}y")
        if self.augments:
            aug = self.augmentation
            words.append("aug " + ",".join(
                ["flip"] * aug.flip + [f"{name}={getattr(aug, name):g}"
                                       for name in ("shift", "brightness", "contrast") if getattr(aug, name)]))
        if self.schedule is not None and self.schedule.kind != "constant":
            words.append(self.schedule.kind + (f"+warmup {self.schedule.warmup_epochs}"
                                               if self.schedule.warmup_epochs else ""))
        if self.early_stopping is not None:
            words.append(f"early stop {self.early_stopping.metric} p={self.early_stopping.patience}")
        if self.balance != "none":
            words.append(f"balanced by {self.balance}")
        if self.pretrained_lr_scale != 1.0:
            words.append(f"pretrained lr x{self.pretrained_lr_scale:g}")
        return " ".join(words)


# The study's networks, exactly as written there (head added by ModelSpec).
ORIGINAL_STUDY = {
    "fcn_1024": FCN(widths=[1024, 512, 256, 128, 32]),
    "fcn_64": FCN(widths=[64, 32, 32, 16, 16]),
    "fcn_128": FCN(widths=[128, 32, 32, 16, 16]),
    "tuple_fcn": FCN(widths=[32, 32, 16, 16, 10]),
}
