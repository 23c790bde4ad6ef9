"""Array-cache build speed, warm-load time and peak memory on all of UTKFace.

Prints, from one run on this machine:
- images/s of a cache build (decode, preprocess, write to the memmap, index) against a
  bare decode-and-resize loop over the same files with the same number of processes
  (the practical limit), and their ratio (goal: >= 0.90);
- the time to load the built cache warm, both opening it and reading every pixel into
  memory as float32-ready uint8 (goal: < 1 s);
- the peak resident memory of the whole build process tree, for a quarter and for all
  of the images, beside the cache's size (goal: peak <= cache size + a fixed amount).

Each phase runs in a fresh subprocess whose tree is sampled for RSS from here.

    python benchmarks/data_cache.py [--path ../shared/datasets/UTKFace] [--size 64] [--workers N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from record import write_result  # noqa: E402  (benchmarks/record.py, beside this script)


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack.extend(int(c) for c in children.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _run_phase(args: list[str]) -> tuple[dict, int]:
    process = subprocess.Popen([sys.executable, __file__, "--phase", *args], stdout=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, _ = process.communicate()
    done.set()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"phase {args[0]} failed")
    return json.loads(out.decode().strip().splitlines()[-1]), peak


def _phase(kind: str, path: str, size: int, workers: int, cache_dir: str, limit: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from harness.data import cache
    from harness.data.datasets import load_utkface
    from harness.data.images import Preprocessing

    table = load_utkface(path).table.iloc[:limit]
    prep = Preprocessing(size=size)
    ids, paths = list(table["id"]), list(table["path"])
    start = time.perf_counter()
    if kind == "bare":
        from concurrent.futures import ProcessPoolExecutor

        chunks = [paths[s:s + cache.CHUNK] for s in range(0, len(paths), cache.CHUNK)]
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_decode_only, chunks, [size] * len(chunks)))
    elif kind == "build":
        cache.build(ids, paths, prep, cache_dir=cache_dir, workers=workers)
    else:  # warm
        opened = cache.build(ids, paths, prep, cache_dir=cache_dir, workers=workers)
        opened_s = time.perf_counter() - start
        pixels = opened.images[:].copy()
        return {"seconds": time.perf_counter() - start, "open_seconds": opened_s,
                "bytes": int(pixels.nbytes), "images": len(ids)}
    return {"seconds": time.perf_counter() - start, "images": len(ids)}


def _decode_only(paths: list[str], size: int) -> int:
    from harness.data.images import Preprocessing, load_image

    prep = Preprocessing(size=size)
    done = 0
    for path in paths:
        try:
            load_image(path, prep)
            done += 1
        except Exception:  # noqa: BLE001 - the bare loop only counts what decodes
            pass
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/UTKFace"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.phase:
        limit = args.limit or 10**9
        print(json.dumps(_phase(args.phase, args.path, args.size, args.workers, args.cache_dir, limit)))
        return

    for image in Path(args.path).iterdir():   # read every file once so no phase pays cold disk
        image.read_bytes()
    common = ["--path", args.path, "--size", str(args.size), "--workers", str(args.workers)]
    with tempfile.TemporaryDirectory() as tmp:
        bare1, _ = _run_phase(["bare", *common])
        n = bare1["images"]
        quarter, quarter_peak = _run_phase(["build", *common, "--cache-dir", f"{tmp}/q", "--limit", str(n // 4)])
        build, build_peak = _run_phase(["build", *common, "--cache-dir", f"{tmp}/full"])
        bare2, _ = _run_phase(["bare", *common])
        warm, _ = _run_phase(["warm", *common, "--cache-dir", f"{tmp}/full"])
        cache_bytes = sum(f.stat().st_size for f in Path(f"{tmp}/full").rglob("*") if f.is_file())
        quarter_bytes = sum(f.stat().st_size for f in Path(f"{tmp}/q").rglob("*") if f.is_file())

    bare_rate = n / ((bare1["seconds"] + bare2["seconds"]) / 2)
    build_rate = n / build["seconds"]
    mib = 1 / 2**20
    print(f"UTKFace images: {n} at {args.size}x{args.size}, {args.workers} processes")
    print(f"bare decode+resize:  {bare_rate:8.0f} images/s (mean of a run before and after the build)")
    print(f"cache build:         {build_rate:8.0f} images/s")
    print(f"build / bare ratio:  {build_rate / bare_rate:8.2f}   (goal >= 0.90)")
    print(f"warm load (open):    {warm['open_seconds']:8.3f} s")
    print(f"warm load (all {warm['bytes'] * mib:.0f} MiB read into memory): {warm['seconds']:.3f} s   (goal < 1 s)")
    print(f"peak RSS of build tree, all images:     {build_peak * mib:7.0f} MiB; cache size {cache_bytes * mib:.0f} MiB;"
          f" peak - cache = {(build_peak - cache_bytes) * mib:.0f} MiB")
    print(f"peak RSS of build tree, quarter images: {quarter_peak * mib:7.0f} MiB; cache size {quarter_bytes * mib:.0f} MiB;"
          f" peak - cache = {(quarter_peak - quarter_bytes) * mib:.0f} MiB")
    print(write_result("data_cache", f"Array cache on {n} UTKFace images at {args.size}x{args.size}, "
                       f"{args.workers} processes, against bare decode+resize in the same run.", {
        "bare decode+resize (images/s)": round(bare_rate), "cache build (images/s)": round(build_rate),
        "build / bare ratio (goal >= 0.90)": round(build_rate / bare_rate, 2),
        "warm load, open (s)": round(warm["open_seconds"], 3),
        "warm load, all read (s, goal < 1)": round(warm["seconds"], 3),
        "peak RSS - cache size, all images (MiB)": round((build_peak - cache_bytes) * mib),
        "peak RSS - cache size, quarter of the images (MiB)": round((quarter_peak - quarter_bytes) * mib)}))


if __name__ == "__main__":
    main()
