"""dlib's face-recognition ResNet, written down as data: what each backend translates.

The network of dlib's ``dnn_face_recognition_ex.cpp`` (the weights ship in
``face-recognition-models`` as ``dlib_face_recognition_resnet_model_v1.dat``):

- input: a 150×150 RGB chip; each channel minus its mean (:data:`INPUT_MEAN`), over 256;
- stem: conv 32 7×7 stride 2 (no padding), affine, ReLU, max-pool 3×3 stride 2;
- residual levels of 3×32, 4×64, 3×128, 3×256 and 1×256 blocks: each block is conv 3×3,
  affine, ReLU, conv 3×3, affine, then the sum with its input and a ReLU. The first block
  of every level after the first downsamples: its first conv has stride 2 (no padding)
  and its input, on the skip path, goes through a 2×2 stride-2 average pool. Where the
  two meet with different shapes (more channels on the block side; a larger grid on the
  skip side, 4×4 against 3×3 at the fourth level) dlib's ``add_prev`` adds them in the
  larger shape, each zero where it has no value;
- a global average pool (256 features) and a 128-unit fully connected layer without bias.

Every convolution has a bias; a 3×3 stride-1 convolution pads by 1, a strided one not at
all (dlib's defaults). An affine layer is a per-channel scale and shift (batch norm
folded at inference).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.data.faces import DESCRIPTOR_CHIP, EMBEDDING_SIZE, POOLED_SIZE

__all__ = ["INPUT_SIZE", "INPUT_MEAN", "INPUT_SCALE", "LEVELS", "EMBEDDING_SIZE", "POOLED_SIZE",
           "Conv", "Block", "blocks", "trains", "CUTS", "cut_of", "cut_shape", "first_level_after", "span",
           "parameter_shapes", "parameter_count"]

INPUT_SIZE = DESCRIPTOR_CHIP   # 150: the chip every engine reads (harness.data.faces.descriptor_chip)
INPUT_MEAN = (122.782, 117.001, 104.298)   # R, G, B
INPUT_SCALE = 256.0
STEM_FILTERS, STEM_KERNEL = 32, 7
# (filters, blocks) from the input up.
LEVELS: tuple[tuple[int, int], ...] = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))


@dataclass(frozen=True)
class Conv:
    name: str
    filters: int
    inputs: int
    kernel: int
    stride: int

    @property
    def padding(self) -> int:
        return self.kernel // 2 if self.stride == 1 else 0


@dataclass(frozen=True)
class Block:
    name: str          # level<i>/block<j>
    first: Conv
    second: Conv
    downsample: bool   # stride 2 and the skip path average-pooled


def blocks() -> list[Block]:
    """The residual blocks from the input up."""
    out, inputs = [], STEM_FILTERS
    for level, (filters, count) in enumerate(LEVELS):
        for index in range(count):
            down = index == 0 and level > 0
            name = f"level{level}/block{index}"
            out.append(Block(name, Conv(f"{name}/conv1", filters, inputs, 3, 2 if down else 1),
                             Conv(f"{name}/conv2", filters, filters, 3, 1), down))
            inputs = filters
    return out


def trains(name: str, train_from: str) -> bool:
    """Whether the layer or variable ``name`` (``stem/conv...``, ``level<i>/block<j>/...``
    with ``i`` counted from the input, ``fc/...``) trains under ``train_from``, whose
    ``levelK`` counts from the output as dlib does: ``level0`` is our last level."""
    if train_from in ("head", "all"):
        return train_from == "all"
    root = name.split("/")[0]
    if root == "fc":
        return True
    if not root.startswith("level"):
        return False   # the stem (and the fixed input normalisation)
    deepest_frozen = len(LEVELS) - 2 - int(train_from[len("level"):])
    return int(root[len("level"):]) > deepest_frozen


# Where a fine-tuned trunk can be cut: the activations dlib's level K reads (K counted
# from the output), computed once by the frozen part below it and cached.
CUTS = ("level0_input", "level1_input", "level2_input", "level3_input")


def cut_of(train_from: str) -> str:
    """``levelK`` -> the cut below it, ``levelK_input``."""
    return f"{train_from}_input"


def first_level_after(cut: str) -> int:
    """A cut -> the index (ours, from the input) of the first level above it."""
    return len(LEVELS) - 1 - int(cut[len("level"):cut.index("_")])


def cut_shape(cut: str) -> tuple[int, int, int]:
    """(rows, columns, channels) of the activations at a cut, as dlib computes them: no
    padding for strided convolutions and pools, a downsampling block's sum in the larger
    of its two shapes."""
    side = (INPUT_SIZE - STEM_KERNEL) // 2 + 1      # the stem's convolution
    side = (side - 3) // 2 + 1                       # its 3x3/2 max pool
    channels = STEM_FILTERS
    for level, (filters, _) in enumerate(LEVELS):
        if level == first_level_after(cut):
            return side, side, channels
        if level > 0:   # the first block downsamples: conv 3x3/2 against a 2x2/2 pool of its input
            side = max((side - 3) // 2 + 1, side // 2)
        channels = filters
    raise ValueError(f"no cut {cut!r}; cuts: {list(CUTS)}")


def span(reads: str, gives: str) -> tuple[bool, list[Block], bool]:
    """What a network from ``reads`` (``chip`` or a cut) to ``gives`` (``embedding``,
    ``pooled`` or a cut) holds: whether it starts with the input normalisation and the
    stem, its residual blocks, and whether it ends with the average pool."""
    first = 0 if reads == "chip" else first_level_after(reads)
    last = len(LEVELS) if gives in ("embedding", "pooled") else first_level_after(gives)
    if last < first:
        raise ValueError(f"a network from {reads} cannot give {gives}: that cut is below it")
    chosen = [b for b in blocks() if first <= int(b.name.split("/")[0][len("level"):]) < last]
    return reads == "chip", chosen, gives in ("embedding", "pooled")


def stem() -> Conv:
    return Conv("stem/conv", STEM_FILTERS, 3, STEM_KERNEL, 2)


def convolutions() -> list[Conv]:
    return [stem()] + [conv for block in blocks() for conv in (block.first, block.second)]


def parameter_shapes() -> dict[str, tuple[int, ...]]:
    """Every learned array, by name, in dlib's own layout: a convolution's filters as
    (filters, inputs, rows, columns), the fully connected weights as (inputs, outputs)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for conv in convolutions():
        affine = conv.name.replace("conv", "affine")
        shapes[f"{conv.name}/filters"] = (conv.filters, conv.inputs, conv.kernel, conv.kernel)
        shapes[f"{conv.name}/bias"] = (conv.filters,)
        shapes[f"{affine}/gamma"] = (conv.filters,)
        shapes[f"{affine}/beta"] = (conv.filters,)
    shapes["fc/weights"] = (POOLED_SIZE, EMBEDDING_SIZE)
    return shapes


