"""The face ResNet port against dlib's own descriptor, on the same aligned chips, in one run.

Measures, on N real aligned UTKFace chips (150x150, as every engine reads them):
- dlib's ``compute_face_descriptor``, one chip at a time (what the harness did before):
  faces/s, the baseline;
- each backend's translation (``describe`` in a worker of its own, the network already
  built and warmed up) at batch sizes 1, 32 and 128: faces/s, the ratio to dlib, and the
  GFLOP/s that is (the network's multiply-adds counted from ``face_resnet``);
- NumPy's float32 matrix product on this machine in the same run (the best of short
  windows, before and after the engines), GFLOP/s: what these cores can do at best, so
  the port's GFLOP/s against it says how much is left;
- the largest difference from dlib's descriptors (the parity the tests hold at 1e-4).

    python benchmarks/face_resnet_port.py [--chips 2000] [--small 500]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import write_result  # noqa: E402  (benchmarks/record.py, beside this script)

from harness.models import face_resnet  # noqa: E402
from harness.models.backends import BACKENDS  # noqa: E402
from harness.processes import worker_env  # noqa: E402

ENGINE_TIMING = """
import json, sys, time, numpy as np
from backends.loading import backend_module
from harness.models.spec import FaceResNet
backend = backend_module(sys.argv[1])
chips = np.load(sys.argv[2]).astype(np.float32) / np.float32(255.0)
network = backend.face_network(FaceResNet())
out = {}
for batch, count in json.loads(sys.argv[3]):
    x = chips[:count]
    backend.describe(network, x[:batch])                     # warm-up (tracing, allocation)
    started = time.perf_counter()
    values = np.concatenate([backend.describe(network, x[i:i + batch]) for i in range(0, len(x), batch)])
    out[batch] = {"seconds": time.perf_counter() - started, "faces": len(x)}
np.save(sys.argv[4], values)
print("TIMING " + json.dumps(out))
"""


def multiply_adds() -> int:
    """Multiply-adds of one face through the network (convolutions and the projection)."""
    size, total = face_resnet.INPUT_SIZE, 0

    def conv_out(n, conv):
        return (n + 2 * conv.padding - conv.kernel) // conv.stride + 1

    stem = face_resnet.stem()
    size = conv_out(size, stem)
    total += size * size * stem.filters * stem.inputs * stem.kernel ** 2
    size = (size - 3) // 2 + 1
    for block in face_resnet.blocks():
        inner = conv_out(size, block.first)
        total += inner * inner * block.first.filters * block.first.inputs * 9
        total += inner * inner * block.second.filters * block.second.inputs * 9
        size = max(inner, (size - 2) // 2 + 1 if block.downsample else size)
    return total + face_resnet.POOLED_SIZE * face_resnet.EMBEDDING_SIZE


def matmul_gflops(windows: int = 6, seconds: float = 0.5) -> float:
    """The best of several short windows of a 1024x1024 float32 matrix product: the peak
    these cores reach, not an average that anything else running lowers."""
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    a @ a
    best = 0.0
    for _ in range(windows):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            a @ a
            count += 1
        best = max(best, 2 * 1024 ** 3 * count / (time.perf_counter() - started) / 1e9)
    return best


def real_chips(count: int) -> np.ndarray:
    from harness.data.datasets import load_utkface
    from harness.data.faces import first_chips

    return first_chips(load_utkface(ROOT.parent / "shared" / "datasets" / "UTKFace").table["path"], count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chips", type=int, default=2000, help="faces for dlib and for batches of 128")
    parser.add_argument("--small", type=int, default=500, help="faces for batches of 1 and 32")
    parser.add_argument("--engines", nargs="+", default=list(BACKENDS))
    args = parser.parse_args()

    chips = real_chips(args.chips)
    flops = 2 * multiply_adds()
    peak = matmul_gflops()
    import dlib

    from harness.data.faces import _descriptor_model
    model = _descriptor_model()
    model.compute_face_descriptor(chips[0], 0)
    started = time.perf_counter()
    reference = np.stack([np.asarray(model.compute_face_descriptor(c, 0), np.float32) for c in chips])
    dlib_rate = len(chips) / (time.perf_counter() - started)
    print(f"{len(chips)} real aligned UTKFace chips; {flops / 1e9:.2f} GFLOP a face; float32 matmul here "
          f"{peak:.0f} GFLOP/s")
    print(f"dlib {dlib.__version__} compute_face_descriptor, one at a time: {dlib_rate:.1f} faces/s "
          f"({dlib_rate * flops / 1e9:.1f} GFLOP/s)")
    figures = {"dlib (faces/s)": round(dlib_rate, 1), "GFLOP a face": round(flops / 1e9, 3),
               "float32 matmul here (GFLOP/s)": round(peak, 1)}
    plan = [[1, args.small], [32, args.small], [128, args.chips]]
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "chips.npy", chips)
        for engine in args.engines:
            out = Path(tmp) / f"{engine}.npy"
            run = subprocess.run([sys.executable, "-c", ENGINE_TIMING, engine, str(Path(tmp) / "chips.npy"),
                                  json.dumps(plan), str(out)], cwd=ROOT, env=worker_env(), capture_output=True,
                                 text=True)
            line = [x for x in run.stdout.splitlines() if x.startswith("TIMING ")]
            if run.returncode or not line:
                print(f"{engine}: failed: {(run.stderr or run.stdout).strip().splitlines()[-1:]}")
                continue
            timing = json.loads(line[0][len("TIMING "):])
            gap = float(np.abs(np.load(out) - reference).max())
            cells = []
            for batch, result in timing.items():
                rate = result["faces"] / result["seconds"]
                cells.append(f"batch {batch}: {rate:.1f} faces/s ({rate / dlib_rate:.1f}x dlib, "
                             f"{rate * flops / 1e9:.0f} GFLOP/s)")
                figures[f"{engine}, batch {batch} (faces/s, x dlib, GFLOP/s)"] = \
                    f"{rate:.1f}, {rate / dlib_rate:.2f}, {rate * flops / 1e9:.0f}"
            figures[f"{engine}: max |difference| from dlib"] = f"{gap:.1e}"
            print(f"{engine}: " + "; ".join(cells) + f"; max |difference| from dlib {gap:.1e}")
    peak = max(peak, matmul_gflops())   # again after the engines: the better of the two
    figures["float32 matmul here (GFLOP/s)"] = round(peak, 1)
    print(f"float32 matmul, best window before and after: {peak:.0f} GFLOP/s")
    print(write_result("face_resnet_port", f"The face ResNet port against dlib's descriptor on the same "
                       f"{len(chips)} real aligned UTKFace chips (batches of 1 and 32 on the first {args.small}), "
                       "one run, goal >= 60 faces/s (>= 6x dlib).", figures))


if __name__ == "__main__":
    main()
