"""``harness compare``: two experiments on the same test faces, configuration by
configuration."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analysis import comparisons, statistics
from harness.analysis.report.figures import forest_rows
from harness.analysis.report.publish import check_out, staged_report
from harness.analysis.report.render import markdown_table, report_stamp
from harness.analysis.report.tables import numeric_csv, versus_display
from harness.analysis.report.trials import (
    framework_versions,
    load_trials,
    stored_experiment,
    stored_manifest,
    stored_split_spec,
)
from harness.runs.index import describe_missing_index, experiment_records, read_index
from harness.runs.layout import REPORT_HTML, REPORT_MD, REPORT_PLOTS_DIR, REPORT_TABLES_DIR


def _same_test_faces(first: Path, second: Path) -> list[int]:
    """The rounds both runs share, refusing any round whose test faces differ."""
    manifests = [stored_manifest(first), stored_manifest(second)]
    for where, manifest in zip((first, second), manifests):
        if manifest is None:
            raise ValueError(f"{where / 'splits'}: no split manifest, so which faces each round tests is unknown")
    shared = sorted(set(manifests[0].rounds) & set(manifests[1].rounds))
    if not shared:
        raise ValueError(f"{first} and {second} share no split round")
    for round_ in shared:
        tested = [set(m.ids(round_, "test")) for m in manifests]
        if tested[0] != tested[1]:
            raise ValueError(
                f"round {round_} tests different faces in {first} ({len(tested[0])}) and {second} "
                f"({len(tested[1])}; {len(tested[0] & tested[1])} in common): a paired comparison needs the "
                "same data, limit and split in both experiments")
    return shared


def _experiment_differences(first: dict, second: dict) -> str:
    ignore = ("name", "description", "baseline", "time_limit_s")
    return comparisons.changes({k: v for k, v in first.items() if k not in ignore},
                               {k: v for k, v in second.items() if k not in ignore})


def write_comparison(first: str | Path, second: str | Path, out: str | Path, command: str | None = None) -> Path:
    """``harness compare A B --out DIR``: each configuration and backend that ran in both
    experiments, A minus B, paired over the rounds (which must test the same faces)."""
    first, second, out = Path(first), Path(second), Path(out)
    check_out(out)
    for where in (first, second):
        if not where.is_dir():
            raise ValueError(f"{where}: no such results folder")
    if first.resolve() == second.resolve():
        raise ValueError(f"{first} and {second} are the same results folder: compare two experiments")
    records = []
    for where in (first, second):
        if not read_index(where):
            raise ValueError(f"{where}: {describe_missing_index(where)}")
        records.append(experiment_records(where))
    loaded = [load_trials(d, r) for d, r in zip((first, second), records)]
    frames = [result.frame for result in loaded]
    for where, frame in zip((first, second), frames):
        if frame.empty:
            raise ValueError(f"{where}: no completed trials to compare")
    damaged = pd.concat([result.damaged.assign(experiment=str(where))
                         for where, result in zip((first, second), loaded)], ignore_index=True)
    shared = _same_test_faces(first, second)
    frames = [f[f["round"].isin(shared)] for f in frames]
    stored = [stored_experiment(d) for d in (first, second)]
    names = [s.get("name") or d.name for s, d in zip(stored, (first, second))]
    ratio = comparisons.test_train_ratio(stored_manifest(first), stored_split_spec(stored[0]))
    table = comparisons.between_experiments(frames[0], frames[1], ratio)
    if table.empty:
        raise ValueError(f"no configuration ran on the same backend in both {first} and {second}")
    failed = {**comparisons.failures(frames[1]), **comparisons.failures(frames[0])}
    table = comparisons.set_aside_versus(table, failed, None)
    labels = comparisons.short_labels(pd.concat(frames, ignore_index=True))
    with staged_report(out) as stage:
        _write(stage, table, labels, names, records, stored, frames, damaged, ratio, (first, second), command)
    return out / REPORT_MD


def _write(out: Path, table, labels, names, records, stored, frames, damaged, ratio, folders,
           command: str | None) -> None:
    first, second = folders
    damaged.to_csv(out / REPORT_TABLES_DIR / "damaged.csv", index=False)
    numeric_csv(table.assign(configuration=table["configuration"].map(labels)), out / REPORT_TABLES_DIR / "between.csv")
    from harness.analysis.plots import forest_plot

    plot = forest_plot(forest_rows(table, labels, backend=True), [label for _, label in comparisons.ACCURACIES],
                       out / REPORT_PLOTS_DIR / "forest_between.png",
                       f"{names[0]} − {names[1]}, per configuration and backend (filled: p < 0.05)",
                       f"points (← {names[1]} higher | {names[0]} higher →)")
    stamp = report_stamp(command, {**records[0], **records[1]}, framework_versions(first, records[0])
                   + framework_versions(second, records[1]))
    differs = _experiment_differences(stored[0], stored[1]) or "nothing outside their names"
    intro = [f"Each configuration that ran in both `{names[0]}` and `{names[1]}`, on the same backend: "
             f"{names[0]} minus {names[1]}, paired over the rounds both ran, which test the same faces "
             f"(checked). The experiments differ in: {differs}.",
             f"{comparisons.rounds_sentence(frames[0], stored_split_spec(stored[0]))} Differences in points with the "
             f"corrected resampled t-test's 95 % interval (test/train = {ratio:.3f}); ▲ / ▼: {names[0]} higher / "
             f"lower at α = {statistics.ALPHA}; Wilcoxon's p beside it from {statistics.WILCOXON_MIN_PAIRS} pairs."]
    shown = versus_display(table, labels, than=names[1])
    summary = _summary(table, labels, names)
    lines = [f"# Comparison: {names[0]} − {names[1]}", "", "## Summary", "", *[f"- {line}" for line in summary], "",
             stamp, ""] + [x for t in intro for x in (t, "")]
    sections = [(f"{names[0]} − {names[1]}", "", shown)]
    if len(damaged):
        sections.append(("Damaged trials", f"{len(damaged)} completed trials have files that cannot be read; "
                         "their configurations are compared on the rounds that remain, or left out when "
                         "none does (listed in tables/damaged.csv). Delete a damaged trial's folder and run "
                         "its experiment again to redo it.", damaged))
    for title, text, frame in sections:
        lines += [f"## {title}", ""] + ([text, ""] if text else []) + [markdown_table(frame), ""]
    lines += ["## Plots", "", f"![{plot.stem}]({plot.relative_to(out).as_posix()})"]
    (out / REPORT_MD).write_text("\n".join(lines) + "\n")
    from harness.analysis.report.render import page

    (out / REPORT_HTML).write_text(page(f"{names[0]} − {names[1]}", stamp, intro, sections,
                                          [plot.relative_to(out).as_posix()], {}, [], summary))


def _summary(table: pd.DataFrame, labels: dict, names: list[str]) -> list[str]:
    """The comparison's answer in counts (joint accuracy), from its own table."""
    verdicts = table["joint verdict"]
    tested = table[~verdicts.str.startswith(("left out", statistics.NOT_ENOUGH))]
    lines = [f"**Compared** {len(table)} configuration × backend pairs that ran in both, joint accuracy: "
             f"{names[0]} higher in {(tested['joint verdict'] == 'this higher').sum()}, {names[1]} higher in "
             f"{(tested['joint verdict'] == 'baseline higher').sum()}, no detectable difference in "
             f"{(tested['joint verdict'] == statistics.NO_DIFFERENCE).sum()} of {len(tested)} tested."]
    if (verdicts == statistics.NOT_ENOUGH).any():
        lines.append(f"{(verdicts == statistics.NOT_ENOUGH).sum()} not tested ({statistics.NOT_ENOUGH}).")
    for _, row in table[verdicts.str.startswith("left out")].iterrows():
        lines.append(f"⚠ {labels[row['configuration']]} on {row['backend']}: {row['joint verdict']} (in either "
                     "experiment), so not compared.")
    return lines
