"""Face-descriptor cache build speed and warm-load time.

Prints, from one run on this machine:
- faces/s of building the embedding cache (decode, detect, 5-point align, the ResNet
  descriptor by ``--engine``: dlib itself, or the port in a backend, memmap write) with
  every core, beside the same build for 32x32 aligned pixels (detection and alignment
  alone) in the same run, so the descriptor's own cost shows as a ratio (goal for the
  embedding build: >= 30 faces/s on 2 cores);
- the time to open the built entry and read every descriptor (goal: < 0.2 s);
- how many faces had no detectable face (used whole, unaligned).

The entries are built in the harness's own cache (``$HARNESS_CACHE``, default
``.cache/arrays``) unless ``--cache-dir`` says otherwise, so an experiment on the same
images (no ``limit``) reuses them and computes nothing.

    python benchmarks/embedding_cache.py [--engine keras] [--path ../shared/datasets/UTKFace] [--limit N]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import write_result  # noqa: E402  (benchmarks/record.py, beside this script)

from harness.data import cache  # noqa: E402
from harness.data.datasets import load_utkface  # noqa: E402
from harness.data.images import Preprocessing  # noqa: E402


def timed_build(table, prep, cache_dir, workers) -> tuple[float, cache.CachedArrays]:
    if cache.lookup(table["id"], table["path"], prep, cache_dir) is not None:
        raise SystemExit(f"an entry for {prep} already exists in {cache_dir or cache.default_cache_dir()}: "
                         "give --cache-dir an empty folder to measure a build")
    started = time.perf_counter()
    built = cache.build(table["id"], table["path"], prep, cache_dir=cache_dir, workers=workers, progress=True)
    return time.perf_counter() - started, built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The same spelling as the experiment files and the Makefile: cache keys include paths.
    parser.add_argument("--path", default="../shared/datasets/UTKFace")
    parser.add_argument("--limit", type=int, help="first N faces only (default: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--engine", default="dlib", choices=["dlib", "keras", "keras-jax", "tflearn"],
                        help="descriptor_engine (default dlib)")
    parser.add_argument("--cache-dir", help="default: the harness's own cache")
    parser.add_argument("--baseline-limit", type=int, default=2000,
                        help="faces for the aligned-pixels baseline (default 2000)")
    args = parser.parse_args()

    table = load_utkface(args.path).table
    if args.limit:
        table = table.head(args.limit)
    embedding = Preprocessing(representation="dlib_embedding", descriptor_engine=args.engine)
    aligned = Preprocessing(size=32, align="dlib")
    baseline = table.head(args.baseline_limit)

    seconds, built = timed_build(table, embedding, args.cache_dir, args.workers)
    base_seconds, _ = timed_build(baseline, aligned, args.cache_dir, args.workers)
    open_started = time.perf_counter()
    warm = cache.CachedArrays.open(built.directory)
    opened = time.perf_counter() - open_started
    vectors = warm.arrays(warm.valid_ids())
    loaded = time.perf_counter() - open_started

    rate, base_rate = len(table) / seconds, len(baseline) / base_seconds
    print(f"{len(table)} UTKFace faces, {args.workers} processes, descriptors by {args.engine} "
          f"(dlib {_dlib_version()} detects and aligns)")
    print(f"embedding build (detect, align, descriptor): {rate:.1f} faces/s ({seconds:.0f} s, "
          f"{seconds / 60:.1f} min)   goal >= 30")
    print(f"aligned 32x32 pixels, first {len(baseline)} faces (detect, align): {base_rate:.1f} faces/s")
    print(f"embedding / aligned pixels: {rate / base_rate:.2f}")
    print(f"warm load: open {opened:.3f} s, open and read all {vectors.shape} float32: {loaded:.3f} s   goal < 0.2 s")
    print(f"faces without a detectable face (used whole): {len(built.unaligned)}; skipped: {len(built.skipped)}")
    name = "embedding_cache" if args.engine == "dlib" else f"embedding_cache_{args.engine}"
    print(write_result(name, f"Face descriptors by {args.engine} of {len(table)} UTKFace faces, {args.workers} "
                       f"processes, against aligned 32x32 pixels of {len(baseline)} faces in the same run.", {
        "descriptor build (faces/s, goal >= 30)": round(rate, 1),
        "descriptor build (minutes)": round(seconds / 60, 1),
        "aligned pixels build (faces/s)": round(base_rate, 1),
        "descriptor / aligned pixels": round(rate / base_rate, 2),
        "warm load, open and read all (s, goal < 0.2)": round(loaded, 3),
        "faces used whole (no face found)": len(built.unaligned)}))


def _dlib_version() -> str:
    import dlib

    return dlib.__version__


if __name__ == "__main__":
    main()
