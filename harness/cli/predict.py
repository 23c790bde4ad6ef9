"""``harness predict``: the faces in photos, classified by a trial, an ensemble round or an export."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.cli.options import age, count, positive, probability
from harness.deploy.batching import DEFAULT_MAX_FACES, DETECT_PROCESSES_FROM


def cmd_predict(args) -> int:
    import csv

    from harness.deploy.batching import classify_files, detect_processes_for, detection_processes
    from harness.deploy.classify import gate_threshold, image_files
    from harness.deploy.predictors import open_model

    predictor = open_model(args.model, args.tta, args.allow_failed_parity)
    files = image_files(args.images)
    if not files:
        raise ValueError(f"no images found in {' '.join(args.images)}")
    if args.csv:
        _check_csv_path(Path(args.csv), files)
    gate_at, source = gate_threshold(predictor, args.min_age, args.threshold)
    if args.min_age is not None and source.startswith("calibrated"):   # not the 0.5 the user may expect
        print(f"gate at {args.min_age:g}: allow needs adult probability >= {gate_at:.3f} ({source})",
              file=sys.stderr)
    if args.min_age is not None:
        from harness.deploy.door import door_fitness

        fitness = door_fitness(predictor.calibrated_gate, args.min_age)
        if not fitness.fit:   # research use goes on; a door would refuse this model (harness serve)
            print(f"warning: this model is not fit for a door at {args.min_age:g}: {'; '.join(fitness.problems)}. "
                  f"Measured: {fitness.words()}.", file=sys.stderr)
    results, failed = [], 0
    processes = args.detect_processes
    if processes is None:   # starting them (about 2 s) pays off on large folders only
        processes = detect_processes_for(len(files))
    detector = detection_processes(processes) if processes else None
    try:
        for path, faces in classify_files(predictor, files, args.threshold, args.min_age, gate_at, args.max_batch,
                                          detector=detector):
            failed += any(r.error for r in faces)
            results += faces
            if not args.json:
                _print_faces(path, faces, stream=sys.stderr if any(r.error for r in faces) else sys.stdout)
    finally:
        if detector is not None:
            detector.shutdown(cancel_futures=True)
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


def _check_csv_path(path: Path, photos: list[Path]) -> None:
    """Before any photo is read: --csv must be a new or existing file, in a folder that
    exists, and none of the photos being classified."""
    if path.is_dir():
        raise ValueError(f"--csv {path}: a directory; give a file name for the CSV")
    if not path.parent.is_dir():
        raise ValueError(f"--csv {path}: its folder {path.parent} does not exist")
    target = path.resolve()
    if any(photo.resolve() == target for photo in photos):
        raise ValueError(f"--csv {path}: it is one of the photos to classify; writing the CSV would replace it")


def register(commands) -> None:
    predict = commands.add_parser("predict", help="classify the faces in photos with a trained run")
    predict.add_argument("--model", required=True,
                         help="a finished trial directory (RUN_DIR), an ensemble round (ENSEMBLE/round-N) "
                              "or an export folder (harness export; run by LiteRT)")
    predict.add_argument("images", nargs="+", help="image files or directories")
    predict.add_argument("--json", action="store_true", help="machine-readable output")
    predict.add_argument("--csv", help="also write one row per face to this CSV")
    predict.add_argument("--min-age", type=age, help="age gate: allow / deny / undefined per face")
    predict.add_argument("--threshold", type=probability,
                         help="confidence below which a face is Undefined (default: none), "
                              "and the adult probability --min-age needs to allow (default: the "
                              "run's calibrated gate threshold for that age, else 0.5)")
    predict.add_argument("--max-batch", type=positive(int), default=DEFAULT_MAX_FACES, metavar="FACES",
                         help="faces of several photos in one network call at most (default %(default)s); "
                              "the next photos are detected meanwhile")
    predict.add_argument("--detect-processes", type=count, metavar="N",
                         help="find faces in N processes (0: one thread beside the network; default: one more "
                              f"than this machine's cores for {DETECT_PROCESSES_FROM:,} photos or more, else 0)")
    predict.add_argument("--tta", choices=["flip"], help="average each face with its mirror image")
    predict.add_argument("--allow-failed-parity", action="store_true",
                         help="open an export whose parity check failed (to inspect it; its answers are not "
                              "the trained model's)")
    predict.set_defaults(func=cmd_predict)

