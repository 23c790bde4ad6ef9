"""Who the model fails: per-slice counts on faces whose answers are known, and the report's section."""
import numpy as np
import pandas as pd
import pytest

from harness.analysis import fairness
from harness.data.labels import N_AGE


def _readout(group: int, gender: int, adult_mass: float | None = None) -> np.ndarray:
    """A group model's readout: all of its age mass on ``group`` and gender ``gender``."""
    ages = np.zeros(N_AGE)
    ages[group] = 1.0
    genders = np.eye(2)[gender]
    return np.concatenate([ages, genders])


# Six faces: (true group, true gender, exact age, race) and what the model said (group, gender).
FACES = [
    (0, 0, 1.0, "Asian", 0, 1),     # a baby: age right, gender wrong
    (3, 1, 16.0, "Asian", 4, 1),    # 16: said (25, 32), an adult's group: let in
    (3, 0, 17.0, "White", 3, 0),    # 17: said (15, 20): refused
    (4, 0, 19.0, "White", 4, 0),    # 19: said (25, 32): allowed
    (5, 1, 40.0, "White", 6, 1),    # 40: one group off, allowed
    (5, 1, 35.0, "Asian", 3, 0),    # 35: said (15, 20) and male: refused, gender wrong
]


def _faces():
    labels = pd.DataFrame([{"age_group": g, "gender": s, "age": a, "group": r} for g, s, a, r, _, _ in FACES])
    readouts = np.stack([_readout(pg, ps) for *_, pg, ps in FACES])
    return readouts, labels


def test_each_slice_counts_what_the_model_got_right_and_whom_the_door_let_in():
    readouts, labels = _faces()
    rows = fairness.trial_breakdown(readouts, labels, 18, 0.5).set_index(["kind", "slice"])
    everyone = rows.loc[("all", "all faces")]
    assert (everyone.faces, everyone.gender_correct, everyone.age_exact, everyone.age_one_off) == (6, 4, 3, 5)
    assert (everyone.minors, everyone.minors_allowed, everyone.adults, everyone.adults_refused) == (3, 1, 3, 1)
    asian = rows.loc[("group", "Asian")]
    assert (asian.faces, asian.gender_correct, asian.minors_allowed, asian.adults_refused) == (3, 1, 1, 1)
    assert rows.loc[("age band", "16–17")][["faces", "minors", "minors_allowed"]].tolist() == [2, 2, 1]
    assert rows.loc[("group, adults (18+)", "White")][["faces", "gender_correct"]].tolist() == [2, 2]
    assert rows.loc[("group, children (under 13)", "Asian")][["faces", "gender_correct"]].tolist() == [1, 0]
    assert ("age band", "13–15") not in rows.index            # no face there: no row
    assert rows["years_faces"].sum() == 0                     # a group model has no years to score


def test_rounds_combine_as_means_with_their_counts_summed():
    readouts, labels = _faces()
    first = fairness.trial_breakdown(readouts, labels)
    second = fairness.trial_breakdown(readouts[:3], labels.iloc[:3].reset_index(drop=True))
    combined = fairness.combine_rounds([first, second], test_train_ratio=0.25).set_index(["kind", "slice"])
    everyone = combined.loc[("all", "all faces")]
    assert everyone["faces"] == 9 and everyone["rounds"] == 2
    assert everyone["gender %"] == pytest.approx(100 * 2 / 3)           # 4 of 6, then 2 of 3
    assert everyone["age exact %"] == pytest.approx((100 * 3 / 6 + 100 * 2 / 3) / 2)
    assert everyone["minors"] == 6 and everyone["adults"] == 3
    assert everyone["adults refused %"] == pytest.approx(100 / 3)   # the second round has no adults: left out
    assert everyone["age exact % low"] < everyone["age exact %"] < everyone["age exact % high"]


def test_a_dataset_without_groups_or_exact_ages_is_broken_down_by_what_it_has():
    readouts, labels = _faces()
    bare = labels.drop(columns=["group"]).assign(age=np.nan)
    kinds = set(fairness.trial_breakdown(readouts, bare)["kind"])
    assert kinds == {"all", "gender"}


def test_a_years_model_is_scored_in_years_per_slice():
    from harness.models.heads import N_YEARS

    readouts, labels = _faces()
    years = np.zeros((len(FACES), N_YEARS + 2))
    years[np.arange(len(FACES)), [int(a) + 2 for _, _, a, *_ in FACES]] = 1.0   # every face 2 years too old
    years[:, -2:] = readouts[:, -2:]
    rows = fairness.trial_breakdown(years, labels).set_index(["kind", "slice"])
    assert rows.loc[("group", "White")]["abs_error_sum"] == pytest.approx(6.0)
    assert rows.loc[("group", "White")]["years_faces"] == 3
