"""``harness export``: a finished run's model as a self-describing TFLite folder.

run directory -> (its backend's worker converts the saved model) -> ``model.tflite``
-> parity on the run's test split, measured with LiteRT against the framework model's
own stored test predictions -> ``export.json`` (see :mod:`harness.deploy.litert`), written last.

An ensemble round is exported as one folder per member under ``members/`` (each a
complete export of that trial) plus a manifest saying the ensemble is their mean: the
members may differ in backend, input and preprocessing, which one merged graph could not
keep apart without re-implementing both translations.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from harness.data.labels import AGE_GROUPS, GENDER_WORDS
from harness.deploy.litert import MANIFEST_VERSION, ExportManifest, LiteModel, Parity, chip_geometry
from harness.deploy.predictors import stored_gate
from harness.files import write_atomic
from harness.models import heads, metrics
from harness.models.augmentation import mirror
from harness.models.gate import DEFAULT_GATE_THRESHOLD
from harness.paths import PROJECT_ROOT
from harness.processes import die_with_parent, pid_alive, worker_command, worker_env
from harness.runs.layout import (
    LOG_FILE,
    MANIFEST_FILE,
    MEMBERS_DIR,
    MODEL_FILE,
    PREDICTIONS_FILE,
    NotFinished,
    log_writable,
    require_finished,
)
from harness.runs.trial import (
    age_residuals,
    chips_of,
    exports_whole_door,
    load_splits,
    read_config,
    saved_model_problem,
)

FORMATS = ("tflite",)
QUANTIZE = ("none", "dynamic", "int8")
# A float32 export must give the framework's probabilities to within this.
FLOAT_TOLERANCE = 1e-4
ACCURACIES = ("gender_accuracy", "age_exact_accuracy", "age_one_off_accuracy")
LATENCY_CALLS = 50



class ExportError(ValueError):
    """The run cannot be exported; the message says which file and why."""


def export(run_dir: str | Path, out: str | Path, quantize: str = "none", fmt: str = "tflite") -> ExportManifest:
    """Export ``run_dir`` (a trial or an ensemble round) into ``out``; returns the manifest.

    A float32 export whose parity misses :data:`FLOAT_TOLERANCE` is still written, with
    ``parity.passed`` false, so that it can be inspected; the CLI exits non-zero on it.
    """
    from harness.runs.ensemble import is_ensemble_run

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose from {list(FORMATS)}")
    if quantize not in QUANTIZE:
        raise ExportError(f"--quantize {quantize!r}: choose from {list(QUANTIZE)}")
    run_dir, out = _finished(run_dir), Path(out)
    _check_output(out)
    _recover(out)
    # Built beside the target and renamed into place: a killed or failed export never
    # leaves a half-written folder, and an earlier export stays until the new one is whole.
    partial = out.parent / f".{out.name}{PARTIAL_MARK}{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        manifest = (_export_ensemble(run_dir, partial, quantize) if is_ensemble_run(run_dir)
                    else _export_trial(run_dir, partial, quantize)[0])
        _swap_in(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _finished(run_dir) -> Path:
    try:
        return require_finished(run_dir)
    except NotFinished as err:
        raise ExportError(str(err)) from None


PARTIAL_MARK, REPLACED_MARK = ".partial-", ".replaced-"
# What an export writes: a folder holding nothing else is an export, whole or half-written.
EXPORT_NAMES = {MANIFEST_FILE, MANIFEST_FILE + ".partial", MODEL_FILE, MEMBERS_DIR}


def _check_output(out: Path) -> None:
    """--out must be new, empty, or an export (whole, or half-written by an older version):
    anything else is the user's and is left alone."""
    if not out.exists():
        return
    if not out.is_dir() or not {p.name for p in out.iterdir()} <= EXPORT_NAMES:
        raise ExportError(f"--out {out}: exists and is not an export folder; give a new or empty folder")


def _recover(out: Path) -> None:
    """What an export killed mid-way left beside ``out``: an earlier export it had set aside
    is put back (when ``out`` is missing), a partial one is removed."""
    for sibling in out.parent.glob(f".{out.name}.*-*") if out.parent.is_dir() else ():
        mark, _, pid = sibling.name[len(out.name) + 1:].rpartition("-")
        mark += "-"
        if not pid.isdigit() or pid_alive(int(pid)) or mark not in (PARTIAL_MARK, REPLACED_MARK):
            continue
        if mark == REPLACED_MARK and not out.exists() and (sibling / MANIFEST_FILE).is_file():
            sibling.rename(out)
        else:
            shutil.rmtree(sibling, ignore_errors=True)


