"""``harness run``: expand an experiment into trials and run the ones not yet done.

The runner schedules; the worker trains. Resumable by construction: a trial whose
directory has DONE (written last by the worker) is never run again; a directory
without it is a partial trial and is wiped and redone. A failing trial is recorded
with its error and log tail, and the others go on. A trial's id covers the data it
reads, and a results directory holding a different experiment is refused, so an old
result is never reported under a new experiment.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from harness.data import cache, datasets
from harness.runs.executors import Job
from harness.runs.experiments import Experiment, ExperimentError, Trial, exact_age_uses, expand
from harness.data.labels import to_joint
from harness.paths import child_path
from harness.runs.index import CURRENT_TRIALS_FILE, INDEX_FILE, append_record, read_index, repair_index, trial_dir, write_atomic
from harness.data.splits import SplitManifest, make_splits
from harness.runs.trial import DONE_FILE, LOG_FILE, METRICS_FILE, data_fingerprint, write_trial

EXPERIMENT_FILE = "experiment.json"
SPLITS_DIR = "splits"
SKIPPED_FILE = "skipped_images.csv"
UNALIGNED_FILE = "unaligned_images.csv"
# Keys of an experiment that do not decide any trial's result: changing them in an
# existing results directory is allowed.
HARMLESS_KEYS = ("description", "time_limit_s", "data.strict", "baseline")  # none changes a trial


class ResultsConflict(ValueError):
    """The results directory holds a different experiment; nothing was written."""


DROPPED_FILE = "dropped_rows.csv"


@dataclass
class Prepared:
    table: pd.DataFrame
    manifest: SplitManifest
    trials: list[Trial]
    skipped_images: pd.DataFrame
    dropped_rows: pd.DataFrame       # dataset rows the adapter left out (malformed names, ...)
    unaligned_images: pd.DataFrame   # align: dlib found no face; the whole image was used


def load_dataset(experiment: Experiment) -> datasets.UnifiedDataset:
    spec = experiment.data
    options = {}
    if spec.dataset == "adience":
        options = {"images": spec.images, "metadata": spec.metadata, "noncanonical": spec.noncanonical}
    return datasets.load(spec.dataset, spec.path, **options)


def load_table(experiment: Experiment, dataset: datasets.UnifiedDataset | None = None) -> pd.DataFrame:
    spec = experiment.data
    table = (dataset or load_dataset(experiment)).table
    if spec.limit and spec.limit < len(table):
        classes = to_joint(table["age_group"].to_numpy(), table["gender"].to_numpy())
        try:
            keep, _ = train_test_split(table.index, train_size=spec.limit, random_state=experiment.split.seed,
                                       stratify=classes)
        except ValueError as err:
            raise ExperimentError(f"data.limit: cannot draw a stratified sample of {spec.limit} from "
                                  f"{len(table)} images ({err})") from None
        table = table.loc[sorted(keep)].reset_index(drop=True)
    return table


def _nothing_usable(table: pd.DataFrame, skipped: pd.DataFrame, experiment: Experiment) -> str:
    reasons = skipped["reason"].value_counts()
    where = experiment.data.images or experiment.data.path
    detail = "; ".join(f"{n} {reason}" for reason, n in reasons.items())
    example = skipped["path"].iloc[0] if len(skipped) else "?"
    hint = ""
    if reasons.get("file not found", 0) == len(table):
        hint = (f": all {len(table)} images were not found under {where}"
                + (" (data.images must be the folder holding aligned/ or faces/)"
                   if experiment.data.dataset == "adience" else ""))
    return f"none of the {len(table)} images could be used{hint} [{detail}; first: {example}]"


def prepare(experiment: Experiment, dry_run: bool = False, workers: int | None = None) -> Prepared:
    """Dataset -> table -> cache -> manifest -> trials, all in memory. Deterministic.

    Nothing is written to a results directory here (see :func:`save_prepared`). The array
    cache is content-addressed and outside the results; a dry run that finds no entry
    builds one in a temporary folder and removes it, so it leaves nothing on disk.
    """
    dataset = load_dataset(experiment)
    table = load_table(experiment, dataset)
    uses = exact_age_uses(experiment)
    without_age = int(table["age"].isna().sum())
    if uses and without_age:
        raise ExperimentError(
            f"{' and '.join(uses)}: need(s) each face's exact age in years, but {without_age} of the "
            f"{len(table)} {experiment.data.dataset} faces have only an age group (Adience labels groups; "
            "UTKFace and a CSV with an 'age' column have exact ages)")
    with contextlib.ExitStack() as stack:
        cache_dir = None
        if dry_run and cache.lookup(table["id"], table["path"], experiment.preprocessing) is None:
            cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="harness-dry-run-"))
        built = cache.build(table["id"], table["path"], experiment.preprocessing, cache_dir=cache_dir,
                            workers=workers, strict=experiment.data.strict, progress=True)
        valid_ids = set(built.valid_ids())
    # Images that cannot be decoded leave the experiment here, listed, before any split.
    usable = table[table["id"].isin(valid_ids)].reset_index(drop=True)
    if usable.empty:
        raise ExperimentError(_nothing_usable(table, built.skipped, experiment))
    try:
        manifest = make_splits(usable, experiment.split)
    except ValueError as err:
        raise ExperimentError(f"split: cannot make the {experiment.split.protocol} split of "
                              f"{len(usable)} images: {err}") from None
    rounds = experiment.rounds if experiment.rounds is not None else manifest.rounds
    missing = sorted(set(rounds) - set(manifest.rounds))
    if missing:
        raise ExperimentError(f"rounds: {missing} do not exist; the split has rounds {manifest.rounds}")
    fingerprints = {r: data_fingerprint(built.directory.name, manifest, r, usable) for r in rounds}
    trials = expand(experiment, fingerprints, str(built.directory.resolve()))
    unaligned = built.unaligned[built.unaligned["id"].isin(set(usable["id"]))].reset_index(drop=True)
    return Prepared(usable, manifest, trials, built.skipped, dataset.dropped, unaligned)


def _flatten(value, prefix="") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def experiment_changes(experiment: Experiment, results_dir: Path) -> list[str]:
    """Keys that differ from the experiment stored in ``results_dir`` (empty: same or none)."""
    stored_file = results_dir / EXPERIMENT_FILE
    if not stored_file.is_file():
        return []
    try:
        stored = _flatten(json.loads(stored_file.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return [f"{EXPERIMENT_FILE} (unreadable)"]
    current = _flatten(experiment.model_dump(mode="json"))
    keys = sorted(set(stored) | set(current))
    # A key absent from an older experiment.json equals a newer key left at null (an
    # option added since, not used): that is not a change.
    return [k for k in keys if stored.get(k) != current.get(k)
            and not any(k == h or k.startswith(h + ".") for h in HARMLESS_KEYS)]


def check_results_dir(experiment: Experiment, results_dir: Path) -> None:
    """Refuse a results directory that holds a different experiment, naming what differs."""
    changes = experiment_changes(experiment, results_dir)
    if changes:
        shown = ", ".join(changes[:8]) + (f" and {len(changes) - 8} more" if len(changes) > 8 else "")
        raise ResultsConflict(
            f"{results_dir} holds a different experiment (changed: {shown}); its results would "
            "be mixed with this one's. Use --new to write to a new results directory, "
            "--overwrite to discard the old results, or give the experiment another name.")


def new_results_dir(experiment: Experiment, results_root: Path) -> Path:
    """The first ``<name>-N`` that is free or holds this very experiment (so --new resumes)."""
    n = 2
    while True:
        candidate = child_path(results_root, f"{experiment.name}-{n}", "experiment name")
        if not candidate.exists() or ((candidate / EXPERIMENT_FILE).is_file()
                                      and not experiment_changes(experiment, candidate)):
            return candidate
        n += 1


def discard_results(results_dir: Path) -> None:
    """--overwrite: remove a results directory, but only one the harness wrote."""
    if not results_dir.exists():
        return
    if not ((results_dir / EXPERIMENT_FILE).is_file() or (results_dir / INDEX_FILE).is_file()):
        raise ResultsConflict(f"{results_dir} is not a harness results directory "
                              f"(no {EXPERIMENT_FILE}); refusing to delete it")
    shutil.rmtree(results_dir)


def save_prepared(experiment: Experiment, prepared: Prepared, results_dir: Path) -> None:
    """Write what the trials were prepared from: only when they are about to run."""
    results_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(results_dir / EXPERIMENT_FILE, lambda p: p.write_text(experiment.model_dump_json(indent=2)))
    prepared.manifest.save(results_dir / SPLITS_DIR)
    write_atomic(results_dir / SPLITS_DIR / "table.csv", lambda p: prepared.table.to_csv(p, index=False))
    write_atomic(results_dir / SKIPPED_FILE, lambda p: prepared.skipped_images.to_csv(p, index=False))
    write_atomic(results_dir / DROPPED_FILE, lambda p: prepared.dropped_rows.to_csv(p, index=False))
    write_atomic(results_dir / UNALIGNED_FILE, lambda p: prepared.unaligned_images.to_csv(p, index=False))
    # The report shows these trials only: a trial left in the index from data that has
    # since changed on disk (new ids) is never presented as part of this experiment.
    write_atomic(results_dir / CURRENT_TRIALS_FILE,
                  lambda p: p.write_text(json.dumps(sorted(t.trial_id for t in prepared.trials), indent=0)))


def finished(run_dir: Path, trial_id: str) -> bool:
    """DONE exists and names this very trial (the worker writes the id it trained)."""
    try:
        return (run_dir / DONE_FILE).read_text().strip() == trial_id
    except OSError:
        return False


def _record(trial: Trial, status: str, seconds: float, run_dir: Path, error: str | None = None) -> dict:
    metrics = {}
    if (run_dir / METRICS_FILE).is_file():
        metrics = {k: v for k, v in json.loads((run_dir / METRICS_FILE).read_text()).items()
                   if not k.endswith("confusion")}
    return {"trial_id": trial.trial_id, "status": status, "model_name": trial.model_name,
            "backend": trial.config.backend, "round": trial.config.round, "seconds": round(seconds, 3),
            "config": trial.config.model_dump(mode="json", exclude={"cache_entry"}),
            "metrics": metrics, "error": error, "finished_at": time.time()}


def _log_tail(run_dir: Path, lines: int = 20) -> str:
    log = run_dir / LOG_FILE
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else ""


def _failure(outcome, time_limit_s) -> str:
    if outcome.returncode is None:
        return f"passed its time limit of {time_limit_s} s and was killed"
    if outcome.returncode < 0:
        return f"killed by signal {-outcome.returncode} (out of memory?)"
    last = [line for line in outcome.stderr_tail.splitlines() if line.strip()]
    return last[-1] if last else f"worker exited with code {outcome.returncode}"


def run(experiment: Experiment, results_dir: str | Path, executor, progress: bool = True,
        prepared: Prepared | None = None) -> dict:
    """Run every trial not yet done. Returns counts: completed, failed, already_done.

    On an interrupt (KeyboardInterrupt, or any exception) the executor's running workers
    are killed and nothing is recorded for them; the exception then propagates.
    """
    results_dir = Path(results_dir)
    check_results_dir(experiment, results_dir)
    prepared = prepared or prepare(experiment)
    save_prepared(experiment, prepared, results_dir)
    repair_index(results_dir)
    index = read_index(results_dir)
    todo, counts = [], {"completed": 0, "failed": 0, "already_done": 0}
    for trial in prepared.trials:
        run_dir = trial_dir(results_dir, trial.trial_id)
        if finished(run_dir, trial.trial_id):
            if index.get(trial.trial_id, {}).get("status") != "completed":
                # Finished, but the runner died before recording it: record, never rerun.
                append_record(results_dir, _record(trial, "completed", 0.0, run_dir))
            counts["already_done"] += 1
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)   # a partial trial: start it again from nothing
        write_trial(run_dir, trial.config, prepared.table, prepared.manifest)
        todo.append(trial)

    by_id = {t.trial_id: t for t in todo}
    jobs = [Job(t.trial_id, str(trial_dir(results_dir, t.trial_id)), experiment.time_limit_s,
                t.config.threads, t.config.backend, f"{t.config.data_fingerprint}/{t.config.round}")
            for t in todo]
    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=experiment.name, unit="trial")
    try:
        for trial_id, outcome in executor.map_unordered(jobs):
            trial, run_dir = by_id[trial_id], trial_dir(results_dir, trial_id)
            if outcome.returncode == 0 and (run_dir / DONE_FILE).is_file():
                append_record(results_dir, _record(trial, "completed", outcome.seconds, run_dir))
                counts["completed"] += 1
            else:
                error = _failure(outcome, experiment.time_limit_s)
                record = _record(trial, "failed", outcome.seconds, run_dir, error)
                record["log_tail"] = _log_tail(run_dir) or outcome.stderr_tail[-2000:]
                append_record(results_dir, record)
                counts["failed"] += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(failed=counts["failed"])
    except BaseException:
        executor.stop()
        raise
    finally:
        if bar is not None:
            bar.close()
    return counts
