"""The blink check on still photos held up to the camera and on real faces blinking.

From UTKFace's real faces (``../shared/datasets/UTKFace``), shuffled with a fixed seed:
the first ``--validation`` faces are the validation faces the thresholds in
``harness.deploy.liveness.blink`` were set on, the next faces the test faces, one person
each (UTKFace has no person ids; each file is taken as a different face). For each
face a *still* sequence (the photo held up: moved, turned, tilted back by up to 25 %,
lit and compressed differently in every frame) and a *blink* sequence (the same face
with its eyes painted shut in four frames, see ``harness.deploy.liveness.sequences``)
and a *rocked* sequence (the photo tipped back and forth once: heights to 60 % and
back), 20 frames each, as the door page sends them. Prints how many stills and rocked
photos pass (goal 0) and how many blinks are caught, on validation and on test faces,
and the same for the classic eye aspect ratio (the eye's height over its width) in
place of the openness the check uses (the eye's height over the eyes-to-nose distance):
a photo tipped back shrinks heights, not widths. Trains nothing.

    python benchmarks/liveness.py [--validation 100] [--test 100] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import write_result  # noqa: E402  (benchmarks/record.py, beside this script)

from harness.deploy.liveness import blink_in, eye_landmarks, openness  # noqa: E402
from harness.deploy.liveness.sequences import blink_sequence, rocked_sequence, still_sequence  # noqa: E402

FACES = ROOT.parent / "shared" / "datasets" / "UTKFace"


def eye_aspect_ratio(points: np.ndarray) -> float:
    """Soukupová and Čech's eye aspect ratio, both eyes' mean."""
    def one(eye):
        return (np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / (2 * np.linalg.norm(eye[0] - eye[3]))

    return float((one(points[36:42]) + one(points[42:48])) / 2)


def series(frames) -> tuple[list, list]:
    """(openness, eye aspect ratio) per frame, None where no face was found."""
    found = [eye_landmarks(frame) for frame in frames]
    return ([None if p is None else openness(p) for p in found],
            [None if p is None else eye_aspect_ratio(p) for p in found])


def measure(paths, count: int, rng: np.random.Generator) -> dict:
    """Still and blink sequences of the next ``count`` faces whose landmarks are found."""
    outcomes = {kind: {"openness": [], "ear": []} for kind in ("still", "rocked", "blink")}
    skipped = 0
    while len(outcomes["blink"]["openness"]) < count:
        face = Image.open(next(paths)).convert("RGB")
        blinking = blink_sequence(face, rng)
        if blinking is None:
            skipped += 1
            continue
        for kind, frames in (("still", still_sequence(face, rng)), ("rocked", rocked_sequence(face, rng)),
                             ("blink", blinking)):
            for measure_name, values in zip(("openness", "ear"), series(frames)):
                outcomes[kind][measure_name].append(blink_in(values).state)
    return {"outcomes": outcomes, "skipped": skipped}


def summary(found: dict, count: int) -> dict:
    figures = {}
    for measure_name in ("openness", "ear"):
        still = found["outcomes"]["still"][measure_name]
        rocked = found["outcomes"]["rocked"][measure_name]
        blink = found["outcomes"]["blink"][measure_name]
        figures[measure_name] = {
            "stills_passed": sum(s == "blink" for s in still), "stills": len(still),
            "stills_without_enough_faces": sum(s == "too_few_faces" for s in still),
            "rocked_passed": sum(s == "blink" for s in rocked), "rocked": len(rocked),
            "blinks_caught": sum(s == "blink" for s in blink), "blinks": len(blink),
            "blink_catch_rate": round(sum(s == "blink" for s in blink) / max(1, len(blink)), 3)}
    figures["faces_without_landmarks_skipped"] = found["skipped"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validation", type=int, default=100)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = sorted(FACES.glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no faces in {FACES}")
    order = iter([paths[i] for i in np.random.default_rng(args.seed).permutation(len(paths))])
    rng = np.random.default_rng(args.seed + 1)
    started = time.perf_counter()
    figures = {"validation": summary(measure(order, args.validation, rng), args.validation)}
    figures["test"] = summary(measure(order, args.test, rng), args.test)
    seconds = time.perf_counter() - started
    frames = 3 * 20 * (args.validation + args.test)
    figures["seconds_per_frame"] = round(seconds / frames, 4)
    for split in ("validation", "test"):
        for measure_name, label in (("openness", "the check (openness)"), ("ear", "eye aspect ratio instead")):
            f = figures[split][measure_name]
            print(f"{split:10} {label:28} stills passed {f['stills_passed']}/{f['stills']} "
                  f"(no face in enough frames: {f['stills_without_enough_faces']}), rocked passed "
                  f"{f['rocked_passed']}/{f['rocked']}, blinks caught "
                  f"{f['blinks_caught']}/{f['blinks']} ({f['blink_catch_rate']:.0%})")
    print(f"{figures['seconds_per_frame'] * 1000:.0f} ms a frame (landmarks, both measures, making the frames)")
    flat = {"seed": args.seed}
    for split in ("validation", "test"):
        for measure_name, label in (("openness", "the check"), ("ear", "eye aspect ratio instead")):
            f = figures[split][measure_name]
            flat[f"{split} faces, {label}: stills passed"] = f"{f['stills_passed']}/{f['stills']}"
            flat[f"{split} faces, {label}: rocked photos passed"] = f"{f['rocked_passed']}/{f['rocked']}"
            flat[f"{split} faces, {label}: blinks caught"] = (f"{f['blinks_caught']}/{f['blinks']} "
                                                              f"({f['blink_catch_rate']:.0%})")
        flat[f"{split} faces: stills with a face in too few frames"] = \
            figures[split]["openness"]["stills_without_enough_faces"]
        flat[f"{split} faces skipped (no landmarks to close the eyes on)"] = \
            figures[split]["faces_without_landmarks_skipped"]
    flat["ms a frame (landmarks, both measures, making the frames)"] = round(figures["seconds_per_frame"] * 1000)
    write_result("liveness", "Stills, rocked photos and blinks made from real faces, through the blink check.", flat)


if __name__ == "__main__":
    main()
