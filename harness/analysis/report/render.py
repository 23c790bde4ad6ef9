"""How a report is written out: Markdown tables, the HTML page around them, and the stamp
every report carries (command, commit, versions, dates)."""
from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(map(cell, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _commit() -> str:
    """The harness's git commit, marked when its tracked files have uncommitted changes."""
    import subprocess

    where = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if dirty else "")


def report_stamp(command: str | None, records: dict[str, dict], versions: str = "") -> str:
    """Who made this report from what: the command, the commit, the date, when the trials
    ran, and (``versions``) under which framework versions."""
    import datetime

    finished = sorted(r["finished_at"] for r in records.values() if isinstance(r.get("finished_at"), (int, float)))
    ran = ""
    if finished:
        day = [datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M") for t in
               (finished[0], finished[-1])]
        ran = f" Its {len(records)} trial records were written between {day[0]} and {day[1]} UTC."
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    made = f"`{command}`" if command else "`harness report`"
    return f"Made by {made} at commit {_commit()} on {today}.{ran}{versions}"



STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:1em;
     line-height:1.4;color:#222;overflow-wrap:anywhere}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}
code{background:#f3f3f3;padding:0 .2em}
.table-box{overflow-x:auto;max-width:100%;margin:.5em 0 1em}
table{border-collapse:collapse;font-size:13px}
th{background:#f3f3f3;position:sticky;top:0}
tr>td:first-child,tr>th:first-child{position:sticky;left:0;z-index:1;background:#fff;box-shadow:1px 0 0 #ccc}
tr>th:first-child{background:#f3f3f3;z-index:2}
details summary{cursor:pointer}details small{display:block;max-width:30em;white-space:normal}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left;overflow-wrap:normal}
th{min-width:4.5em}td{white-space:nowrap}
td.label{white-space:normal;min-width:9em;max-width:20em;overflow-wrap:break-word;word-break:normal}
figcaption{font-size:12px;color:#555}
td.long{white-space:normal;min-width:16em;max-width:40em;font-size:12px;overflow-wrap:anywhere}
td.higher-a{background:#e3f1e3}td.higher-b{background:#f8e6d4}
abbr{text-decoration:underline dotted;cursor:help}
.summary{border:2px solid #3b6ea5;border-radius:6px;background:#f2f6fb;padding:.2em 1em;margin:.5em 0 1em}
.summary h2{margin:.4em 0 .2em}.summary ul{margin:.3em 0 .6em;padding-left:1.2em}.summary li{margin:.25em 0}
figure{margin:1em 0}img{max-width:100%;height:auto;display:block}
@media (max-width:600px){body{padding:.5em}table{font-size:11px}td,th{padding:2px 4px}}
"""
LONG_COLUMNS = {"full specification", "changes", "error", "reason", "not met because", "ensemble", "file"}


def _cell(column: str, value, titles: dict[str, str]) -> str:
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    shown = html.escape(text)
    classes = []
    if column == "configuration" and text in titles:
        # A tap opens the full specification (a touch screen has no hover); the title
        # still shows it on hover with a mouse.
        full = html.escape(titles[text], quote=True)
        shown = f"<details><summary title='{full}'>{shown}</summary><small>{full}</small></details>"
        classes.append("label")
    if column in LONG_COLUMNS:
        classes.append("long")
    if column.startswith("verdict") and text.endswith("higher"):
        classes.append("higher-a" if text.startswith(("Keras", "higher")) else "higher-b")
    return f"<td class='{' '.join(classes)}'>{shown}</td>" if classes else f"<td>{shown}</td>"


def table(frame: pd.DataFrame, titles: dict[str, str]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "\n".join("<tr>" + "".join(_cell(str(c), v, titles) for c, v in zip(frame.columns, row)) + "</tr>"
                     for row in frame.itertuples(index=False))
    return f"<div class='table-box'><table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>"


def _inline(text: str) -> str:
    """The markdown the report's sentences use: `code` and **bold**."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


# What each plot shows, by its file name's start (plots/NAME.png), for its alt text and caption.
PLOT_WORDS = {
    "forest_frameworks": "Forest plot: the paired difference between the frameworks per configuration and "
                         "accuracy, with its corrected 95 % interval",
    "forest_baseline": "Forest plot: each configuration minus the baseline per backend and accuracy, with its "
                       "corrected 95 % interval",
    "grid_joint_accuracy": "Bar chart: joint accuracy on the test split per configuration and backend",
    "learning_curves": "Learning curves: training and validation loss and validation accuracy per epoch, "
                       "per backend",
    "age_confusion": "Age-group and gender confusion matrices per backend, all rounds together",
    "joint_confusion": "Joint confusion matrix of the 16 classes (gender × age group) per backend, all rounds "
                       "together",
    "gate_tradeoff": "Door gate: false accepts against false rejects over every threshold, and each round at "
                     "its calibrated threshold",
    "search": "Search: ",
    "split_": "Split balance: faces per age group and gender in each split",
}


def alt_text(src: str) -> str:
    """What the plot at ``src`` shows, in words (its alt text and caption; tap to enlarge)."""
    stem = Path(src).stem
    for start, words in PLOT_WORDS.items():
        if stem.startswith(start):
            detail = stem.removeprefix("search_").replace("_", " ") if start == "search" else ""
            return f"{words}{detail} (tap to enlarge)"
    return f"Plot: {stem.replace('_', ' ')} (tap to enlarge)"


def page(name: str, stamp: str, intro: list[str], sections: list[tuple[str, str, pd.DataFrame]],
         images: list[str], titles: dict[str, str], notes: list[str], summary: list[str] | None = None) -> str:
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{html.escape(name)}</title><style>{STYLE}</style></head><body>",
             f"<h1>Report: {html.escape(name)}</h1>"]
    if summary:
        parts.append("<section id='summary' class='summary' aria-label='summary'><h2>Summary</h2><ul>"
                     + "".join(f"<li>{_inline(line)}</li>" for line in summary) + "</ul></section>")
    parts.append(f"<p><small>{_inline(stamp)}</small></p>")
    parts += [f"<p>{_inline(line)}</p>" for line in intro]
    for title, text, frame in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if text:
            parts.append(f"<p>{_inline(text)}</p>")
        if len(frame):
            parts.append(table(frame, titles))
    parts += [f"<p>{_inline(note)}</p>" for note in notes]
    parts.append("<h2>Plots</h2>")
    parts += [f"<figure><a href='{html.escape(src, quote=True)}'><img src='{html.escape(src, quote=True)}' "
              f"alt='{html.escape(alt_text(src), quote=True)}' loading='eager'></a>"
              f"<figcaption>{html.escape(alt_text(src))}</figcaption></figure>" for src in images]
    return "\n".join(parts + ["</body></html>"]) + "\n"
