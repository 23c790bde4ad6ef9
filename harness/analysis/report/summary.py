"""The few lines a report opens with: what ran, the best configuration, the framework
answer with its counts, the design factors that matter, the door gate, and warnings.
Written from the same tables the report shows below, never typed."""
from __future__ import annotations

from collections import Counter

import pandas as pd

from harness.analysis import comparisons, statistics
from harness.analysis.learning import DID_NOT_LEARN
from harness.models import backends

__all__ = ["summary_lines"]


def _interval(mean: float, low: float, high: float) -> str:
    return f"{mean:.1f} % [{low:.1f}, {high:.1f}]" if pd.notna(low) else f"{mean:.1f} %"


def _ran(frame: pd.DataFrame) -> str:
    present = comparisons.ordered_backends(frame)
    names = ", ".join(backends.display_name(b) for b in present)
    rounds = frame.groupby(["configuration", "backend"]).size()
    per = (f"{rounds.iloc[0]} round{'s' if rounds.iloc[0] != 1 else ''}" if rounds.nunique() == 1
           else f"{rounds.min()}–{rounds.max()} rounds")
    faces = frame["test_faces"].dropna() if "test_faces" in frame else pd.Series(dtype=float)
    tested = (f", {int(faces.median()):,} test faces a round," if len(faces) else "")
    inputs = sorted(set(frame["input"].dropna())) if "input" in frame else []
    on = f" on {' and '.join(inputs)}" if inputs else ""
    return (f"**Ran** {frame['configuration'].nunique()} configurations × {len(present)} backends ({names}) × "
            f"{per}: {len(frame)} trials{tested}{on}.")


def _learned(ranked: pd.DataFrame, failed: dict) -> pd.DataFrame:
    """The ranking's rows whose configuration and backend learned."""
    return ranked[[(c, b) not in failed for c, b in zip(ranked["configuration"], ranked["backend"])]]


def _best(ranked: pd.DataFrame, labels: dict, failed: dict, include: bool) -> str | None:
    if ranked.empty:
        return None
    usable = ranked if include else _learned(ranked, failed)
    if usable.empty:
        return "**Best**: none: no configuration learned."
    top = usable.iloc[0]
    over = "; 95 % interval over rounds" if pd.notna(top["joint ci_low"]) else "; one round"
    return (f"**Best**: {labels[top['configuration']]} on {backends.display_name(top['backend'])}, joint "
            f"{_interval(top['joint mean'], top['joint ci_low'], top['joint ci_high'])} (age exact "
            f"{top['age exact mean']:.1f} %, 1-off {top['age 1-off mean']:.1f} %, gender "
            f"{top['gender mean']:.1f} %{over}).")


def _best_trial(best: tuple | None) -> str | None:
    if not best or best[0] is None:
        return None
    score, trial_id, record = best
    return (f"**Best trial** (highest validation joint accuracy, {100 * score:.1f} %; never a test figure): "
            f"`trials/{trial_id}` ({record.get('model_name')}, {backends.display_name(record.get('backend'))}, round "
            f"{record.get('round')}); `harness predict --model RESULTS/best` uses it.")


def _frameworks(pairs: pd.DataFrame, frame: pd.DataFrame, labels: dict) -> str | None:
    present = comparisons.ordered_backends(frame)
    if len(present) < 2 or pairs.empty:
        return "**Frameworks**: one backend only, so no comparison." if len(present) < 2 else None
    verdicts = Counter(pairs["verdict"])
    tested = {v: n for v, n in verdicts.items() if not v.startswith("left out") and v != statistics.NOT_ENOUGH}
    total = sum(tested.values())
    parts = []
    same = sum(n for v, n in tested.items() if v.startswith(statistics.NO_DIFFERENCE))
    if total:
        parts.append(f"no detectable difference in {same} of {total} comparisons")
    for verdict in sorted(v for v in tested if v.endswith("higher") or " higher " in v):
        rows = pairs[pairs["verdict"] == verdict]
        which = ", ".join(f"{labels[c]} ({m})" for c, m in zip(rows["configuration"], rows["metric"]))
        parts.append(f"{verdict.split(' (')[0]} in {len(rows)}: {which}")
    if verdicts.get(statistics.NOT_ENOUGH):
        parts.append(f"{verdicts[statistics.NOT_ENOUGH]} not tested: {statistics.NOT_ENOUGH}")
    left = sum(n for v, n in verdicts.items() if v.startswith("left out"))
    if left:
        parts.append(f"{left} left out because a model did not learn")
    return ("**Frameworks** (a comparison is one configuration's one accuracy; corrected t-test, α = 0.05): "
            + "; ".join(parts) + ".")


