"""Samplers and pruners against the full grid: how many trial-seconds each needs to come
within 0.5 points of the grid's best validation score, and what the configuration it picks
scores on test faces.

The grid is ``experiments/search_efficiency_grid.yaml`` (36 configurations of the
descriptor FCN, both backends, fold 0), trained once for real. Training is deterministic
(a configuration's trials are bit-identical however often they run), so a search over the
same choices is *replayed* from those trials' own files: each configuration a sampler asks
for costs the seconds its trials spent in training epochs (``history.csv``) and scores the
mean validation value at the epoch each kept, exactly as ``harness run`` would tell Optuna.
With a pruner, the harness's own rule decides (:func:`harness.runs.pruning.judged_value`:
the mean over both frameworks' curves after every epoch, Optuna's pruner asked at each
step), and a pruned configuration costs the epochs both trials trained up to the deciding
step (the replay assumes they ran side by side, as ``--workers 2`` runs them, and stopped
at once; a real run may train an epoch or two more). The samplers are seeded as
``harness run`` seeds them (:func:`harness.runs.search.sampler_for`). A configuration asked
again costs nothing and uses up an ask.

For each strategy and seed the search runs until it has spent the grid's trial-seconds
(or 108 asks). Printed, medians over seeds: trial-seconds to reach the target as a share
of the grid's, how many seeds reached it within a third of the grid's, and the test joint
accuracy (mean over backends) of the best-validated configuration picked within a third of
the grid's trial-seconds, beside the grid's own pick. Goal (issue 26): the grid's best
within 0.5 points in at most a third of the grid's trial-seconds, median over seeds.

    python benchmarks/search_efficiency.py [--results results/search_efficiency_grid] [--seeds 10]
        [--search experiments/search_efficiency_tpe_median.yaml] [--real results/search_efficiency_tpe_median]

``--real`` names that search run for real (``harness run --workers 2``): its configurations
and pruning decisions are set beside the replay's with the same seed, and its trial-seconds
beside the replay's, which says how far the replay can be trusted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import RESULTS, write_result  # noqa: E402
from harness.runs import experiment_file  # noqa: E402
from harness.runs.index import read_index, trial_dir  # noqa: E402
from harness.runs.layout import HISTORY_FILE, METRICS_FILE  # noqa: E402
from harness.runs.pruning import judged_value, pruner_for  # noqa: E402
from harness.runs.search import dimensions, sampler_for  # noqa: E402
from harness.runs.search_space import SearchSpec  # noqa: E402
from harness.runs.trial import final_validation  # noqa: E402

METRIC = "val_joint_accuracy"
TARGET_POINTS = 0.5
STRATEGIES = {   # name -> the search: block (seed filled in per run)
    "random": {"sampler": "random"},
    "tpe": {"sampler": "tpe"},
    "tpe + median": {"sampler": "tpe", "pruner": "median"},
    "random + asha": {"sampler": "random", "pruner": "asha"},
    "tpe + asha": {"sampler": "tpe", "pruner": "asha"},
    "tpe + asha, first rung at epoch 4": {"sampler": "tpe", "pruner": "asha", "min_epochs": 4},
    "tpe + hyperband": {"sampler": "tpe", "pruner": "hyperband"},
}


def _values(config: dict) -> dict:
    """The searched values of a trial's configuration, as a space over the grid names them."""
    training = config["training"]
    architecture = config["model"]["architecture"]
    return {"training.learning_rate": training["learning_rate"], "training.batch_size": training["batch_size"],
            "model.architecture.widths": architecture["widths"], "model.architecture.dropout": architecture["dropout"]}


def load_grid(results: Path) -> dict:
    """key -> configuration: its trials' curves, seconds per epoch, kept value, test joint
    accuracy, and its values."""
    configurations: dict[str, dict] = {}
    for trial_id, record in sorted(read_index(results).items()):
        if record["status"] != "completed":
            continue
        run_dir = trial_dir(results, trial_id)
        history = pd.read_csv(run_dir / HISTORY_FILE)
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
        values = _values(record["config"])
        key = json.dumps(values, sort_keys=True)
        entry = configurations.setdefault(key, {"values": values, "trials": []})
        entry["trials"].append({"backend": record["backend"], "curve": list(history[METRIC]),
                                "seconds": list(history["seconds"]), "kept": final_validation(run_dir, METRIC),
                                "test_joint": metrics["joint_accuracy"]})
    return configurations


def _outcome(entry: dict, trial=None) -> tuple[float, float | None, int | None]:
    """(trial-seconds, value told or None when pruned, step pruned at): the harness's rule."""
    curves = [(t["curve"], t["kept"], True) for t in entry["trials"]]
    if trial is not None:
        step = 0
        while (value := judged_value(curves, step + 1)) is not None:
            step += 1
            trial.report(value, step)
            if trial.should_prune():
                return sum(sum(t["seconds"][:step]) for t in entry["trials"]), None, step
    return (sum(sum(t["seconds"]) for t in entry["trials"]),
            sum(t["kept"] for t in entry["trials"]) / len(entry["trials"]), None)


