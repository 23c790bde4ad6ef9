"""`harness serve` under load, beside `harness predict`'s own speed, in one run.

Exports the given run to TFLite (float32), then on the same UTKFace photos:

1. `harness predict`'s pipeline in this process (photo -> faces -> LiteRT -> decode), as
   photos/s: the baseline;
2. `harness serve` on 127.0.0.1 in a process of its own, loaded for a fixed time by 1, 4
   and 16 concurrent clients posting photos to /v1/predict: requests/s, p50 / p95 / p99
   latency, the server's own time per photo (its Server-Timing header) and errors;
   throughput at concurrency 1 as a ratio of the baseline, the two measured in
   alternating rounds and the median ratio taken;
3. the network alone on one face: LiteRT against the framework model (in a worker of
   its backend), median milliseconds per call.

    python benchmarks/serve_load.py --model results/quickstart/trials/<id> [--photos 40] [--seconds 20]

The clients share the machine with the server (2 cores here): their own work is part of
what is measured, as it would be for a door with its camera on the same small computer.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import write_result  # noqa: E402  (benchmarks/record.py, beside this script)

from harness.data.datasets import load_utkface  # noqa: E402

LATENCY_CALLS = 200

FRAMEWORK_LATENCY = """
import json, sys, time
import numpy as np
from pathlib import Path
from backends.loading import backend_module, output_to
from harness.runs.trial import load_splits, read_config
run = Path(sys.argv[1]); config = read_config(run)
with output_to(Path("/dev/null")):
    backend = backend_module(config.backend)
    model = backend.load(run, config.model, config.training, config.preprocessing.shape)
    x = load_splits(run, config, ["test"])["test"].x[:1]
    backend.predict(model, x)
    times = []
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter(); backend.predict(model, x); times.append(time.perf_counter() - start)
print(json.dumps({"backend": config.backend, "median_ms": float(np.median(times) * 1000)}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def predict_rate(predictor, photos: list[Path], seconds: float) -> dict:
    from harness.deploy.classify import classify

    done, faces, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        faces += sum(r.face is not None for r in classify(predictor, photos[done % len(photos)]))
        done += 1
    elapsed = time.perf_counter() - start
    return {"photos_per_second": done / elapsed, "faces_per_second": faces / elapsed, "photos": done}


def multipart(name: str, body: bytes) -> tuple[bytes, str]:
    """A phone's upload, built once: the client's own cost stays out of the server's figures."""
    boundary = "harness-load-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    return head + body + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def load(port: int, path: str, bodies: list[tuple[bytes, str]], concurrency: int, seconds: float) -> dict:
    """``concurrency`` clients, each on a kept-alive connection, posting photos until time is up."""
    import http.client

    latencies, errors, photo_ms, lock = [], [], [], threading.Lock()
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.perf_counter() < deadline:
            body, content_type = bodies[next(counter) % len(bodies)]
            start = time.perf_counter()
            try:
                connection.request("POST", path, body, {"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                ok, problem = response.status == 200, f"HTTP {response.status}"
                timing = response.getheader("Server-Timing", "")
                if ok and "dur=" in timing:
                    with lock:
                        photo_ms.append(float(timing.rsplit("dur=", 1)[1]))
            except (OSError, http.client.HTTPException) as err:
                ok, problem = False, f"{type(err).__name__}: {err}"
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                (latencies.append(time.perf_counter() - start) if ok else errors.append(problem))
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(latencies), "requests_per_second": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p95_ms": float(np.percentile(ms, 95)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "server_photo_ms": float(np.median(photo_ms)) if photo_ms else None,
            "errors": len(errors), "first_error": errors[0] if errors else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a finished trial directory")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "UTKFace"))
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20, help="per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=4, help="alternations of predict and the server at "
                                                              "concurrency 1 (each gets --seconds / rounds)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    import httpx

    from harness.deploy.export import export, single_face_latency_ms
    from harness.deploy.litert import LiteModel
    from harness.runs.trial import load_splits, read_config

    run = Path(args.model)
    table = load_utkface(args.data).table.sample(n=args.photos, random_state=0)
    photos = [Path(p) for p in table["path"]]
    bodies = [multipart(p.name, p.read_bytes()) for p in photos]
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        export_dir = Path(tmp) / "export"
        manifest = export(run, export_dir)
        print(f"model: {run} ({manifest.source['backend']}), exported to TFLite: {manifest.parity.bytes:,} bytes, "
              f"parity {manifest.parity.max_abs_probability_difference:.1e}")

        # 3. The network alone, one face: LiteRT here, the framework in its own worker.
        config = read_config(run)
        one = load_splits(run, config, ["test"])["test"].x[:1]
        litert_ms = single_face_latency_ms(LiteModel(export_dir / "model.tflite"), one, LATENCY_CALLS)
        framework = json.loads(subprocess.run(
            [sys.executable, "-c", FRAMEWORK_LATENCY, str(run), str(LATENCY_CALLS)], cwd=ROOT,
            capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        latency = {"litert_ms": litert_ms, "framework_ms": framework["median_ms"]}

        from harness.deploy.classify import classify
        from harness.deploy.predictors import ExportPredictor

        predictor = ExportPredictor(export_dir)
        classify(predictor, photos[0])    # warm up

        # 2. The server, under load.
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--model", str(export_dir),
                                   "--port", str(port), "--queue", "64", "--allow-unfit"], cwd=ROOT,
                                  start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            load(port, "/v1/predict", bodies[:2], 1, 2)    # warm up
            # 1. and 2. at concurrency 1, alternated in short rounds: this machine's speed
            # drifts by 10-20 % over a minute, and the ratio must not measure the drift.
            pairs = []
            for _ in range(args.rounds):
                pairs.append((predict_rate(predictor, photos, args.seconds / args.rounds),
                              load(port, "/v1/predict", bodies, 1, args.seconds / args.rounds)))
            baseline = {key: float(np.median([p[key] for p, _ in pairs]))
                        for key in ("photos_per_second", "faces_per_second")}
            ratios = [row["requests_per_second"] / p["photos_per_second"] for p, row in pairs]
            first = {key: float(np.median([row[key] for _, row in pairs]))
                     for key in ("requests_per_second", "p50_ms", "p95_ms", "p99_ms", "server_photo_ms")}
            rows = [{**first, "concurrency": 1, "errors": sum(row["errors"] for _, row in pairs),
                     "ratio": float(np.median(ratios))}]
            rows += [load(port, "/v1/predict", bodies, c, args.seconds) for c in args.concurrency if c != 1]
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

    print(f"\n{args.photos} UTKFace photos, {args.seconds:g} s per measurement, {os.cpu_count()} cores\n")
    print(f"harness predict (same pipeline, in process): {baseline['photos_per_second']:.2f} photos/s "
          f"({baseline['faces_per_second']:.2f} faces/s; {1000 / baseline['photos_per_second']:.1f} ms per photo)")
    print("\n| clients | requests/s | vs predict | p50 ms | p95 ms | p99 ms | server's own ms per photo | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = row.get("ratio", row["requests_per_second"] / baseline["photos_per_second"])
        print(f"| {row['concurrency']} | {row['requests_per_second']:.2f} | {ratio:.2f} | {row['p50_ms']:.0f} | "
              f"{row['p95_ms']:.0f} | {row['p99_ms']:.0f} | {row['server_photo_ms']:.1f} | {row['errors']} |")
    print(f"\nnetwork alone, one face: LiteRT {latency['litert_ms']:.3f} ms, {framework['backend']} "
          f"{latency['framework_ms']:.3f} ms (ratio {latency['framework_ms'] / latency['litert_ms']:.1f}x)")
    first = rows[0]["ratio"]
    print(f"goals: concurrency 1 at >= 0.90 of predict: {first:.2f}; "
          f"no errors at the highest concurrency: {rows[-1]['errors'] == 0 if rows else 'n/a'}")
    print(write_result("serve_load", f"harness serve under load against harness predict's own speed in the same "
                       f"run, {args.photos} UTKFace photos, {args.seconds:g} s per measurement.", {
        "predict (photos/s)": round(baseline["photos_per_second"], 2),
        **{f"{row['concurrency']} clients: requests/s, vs predict, p95 ms, errors":
           f"{row['requests_per_second']:.2f}, "
           f"{row.get('ratio', row['requests_per_second'] / baseline['photos_per_second']):.2f}, "
           f"{row['p95_ms']:.0f}, {row['errors']}" for row in rows},
        "network alone, LiteRT / framework ms": f"{latency['litert_ms']:.3f} / {latency['framework_ms']:.3f}"}))
    if args.json:
        Path(args.json).write_text(json.dumps({"predict": baseline, "server": rows, "latency": latency}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
