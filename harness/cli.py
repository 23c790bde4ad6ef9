"""Command line: ``harness run | report | compare | ensemble | predict | export | serve``
and ``harness data summary | plot-splits | cache``."""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path

from harness.data import datasets
from harness.data.datasets import DatasetError
from harness.data.splits import SplitSpec


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=sorted(datasets.LOADERS))
    parser.add_argument("--path", required=True,
                        help="UTKFace folder, Adience metadata folder, or CSV file")
    parser.add_argument("--images", help="Adience: folder holding aligned/ or faces/")
    parser.add_argument("--metadata", choices=["per_fold", "original"], default="per_fold",
                        help="Adience: which published label files to read")
    parser.add_argument("--noncanonical", choices=["map", "drop"], default="map",
                        help="Adience original files: map odd ages like '35' to a group, or drop them")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad metadata line or unreadable image")


def _load(args) -> datasets.UnifiedDataset:
    options = {}
    if args.dataset == "adience":
        options = {"images": args.images, "metadata": args.metadata,
                   "noncanonical": args.noncanonical, "strict": args.strict}
    return datasets.load(args.dataset, args.path, **options)


def _split_spec(args) -> SplitSpec:
    return SplitSpec(protocol=args.protocol, folds=args.folds, test_size=args.test_size,
                     val_fraction=args.val_fraction, seed=args.seed)


SHOWN_PER_REASON = 20


def cmd_summary(args) -> int:
    import pandas as pd

    data = _load(args)
    table, dropped = data.crosstab(), data.dropped_by_reason()
    if args.json:
        print(json.dumps({
            "dataset": args.dataset, "path": args.path, "images": int(len(data.table)),
            "age_x_gender": {g: {a: int(v) for a, v in row.items()} for g, row in table.iterrows()},
            "dropped": {reason: int(n) for reason, n in dropped.items()},
            "dropped_rows": [{k: (None if pd.isna(v) else int(v) if k == "line" else v) for k, v in row.items()}
                             for row in data.dropped.to_dict("records")],
            "notes": data.notes,
        }, indent=2))
        return 0
    print(f"{args.dataset} at {args.path}: {len(data.table)} images with age group and gender\n")
    print(table.to_string())
    print(f"\nDropped rows: {int(dropped.sum())}")
    for reason, n in dropped.items():
        print(f"  {n:6d}  {reason}")
        rows = data.dropped[data.dropped["reason"] == reason]
        for row in rows.head(SHOWN_PER_REASON).itertuples():
            where = row.file if pd.isna(row.line) else f"{row.file}:{int(row.line)}"
            print(f"          {where}" + (f"  ({row.detail})" if row.detail else ""))
        if len(rows) > SHOWN_PER_REASON:
            print(f"          ... and {len(rows) - SHOWN_PER_REASON} more (all with --json)")
    for key, value in data.notes.get("non_canonical_ages", {}).get("counts", {}).items():
        print(f"  non-canonical age {key!r}: {value} ({data.notes['non_canonical_ages']['action']})")
    return 0


def cmd_plot_splits(args) -> int:
    from harness.analysis.plots import plot_split_balance
    from harness.data.splits import make_splits

    data = _load(args)
    manifest = make_splits(data.table, _split_spec(args))
    out = Path(args.out)
    manifest.save(out)
    paths = plot_split_balance(data.table, manifest, out, title=args.dataset)
    print(manifest.counts().to_string())
    print(f"\nmanifest: {out / 'splits.csv'}")
    for path in paths:
        print(f"plot: {path}")
    return 0


def cmd_cache(args) -> int:
    from harness.data import cache
    from harness.data.images import Preprocessing

    data = _load(args)
    prep = Preprocessing(size=args.size, crop=args.crop, equalize=args.equalize, color=args.color)
    built = cache.build(data.table["id"], data.table["path"], prep, cache_dir=args.cache_dir,
                        workers=args.workers, strict=args.strict, progress=True)
    print(f"cache: {built.directory} ({int(built.valid.sum())} images of shape {prep.shape})")
    for row in built.skipped.itertuples():
        print(f"skipped {row.path}: {row.reason}")
    return 0


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the runner; a BaseException so no handler swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum, frame):
    # The first signal stops the run; further ones are ignored so that the clean-up
    # (killing workers) is not itself interrupted and no traceback is printed.
    for handled in (signal.SIGINT, signal.SIGTERM):
        signal.signal(handled, signal.SIG_IGN)
    raise Interrupted(signum)


