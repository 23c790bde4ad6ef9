"""``harness report``: every table and plot of one results folder, as report.md,
report.html, tables/ and plots/."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analysis import comparisons, statistics
from harness.analysis.learning import DID_NOT_LEARN
from harness.analysis.report.fairness_tables import fairness_frame, fairness_section
from harness.analysis.report.figures import draw_plots, gate_plot
from harness.analysis.report.pooled_gate import pooled_gate_table
from harness.analysis.report.publish import check_out, staged_report
from harness.analysis.report.render import markdown_table, report_stamp
from harness.analysis.report.search_section import search_sections
from harness.analysis.report.summary import summary_lines
from harness.analysis.report.tables import (
    GATE_AGE,
    REFERENCE,
    calibrated_gate_table,
    configurations_table,
    ensemble_table,
    framework_display,
    gate_table,
    numeric_csv,
    ranking_display,
    versus_display,
    years_table,
)
from harness.analysis.report.trials import (
    framework_versions,
    load_ensembles,
    load_trials,
    stored_experiment,
    stored_manifest,
    stored_split_spec,
)
from harness.models.gate import DEFAULT_GATE_THRESHOLD
from harness.runs.index import describe_missing_index, experiment_records, ranked_trials, read_index, write_best
from harness.runs.layout import REPORT_HTML, REPORT_MD, REPORT_PLOTS_DIR, REPORT_TABLES_DIR


def write_report(results_dir: str | Path, out: str | Path | None = None, command: str | None = None,
                 include_degenerate: bool = False) -> Path:
    """Write report.md, report.html, tables/ and plots/ into ``out`` (default: the results
    directory itself), replacing only the files an earlier report wrote there
    (:mod:`.publish`). A trial that did not learn (:mod:`harness.analysis.learning`) is
    marked and left out of the framework verdicts and design comparisons unless
    ``include_degenerate``."""
    results_dir = Path(results_dir)
    out = Path(out) if out is not None else results_dir
    check_out(out, results_dir)
    everything = read_index(results_dir)
    if not everything:
        raise ValueError(f"{results_dir}: {describe_missing_index(results_dir)}")
    index = experiment_records(results_dir, everything)
    loaded = load_trials(results_dir, index)
    stored = stored_experiment(results_dir)
    split_spec = stored_split_spec(stored)
    with staged_report(out, results_dir) as stage:
        _write(stage, results_dir, index, everything, loaded, stored, split_spec, command, include_degenerate)
    if out == results_dir:   # a published copy (--out) leaves the results folder as it was
        write_best(results_dir)
    return out / REPORT_MD


def _write(out: Path, results_dir: Path, index: dict, everything: dict, loaded, stored: dict, split_spec,
           command: str | None, include_degenerate: bool = False) -> None:
    frame, damaged = loaded.frame, loaded.damaged
    earlier = len(everything) - len(index)
    tables, plots = out / REPORT_TABLES_DIR, out / REPORT_PLOTS_DIR
    failed = pd.DataFrame([{"trial_id": r["trial_id"], "model_name": r["model_name"], "backend": r["backend"],
                            "round": r["round"], "error": r["error"]}
                           for r in index.values() if r["status"] == "failed"],
                          columns=["trial_id", "model_name", "backend", "round", "error"]
                          ).sort_values("trial_id")
    failed.to_csv(tables / "failed.csv", index=False)
    REFERENCE.to_csv(tables / "reference.csv", index=False)
    damaged.to_csv(tables / "damaged.csv", index=False)
    name = stored.get("name") or results_dir.name
    stamp = report_stamp(command, index, framework_versions(results_dir, index))
    intro = [str(stored["description"])] if stored.get("description") else []
    sections: list[tuple[str, str, pd.DataFrame]] = []   # (title, text, table) for markdown and html
    images: list[Path] = []
    labels: dict[str, str] = {}
    failed_to_learn: dict = {}
    plain: dict[str, str] = {}
    pairs = versus = ranked = pd.DataFrame()
    baseline = None
    if not frame.empty:
        failed_to_learn = comparisons.failures(frame)
        plain = comparisons.short_labels(frame)
        labels = _marked(plain, failed_to_learn)
        ratio = comparisons.test_train_ratio(stored_manifest(results_dir), split_spec)
        pairs = comparisons.set_aside_framework(comparisons.framework_pairs(frame, ratio), failed_to_learn,
                                                include_degenerate)
        baseline = comparisons.baseline_configuration(frame, stored.get("baseline"))
        versus = comparisons.set_aside_versus(comparisons.against_baseline(frame, baseline, ratio), failed_to_learn,
                                              baseline, include_degenerate) if baseline else pd.DataFrame()
        ranked = comparisons.ranking(frame, ratio)
        trials = frame.drop(columns=["configuration", "spec"]).assign(
            configuration=frame["configuration"].map(labels))
        trials.to_csv(tables / "trials.csv", index=False)
        legend = configurations_table(frame, labels)
        legend.to_csv(tables / "configurations.csv", index=False)
        numeric_csv(pairs.assign(configuration=pairs["configuration"].map(labels)), tables / "framework_pairs.csv")
        numeric_csv(ranked.assign(configuration=ranked["configuration"].map(labels)), tables / "ranking.csv")
        images = draw_plots(frame, loaded.files, results_dir, plots, labels, pairs, versus, baseline)
        method = (f"{comparisons.rounds_sentence(frame, split_spec)} Paired differences in percentage points; "
                  "the interval and the first p-value come from the corrected resampled t-test (Nadeau & "
                  f"Bengio, 2003), which widens the variance by test/train = {ratio:.3f} because rounds share "
                  f"training faces; Wilcoxon's signed-rank p is given from {statistics.WILCOXON_MIN_PAIRS} pairs "
                  f"up. The verdict is the corrected test's at α = {statistics.ALPHA}; with fewer than "
                  f"{statistics.MIN_PAIRS} pairs it is \"{statistics.NOT_ENOUGH}\". " + _threads_note(frame))
        intro.append(method)
        sections += [("Configurations",
                      "Short labels used below: the model name and the options in which a configuration "
                      "differs from most of the others.", legend),
                     ("Frameworks side by side",
                      "Accuracies in % (mean ± std over rounds) from each model's saved test predictions, and "
                      "the paired difference between the frameworks on the same rounds.",
                      framework_display(pairs, frame, labels))]
        if baseline:
            numeric_csv(versus.assign(configuration=versus["configuration"].map(labels)),
                         tables / "against_baseline.csv")
            sections.append(("Design factors against the baseline",
                             f"Baseline: {labels[baseline]} (`baseline:` in the experiment). Each configuration "
                             "minus the baseline on the same backend and rounds, in points with the 95 % interval; "
                             "▲ / ▼: higher / lower at α = 0.05 (corrected t-test).",
                             versus_display(versus, labels)))
        elif stored.get("baseline"):
            intro.append(f"The experiment's baseline {stored['baseline']} matches no single configuration "
                         "that ran, so there is no design-factor comparison.")
        sections.append(("Ranking", "Every configuration and backend by mean joint accuracy; intervals are "
                         "the corrected 95 % intervals of the mean over rounds.", ranking_display(ranked, labels)))
        in_years = years_table(frame.assign(configuration=frame["configuration"].map(labels)))
        if len(in_years):
            in_years.to_csv(tables / "age_in_years.csv", index=False)
            sections.append(("Age in years", "Models that predict an age in years: mean absolute error, the "
                             "share within 5 years (CS(5)), the share of faces whose age lies in the central 80 % "
                             "interval `predict` prints (80 % if the interval is honest), and the group accuracies "
                             "of their predicted ages (mapped to groups as exact ages are), on the test split.",
                             in_years))
        gates = gate_table(frame.assign(configuration=frame["configuration"].map(labels)))
        if len(gates):
            gates.to_csv(tables / "age_gate.csv", index=False)
            sections.append((f"Age gate at {GATE_AGE}",
                             f"`allow` needs the probability of groups starting at {GATE_AGE} or later to reach "
                             f"{DEFAULT_GATE_THRESHOLD}, and the face's own (most likely) group to start at "
                             f"{GATE_AGE} or later; (15, 20) counts as under {GATE_AGE}. A model of the age in "
                             f"years needs P(age ≥ {GATE_AGE}) to reach it and its predicted age to be {GATE_AGE} or "
                             "over. Rates on the test split, against the exact ages.", gates))
    searched, search_plots = search_sections(results_dir, stored, tables, plots)
    sections += searched
    images += search_plots
    if not frame.empty:
        who = fairness_frame(frame, loaded.files, labels, ratio)
        shown = fairness_section(who)
        if shown:
            numeric_csv(who, tables / "fairness.csv")
            sections.append(("Who the model fails", *shown))
    ensembles, ensemble_files = load_ensembles(results_dir)
    calibrated = calibrated_gate_table(pd.concat(
        [frame.assign(configuration=frame["configuration"].map(labels)) if len(frame) else frame, ensembles],
        ignore_index=True)) if len(frame) or len(ensembles) else pd.DataFrame()
    if len(calibrated):
        calibrated.to_csv(tables / "calibrated_gate.csv", index=False)
        sections.append(("Calibrated door gate",
                         "The threshold each trial chose on its validation faces (`gate:` in the experiment): the "
                         "lowest adult probability (for a years model, P(age ≥ the gate's age)) whose "
                         "validation false-accept rate meets the target, which "
                         "refuses the fewest adults. Rates on the test faces at that threshold; a target no "
                         "threshold met is counted and its reason given, never clamped.", calibrated))
    pooled = pooled_gate_table(frame.assign(configuration=frame["configuration"].map(labels))
                               if len(frame) else frame, loaded.files)
    if len(pooled):
        pooled.to_csv(tables / "pooled_gate.csv", index=False)
        sections.append(("Door gate calibrated on every round's validation faces",
                         "One threshold chosen on the validation faces of all rounds together (out of fold: no "
                         "round's test faces are among them), so on several times as many minors as one round "
                         "has, then each round's test faces judged at it; beside it, each round's own threshold "
                         "as above. Rates: mean ± std over rounds.", pooled))
    if len(ensembles):
        ensemble_summary = ensemble_table(ensembles)
        ensemble_summary.to_csv(tables / "ensembles.csv", index=False)
        sections.append(("Ensembles", "Mean probabilities of the member trials (`harness ensemble`), scored "
                         "with the same code on the same test faces; % as mean ± std over rounds.", ensemble_summary))
    if len(frame) or len(ensembles):
        plots.mkdir(parents=True, exist_ok=True)
        with_labels = frame.assign(configuration=frame["configuration"].map(labels)) if len(frame) else frame
        tradeoff = gate_plot(pd.concat([with_labels, ensembles], ignore_index=True),
                              {**loaded.files, **ensemble_files}, plots / "gate_tradeoff.png")
        images += [tradeoff] if tradeoff else []
    notes = []
    if earlier:
        notes.append(f"{earlier} earlier trial(s) in the index are not part of the experiment as last run "
                     "(their data or configuration has changed since) and are not shown.")
    sections.append(("Reference", "Measured on a different dataset than ours unless the dataset column says so.",
                     REFERENCE))
    if len(failed):
        sections.append(("Failed trials", "", failed))
    if len(damaged):
        sections.append(("Damaged trials", f"{len(damaged)} completed trials have files that cannot be read; "
                         "they are left out of every table and plot above (listed in tables/damaged.csv). "
                         "Delete a damaged trial's folder and run the experiment again to redo it.", damaged))
    sections += _data_sections(results_dir)
    summary = summary_lines(frame, pairs, versus, ranked, labels, baseline, failed_to_learn, include_degenerate,
                            len(failed), len(damaged), plain, next(iter(ranked_trials(results_dir)), None))
    lines = [f"# Report: {name}", "", "## Summary", "", *[f"- {line}" for line in summary], "", stamp, ""]
    lines += [line for text in intro for line in (text, "")]
    for title, text, table in sections:
        lines += [f"## {title}"] + ([text, ""] if text else [""]) + ([markdown_table(table), ""] if len(table) else [])
    lines += notes + ([""] if notes else [])
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in images]
    (out / REPORT_MD).write_text("\n".join(lines) + "\n")
    from harness.analysis.report.render import page

    (out / REPORT_HTML).write_text(page(name, stamp, intro,
                                          sections, [p.relative_to(out).as_posix() for p in images],
                                          {v: k for k, v in labels.items()}, notes, summary))


def _marked(labels: dict[str, str], failed: dict) -> dict[str, str]:
    """Short labels, those of configurations with a backend that did not learn marked so in
    every table and plot."""
    marked = dict(labels)
    for configuration in {c for c, _ in failed}:
        who = comparisons.backend_names([b for c, b in failed if c == configuration])
        marked[configuration] = f"{labels[configuration]} ⚠ {who} {DID_NOT_LEARN}"
    return marked


def _data_sections(results_dir: Path) -> list[tuple[str, str, pd.DataFrame]]:
    """What the dataset adapter and the cache left out, from the run's own lists."""
    def read(name: str) -> pd.DataFrame | None:
        path = results_dir / name
        return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else None

    sections = []
    skipped = read("skipped_images.csv")
    if skipped is not None and len(skipped):
        sections.append(("Skipped images", f"{len(skipped)} images could not be decoded and took no part "
                         "(all listed in skipped_images.csv):", skipped.head(20)))
    unaligned = read("unaligned_images.csv")
    if unaligned is not None and len(unaligned):
        sections.append(("Images without a detected face", f"{len(unaligned)} images had no face dlib could "
                         "find and were used whole, unaligned (all listed in unaligned_images.csv).", pd.DataFrame()))
    dropped = read("dropped_rows.csv")
    if dropped is not None and len(dropped):
        sections.append(("Dropped dataset rows", f"{len(dropped)} rows of the dataset were left out by its "
                         "adapter (all listed in dropped_rows.csv); by reason:",
                         dropped.groupby("reason").size().rename("rows").reset_index()))
    return sections


def _threads_note(frame: pd.DataFrame) -> str:
    counts = sorted({int(t) for t in frame["threads"].dropna()})
    if not counts:
        return ""
    return (f"Each trial ran with {' or '.join(map(str, counts))} framework thread(s), fixed by the "
            "experiment (`threads`) and recorded in each trial's env.json: on the same CPU the same "
            "count gives the same numbers, whatever `--workers` was.")
