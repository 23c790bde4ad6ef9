"""``harness run``: an experiment file's trials, resumable, then its report."""
from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path

from harness.cli.options import positive


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
    from harness.paths import child_path
    from harness.runs import experiment_file, results_dir

    if args.check_faces and not args.dry_run:
        raise ValueError("--check-faces goes with --dry-run (a real run checks every face anyway)")
    overrides = {"data.path": args.data} if args.data else {}
    if args.strict:
        overrides["data.strict"] = True
    experiment = experiment_file.load(args.experiment, overrides)
    root = Path(args.results)
    results = child_path(root, experiment.name, "experiment name")
    if args.new:
        results = results_dir.new_results_dir(experiment, root)
    if not args.overwrite:
        results_dir.check_results_dir(experiment, results)
    if args.dry_run:
        return _dry_run(args, experiment, results)
    prepared = _prepared(args, experiment)   # a run refused here writes nothing at all
    # Held from the discard of an old experiment to the last trial: one run into a folder at a time.
    try:
        with results_dir.hold(results):
            return _run_held(args, experiment, results, prepared)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OSError(f"{err.filename or results}: no space left on its disk; free some space and run the same "
                      "command again: the trials that finished are kept and the run resumes with the rest") from None


def _prepared(args, experiment):
    from harness.runs import prepare
    from harness.runs.experiment import ExperimentError

    try:
        return prepare.prepare(experiment, dry_run=args.dry_run, check_faces=args.check_faces)
    except ExperimentError as err:
        raise ExperimentError(f"{args.experiment}: {err}") from None


def _dry_run(args, experiment, results) -> int:
    from harness.runs.index import trial_dir
    from harness.runs.layout import finished

    prepared = _prepared(args, experiment)
    threads = experiment.resolved_threads()
    if experiment.search is not None:
        from harness.runs.search import dimensions

        spec = experiment.search
        print(f"search: sampler {spec.sampler}, {spec.trials or 'every'} configuration(s) by "
              f"{spec.metric} ({spec.direction}), each trained by {', '.join(experiment.backends)} on "
              f"{len(experiment.rounds or prepared.manifest.rounds)} round(s), {threads} threads a trial, in "
              f"{results} (dry run: nothing written)")
        if spec.pruner != "none":
            options = {k: getattr(spec, k) for k in ("min_epochs", "reduction_factor", "startup_configurations")
                       if getattr(spec, k) is not None}
            print(f"  pruner {spec.pruner} ({', '.join(f'{k} {v}' for k, v in options.items())}), judging the mean "
                  f"{spec.metric} over each configuration's trials after every epoch")
        for name, distribution in dimensions(experiment).items():
            print(f"  {name}: {distribution}")
    else:
        done = sum(finished(trial_dir(results, t.trial_id), t.trial_id) for t in prepared.trials)
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
    for preprocessing, last in prepared.pending:
        print(f"  {_compute_note(prepared.to_compute, preprocessing, last)}")
    if len(prepared.dropped_rows):
        print(f"  {len(prepared.dropped_rows)} dataset rows left out by the adapter "
              "(see harness data summary)")
    return 0


def _run_held(args, experiment, results, prepared) -> int:
    from harness.runs import results_dir, runner
    from harness.runs.executors import LocalExecutor, RayExecutor, Reuse
    from harness.runs.layout import UNALIGNED_FILE

    threads = experiment.resolved_threads()
    cores = os.cpu_count() or 1
    if args.executor == "local" and args.workers * threads > cores:
        print(f"note: {args.workers} workers x {threads} threads each is more than this machine's "
              f"{cores} cores: the numbers stay the same, each trial runs slower", file=sys.stderr)
    if args.overwrite and results_dir.experiment_changes(experiment, results):
        results_dir.discard_results(results)
    reuse = None if args.fresh_process else Reuse(args.worker_trials, args.worker_memory_mb)
    executor = (RayExecutor(args.ray_address, reuse) if args.executor == "ray"
                else LocalExecutor(args.workers, reuse))
    counts = runner.run(experiment, results, executor, prepared=prepared)
    if len(prepared.unaligned_images):
        print(f"{len(prepared.unaligned_images)} images had no face dlib finds and were used whole: "
              f"{results / UNALIGNED_FILE}", file=sys.stderr)
    searched = (f"{counts['configurations']} configuration(s) told the sampler, {counts['pruned_configurations']} "
                f"pruned, {counts['failed_configurations']} failed; " if "configurations" in counts else "")
    print(f"{experiment.name}: {searched}{counts['completed']} completed, {counts['failed']} failed, "
          f"{counts['already_done']} already done; results in {results}")
    if not args.no_report:
        from harness.analysis.report import write_report
        print(f"report: {write_report(results)}")
    return 1 if counts["failed"] else 0


def _compute_note(images: int, preprocessing, last: dict | None) -> str:
    """What a real run would compute first, and how long that took last time (the cache's own timing)."""
    what = ("image arrays" if not preprocessing.embedding else "face descriptors"
            if preprocessing.descriptor_features == "embedding" else f"{preprocessing.descriptor_features} features")
    note = f"{images} images' {what} are not cached yet and would be computed first"
    if last:
        per_image = last["seconds"] / last["images"]
        note += (f": the last build with this preprocessing took {last['seconds']:.1f} s for {last['images']} "
                 f"images on {last['workers']} workers, about {per_image * images:.0f} s for these")
    note += ("; trial ids hold unless an image turns out undecodable (--check-faces decodes them now)")
    return note


def register(commands) -> None:
    run = commands.add_parser("run", help="run an experiment's trials (resumable)")
    run.add_argument("experiment", help="experiment YAML file")
    run.add_argument("--results", default="results", help="results root (default: results)")
    run.add_argument("--workers", type=int, default=1, help="trials at once")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="where trials run: worker processes on this machine, or Ray actors (default local)")
    run.add_argument("--ray-address", default=None, help="Ray cluster (default: a local instance)")
    run.add_argument("--data", help="override the experiment's data.path")
    run.add_argument("--dry-run", action="store_true",
                     help="validate the experiment and list its trials; train and compute nothing")
    run.add_argument("--check-faces", action="store_true",
                     help="with --dry-run: also decode every image (and find its face) to list those a run "
                          "would skip or use unaligned (as slow as computing them)")
    run.add_argument("--strict", action="store_true",
                     help="stop at an unreadable image (default: skip it and list it)")
    run.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    reuse = run.add_argument_group("worker processes", "by default a worker process trains many trials of "
                                   "one backend in turn, importing its framework once")
    reuse.add_argument("--fresh-process", action="store_true", help="one new process per trial instead")
    reuse.add_argument("--worker-trials", type=positive(int), default=100, metavar="N",
                       help="start a new worker after N trials (default 100)")
    reuse.add_argument("--worker-memory-mb", type=positive(float), default=None, metavar="MB",
                       help="start a new worker once one holds more than MB of memory after a trial "
                            "(default: half of this machine's memory, shared by --workers)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--new", action="store_true",
                       help="if the results directory holds a different experiment, use NAME-2, NAME-3, ...")
    where.add_argument("--overwrite", action="store_true",
                       help="if the results directory holds a different experiment, discard its results")
    run.set_defaults(func=cmd_run)

