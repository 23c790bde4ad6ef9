"""dlib's DNN serialization, read without dlib: the face ResNet's weights as NumPy arrays.

The format (dlib's ``serialize.h`` and ``dnn/core.h``, ``layers.h``, ``input.h``):
- an integer is one control byte (its low nibble the number of bytes that follow, 0x80
  for a negative number) then those bytes, little-endian; a float is two integers, a
  mantissa and an exponent of 2; a bool the character ``'0'`` or ``'1'``; a string its
  length as an integer then its bytes;
- a tensor is a version (2), its four dimensions, then its values as raw little-endian
  float32; an alias tensor (a view into a layer's parameters) a version and four
  dimensions only;
- a network is serialized from its loss layer down, each wrapper (layer, tag, skip) its
  version then what it wraps, and each layer's own record (its name, such as ``con_4``,
  and its fields) *after* what it wraps: so the records come from the input up.

The reader walks the network of :mod:`harness.models.face_resnet` and checks every
record against it (layer kind, filters, kernel, stride, shapes), so a file of another
network (a landmark model, a detector) is refused by what it holds, and a truncated or
damaged one is refused at the byte where it stops making sense, never read as garbage
weights. Weights come back in dlib's layout (:func:`face_resnet.parameter_shapes`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.models import face_resnet as net

__all__ = ["DlibWeights", "DatError", "read_face_resnet", "default_weights_path"]

WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class DatError(ValueError):
    """The file is not dlib's face ResNet, or is damaged; says where and why."""


@dataclass
class DlibWeights:
    arrays: dict[str, np.ndarray]                # face_resnet.parameter_shapes() names, float32
    input_mean: tuple[float, float, float]       # R, G, B, from the file's input layer
    input_size: int
    layers: list[str] = field(default_factory=list)   # each record's name, from the input up


WEIGHTS_ENV = "HARNESS_FACE_RESNET_WEIGHTS"   # another copy of the .dat (a phone build's, a mirror's)


def default_weights_path() -> Path:
    """The ResNet's weights: ``$HARNESS_FACE_RESNET_WEIGHTS`` when set, else the file
    ``face-recognition-models`` installs."""
    import os

    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV])
    try:
        import face_recognition_models
    except ImportError as err:
        raise DatError(f"the face ResNet's weights ship in face-recognition-models, which is not installed "
                       f"({err}); pip install -e .") from None
    return Path(face_recognition_models.__file__).parent / "models" / WEIGHTS_FILE


# --- the network as dlib nests it ---------------------------------------------------------

INPUT = ("input",)


def _layer(kind: str, sub, **expected):
    return ("layer", kind, expected, sub)


def _tag(sub):
    return ("tag", sub)


def _skip(sub):
    return ("skip", sub)


def _conv_affine(conv: net.Conv, sub):
    x = _layer("con", sub, conv=conv)
    return _layer("affine", x, label=conv.name.replace("conv", "affine"), filters=conv.filters)


def network():
    """dlib's anet_type (dnn_face_recognition_ex.cpp), from its loss layer down."""
    x = _layer("max_pool", _layer("relu", _conv_affine(net.stem(), INPUT)), size=3, stride=2)
    for block in net.blocks():
        inner = _conv_affine(block.second, _layer("relu", _conv_affine(block.first, _tag(x))))
        if block.downsample:   # add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<tag1<x>>>>>>
            x = _layer("add_prev", _layer("avg_pool", _skip(_tag(inner)), size=2, stride=2))
        else:                  # add_prev1<block<tag1<x>>>
            x = _layer("add_prev", inner)
        x = _layer("relu", x)
    x = _layer("fc", _layer("avg_pool", x, size=0, stride=1), inputs=net.POOLED_SIZE, outputs=net.EMBEDDING_SIZE)
    return ("loss", x)


# --- the reader -------------------------------------------------------------------------------

