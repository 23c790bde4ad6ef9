"""An experiment made ready to run, in memory: dataset -> table -> cache -> split -> trials.

Nothing here writes into a results folder (:func:`save_prepared` does, and only when
the trials are about to run). A dry run computes no image arrays or face descriptors:
it hashes the image files (the cache key), counts what would be computed and quotes how
long the last build with the same preprocessing took.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
from sklearn.model_selection import train_test_split

from harness.data import cache, datasets
from harness.data.images import Preprocessing
from harness.data.labels import to_joint
from harness.data.splits import SplitManifest, make_splits
from harness.files import write_atomic
from harness.runs.experiment import Experiment, ExperimentError
from harness.runs.grid import Trial, exact_age_uses, expand, group_uses, inputs_needed
from harness.runs.layout import (
    CURRENT_TRIALS_FILE,
    DROPPED_FILE,
    EXPERIMENT_FILE,
    SKIPPED_FILE,
    SPLITS_DIR,
    TABLE_FILE,
    UNALIGNED_FILE,
)
from harness.runs.trial import data_fingerprint

__all__ = ["Prepared", "prepare", "save_prepared", "load_dataset", "load_table"]


@dataclass
class Prepared:
    table: pd.DataFrame
    manifest: SplitManifest
    trials: list[Trial]
    skipped_images: pd.DataFrame
    dropped_rows: pd.DataFrame       # dataset rows the adapter left out (malformed names, ...)
    unaligned_images: pd.DataFrame   # align: dlib found no face; the whole image was used
    # A dry run that computed nothing: how many images a real run would compute, and for
    # each input not cached yet, the timing of its last build ({"seconds", "images",
    # "workers"}, or None).
    to_compute: int = 0
    pending: list[tuple[Preprocessing, dict | None]] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)   # the rounds each configuration is trained on
    # preprocessing -> (cache entry, round -> data fingerprint): what a configuration chosen
    # later (a search's) needs to become trials (harness.runs.grid.trials_of).
    locate: Callable | None = None


def load_dataset(experiment: Experiment) -> datasets.UnifiedDataset:
    return datasets.load_spec(experiment.data)


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


def prepare(experiment: Experiment, dry_run: bool = False, workers: int | None = None,
            check_faces: bool = False) -> Prepared:
    """Dataset -> table -> cache -> manifest -> trials, all in memory. Deterministic.

    Nothing is written to a results directory here (see :func:`save_prepared`). The array
    cache is content-addressed and outside the results. A dry run that finds no entry
    computes nothing: images whose file is missing are left out (as a real run would),
    and the trial ids hold unless an image turns out undecodable. ``check_faces`` (with
    ``dry_run``) decodes every image (and finds its face) into a temporary entry that is
    then removed, to list the images a real run would skip or use unaligned.
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
    if group_uses(experiment) and ("group" not in table or table["group"].isna().all()):
        raise ExperimentError(
            f"{group_uses(experiment)[0]}: needs each face's group, but the {experiment.data.dataset} faces have "
            "none (UTKFace gives race; a CSV dataset a 'group' column; Adience has none)")
    ids, paths = table["id"], table["path"]
    needed = inputs_needed(experiment)
    if dry_run and any(cache.lookup(ids, paths, prep) is None for prep in needed):
        if not check_faces:
            return _counted(experiment, dataset, table, needed)
        with tempfile.TemporaryDirectory(prefix="harness-dry-run-") as scratch:
            builds = {}
            for prep in needed:
                built = cache.lookup(ids, paths, prep)
                if built is None:
                    built = cache.build(ids, paths, prep, cache_dir=scratch, workers=workers,
                                        strict=experiment.data.strict, progress=True)
                builds[prep] = (built, cache.default_cache_dir() / built.directory.name)  # where a real run builds it
            return _finish_built(experiment, dataset, table, builds)
    builds = {}
    for prep in needed:
        built = cache.build(ids, paths, prep, workers=workers, strict=experiment.data.strict, progress=True)
        builds[prep] = (built, built.directory)
    return _finish_built(experiment, dataset, table, builds)


def _finish_built(experiment: Experiment, dataset, table: pd.DataFrame, builds: dict) -> Prepared:
    """Several entries (the experiment's own, a cut's): a face any of them could not use
    leaves the experiment, so every trial splits the same faces."""
    valid = set.intersection(*(set(built.valid_ids()) for built, _ in builds.values()))
    skipped = _first_per_id([built.skipped for built, _ in builds.values()])
    unaligned = _first_per_id([built.unaligned for built, _ in builds.values()])
    return _finish(experiment, dataset, table, valid, {prep: entry for prep, (_, entry) in builds.items()},
                   skipped, unaligned)