def _factors(versus: pd.DataFrame, labels: dict, baseline: str | None) -> str | None:
    if versus.empty or baseline is None:
        return None
    differ = versus[versus["joint verdict"].isin(["this higher", "baseline higher"])]
    tested = versus[~versus["joint verdict"].str.startswith(("left out", statistics.NOT_ENOUGH))]
    head = f"**Design factors** (against the baseline {labels[baseline]}, joint accuracy): "
    if tested.empty:
        return head + "none tested (" + ("a model did not learn" if versus["joint verdict"].str.startswith(
            "left out").any() else statistics.NOT_ENOUGH) + ")."
    if differ.empty:
        return head + f"none of {len(tested)} tested differs."
    shown = "; ".join(f"{labels[c]} on {backends.display_name(b)} {d:+.1f} points"
                      for c, b, d in zip(differ["configuration"], differ["backend"], differ["joint difference"]))
    return head + f"{len(differ)} of {len(tested)} differ: {shown}."


def _gate(frame: pd.DataFrame, ranked: pd.DataFrame, labels: dict, failed: dict) -> str | None:
    if ranked.empty or "gate_far" not in frame:
        return None
    usable = _learned(ranked, failed)
    if usable.empty:
        return None
    top = usable.iloc[0]
    part = frame[(frame["configuration"] == top["configuration"]) & (frame["backend"] == top["backend"])]
    if part["gate_far"].isna().all():
        return None
    line = (f"**Door gate** of the best at 18 and the default threshold: lets in {100 * part['gate_far'].mean():.1f} "
            f"% of test minors, refuses {100 * part['gate_frr'].mean():.1f} % of adults")
    if "cal_met" in part and part["cal_met"].fillna(False).astype(bool).any():
        met = part[part["cal_met"].fillna(False).astype(bool)]
        line += (f"; calibrated on validation faces (target {100 * met['cal_target'].iloc[0]:.1f} %): lets in "
                 f"{100 * met['cal_test_far'].mean():.1f} %, refuses {100 * met['cal_test_frr'].mean():.1f} %")
    return line + "."


def _warnings(failed: dict, plain: dict, include: bool, failed_trials: int, damaged: int) -> list[str]:
    lines = []
    for configuration in sorted({c for c, _ in failed}):
        # The first reason of each (every reason per trial is in tables/trials.csv).
        who = "; ".join(f"{backends.display_name(b)} {failed[(configuration, b)].split('; ')[0]}"
                        for b in backends.ordered([b for c, b in failed if c == configuration]))
        lines.append(f"⚠ **{DID_NOT_LEARN}**: {plain[configuration]}: {who} (all reasons: tables/trials.csv). "
                     + ("Kept in the comparisons (--include-degenerate), which then compare a failure."
                        if include else "Left out of framework verdicts and design comparisons."))
    if failed_trials:
        lines.append(f"⚠ {failed_trials} trial(s) failed: their errors are listed at the end.")
    if damaged:
        lines.append(f"⚠ {damaged} trial(s) are damaged and left out: listed at the end.")
    return lines


def summary_lines(frame: pd.DataFrame, pairs: pd.DataFrame, versus: pd.DataFrame, ranked: pd.DataFrame,
                  labels: dict, baseline: str | None, failed: dict, include: bool = False,
                  failed_trials: int = 0, damaged: int = 0, plain: dict | None = None,
                  best: tuple | None = None) -> list[str]:
    """The summary's lines (Markdown), from the report's own tables; ``labels`` are the
    tables' (marked where a model did not learn), ``plain`` the same unmarked; ``best``
    the best trial by validation (:func:`harness.runs.index.ranked_trials`' first)."""
    plain = plain or labels
    if frame.empty:
        return ["**Ran** no completed trials yet."] + _warnings({}, plain, include, failed_trials, damaged)
    found = [_ran(frame), _best(ranked, plain, failed, include), _best_trial(best), _frameworks(pairs, frame, plain),
             _factors(versus, plain, baseline), _gate(frame, ranked, plain, failed)]
    return [line for line in found if line] + _warnings(failed, plain, include, failed_trials, damaged)
