"""How much age and gender the face ResNet's outputs hold: a linear probe of each.

Logistic regression (scikit-learn, standardized inputs) on the cached inputs of two
finished trials of the same split, one on the 128-D descriptor and one on the 256-D
pooled features (`experiments/face_features_embedding.yaml`, `face_features_pooled.yaml`),
fitted on each trial's training faces and scored on its VALIDATION faces: gender, and
the 8 age groups. A diagnostic of the representations beside the FCNs trained on them,
not a model of the harness.

    python benchmarks/face_features_probe.py --embedding RESULTS/face_features_embedding/trials/ID \\
        --pooled RESULTS/face_features_pooled/trials/ID
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import write_result  # noqa: E402  (benchmarks/record.py, beside this script)

from harness.runs.trial import load_splits, read_config  # noqa: E402


def probe(run_dir: Path) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    config = read_config(run_dir)
    splits = load_splits(run_dir, config, ["train", "val"])
    train, val = splits["train"], splits["val"]
    import numpy as np

    scores = {"input": f"{config.preprocessing.descriptor_features} ({train.x.shape[1]}-D)",
              "train faces": len(train.ids), "val faces": len(val.ids),
              # How far from standardized the raw inputs are (what an FCN without standardize sees).
              "mean value": round(float(train.x.mean()), 3),
              "mean norm": round(float(np.linalg.norm(train.x, axis=1).mean()), 2)}
    for name, target in (("gender", "gender"), ("age exact", "age")):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        model.fit(train.x, getattr(train, target))
        scores[f"val {name} %"] = round(100.0 * float((model.predict(val.x) == getattr(val, target)).mean()), 1)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedding", type=Path, required=True, help="a finished trial on the 128-D descriptor")
    parser.add_argument("--pooled", type=Path, required=True, help="a finished trial on the pooled features")
    args = parser.parse_args()
    rows = [probe(args.embedding), probe(args.pooled)]
    for row in rows:
        print(row)
    print(write_result("face_features_probe", "Logistic regression on the face ResNet's 128-D descriptor and its "
                       "256-D pooled features, fitted on fold 0's training faces, scored on its validation faces.",
                       {f"{row['input']}: {key}": value for row in rows for key, value in row.items()
                        if key != "input"}))


if __name__ == "__main__":
    main()
