import numpy as np
import pytest

from harness.data import labels
from harness.data.labels import (
    AGE_GROUPS,
    age_to_group,
    decode,
    from_joint,
    from_two_hot,
    parse_adience_age,
    to_joint,
    to_two_hot,
)

ALL_PAIRS = [(a, g) for a in range(8) for g in range(2)]


def test_two_hot_matches_the_study_layout():
    np.testing.assert_array_equal(to_two_hot(4, 0), [0, 0, 0, 0, 1, 0, 0, 0, 1, 0])


@pytest.mark.parametrize("age,gender", ALL_PAIRS)
def test_every_encoding_round_trips(age, gender):
    assert tuple(int(x) for x in from_two_hot(to_two_hot(age, gender))) == (age, gender)
    assert tuple(int(x) for x in from_joint(to_joint(age, gender))) == (age, gender)
    assert decode(to_two_hot(age, gender)).age == age
    assert decode(to_two_hot(age, gender)).gender == gender


def test_joint_classes_are_a_bijection():
    joint = [int(to_joint(a, g)) for a, g in ALL_PAIRS]
    assert sorted(joint) == list(range(16))


def test_encoders_reject_out_of_range():
    with pytest.raises(ValueError):
        to_two_hot(8, 0)
    with pytest.raises(ValueError):
        to_joint(0, 2)
    with pytest.raises(ValueError):
        from_two_hot([1, 1, 0, 0, 0, 0, 0, 0, 1, 0])


@pytest.mark.parametrize("age,group", [
    (0, 0), (3, 0), (4, 1), (7, 1), (8, 2), (13, 2), (14, 3), (22, 3), (23, 4), (35, 4),
    (36, 5), (45, 5), (46, 6), (56, 6), (57, 7), (116, 7),
])
def test_exact_ages_map_at_midpoints(age, group):
    assert age_to_group(age) == group


def test_every_group_contains_its_own_range():
    for index, (lo, hi) in enumerate(AGE_GROUPS):
        assert age_to_group(lo) == age_to_group(hi) == index


@pytest.mark.parametrize("text,group,canonical", [
    ("(25, 32)", 4, True), ("(60, 100)", 7, True), ("35", 4, False), ("13", 2, False),
    ("(27, 32)", 4, False), ("(38, 42)", 5, False), ("(25, 23)", 4, False),
    ("(8, 23)", 3, False), ("None", None, False), ("", None, False),
])
def test_adience_age_strings(text, group, canonical):
    parsed = parse_adience_age(text)
    assert (parsed.group, parsed.canonical) == (group, canonical)


def test_sentence():
    assert decode(to_two_hot(1, 1)).sentence() == "a female between 4 and 6"
    assert decode(to_two_hot(4, 0)).sentence() == "a male between 25 and 32"


@pytest.mark.parametrize("output,reason", [
    (np.full(10, 0.1), "tie"),
    (np.zeros(10), "near 0"),
    ([np.nan] + [0.1] * 9, "NaN"),
    (np.ones(9), "expected 10"),
    ([0.9, 0.1, 0, 0, 0, 0, 0, 0, 0.5, 0.5], "tie for the highest gender"),
    ([-1.0] + [0.1] * 9, "negative"),
])
def test_invalid_outputs_are_undefined_with_a_reason(output, reason):
    decoded = decode(output)
    assert not decoded.defined
    assert reason in decoded.reason
    assert decoded.sentence().startswith("Undefined: ")


def test_threshold_turns_low_confidence_into_undefined():
    output = np.array([0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.9, 0.1])
    assert decode(output, threshold=0.25).age == 0
    low = decode(output, threshold=0.5)
    assert not low.defined and "under the threshold" in low.reason


def test_decode_batch_is_row_wise():
    batch = np.stack([to_two_hot(2, 1), np.zeros(10)])
    decoded = labels.decode_batch(batch)
    assert decoded[0].defined and not decoded[1].defined