def replay(configurations: dict, space: dict, strategy: dict, seed: int, budget_s: float,
           max_asks: int) -> list[dict]:
    """One search over ``space`` (the real search's, :func:`harness.runs.search.dimensions`),
    configuration by configuration: what it cost so far and its best."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = SearchSpec(trials=max_asks, seed=seed, metric=METRIC, **strategy)
    epochs = max(len(t["curve"]) for entry in configurations.values() for t in entry["trials"])
    study = optuna.create_study(direction="maximize", pruner=pruner_for(spec, epochs),
                                sampler=sampler_for(spec, space, 0))
    spent, best, seen, steps = 0.0, None, {}, []
    for asked in range(max_asks):
        study.sampler = sampler_for(spec, space, asked)
        trial = study.ask(space)
        key = json.dumps({k: json.loads(v) for k, v in trial.params.items()}, sort_keys=True)
        entry = configurations[key]
        if key in seen:   # trained already: the harness finds its trials finished
            cost, value, pruned = 0.0, *seen[key][1:]
        else:
            cost, value, pruned = _outcome(entry, trial if spec.pruner != "none" else None)
            seen[key] = (cost, value, pruned)
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
            if best is None or value > best[0]:
                best = (value, key)
        spent += cost
        steps.append({"asked": asked + 1, "seconds": spent, "key": key, "best": best[0] if best else None,
                      "best_key": best[1] if best else None, "pruned": value is None})
        if spent >= budget_s or len(seen) == len(configurations):
            break
    return steps


def _test_joint(configurations: dict, key: str | None) -> float | None:
    if key is None:
        return None
    trials = configurations[key]["trials"]
    return sum(t["test_joint"] for t in trials) / len(trials)


def _share(steps: list[dict], target: float, grid_seconds: float) -> float:
    """Trial-seconds spent when the best so far first reached ``target``, over the grid's
    (infinite when it never did within the grid's trial-seconds)."""
    return next((s["seconds"] / grid_seconds for s in steps if s["best"] is not None and s["best"] >= target),
                float("inf"))


def _shown(share: float) -> float | str:
    return "not reached" if share == float("inf") else round(share, 3)


def _pick_within(steps: list[dict], seconds: float) -> str | None:
    within = [s for s in steps if s["seconds"] <= seconds]
    return within[-1]["best_key"] if within else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results/search_efficiency_grid"))
    parser.add_argument("--search", type=Path, default=Path("experiments/search_efficiency_tpe_median.yaml"),
                        help="the searched experiment whose space is replayed (its sampler and pruner are "
                             "replaced by each strategy's)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--plot", type=Path, default=Path("docs/results/search_efficiency.png"))
    parser.add_argument("--real", type=Path, default=None,
                        help="the --search experiment's results folder, run for real, to check the replay against")
    args = parser.parse_args(argv)
    if not (args.results / "index.jsonl").is_file():
        parser.error(f"{args.results}: no finished grid; run it first: "
                     "harness run experiments/search_efficiency_grid.yaml --workers 2")
    configurations = load_grid(args.results)
    space = dimensions(experiment_file.load(args.search))
    incomplete = [k for k, e in configurations.items() if len(e["trials"]) != 2]
    if incomplete or not configurations:
        parser.error(f"{args.results}: {len(incomplete)} configuration(s) lack a finished trial on each backend; "
                     "finish the grid first (harness run resumes it)")
    grid_seconds = sum(sum(t["seconds"]) for e in configurations.values() for t in e["trials"])
    scores = {k: sum(t["kept"] for t in e["trials"]) / len(e["trials"]) for k, e in configurations.items()}
    grid_key = max(scores, key=scores.get)
    target = scores[grid_key] - TARGET_POINTS / 100
    third = grid_seconds / 3
    print(f"grid: {len(configurations)} configurations x 2 backends, {grid_seconds:.0f} trial-seconds in training "
          f"epochs; best mean validation joint {100 * scores[grid_key]:.2f} % ({grid_key}), test joint "
          f"{100 * _test_joint(configurations, grid_key):.2f} %; target {100 * target:.2f} %")
    figures = {"grid configurations": len(configurations), "grid trial-seconds": round(grid_seconds, 1),
               "grid best validation joint %": round(100 * scores[grid_key], 2),
               "grid pick test joint %": round(100 * _test_joint(configurations, grid_key), 2)}
    curves = {}
    for name, strategy in STRATEGIES.items():
        runs = [replay(configurations, space, strategy, seed, grid_seconds, 3 * len(configurations))
                for seed in range(args.seeds)]
        shares = [_share(steps, target, grid_seconds) for steps in runs]
        exact = [_share(steps, scores[grid_key], grid_seconds) for steps in runs]
        picks = [p for p in (_test_joint(configurations, _pick_within(steps, third)) for steps in runs)
                 if p is not None]
        pruned = [len({s["key"] for s in steps if s["pruned"]}) for steps in runs]
        median_share, median_exact = statistics.median(shares), statistics.median(exact)
        within_third = sum(share <= 1 / 3 for share in shares)
        print(f"{name:>34}: {_shown(median_share)} of the grid's trial-seconds to the target, {within_third}/"
              f"{args.seeds} seeds within a third; {_shown(median_exact)} to the grid's best itself; the pick "
              f"within a third tests at {100 * statistics.median(picks):.2f} % joint; "
              f"{statistics.median(pruned):.0f} configurations pruned (medians over seeds)")
        figures[f"{name}: trial-seconds to target / grid's (median)"] = _shown(median_share)
        figures[f"{name}: seeds reaching the target within a third of the grid's"] = f"{within_third}/{args.seeds}"
        figures[f"{name}: trial-seconds to the grid's best / grid's (median)"] = _shown(median_exact)
        figures[f"{name}: test joint % of the pick within a third (median)"] = round(100 * statistics.median(picks), 2)
        figures[f"{name}: configurations pruned (median)"] = statistics.median(pruned)
        curves[name] = runs
    _plot(curves, grid_seconds, scores[grid_key], target, args.plot)
    if args.real is not None:
        figures.update(_against_real(configurations, space, experiment_file.load(args.search), args.real,
                                     args.results))
    path = write_result("search_efficiency", f"Samplers and pruners replayed on the real {len(configurations)}-"
                        f"configuration grid ({args.results.name}), {args.seeds} seeds each: the target is the "
                        f"grid's best mean validation joint accuracy less {TARGET_POINTS} points", figures)
    print(f"wrote {path} and {args.plot}")
    return 0


def _against_real(configurations: dict, space: dict, searched, real: Path, grid: Path) -> dict:
    """The real search's configurations, decisions and trial-seconds beside the replay's."""
    spec = searched.search
    history = pd.read_csv(real / "search.csv")
    index = read_index(real)
    strategy = {"sampler": spec.sampler, "pruner": spec.pruner,
                **{k: getattr(spec, k) for k in ("min_epochs", "reduction_factor", "startup_configurations")
                   if getattr(spec, k) is not None}}
    steps = replay(configurations, space, strategy, spec.seed, float("inf"), len(history))
    real_keys = [json.dumps(json.loads(p), sort_keys=True) for p in history["params"]]
    same_order = [s["key"] for s in steps] == real_keys
    same_pruning = [s["pruned"] for s in steps] == list(history["state"] == "pruned")
    trained = {i for ids in history["trial_ids"].dropna() for i in str(ids).split()}   # a repeat trains nothing
    real_seconds = sum(float(pd.read_csv(trial_dir(real, i) / HISTORY_FILE)["seconds"].sum()) for i in trained)
    grid_ids = set(read_index(grid))
    scored = {i for ids in history.loc[history["state"] == "complete", "trial_ids"] for i in str(ids).split()}
    finished = sorted(i for i in scored if index.get(i, {}).get("status") == "completed")
    shared_ids = sum(i in grid_ids for i in finished)
    replay_seconds = steps[-1]["seconds"] if steps else 0.0
    print(f"real {spec.sampler} + {spec.pruner} (seed {spec.seed}, {len(history)} configurations): same "
          f"configurations in the same order as the replay: {same_order}; same pruning decisions: {same_pruning}; "
          f"trial-seconds in epochs {real_seconds:.0f} real against {replay_seconds:.0f} replayed "
          f"({real_seconds / replay_seconds:.2f}x); {shared_ids} of its {len(finished)} finished trials have "
          "the grid's trial ids (trials of its scored configurations, recorded completed)")
    return {"real search: same configurations in the same order as its replay": same_order,
            "real search: same pruning decisions as its replay": same_pruning,
            "real search: trial-seconds in epochs": round(real_seconds, 1),
            "real search: replayed trial-seconds": round(replay_seconds, 1),
            "real search: finished trials with the grid's trial ids": f"{shared_ids}/{len(finished)}"}


def _plot(curves: dict, grid_seconds: float, best: float, target: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.linspace(0, 1, 101)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, runs in curves.items():
        at = []
        for steps in runs:
            row = []
            for share in grid:
                within = [s["best"] for s in steps if s["seconds"] <= share * grid_seconds and s["best"] is not None]
                row.append(100 * within[-1] if within else np.nan)
            at.append(row)
        ax.plot(100 * grid, np.nanmedian(np.array(at, dtype=float), axis=0), label=name)
    ax.axhline(100 * best, color="black", linewidth=0.8, label="grid's best")
    ax.axhline(100 * target, color="black", linestyle=":", linewidth=0.8, label=f"target (−{TARGET_POINTS} points)")
    ax.axvline(100 / 3, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("trial-seconds spent, % of the full grid's")
    ax.set_ylabel("best validation joint accuracy so far (%)")
    ax.set_title("Search efficiency: median over seeds")
    ax.set_ylim(100 * best - 4, 100 * best + 0.5)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    RESULTS.mkdir(exist_ok=True)
    raise SystemExit(main())