def _swap_in(partial: Path, out: Path) -> None:
    if out.exists():
        aside = out.parent / f".{out.name}{REPLACED_MARK}{os.getpid()}"
        shutil.rmtree(aside, ignore_errors=True)
        out.rename(aside)
        partial.rename(out)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        partial.rename(out)


def _export_trial(run_dir: Path, out: Path, quantize: str):
    """-> (manifest, the run's test split, the exported LiteRT model, what it read for the
    test faces), the last three for an ensemble's own parity."""
    config = read_config(run_dir)
    problem = saved_model_problem(run_dir, config.backend)
    if problem:
        raise ExportError(problem)
    model_path = out / MODEL_FILE
    # The converter dies with this process: a killed export leaves no worker writing into its folder.
    result = subprocess.run(worker_command("export", run_dir, model_path, "--quantize", quantize),
                            cwd=PROJECT_ROOT, capture_output=True, text=True, env=worker_env(),
                            preexec_fn=die_with_parent)
    if result.returncode or not model_path.is_file():
        output = (result.stderr or result.stdout).strip()
        last = output.splitlines()[-1:] or ["no output"]
        # The worker logs into the run's log.txt when it may write there; otherwise its
        # output is all there is, and it is shown.
        where = f"details in {run_dir / LOG_FILE}" if log_writable(run_dir) else f"its output:\n{output[-3000:]}"
        raise ExportError(f"{run_dir}: converting the {config.backend} model to TFLite failed: {last[0]} "
                          f"({where})")
    test = _test_split(run_dir, config)
    model = LiteModel(model_path)
    framework = _stored_outputs(run_dir, test.ids)
    whole = exports_whole_door(config)
    # A whole-door export reads the chip: its parity is measured from the test faces' photos.
    inputs = chips_of(config, list(test.ids)).astype(np.float32) / np.float32(255.0) if whole else test.x
    exported = model.outputs(inputs)
    parity = _parity(config.model.head, framework, exported, test, quantize, config.threshold,
                     model_path.stat().st_size, single_face_latency_ms(model, inputs[:1]))
    manifest = ExportManifest(
        **_common(run_dir, config, quantize, parity), kind="trial", model_file=MODEL_FILE,
        sha256=hashlib.sha256(model_path.read_bytes()).hexdigest(),
        input_shape=list(model.input_shape), input_dtype="float32",
        preprocessing=config.preprocessing, head=config.model.head, age_residuals=_residual_quantiles(run_dir, config),
        input="chip" if whole else "model_inputs", chip=chip_geometry() if whole else None)
    _write_manifest(out, manifest)
    return manifest, test, model, inputs


def _export_ensemble(run_dir: Path, out: Path, quantize: str) -> ExportManifest:
    from harness.runs.ensemble import member_dirs

    members, description = member_dirs(run_dir)
    names = [f"{MEMBERS_DIR}/{index}" for index in range(len(members))]
    manifests, member_readouts = [], []
    for name, member in zip(names, members):
        (out / name).mkdir(parents=True)   # inside the partial export: always new
        # A member on port descriptors reads the test faces' chips, the others their arrays.
        manifest, test, model, inputs = _export_trial(_finished(member), out / name, quantize)
        outputs = [model.outputs(inputs)]
        if description.get("tta") == "flip":
            outputs.append(model.outputs(mirror(inputs)))
        member_readouts.append(np.mean([heads.readout(manifest.head, o, manifest.age_residuals) for o in outputs],
                                     axis=0))
        manifests.append(manifest)
    # Members share one split (harness ensemble checks it): the last member's test faces are all's.
    framework = _stored_outputs(run_dir, test.ids)
    exported = np.mean(member_readouts, axis=0)
    parity = _parity(heads.readout_head(exported), framework, exported, test, quantize,
                     float(description.get("threshold") or 0.0),
                     sum(m.parity.bytes for m in manifests),
                     sum(m.parity.single_face_latency_ms for m in manifests))
    config = read_config(members[0])
    manifest = ExportManifest(**_common(run_dir, config, quantize, parity), kind="ensemble",
                              tta=description.get("tta"), members=names,
                              combine="mean of the members' readouts: age-group and gender scores, or "
                                      "distributions over years and gender scores")
    manifest.source.update(trial_id=None, backend="+".join(sorted({m.source["backend"] for m in manifests})))
    _write_manifest(out, manifest)
    return manifest