def cmd_run(args) -> int:
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args)
    except Interrupted as stop:
        print(f"\nharness: interrupted by {stop}: running trials were stopped and nothing was recorded "
              "for them; finished trials are kept. Run the same command again to resume.",
              file=sys.stderr)
        return 128 + stop.signum
    finally:
        for handled, handler in previous.items():
            signal.signal(handled, handler)


def _run(args) -> int:
    from harness.runs import experiments, runner
    from harness.runs.executors import LocalExecutor, RayExecutor, Reuse
    from harness.paths import child_path
    from harness.runs.index import trial_dir

    overrides = {"data.path": args.data} if args.data else {}
    if args.strict:
        overrides["data.strict"] = True
    experiment = experiments.load(args.experiment, overrides)
    root = Path(args.results)
    results = child_path(root, experiment.name, "experiment name")
    if args.new:
        results = runner.new_results_dir(experiment, root)
    if not args.overwrite:
        runner.check_results_dir(experiment, results)
    try:
        prepared = runner.prepare(experiment, dry_run=args.dry_run)
    except experiments.ExperimentError as err:
        raise experiments.ExperimentError(f"{args.experiment}: {err}") from None
    threads = experiment.resolved_threads()
    if args.dry_run:
        done = sum(runner.finished(trial_dir(results, t.trial_id), t.trial_id) for t in prepared.trials)
        print(f"{len(prepared.trials)} trials ({done} already done) in {results}, "
              f"{threads} threads each (dry run: nothing written)")
        for trial in prepared.trials:
            c = trial.config
            print(f"  {trial.trial_id}  {c.backend:8s} round {c.round}  {trial.model_name:20s} "
                  f"head={c.model.head} opt={c.training.optimizer} lr={c.training.learning_rate} "
                  f"epochs={c.training.epochs} batch={c.training.batch_size} {c.training.extras()}".rstrip())
        for row in prepared.skipped_images.itertuples():
            print(f"  would skip image {row.path}: {row.reason}")
        if len(prepared.unaligned_images):
            print(f"  {len(prepared.unaligned_images)} images have no face dlib finds and would be used whole "
                  "(align: dlib)")
        if len(prepared.dropped_rows):
            print(f"  {len(prepared.dropped_rows)} dataset rows left out by the adapter "
                  "(see harness data summary)")
        return 0
    cores = os.cpu_count() or 1
    if args.executor == "local" and args.workers * threads > cores:
        print(f"note: {args.workers} workers x {threads} threads each is more than this machine's "
              f"{cores} cores: the numbers stay the same, each trial runs slower", file=sys.stderr)
    if args.overwrite and runner.experiment_changes(experiment, results):
        runner.discard_results(results)
    reuse = None if args.fresh_process else Reuse(args.worker_trials, args.worker_memory_mb)
    executor = (RayExecutor(args.ray_address, reuse) if args.executor == "ray"
                else LocalExecutor(args.workers, reuse))
    counts = runner.run(experiment, results, executor, prepared=prepared)
    if len(prepared.unaligned_images):
        print(f"{len(prepared.unaligned_images)} images had no face dlib finds and were used whole: "
              f"{results / runner.UNALIGNED_FILE}", file=sys.stderr)
    print(f"{experiment.name}: {counts['completed']} completed, {counts['failed']} failed, "
          f"{counts['already_done']} already done; results in {results}")
    if not args.no_report:
        from harness.analysis.report import write_report
        print(f"report: {write_report(results)}")
    return 1 if counts["failed"] else 0


def cmd_report(args) -> int:
    from harness.analysis.report import write_report

    import shlex

    command = "harness " + shlex.join(["report", *sys.argv[2:]])
    print(f"report: {write_report(args.results_dir, args.out, command)}")
    return 0


