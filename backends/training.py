"""What a worker does with one trial: train it, predict with it, export it.

Reads the trial's files, imports exactly one framework (through
:mod:`backends.loading`), trains, and writes into RUN_DIR: history.csv,
predictions.npz, metrics.json, the native model, tensorboard/, env.json, and DONE last.
Framework output goes to RUN_DIR/log.txt, not the terminal. The command line around
these is :mod:`backends.worker`.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from backends.common import THREADS_ENV, cpu_model, input_statistics, thread_counts
from backends.loading import backend_module, export_backend, output_to
from harness import __version__ as harness_version
from harness.data.cache import CachedArrays
from harness.data.faces import DESCRIPTOR_OUTPUTS
from harness.data.labels import soft_age, soft_years
from harness.files import write_atomic
from harness.models import heads, metrics
from harness.models.augmentation import augment, mirror
from harness.models.balance import balanced_rows
from harness.models.schedules import EarlyStopper, LearningRate
from harness.runs.layout import (
    DONE_FILE,
    ENV_FILE,
    HISTORY_FILE,
    LOG_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    PROGRESS_FILE,
    PRUNE_FILE,
    VAL_PREDICTIONS_FILE,
    log_writable,
)
from harness.runs.trial import RoleData, age_residuals, chips_of, exports_whole_door, load_splits, read_config

VAL_CURVES = ("gender_accuracy", "age_exact_accuracy", "joint_accuracy")


class RecentSplits:
    """What a reused worker last read: the open cache entry and the roles of one round.

    A trial whose (cache entry, data fingerprint, round) equals the previous trial's
    takes the same arrays from memory: the fingerprint covers the cached images and each
    role's ids and labels, so equal keys mean equal arrays. Only the latest round is
    kept, so a worker holds one split's arrays beside its model. The arrays are made
    read-only, so a trial cannot change what the next one trains on.
    """

    def __init__(self):
        self.cached: CachedArrays | None = None
        self.key, self.splits = None, None

    def load(self, run_dir: Path, config) -> tuple[dict, bool]:
        """(role -> RoleData, whether they were already in memory)."""
        key = (config.cache_entry, config.data_fingerprint, config.round)
        if key == self.key:
            return self.splits, True
        self.key = self.splits = None
        if self.cached is None or self.cached.directory != Path(config.cache_entry):
            self.cached = CachedArrays.open(Path(config.cache_entry))
        splits = load_splits(run_dir, config, cached=self.cached)
        for role in splits.values():
            role.x.setflags(write=False)
        self.key, self.splits = key, splits
        return splits, False


def train(run_dir: Path, recent: RecentSplits | None = None, trial_in_worker: int = 1) -> dict:
    """Train one trial. ``recent`` and ``trial_in_worker`` are a reused worker's (see
    :func:`serve`); a fresh process trains its one trial with neither."""
    config = read_config(run_dir)
    for stale in (DONE_FILE, METRICS_FILE, PROGRESS_FILE):
        (run_dir / stale).unlink(missing_ok=True)
    with output_to(run_dir / LOG_FILE):
        print(f"trial {config.trial_id()} backend={config.backend} round={config.round} "
              f"threads={config.threads}", flush=True)
        # The thread count is the trial's, not the machine's or the executor's: the same
        # count on the same CPU gives bit-identical results however many trials run at once.
        os.environ[THREADS_ENV] = str(config.threads)
        backend = backend_module(config.backend)
        backend.configure(config.training.seed)
        head, training = config.model.head, config.training
        splits, in_memory = recent.load(run_dir, config) if recent else (load_splits(run_dir, config), False)
        train_data, val, test = splits["train"], splits["val"], splits["test"]
        if training.balance == "group":
            train_data = _balanced(train_data, training.seed)
        print(f"train {len(train_data.x)} val {len(val.x)} test {len(test.x)} images"
              + (" (in memory from the previous trial)" if in_memory else ""), flush=True)

        model = backend.build(config.model, training, config.preprocessing.shape)
        if getattr(config.model.architecture, "standardize", False):
            backend.standardize_inputs(model, *input_statistics(train_data.x))
        history, started = [], [time.perf_counter()]
        rates, stopper, best_weights = LearningRate(training), EarlyStopper(training.early_stopping), [None]
        pruned = []

        def before_epoch(epoch):
            if stopper.stopped or pruned:
                return False
            if (run_dir / PRUNE_FILE).is_file():   # a search's pruner judged the configuration hopeless
                pruned.append(epoch)
                print(f"pruned by the search before epoch {epoch + 1}", flush=True)
                return False
            if training.schedule is not None:
                backend.set_learning_rate(model, rates.rate(epoch))
            return True

        def on_epoch(epoch, loss, acc, val_loss, val_acc):
            now = time.perf_counter()
            row = {"epoch": epoch + 1, "loss": _num(loss), "framework_accuracy": _num(acc),
                   "val_loss": _num(val_loss), "val_framework_accuracy": _num(val_acc),
                   "seconds": now - started[0], "images_per_second": len(train_data.x) / (now - started[0])}
            if not np.isfinite(row["loss"]):
                raise FloatingPointError(f"loss is {row['loss']} at epoch {epoch + 1}")
            if len(val.x):
                # Learning curves in the harness's own measures, from real predictions.
                scored = metrics.compute(head, backend.predict(model, val.x), val.age, val.gender,
                                         training.loss, years=val.years)
                row.update({f"val_{key}": scored[key] for key in VAL_CURVES})
                if head in heads.YEARS_HEADS:
                    row["val_age_mae"] = scored["age_mae"]
            if training.schedule is not None:
                row["learning_rate"] = rates.rate(epoch)
            history.append(row)
            _append_progress(run_dir, row)
            rates.observe(row)
            if stopper.observe(epoch, row) and training.early_stopping and training.early_stopping.restore_best:
                best_weights[0] = backend.get_weights(model)
            started[0] = time.perf_counter()
            if (run_dir / PRUNE_FILE).is_file() and not stopper.stopped and epoch + 1 < training.epochs:
                pruned.append(epoch + 1)
                print(f"pruned by the search after epoch {epoch + 1}", flush=True)
                return False
            return True

        # Augmented epochs are made here, the same arrays whichever framework trains.
        epoch_inputs = ((lambda epoch: augment(train_data.x, training.augmentation, training.seed, epoch))
                        if training.augments else None)
        backend.train(model, training, train_data.x, training_targets(config, train_data),
                      val.x, training_targets(config, val), on_epoch, run_dir / "tensorboard",
                      epoch_inputs=epoch_inputs, before_epoch=before_epoch)
        if stopper.restores:   # the best epoch's weights, not the last one's
            backend.set_weights(model, best_weights[0])
            print(f"kept epoch {stopper.best_epoch + 1} of {stopper.last_epoch + 1} "
                  f"(best {training.early_stopping.metric} {stopper.best_value:.4f})", flush=True)
        outputs = backend.predict(model, test.x)
        val_outputs = backend.predict(model, val.x) if len(val.x) else None
        backend.save(model, run_dir)
        intra, inter = thread_counts()
        # The versions that can move a trial's numbers (the report says when they differ).
        environment = {**backend.environment(), "numpy": np.__version__, "harness": harness_version,
                       "python": platform.python_version(),
                       "host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(),
                       "threads": {"intra_op": intra, "inter_op": inter},
                       "n_params": backend.count_params(model)}
        if os.environ.get("HARNESS_RAY_NODE_ID"):   # set by harness.runs.executors for Ray tasks
            environment["ray_node_id"] = os.environ["HARNESS_RAY_NODE_ID"]
        # Which process trained it, and its how-manieth trial there (1: a fresh process).
        environment["worker"] = {"pid": os.getpid(), "trial": trial_in_worker}
        backend.release(model)

    frame = pd.DataFrame(history)
    write_atomic(run_dir / HISTORY_FILE, lambda p: frame.to_csv(p, index=False))
    saved = [(PREDICTIONS_FILE, test, outputs)] + ([(VAL_PREDICTIONS_FILE, val, val_outputs)] if len(val.x) else [])
    for name, role, role_outputs in saved:
        write_atomic(run_dir / name, lambda p, role=role, out=role_outputs: _save_npz(
            p, ids=np.asarray(role.ids, dtype=str), outputs=out, age=role.age, gender=role.gender))
    residuals = age_residuals(run_dir, head)   # from the validation predictions just saved
    result = metrics.compute(head, outputs, test.age, test.gender, training.loss, config.threshold, test.years,
                             residuals)
    if config.gate is not None:
        val_readouts = (heads.readout(head, val_outputs, residuals) if len(val.x)
                        else np.zeros((0, heads.readout_width(head))))
        result["gate"] = metrics.calibrated_gate(config.gate, val_readouts, val.years,
                                                 heads.readout(head, outputs, residuals), test.years)
    result["train_images_per_second"] = float(frame["images_per_second"].median()) if len(frame) else None
    result["train_seconds"] = float(frame["seconds"].sum()) if len(frame) else None
    result["final_framework_val_accuracy"] = (
        frame["val_framework_accuracy"].iloc[-1] if len(frame) else None)
    if training.early_stopping is not None or pruned:
        result["training"] = stopper.summary()
    if pruned:
        result["pruned"] = {"epochs_trained": pruned[0]}
    write_atomic(run_dir / ENV_FILE, lambda p: p.write_text(json.dumps(environment, indent=2)))
    write_atomic(run_dir / METRICS_FILE, lambda p: p.write_text(json.dumps(result, indent=2)))
    (run_dir / DONE_FILE).write_text(config.trial_id() + "\n")
    return result


def _balanced(role: RoleData, seed: int) -> RoleData:
    """The training faces with every group repeated up to the largest group's count."""
    rows = balanced_rows(role.group if role.group is not None else [None] * len(role.ids), seed)
    return RoleData([role.ids[r] for r in rows], role.x[rows], role.age[rows], role.gender[rows], role.years[rows],
                    role.group[rows])


