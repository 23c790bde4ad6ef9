"""TFLite exports of real runs at each quantization: size, parity and accuracy change.

For each run given, exports it as float32, dynamic-range and int8 TFLite (into a
temporary folder) and prints one row per export from its manifest, all measured on the
run's test split: file size (and its ratio to float32), the largest probability
difference from the framework model, the share of faces with the same labels, the
change in gender / age-exact / 1-off accuracy in points, and LiteRT's single-face
latency. Goals: float32 within 1e-4; dynamic quantization costs under 1 point.

    python benchmarks/export_parity.py RUN_DIR [RUN_DIR ...] [--quantize none dynamic int8]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import write_result  # noqa: E402  (benchmarks/record.py, beside this script)

from harness.deploy.export import export  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="finished trials or ensemble rounds")
    parser.add_argument("--quantize", nargs="+", default=["none", "dynamic", "int8"])
    args = parser.parse_args(argv)
    print("| run | backend | input | quantize | test faces | bytes | size vs float32 | max Δp | same labels "
          "| Δ gender | Δ age exact | Δ 1-off | LiteRT ms/face |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    worst_dynamic, figures = 0.0, {}
    for run in map(Path, args.runs):
        float_bytes = None
        with tempfile.TemporaryDirectory(prefix="export-parity-") as tmp:
            for quantize in args.quantize:
                manifest = export(run, Path(tmp) / quantize, quantize)
                parity = manifest.parity
                float_bytes = parity.bytes if quantize == "none" else float_bytes
                change = parity.accuracy_change_points
                if quantize == "dynamic":
                    worst_dynamic = max(worst_dynamic, -change["gender_accuracy"], -change["age_exact_accuracy"])
                inputs = ("descriptor" if manifest.preprocessing and manifest.preprocessing.embedding
                          else "pixels" if manifest.preprocessing else manifest.kind)
                size = f"{parity.bytes / float_bytes:.2f}" if float_bytes else "n/a"
                label = "/".join(run.parts[-3:] if manifest.kind == "ensemble" else run.parts[-3::2])
                print(f"| {label} | {manifest.source['backend']} | {inputs} | {quantize} "
                      f"| {parity.test_faces} | {parity.bytes:,} | {size} | {parity.max_abs_probability_difference:.1e} "
                      f"| {parity.decoded_agreement:.1%} | {change['gender_accuracy']:+.2f} "
                      f"| {change['age_exact_accuracy']:+.2f} | {change['age_one_off_accuracy']:+.2f} "
                      f"| {parity.single_face_latency_ms:.3f} |", flush=True)
                figures[f"{label} {quantize}: bytes, max |dp|, same labels, d gender, d age exact"] = (
                    f"{parity.bytes:,}, {parity.max_abs_probability_difference:.1e}, "
                    f"{parity.decoded_agreement:.1%}, {change['gender_accuracy']:+.2f}, "
                    f"{change['age_exact_accuracy']:+.2f}")
    if "dynamic" in args.quantize:
        print(f"\ngoal: dynamic quantization loses under 1 point of gender or age-exact accuracy; "
              f"largest loss here {worst_dynamic:.2f} points")
    print(write_result("export_parity", "TFLite exports at each quantization against the framework model, "
                       "on each run's test split (float32 goal: within 1e-4; dynamic: under 1 point lost).",
                       figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