def cmd_compare(args) -> int:
    import shlex

    from harness.analysis.report import write_comparison

    command = "harness " + shlex.join(["compare", *sys.argv[2:]])
    try:
        print(f"comparison: {write_comparison(args.first, args.second, args.out, command)}")
    except ValueError as err:
        print(f"harness compare: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_predict(args) -> int:
    import csv

    from harness.deploy.predict import classify, gate_threshold, image_files, open_model

    predictor = open_model(args.model, args.tta)
    files = image_files(args.images)
    if not files:
        raise ValueError(f"no images found in {' '.join(args.images)}")
    gate_at, source = gate_threshold(predictor, args.min_age, args.threshold)
    if args.min_age is not None and source.startswith("calibrated"):   # not the 0.5 the user may expect
        print(f"gate at {args.min_age:g}: allow needs adult probability >= {gate_at:.3f} ({source})",
              file=sys.stderr)
    results, failed = [], 0
    for path in files:
        faces = classify(predictor, path, args.threshold, args.min_age, gate_at)
        failed += any(r.error for r in faces)
        results += faces
        if not args.json:
            _print_faces(path, faces, stream=sys.stderr if any(r.error for r in faces) else sys.stdout)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    if args.csv:
        rows = [r.to_dict() for r in results]
        for row in rows:
            for key in ("age_probabilities", "gender_probabilities"):
                row.update({f"p {k}": v for k, v in row.pop(key).items()})
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {len(rows)} rows to {args.csv}", file=sys.stderr)
    return 1 if failed else 0


def cmd_export(args) -> int:
    from harness.deploy.export import export

    manifest = export(args.run_dir, args.out, args.quantize, args.format)
    parity = manifest.parity
    change = ", ".join(f"{k.replace('_accuracy', '')} {v:+.2f}" for k, v in parity.accuracy_change_points.items())
    print(f"exported {args.run_dir} -> {args.out} ({manifest.kind}, {args.format}, quantize {args.quantize}, "
          f"{parity.bytes:,} bytes, {parity.single_face_latency_ms:.2f} ms per face with LiteRT)")
    print(f"parity on {parity.test_faces} test faces: max |probability difference| "
          f"{parity.max_abs_probability_difference:.2e}, same labels for {parity.decoded_agreement:.1%}, "
          f"accuracy change in points: {change}")
    if parity.passed is False:
        print(f"harness export: error: the float32 export differs from the framework model by more than "
              f"{parity.tolerance:g} (kept in {args.out} for inspection)", file=sys.stderr)
        return 1
    return 0


def cmd_serve(args) -> int:
    import os

    from harness.deploy.serve import serve

    serve(args.model, args.host, args.port, args.token or os.environ.get("HARNESS_SERVE_TOKEN") or None,
          args.min_age, args.max_upload_mb, args.max_megapixels, args.queue, args.cors_origin, args.tta,
          args.ssl_certfile, args.ssl_keyfile)
    return 0


def cmd_ensemble(args) -> int:
    from harness.runs import ensemble

    results = Path(args.results_dir)
    if not results.is_dir():
        raise ValueError(f"{results}: no such results directory")
    if args.trials:
        groups, selection = ensemble.members_by_ids(results, args.trials), f"trials {' '.join(args.trials)}"
    else:
        groups = ensemble.members_by_rank(results, args.top, args.metric)
        selection = f"top {args.top} configurations by mean validation {args.metric}"
    out = Path(args.out) if args.out else results / ensemble.ENSEMBLES_DIR / (args.name or _ensemble_name(args))
    gate = None
    if args.gate_min_age is not None or args.gate_max_false_accept is not None or args.gate_confidence is not None:
        from harness.models.gate import GateSpec

        given = {"min_age": args.gate_min_age, "max_false_accept": args.gate_max_false_accept,
                 "confidence": args.gate_confidence}
        gate = GateSpec(**{k: v for k, v in given.items() if v is not None})
    scored = ensemble.build(results, groups, out, args.tta, selection, gate)
    for round_, result in scored.items():
        gate = result.get("gate") or {}
        gate_text = ""
        if gate.get("met") and gate.get("test_false_accept_rate") is not None:
            gate_text = (f"  gate at {gate['min_age']:g}: false accepts {gate['test_false_accept_rate']:.1%}, "
                         f"false rejects {gate['test_false_reject_rate']:.1%}")
        years_text = f"  age MAE {result['age_mae']:.2f} years" if "age_mae" in result else ""
        print(f"round {round_}: {result['members']} members  gender {result['gender_accuracy']:.1%}  "
              f"age exact {result['age_exact_accuracy']:.1%}  1-off {result['age_one_off_accuracy']:.1%}  "
              f"joint {result['joint_accuracy']:.1%}{years_text}{gate_text}")
    print(f"ensemble: {out} ({selection}{', tta ' + args.tta if args.tta else ''})")
    return 0


def _ensemble_name(args) -> str:
    if args.trials:
        import hashlib

        return "trials-" + hashlib.sha256(" ".join(sorted(args.trials)).encode()).hexdigest()[:8] + (
            f"-tta-{args.tta}" if args.tta else "")
    return f"top{args.top}-{args.metric}" + (f"-tta-{args.tta}" if args.tta else "")


def _print_faces(path, faces, stream) -> None:
    print(path, file=stream)
    for r in faces:
        where = f"face {r.face} at {r.box}: " if r.box else ""
        detail = ""
        if r.age_group:
            detail = (f"  [age {r.age_group} p={r.age_probabilities[r.age_group]:.2f}, "
                      f"{r.gender} p={r.gender_probabilities[r.gender]:.2f}]")
        gate = ""
        if r.gate:
            mass = "" if r.adult_probability is None else f" (p adult {r.adult_probability:.2f})"
            gate = f"  gate: {r.gate}{mass}"
        print(f"  {where}{r.sentence}{detail}{gate}", file=stream)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (a probability), got {text}")
    return value


def _age(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an age in years, got {text!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 150.0:
        raise argparse.ArgumentTypeError(f"must be an age in years between 0 and 150, got {text}")
    return value


def _positive(number):
    def parse(text: str):
        try:
            value = number(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive {number.__name__}, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an experiment's trials (resumable)")
    run.add_argument("experiment", help="experiment YAML file")
    run.add_argument("--results", default="results", help="results root (default: results)")
    run.add_argument("--workers", type=int, default=1, help="trials at once")
    run.add_argument("--executor", choices=["local", "ray"], default="local")
    run.add_argument("--ray-address", default=None, help="Ray cluster (default: a local instance)")
    run.add_argument("--data", help="override the experiment's data.path")
    run.add_argument("--dry-run", action="store_true", help="list the trials, train nothing")
    run.add_argument("--strict", action="store_true",
                     help="stop at an unreadable image (default: skip it and list it)")
    run.add_argument("--no-report", action="store_true")
    reuse = run.add_argument_group("worker processes", "by default a worker process trains many trials of "
                                   "one backend in turn, importing its framework once")
    reuse.add_argument("--fresh-process", action="store_true", help="one new process per trial instead")
    reuse.add_argument("--worker-trials", type=_positive(int), default=100, metavar="N",
                       help="start a new worker after N trials (default 100)")
    reuse.add_argument("--worker-memory-mb", type=_positive(float), default=None, metavar="MB",
                       help="start a new worker once one holds more than MB of memory after a trial "
                            "(default: half of this machine's memory, shared by --workers)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--new", action="store_true",
                       help="if the results directory holds a different experiment, use NAME-2, NAME-3, ...")
    where.add_argument("--overwrite", action="store_true",
                       help="if the results directory holds a different experiment, discard its results")
    run.set_defaults(func=cmd_run)

    predict = commands.add_parser("predict", help="classify the faces in photos with a trained run")
    predict.add_argument("--model", required=True,
                         help="a finished trial directory (RUN_DIR), an ensemble round (ENSEMBLE/round-N) "
                              "or an export folder (harness export; run by LiteRT)")
    predict.add_argument("images", nargs="+", help="image files or directories")
    predict.add_argument("--json", action="store_true", help="machine-readable output")
    predict.add_argument("--csv", help="also write one row per face to this CSV")
    predict.add_argument("--min-age", type=_age, help="age gate: allow / deny / undefined per face")
    predict.add_argument("--threshold", type=_probability,
                         help="confidence below which a face is Undefined (default: none), "
                              "and the adult probability --min-age needs to allow (default: the "
                              "run's calibrated gate threshold for that age, else 0.5)")
    predict.add_argument("--tta", choices=["flip"], help="average each face with its mirror image")
    predict.set_defaults(func=cmd_predict)

    exp = commands.add_parser("export", help="a finished run (or ensemble round) as a TFLite model folder "
                                             "with a manifest and measured parity")
    exp.add_argument("run_dir", help="a finished trial directory or an ensemble round")
    exp.add_argument("--format", choices=["tflite"], default="tflite")
    exp.add_argument("--quantize", choices=["none", "dynamic", "int8"], default="none",
                     help="none: float32; dynamic: int8 weights; int8: int8 weights and activations, "
                          "calibrated on the run's training images")
    exp.add_argument("--out", required=True, help="export folder (new, empty, or an earlier export)")
    exp.set_defaults(func=cmd_export)

    srv = commands.add_parser("serve", help="an HTTP API and a phone page for a trained or exported model")
    srv.add_argument("--model", required=True, help="a finished trial, an ensemble round or an export folder")
    srv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only; "
                                                          "any other needs --token)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every /v1 call (default: "
                                     "$HARNESS_SERVE_TOKEN; keeps the token out of the process list)")
    srv.add_argument("--min-age", type=_age, default=18, help="the door's age (default 18)")
    srv.add_argument("--max-upload-mb", type=float, default=10, help="larger uploads get 413 (default 10)")
    srv.add_argument("--max-megapixels", type=float, default=50,
                     help="larger images get 413 before they are decoded (default 50)")
    srv.add_argument("--queue", type=int, default=32, help="photos waiting for the model before 503 (default 32)")
    srv.add_argument("--cors-origin", action="append", help="allow this browser origin (repeatable; default none)")
    srv.add_argument("--tta", choices=["flip"], help="average each face with its mirror image")
    srv.add_argument("--ssl-certfile", help="serve HTTPS (phones need it for the live camera on the LAN)")
    srv.add_argument("--ssl-keyfile")
    srv.set_defaults(func=cmd_serve)

    ens = commands.add_parser("ensemble", help="average finished trials' predictions; scored like a trial")
    ens.add_argument("results_dir", help="an experiment's results directory")
    chosen = ens.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--trials", nargs="+", metavar="ID", help="these trials (one split and round)")
    chosen.add_argument("--top", type=int, metavar="K",
                        help="per round, the K configurations best on the validation split")
    ens.add_argument("--metric", default="joint_accuracy", help="ranks --top (validation; default joint_accuracy)")
    ens.add_argument("--tta", choices=["flip"], help="members predict each face and its mirror (pixel inputs)")
    ens.add_argument("--gate-min-age", type=_age, help="calibrate the door gate for this age (default: "
                                                         "the experiment's gate:)")
    ens.add_argument("--gate-max-false-accept", type=_probability,
                     help="target share of under-age validation faces let in (default 0.02)")
    ens.add_argument("--gate-confidence", type=_probability,
                     help="judge the target by the false-accept rate's upper confidence bound at this level")
    ens.add_argument("--name", help="folder name under RESULTS_DIR/ensembles (default from the selection)")
    ens.add_argument("--out", help="write here instead of RESULTS_DIR/ensembles/NAME (the report lists "
                                   "only ensembles under RESULTS_DIR/ensembles)")
    ens.set_defaults(func=cmd_ensemble)

    report = commands.add_parser("report", help="tables and plots from stored results")
    report.add_argument("results_dir")
    report.add_argument("--out", help="write report.md, report.html, tables/ and plots/ here instead of "
                                      "into RESULTS_DIR (for publishing, e.g. docs/results/NAME)")
    report.set_defaults(func=cmd_report)

    compare = commands.add_parser("compare", help="two experiments on the same faces, configuration by "
                                                  "configuration (e.g. pixels vs embeddings)")
    compare.add_argument("first", help="results directory A")
    compare.add_argument("second", help="results directory B (the reference: differences are A − B)")
    compare.add_argument("--out", required=True, help="folder for report.md, report.html, tables/, plots/")
    compare.set_defaults(func=cmd_compare)

    data = commands.add_parser("data", help="inspect and prepare datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    summary = data_commands.add_parser("summary", help="age x gender table and dropped rows")
    _add_dataset_args(summary)
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(func=cmd_summary)

    plot = data_commands.add_parser("plot-splits", help="class balance of each split, as PNGs")
    _add_dataset_args(plot)
    plot.add_argument("--protocol", default="stratified_kfold",
                      choices=["adience_folds", "stratified_kfold", "random"])
    plot.add_argument("--folds", type=int, default=5)
    plot.add_argument("--test-size", type=float, default=0.33)
    plot.add_argument("--val-fraction", type=float, default=0.1)
    plot.add_argument("--seed", type=int, default=0)
    plot.add_argument("--out", default="results/data/splits")
    plot.set_defaults(func=cmd_plot_splits)

    build = data_commands.add_parser("cache", help="decode and cache the images as arrays")
    _add_dataset_args(build)
    build.add_argument("--size", type=int, default=64)
    build.add_argument("--crop", type=float, default=1.0)
    build.add_argument("--equalize", action="store_true")
    build.add_argument("--color", choices=["rgb", "ycbcr", "grayscale"], default="rgb")
    build.add_argument("--workers", type=int)
    build.add_argument("--cache-dir")
    build.set_defaults(func=cmd_cache)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:   # `harness run` handles its own; this is every other command
        print("\nharness: interrupted", file=sys.stderr)
        return 130
    except (DatasetError, ValueError, OSError, RuntimeError) as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return 2
