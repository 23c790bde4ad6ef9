"""``harness data summary | plot-splits | cache``: inspect and prepare a dataset."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.data import datasets
from harness.data.splits import SplitSpec

SHOWN_PER_REASON = 20


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=sorted(datasets.LOADERS), help="which adapter reads --path")
    parser.add_argument("--path", required=True,
                        help="UTKFace folder, Adience metadata folder, or CSV file")
    parser.add_argument("--images", help="Adience: folder holding aligned/ or faces/")
    parser.add_argument("--metadata", choices=["per_fold", "original"], default="per_fold",
                        help="Adience: which published label files to read")
    parser.add_argument("--noncanonical", choices=["map", "drop"], default="map",
                        help="Adience original files: map odd ages like '35' to a group, or drop them")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad metadata line or unreadable image")


def _load(args) -> datasets.UnifiedDataset:
    return datasets.load_spec(args, strict_metadata=args.strict)


def _split_spec(args) -> SplitSpec:
    return SplitSpec(protocol=args.protocol, folds=args.folds, test_size=args.test_size,
                     val_fraction=args.val_fraction, seed=args.seed)


def cmd_summary(args) -> int:
    import pandas as pd

    data = _load(args)
    table, dropped = data.crosstab(), data.dropped_by_reason()
    if args.json:
        print(json.dumps({
            "dataset": args.dataset, "path": args.path, "images": int(len(data.table)),
            "age_x_gender": {g: {a: int(v) for a, v in row.items()} for g, row in table.iterrows()},
            "dropped": {reason: int(n) for reason, n in dropped.items()},
            "dropped_rows": [{k: (None if pd.isna(v) else int(v) if k == "line" else v) for k, v in row.items()}
                             for row in data.dropped.to_dict("records")],
            "notes": data.notes,
        }, indent=2))
        return 0
    print(f"{args.dataset} at {args.path}: {len(data.table)} images with age group and gender\n")
    print(table.to_string())
    print(f"\nDropped rows: {int(dropped.sum())}")
    for reason, n in dropped.items():
        print(f"  {n:6d}  {reason}")
        rows = data.dropped[data.dropped["reason"] == reason]
        for row in rows.head(SHOWN_PER_REASON).itertuples():
            where = row.file if pd.isna(row.line) else f"{row.file}:{int(row.line)}"
            print(f"          {where}" + (f"  ({row.detail})" if row.detail else ""))
        if len(rows) > SHOWN_PER_REASON:
            print(f"          ... and {len(rows) - SHOWN_PER_REASON} more (all with --json)")
    for key, value in data.notes.get("non_canonical_ages", {}).get("counts", {}).items():
        print(f"  non-canonical age {key!r}: {value} ({data.notes['non_canonical_ages']['action']})")
    return 0


def cmd_plot_splits(args) -> int:
    from harness.analysis.plots import plot_split_balance
    from harness.data.splits import make_splits

    data = _load(args)
    manifest = make_splits(data.table, _split_spec(args))
    out = Path(args.out)
    manifest.save(out)
    paths = plot_split_balance(data.table, manifest, out, title=args.dataset)
    print(manifest.counts().to_string())
    print(f"\nmanifest: {out / 'splits.csv'}")
    for path in paths:
        print(f"plot: {path}")
    return 0


def cmd_cache(args) -> int:
    from harness.data import cache
    from harness.data.images import Preprocessing

    data = _load(args)
    prep = Preprocessing(size=args.size, crop=args.crop, equalize=args.equalize, color=args.color)
    built = cache.build(data.table["id"], data.table["path"], prep, cache_dir=args.cache_dir,
                        workers=args.workers, strict=args.strict, progress=True)
    print(f"cache: {built.directory} ({int(built.valid.sum())} images of shape {prep.shape})")
    for row in built.skipped.itertuples():
        print(f"skipped {row.path}: {row.reason}")
    return 0


def register(commands) -> None:
    data = commands.add_parser("data", help="inspect and prepare datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    summary = data_commands.add_parser("summary", help="age x gender table and dropped rows")
    _add_dataset_args(summary)
    summary.add_argument("--json", action="store_true", help="machine-readable output, every dropped row listed")
    summary.set_defaults(func=cmd_summary)

    plot = data_commands.add_parser("plot-splits", help="class balance of each split, as PNGs")
    _add_dataset_args(plot)
    plot.add_argument("--protocol", default="stratified_kfold",
                      choices=["adience_folds", "stratified_kfold", "random"], help="how to split (default stratified_kfold)")
    plot.add_argument("--folds", type=int, default=5, help="folds of a k-fold protocol (default 5)")
    plot.add_argument("--test-size", type=float, default=0.33, help="test share of the random protocol (default 0.33)")
    plot.add_argument("--val-fraction", type=float, default=0.1,
                      help="share of each training part held out for validation (default 0.1)")
    plot.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    plot.add_argument("--out", default="results/data/splits", help="folder for the manifest and PNGs")
    plot.set_defaults(func=cmd_plot_splits)

    build = data_commands.add_parser("cache", help="decode and cache the images as arrays")
    _add_dataset_args(build)
    build.add_argument("--size", type=int, default=64, help="side of the square image in pixels (default 64)")
    build.add_argument("--crop", type=float, default=1.0, help="central share of the image kept (default 1.0)")
    build.add_argument("--equalize", action="store_true", help="histogram equalization")
    build.add_argument("--color", choices=["rgb", "ycbcr", "grayscale"], default="rgb", help="colour space (default rgb)")
    build.add_argument("--workers", type=int, help="decoding processes (default: every core)")
    build.add_argument("--cache-dir", help="cache root (default $HARNESS_CACHE or .cache/arrays)")
    build.set_defaults(func=cmd_cache)