def parameter_count() -> int:
    total = 0
    for shape in parameter_shapes().values():
        size = 1
        for n in shape:
            size *= n
        total += size
    return total


# --- a reference forward pass in NumPy: the network as written above, framework-free ------
#
# What the backends' translations and the reader are checked against (and they against
# dlib itself); NHWC float32 throughout, as the frameworks hold images.

def _conv(x: np.ndarray, filters: np.ndarray, bias: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """x (N, H, W, C) with dlib-layout filters (F, C, k, k): a cross-correlation, as dlib's."""
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, w, c = x.shape
    f, _, k, _ = filters.shape
    out_h, out_w = (h - k) // stride + 1, (w - k) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    windows = windows[:, :out_h, :out_w]                      # (N, oh, ow, C, k, k)
    kernel = filters.reshape(f, c * k * k).T                  # (C*k*k, F), C major as windows
    return windows.reshape(n, out_h, out_w, c * k * k) @ kernel + bias


def _pool(x: np.ndarray, size: int, stride: int, reduce) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    out_h, out_w = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
    return reduce(windows[:, :out_h, :out_w], axis=(-2, -1))


def add_in_larger_shape(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dlib's add_prev: the sum in the larger of the two shapes, each zero where it has no value."""
    shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape))
    out = np.zeros(shape, dtype=np.float32)
    out[tuple(slice(0, n) for n in a.shape)] += a
    out[tuple(slice(0, n) for n in b.shape)] += b
    return out


def reference_forward(weights: dict[str, np.ndarray], chips: np.ndarray, input_mean=INPUT_MEAN,
                      features: str = "embedding") -> np.ndarray:
    """uint8 or float (N, 150, 150, 3) RGB chips -> (N, 128) descriptors (or the (N, 256)
    pooled features), computed from ``weights`` (:func:`parameter_shapes` names)."""
    x = (np.asarray(chips, dtype=np.float32) - np.asarray(input_mean, dtype=np.float32)) / np.float32(INPUT_SCALE)

    def conv_affine(x, conv: Conv):
        affine = conv.name.replace("conv", "affine")
        x = _conv(x, weights[f"{conv.name}/filters"], weights[f"{conv.name}/bias"], conv.stride, conv.padding)
        return x * weights[f"{affine}/gamma"] + weights[f"{affine}/beta"]

    x = _pool(np.maximum(conv_affine(x, stem()), 0), 3, 2, np.max)
    for block in blocks():
        inner = conv_affine(np.maximum(conv_affine(x, block.first), 0), block.second)
        skip = _pool(x, 2, 2, np.mean) if block.downsample else x
        x = np.maximum(add_in_larger_shape(inner, skip), 0)
    pooled = x.mean(axis=(1, 2))
    return pooled if features == "pooled" else pooled @ weights["fc/weights"]