def _first_per_id(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["id", "path", "reason"])
    return pd.concat(frames).drop_duplicates("id").reset_index(drop=True)


def _counted(experiment: Experiment, dataset, table: pd.DataFrame, needed: list) -> Prepared:
    """A dry run's trials without computing any image: the cache key from the files' bytes,
    files that cannot be read left out (listed as a build would list them)."""
    ids, paths = table["id"].tolist(), table["path"].astype(str).tolist()
    entries, pending, valid, skipped = {}, [], set(ids), []
    for prep in needed:
        found = cache.lookup(ids, paths, prep)
        if found is not None:
            entries[prep] = found.directory
            valid &= set(found.valid_ids())
            skipped.append(found.skipped)
            continue
        missing: list[int] = []
        entries[prep] = cache.default_cache_dir() / cache.fingerprint(ids, paths, prep, missing)
        lost = pd.DataFrame([{"id": ids[row], "path": paths[row], "reason": "file not found"} for row in missing],
                            columns=["id", "path", "reason"])
        valid -= set(lost["id"])
        skipped.append(lost)
        pending.append((prep, cache.last_build(prep)))
    prepared = _finish(experiment, dataset, table, valid, entries, _first_per_id(skipped),
                       pd.DataFrame(columns=["id", "path", "reason"]))
    prepared.pending = pending
    prepared.to_compute = len(ids)
    return prepared


def _finish(experiment: Experiment, dataset, table: pd.DataFrame, valid_ids: set, entries: dict,
            skipped: pd.DataFrame, unaligned: pd.DataFrame) -> Prepared:
    # Images that cannot be decoded leave the experiment here, listed, before any split.
    usable = table[table["id"].isin(valid_ids)].reset_index(drop=True)
    if usable.empty:
        raise ExperimentError(_nothing_usable(table, skipped, experiment))
    try:
        manifest = make_splits(usable, experiment.split)
    except ValueError as err:
        raise ExperimentError(f"split: cannot make the {experiment.split.protocol} split of "
                              f"{len(usable)} images: {err}") from None
    rounds = experiment.rounds if experiment.rounds is not None else manifest.rounds
    missing = sorted(set(rounds) - set(manifest.rounds))
    if missing:
        raise ExperimentError(f"rounds: {missing} do not exist; the split has rounds {manifest.rounds}")

    entries = dict(entries)

    def locate(prep):
        if prep not in entries:   # an input only a searched configuration reads (a cut the space chose)
            entries[prep] = cache.build(usable["id"], usable["path"], prep, strict=experiment.data.strict).directory
        entry = Path(entries[prep])
        return str(entry.resolve()), {r: data_fingerprint(entry.name, manifest, r, usable) for r in rounds}

    # A search chooses its configurations as it goes (harness.runs.search): none yet.
    trials = expand(experiment, locate) if experiment.search is None else []
    unaligned = unaligned[unaligned["id"].isin(set(usable["id"]))].reset_index(drop=True)
    return Prepared(usable, manifest, trials, skipped, dataset.dropped, unaligned, locate=locate, rounds=list(rounds))


def save_prepared(experiment: Experiment, prepared: Prepared, results_dir: Path) -> None:
    """Write what the trials were prepared from: only when they are about to run."""
    results_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(results_dir / EXPERIMENT_FILE, lambda p: p.write_text(experiment.model_dump_json(indent=2)))
    prepared.manifest.save(results_dir / SPLITS_DIR)
    write_atomic(results_dir / SPLITS_DIR / TABLE_FILE, lambda p: prepared.table.to_csv(p, index=False))
    write_atomic(results_dir / SKIPPED_FILE, lambda p: prepared.skipped_images.to_csv(p, index=False))
    write_atomic(results_dir / DROPPED_FILE, lambda p: prepared.dropped_rows.to_csv(p, index=False))
    write_atomic(results_dir / UNALIGNED_FILE, lambda p: prepared.unaligned_images.to_csv(p, index=False))
    # The report shows these trials only: a trial left in the index from data that has
    # since changed on disk (new ids) is never presented as part of this experiment.
    write_atomic(results_dir / CURRENT_TRIALS_FILE,
                  lambda p: p.write_text(json.dumps(sorted(t.trial_id for t in prepared.trials), indent=0)))