def training_targets(config, role) -> np.ndarray:
    """The targets ``role`` trains on: one-hot, or with soft age groups from exact ages."""
    training = config.training
    distribution = None
    if training.age_target == "soft":   # over the 8 groups, or over whole years for a years softmax
        soften = soft_years if config.model.head in heads.YEARS_HEADS else soft_age
        distribution = soften(role.years, training.age_sigma)
    return heads.targets(config.model.head, role.age, role.gender, distribution, role.years)


def _append_progress(run_dir: Path, row: dict) -> None:
    """The epoch's row as one JSON line, for a search's pruner to read while the trial
    trains (a reader skips a torn last line)."""
    with open(run_dir / PROGRESS_FILE, "a") as out:
        out.write(json.dumps({k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                              for k, v in row.items()}) + "\n")


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def _save_npz(path: Path, **arrays) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def predict(run_dir: Path, out: Path, role: str = "test", tta: str | None = None) -> None:
    config = read_config(run_dir)
    with output_to(run_dir / LOG_FILE):
        backend = backend_module(config.backend)
        model = backend.load(run_dir, config.model, config.training, config.preprocessing.shape)
        data = load_splits(run_dir, config, [role])[role]
        outputs = backend.predict(model, data.x)
        if tta == "flip":   # the mean of the face's and its mirror's outputs
            outputs = (outputs + backend.predict(model, mirror(data.x))) / 2.0
    _save_npz(out, ids=np.asarray(data.ids, dtype=str), outputs=outputs, age=data.age, gender=data.gender)