def _residual_quantiles(run_dir: Path, config) -> list[float] | None:
    """years_regression: the spread its readout puts around a prediction, carried in the
    manifest because an export has no validation predictions to read it from."""
    quantiles = age_residuals(run_dir, config.model.head)
    return None if quantiles is None else [float(q) for q in quantiles]


def _test_split(run_dir: Path, config):
    try:
        return load_splits(run_dir, config, ["test"])["test"]
    except FileNotFoundError as err:
        raise ExportError(f"{run_dir}: its cached arrays are gone ({err.filename}); parity is measured on "
                          f"the run's test faces, so rebuild the cache (harness data cache, or run the "
                          f"experiment again: finished trials are not retrained)") from None


def _stored_outputs(run_dir: Path, ids: list[str]) -> np.ndarray:
    path = run_dir / PREDICTIONS_FILE
    try:
        saved = np.load(path)
        stored_ids, outputs = saved["ids"].astype(str), saved["outputs"]
    except (OSError, KeyError, ValueError) as err:
        raise ExportError(f"{path}: cannot read the framework's test predictions: {err}") from None
    position = {face: i for i, face in enumerate(stored_ids)}
    missing = [face for face in ids if face not in position]
    if missing:
        raise ExportError(f"{path}: has no prediction for {len(missing)} test faces (e.g. {missing[0]}); "
                          "the run's cache changed since it was trained")
    return outputs[[position[face] for face in ids]]


def _parity(head: str, framework: np.ndarray, exported: np.ndarray, test, quantize: str, threshold: float,
            size: int, latency_ms: float) -> Parity:
    framework_scores, exported_scores = heads.scores(head, framework), heads.scores(head, exported)
    scored = {name: metrics.compute(head, outputs, test.age, test.gender, threshold=threshold)
              for name, outputs in (("framework", framework), ("exported", exported))}
    probability_gap = _max_abs(framework_scores - exported_scores)
    tolerance = FLOAT_TOLERANCE if quantize == "none" else None
    decoded = [(s[:, :len(AGE_GROUPS)].argmax(1), s[:, len(AGE_GROUPS):].argmax(1))
               for s in (np.nan_to_num(framework_scores), np.nan_to_num(exported_scores))]
    agree = (decoded[0][0] == decoded[1][0]) & (decoded[0][1] == decoded[1][1])
    return Parity(
        test_faces=len(test.ids), max_abs_output_difference=_max_abs(framework - exported),
        max_abs_probability_difference=probability_gap, tolerance=tolerance,
        passed=None if tolerance is None else bool(probability_gap <= tolerance),
        decoded_agreement=float(agree.mean()) if len(agree) else 1.0,
        framework={k: scored["framework"][k] for k in ACCURACIES},
        exported={k: scored["exported"][k] for k in ACCURACIES},
        accuracy_change_points={k: round(100 * (scored["exported"][k] - scored["framework"][k]), 4)
                                for k in ACCURACIES},
        bytes=size, single_face_latency_ms=latency_ms)


def _max_abs(difference: np.ndarray) -> float:
    difference = np.abs(np.asarray(difference, dtype=np.float64))
    return float(np.nanmax(difference)) if difference.size and not np.isnan(difference).all() else 0.0


def single_face_latency_ms(model: LiteModel, one_face: np.ndarray, calls: int = LATENCY_CALLS) -> float:
    """Median milliseconds of one call on one face, after a warm-up call."""
    if not len(one_face):
        return float("nan")
    model.outputs(one_face)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        model.outputs(one_face)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def _common(run_dir: Path, config, quantize: str, parity: Parity) -> dict:
    return dict(
        manifest_version=MANIFEST_VERSION, format="tflite", harness_version=_harness_version(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        source={"run_dir": str(run_dir.resolve()), "trial_id": config.trial_id(), "backend": config.backend,
                "round": config.round},
        quantize=quantize,
        labels={"age_groups": [f"({lo}, {hi})" for lo, hi in AGE_GROUPS], "genders": list(GENDER_WORDS)},
        decode_threshold=float(config.threshold or 0.0),
        gate={"default_threshold": DEFAULT_GATE_THRESHOLD, "calibrated": stored_gate(run_dir)},
        parity=parity)


def _harness_version() -> str:
    try:
        return version("agegender-harness")
    except PackageNotFoundError:
        return "unknown"


def _write_manifest(out: Path, manifest: ExportManifest) -> None:
    write_atomic(out / MANIFEST_FILE, lambda p: p.write_text(manifest.model_dump_json(indent=2) + "\n"))
