"""The one process a trial runs in: ``python -m backends.worker [train] RUN_DIR``.

Trains the trial in RUN_DIR (see :mod:`backends.training` for what it writes).

A reused worker trains many trials of one backend in turn, importing its framework once:
    python -m backends.worker serve BACKEND THREADS --reply-fd FD
        reads one JSON request per line on stdin ({"run_dir": ...}), trains it exactly as
        ``train`` would in a fresh process, and answers one JSON line on FD; it exits at
        the end of stdin, or after answering for a trial that failed

Other verbs, each in a fresh process for the same reason (TFLearn and Keras 3 cannot
share one):
    python -m backends.worker predict RUN_DIR OUT.npz [--role test]
        reload the saved model and predict one role of the trial's split
    python -m backends.worker export RUN_DIR OUT.tflite [--quantize none|dynamic|int8]
    python -m backends.worker describe BACKEND CHIPS.npy OUT.npy [--features embedding|pooled|levelK_input] [--flip]
        convert the saved model to TFLite (int8 calibrates on the run's training images)
    python -m backends.worker count-params BACKEND SPECS.json
        print the trainable-parameter count of each (model, input shape) in SPECS.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from backends.loading import backend_module, output_to
from backends.training import RecentSplits, describe, export, predict, train
from harness.data.faces import DESCRIPTOR_OUTPUTS
from harness.models.backends import BACKENDS
from harness.models.spec import ModelSpec, TrainingSpec
from harness.runs.trial import read_config


def resident_mb() -> float:
    """This process's resident memory now, in MiB (what the executor's ceiling checks)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):   # not Linux: the peak instead
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(backend_name: str, threads: int, reply_fd: int) -> int:
    """Train the trials named on stdin one after another in this process.

    Each answer is one JSON line on ``reply_fd`` (not stdout, which each trial sends to
    its own log): ``{"ok": true, "rss_mb": ...}``, or ``{"ok": false, "error": ...}``
    after which the worker exits, so that whatever the failure left behind (a graph
    half built, a session mid-step) never reaches another trial.
    """
    recent = RecentSplits()
    with os.fdopen(reply_fd, "w", buffering=1) as reply:
        for count, line in enumerate(sys.stdin, start=1):
            try:
                run_dir = Path(json.loads(line)["run_dir"])
                config = read_config(run_dir)
                if (config.backend, config.threads) != (backend_name, threads):
                    # Two frameworks cannot share a process, and TensorFlow fixes its
                    # thread pools at first use: such a trial needs another worker.
                    raise ValueError(f"{run_dir}: a {config.backend} trial on {config.threads} threads "
                                     f"sent to a {backend_name} worker on {threads} threads")
                train(run_dir, recent, count)
            except Exception:
                error = traceback.format_exc()
                sys.stderr.write(error)
                sys.stderr.flush()
                reply.write(json.dumps({"ok": False, "error": error[-4000:]}) + "\n")
                return 1
            reply.write(json.dumps({"ok": True, "rss_mb": round(resident_mb(), 1)}) + "\n")
    return 0


def count_params(backend_name: str, specs_file: Path) -> list[int]:
    entries = json.loads(specs_file.read_text())
    with output_to(Path(os.devnull)):
        backend = backend_module(backend_name)
        return [backend.count_params(backend.build(ModelSpec.model_validate(e["model"]), TrainingSpec(),
                                                   tuple(e["input_shape"])))
                for e in entries]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("train", "serve", "predict", "export", "describe", "count-params", "-h", "--help"):
        argv.insert(0, "train")
    parser = argparse.ArgumentParser(prog="python -m backends.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("train").add_argument("run_dir", type=Path)
    r = verbs.add_parser("serve")
    r.add_argument("backend", choices=BACKENDS)
    r.add_argument("threads", type=int)
    r.add_argument("--reply-fd", type=int, required=True)
    p = verbs.add_parser("predict")
    p.add_argument("run_dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--role", default="test", choices=["train", "val", "test"])
    p.add_argument("--tta", choices=["flip"], default=None, help="test-time augmentation")
    e = verbs.add_parser("export")
    e.add_argument("run_dir", type=Path)
    e.add_argument("out", type=Path)
    e.add_argument("--quantize", choices=["none", "dynamic", "int8"], default="none")
    d = verbs.add_parser("describe")
    d.add_argument("backend", choices=BACKENDS)
    d.add_argument("chips", type=Path)
    d.add_argument("out", type=Path)
    d.add_argument("--features", choices=sorted(DESCRIPTOR_OUTPUTS), default="embedding")
    d.add_argument("--flip", action="store_true", help="the mean of each chip's and its mirror's")
    c = verbs.add_parser("count-params")
    c.add_argument("backend")
    c.add_argument("specs", type=Path)
    args = parser.parse_args(argv)
    if args.verb == "train":
        result = train(args.run_dir)
        print(json.dumps({k: v for k, v in result.items() if not k.endswith("confusion")}))
    elif args.verb == "serve":
        return serve(args.backend, args.threads, args.reply_fd)
    elif args.verb == "predict":
        predict(args.run_dir, args.out, args.role, args.tta)
    elif args.verb == "export":
        export(args.run_dir, args.out, args.quantize)
    elif args.verb == "describe":
        describe(args.backend, args.chips, args.out, args.features, args.flip)
    else:
        print(json.dumps(count_params(args.backend, args.specs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