# int8 calibration: this many training images, evenly spaced (TFLite's guidance is 100-500).
REPRESENTATIVE_IMAGES = 200


def describe(backend_name: str, chips_file: Path, out: Path, features: str = "embedding", flip: bool = False,
             batch: int = 256) -> None:
    """The face ResNet (dlib's weights) on uint8 150x150 RGB chips (N, 150, 150, 3) ->
    float32 descriptors (or pooled features) in ``out`` (.npy), batch by batch from a
    memory map, so that memory stays flat in N. ``flip``: the mean of each chip's and its
    mirror's."""
    from harness.models.spec import FaceResNet

    chips = np.load(chips_file, mmap_mode="r")
    with output_to(Path(os.devnull)):
        backend = backend_module(backend_name)
        network = backend.face_network(FaceResNet(features=features))
        partial = out.with_name(out.name + ".partial")
        result = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32,
                                           shape=(len(chips),) + DESCRIPTOR_OUTPUTS[features])
        for start in range(0, len(chips), batch):
            x = np.asarray(chips[start:start + batch], dtype=np.float32) / np.float32(255.0)
            values = backend.describe(network, x)
            if flip:
                values = (values + backend.describe(network, np.ascontiguousarray(x[:, :, ::-1]))) / 2
            result[start:start + len(x)] = values
        result.flush()
        del result
    os.replace(partial, out)


def export(run_dir: Path, out: Path, quantize: str = "none") -> None:
    config = read_config(run_dir)
    # A read-only run folder is exported too: the framework's chatter then goes to stderr.
    with output_to(run_dir / LOG_FILE) if log_writable(run_dir) else contextlib.nullcontext():
        backend = backend_module(export_backend(config.backend))
        model = backend.load(run_dir, config.model, config.training, config.preprocessing.shape)
        representative = None
        whole = exports_whole_door(config)
        if whole:   # one network from the aligned chip: the face ResNet, then the trained model
            model = backend.with_face_network(model, config.preprocessing.descriptor_features)
        if quantize == "int8":
            split = load_splits(run_dir, config, ["train"])["train"]
            chosen = np.linspace(0, len(split.ids) - 1, min(len(split.ids), REPRESENTATIVE_IMAGES)).astype(int)
            representative = (chips_of(config, [split.ids[i] for i in chosen]).astype(np.float32) / 255.0
                              if whole else split.x[chosen])
        flatbuffer = backend.to_tflite(model, quantize, representative)
    write_atomic(out, lambda p: p.write_bytes(flatbuffer))