class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.at = data, path, 0
        self.arrays: dict[str, np.ndarray] = {}
        self.layers: list[str] = []
        self.input_mean: tuple[float, float, float] | None = None
        self.input_size = 0

    def fail(self, what: str, at: int | None = None):
        raise DatError(f"{self.path}: at byte {self.at if at is None else at:,}: {what}")

    def take(self, count: int) -> bytes:
        if count < 0 or self.at + count > len(self.data):
            self.fail(f"the file ends after {len(self.data):,} bytes where {count:,} more were expected "
                      "(truncated?)")
        chunk = self.data[self.at:self.at + count]
        self.at += count
        return chunk

    def integer(self) -> int:
        start = self.at
        control = self.take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            self.fail(f"byte 0x{control:02x} does not start an integer", start)
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        if exponent >= 32000:   # dlib's markers for inf, -inf and nan
            self.fail(f"a non-finite number (exponent marker {exponent})")
        return float(np.ldexp(float(mantissa), exponent))

    def boolean(self) -> bool:
        start = self.at
        char = self.take(1)
        if char not in (b"0", b"1"):
            self.fail(f"{char!r} is not a bool ('0' or '1')", start)
        return char == b"1"

    def string(self, longest: int = 256) -> str:
        start = self.at
        size = self.integer()
        if not 0 <= size <= longest:
            self.fail(f"a string of {size:,} bytes, more than any layer name", start)
        try:
            return self.take(size).decode("ascii")
        except UnicodeDecodeError:
            self.fail("a layer name that is not text", start)

    def version(self, allowed: tuple[int, ...], what: str) -> int:
        start = self.at
        value = self.integer()
        if value not in allowed:
            self.fail(f"{what}: version {value}, expected {' or '.join(map(str, allowed))}", start)
        return value

    def dims(self) -> tuple[int, int, int, int]:
        dims = tuple(self.integer() for _ in range(4))
        if any(d < 0 for d in dims):
            self.fail(f"negative tensor dimensions {dims}")
        return dims

    def tensor(self) -> np.ndarray:
        self.version((2,), "tensor")
        dims = self.dims()
        count = int(np.prod(dims, dtype=np.int64))
        values = np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32)
        if not np.isfinite(values).all():
            self.fail(f"a tensor of shape {dims} holds values that are not finite", self.at - 4 * count)
        return values.reshape(dims)

    def alias(self) -> tuple[int, int, int, int]:
        self.version((1,), "alias tensor")
        return self.dims()

    # -- wrappers -------------------------------------------------------------------------------

    def node(self, node) -> None:
        kind = node[0]
        if kind == "loss":
            start = self.at
            try:
                self.version((1,), "loss layer")
                name = self.string()
            except DatError:
                self.fail("not dlib's face-recognition ResNet: the file does not begin with a network's loss "
                          "layer (a landmark model, for one, is another kind of file)", start)
            if name != "loss_metric_2" and name != "loss_metric_":
                self.fail(f"the loss layer is {name!r}: not dlib's face-recognition ResNet (whose loss is "
                          "loss_metric); a landmark model or a detector is another network", start)
            self.real(), self.real()          # margin, distance threshold: training only
            self.node(node[1])
        elif kind in ("tag", "skip"):
            self.version((1,), f"{kind} layer")
            self.node(node[1])
        else:
            _, layer_kind, expected, sub = node
            version = self.version((1, 2, 3), f"{layer_kind} layer")
            self.input() if sub is INPUT else self.node(sub)
            self.details(layer_kind, expected)
            self.boolean(), self.boolean(), self.boolean()   # set up, gradient stale, output disabled
            self.tensor(), self.tensor()                     # x_grad, cached_output (empty when saved)
            if sub is INPUT:
                self.tensor()                                # grad_final
                if version >= 3:
                    self.integer()                           # sample expansion factor
            elif version == 2:
                self.tensor()                                # params_grad

    def input(self) -> None:
        start = self.at
        name = self.string()
        if name != "input_rgb_image_sized":
            self.fail(f"the input layer is {name!r}, expected input_rgb_image_sized", start)
        self.input_mean = (self.real(), self.real(), self.real())
        rows, columns = self.integer(), self.integer()
        if (rows, columns) != (net.INPUT_SIZE, net.INPUT_SIZE):
            self.fail(f"the input is {rows}x{columns}, expected {net.INPUT_SIZE}x{net.INPUT_SIZE}")
        self.input_size = rows
        self.layers.append(name)

    # -- layer records ----------------------------------------------------------------------------

    def details(self, kind: str, expected: dict) -> None:
        start = self.at
        name = self.string()
        self.layers.append(name)
        known = {"con": ("con_4", "con_5", "con_6"), "affine": ("affine_", "affine_2", "bn_con2"),
                 "relu": ("relu_", "relu_2"), "max_pool": ("max_pool_2",), "avg_pool": ("avg_pool_2",),
                 "add_prev": ("add_prev_",), "fc": ("fc_2", "fc_3")}[kind]
        if name not in known:
            self.fail(f"layer {len(self.layers)}: {name!r} where the face ResNet has {kind} "
                      f"({' / '.join(known)}): not this network", start)
        getattr(self, f"_{kind}")(name, start, **expected)

    def _con(self, name: str, start: int, conv: net.Conv) -> None:
        params = self.tensor().ravel()
        filters, rows, columns = self.integer(), self.integer(), self.integer()
        stride_y, stride_x, pad_y, pad_x = (self.integer() for _ in range(4))
        found = (filters, rows, columns, stride_y, stride_x, pad_y, pad_x)
        wanted = (conv.filters, conv.kernel, conv.kernel, conv.stride, conv.stride, conv.padding, conv.padding)
        if found != wanted:
            self.fail(f"{conv.name}: con {filters} {rows}x{columns} stride {stride_y} padding {pad_y}, expected "
                      f"con {conv.filters} {conv.kernel}x{conv.kernel} stride {conv.stride} padding "
                      f"{conv.padding}: not this network", start)
        self.alias(), self.alias()    # filters and biases: views into params
        for _ in range(4):
            self.real()               # learning-rate and weight-decay multipliers
        use_bias = self.boolean() if name in ("con_5", "con_6") else True
        if name == "con_6":
            self.boolean()            # use_relu (a fused ReLU dlib never sets when saving)
        size = conv.filters * conv.inputs * conv.kernel * conv.kernel
        if params.size != size + (conv.filters if use_bias else 0):
            self.fail(f"{conv.name}: {params.size:,} parameters, expected {size + conv.filters:,} "
                      f"({conv.filters} filters over {conv.inputs} channels, and their biases)", start)
        self.arrays[f"{conv.name}/filters"] = params[:size].reshape(conv.filters, conv.inputs, conv.kernel,
                                                                    conv.kernel)
        self.arrays[f"{conv.name}/bias"] = params[size:] if use_bias else np.zeros(conv.filters, np.float32)

    def _affine(self, name: str, start: int, label: str, filters: int) -> None:
        params = self.tensor().ravel()
        self.alias(), self.alias()    # gamma, beta: views into params
        if params.size != 2 * filters:
            self.fail(f"{label}: {params.size} parameters, expected {2 * filters} (a scale and a shift per "
                      "channel)", start)
        gamma, beta = params[:filters], params[filters:]
        if name == "bn_con2":         # batch norm as trained: folded as dlib's affine_(bn_) does
            self.tensor(), self.tensor()                    # batch means, inverse stds
            means, variances = self.tensor().ravel(), self.tensor().ravel()
            self.integer(), self.integer()                  # updates, running-stats window
            for _ in range(4):
                self.real()
            eps = self.real()
            gamma = gamma / np.sqrt(variances + eps)
            beta = beta - gamma * means
        else:
            mode = self.integer()
            if mode != 0:             # CONV_MODE (dlib numbers it 0): one scale per channel
                self.fail(f"{label}: affine mode {mode}, expected 0 (per channel)", start)
            if name == "affine_2":
                self.boolean()        # disabled
        self.arrays[f"{label}/gamma"] = gamma.astype(np.float32)
        self.arrays[f"{label}/beta"] = beta.astype(np.float32)

    def _relu(self, name: str, start: int) -> None:
        if name == "relu_2":
            self.boolean()            # disabled

    def _pool(self, kind: str, start: int, size: int, stride: int) -> None:
        rows, columns, stride_y, stride_x, pad_y, pad_x = (self.integer() for _ in range(6))
        if (rows, columns, stride_y, stride_x, pad_y, pad_x) != (size, size, stride, stride, 0, 0):
            self.fail(f"{kind} {rows}x{columns} stride {stride_y} padding {pad_y}, expected {size}x{size} stride "
                      f"{stride} padding 0: not this network", start)

    def _max_pool(self, name: str, start: int, size: int, stride: int) -> None:
        self._pool("max_pool", start, size, stride)

    def _avg_pool(self, name: str, start: int, size: int, stride: int) -> None:
        self._pool("avg_pool", start, size, stride)

    def _add_prev(self, name: str, start: int) -> None:
        pass

    def _fc(self, name: str, start: int, inputs: int, outputs: int) -> None:
        found_outputs, found_inputs = self.integer(), self.integer()
        params = self.tensor().ravel()
        self.alias(), self.alias()    # weights, biases
        bias_mode = self.integer()
        for _ in range(4):
            self.real()
        if name == "fc_3":
            self.boolean()            # use_bias
        if (found_inputs, found_outputs, bias_mode) != (inputs, outputs, 1) or params.size != inputs * outputs:
            self.fail(f"fc: {found_inputs} inputs, {found_outputs} outputs, bias mode {bias_mode}, "
                      f"{params.size:,} parameters; expected fc_no_bias {inputs} -> {outputs}", start)
        self.arrays["fc/weights"] = params.reshape(inputs, outputs)


def read_face_resnet(path: str | Path | None = None) -> DlibWeights:
    """The face ResNet's weights from dlib's ``.dat`` file (default: the one
    ``face-recognition-models`` ships), checked against :mod:`face_resnet` throughout."""
    path = Path(path) if path is not None else default_weights_path()
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatError(f"{path}: cannot read the face ResNet's weights ({err.strerror or err})") from None
    reader = _Reader(data, path)
    reader.node(network())
    if reader.at != len(data):
        reader.fail(f"{len(data) - reader.at:,} bytes after the network's last record")
    shapes = net.parameter_shapes()
    missing = sorted(set(shapes) - set(reader.arrays))
    if missing:
        reader.fail(f"no weights read for {missing[:3]}")
    for name, shape in shapes.items():
        if reader.arrays[name].shape != shape:
            reader.fail(f"{name} has shape {reader.arrays[name].shape}, expected {shape}")
    return DlibWeights(reader.arrays, reader.input_mean, reader.input_size, reader.layers)
