"""The door's policy (issue 27 §1–2): which models are fit to decide, from their measured
gate figures, and the three verdicts a person at the door acts on."""
import pytest

from harness.deploy.classify import FaceResult
from harness.deploy.door import door_fitness, door_verdict

CALIBRATED = {"min_age": 18, "max_false_accept": 0.02, "met": True, "threshold": 0.71, "reason": None,
              "test_false_accept_rate": 0.021, "test_false_reject_rate": 0.085, "test_minors": 480,
              "test_adults": 3800}


def test_a_model_with_measured_false_accepts_within_the_limit_is_fit_and_says_so_in_words():
    fitness = door_fitness(CALIBRATED, 18)
    assert fitness.fit and not fitness.problems and fitness.threshold == 0.71
    assert fitness.words() == ("lets in about 2 in 100 minors, refuses about 8 in 100 adults, measured on 4280 "
                               "test faces (480 under 18)")


@pytest.mark.parametrize("calibrated,min_age,limit,problem", [
    (None, 18, 0.05, "no threshold calibrated on validation faces"),
    (CALIBRATED, 21, 0.05, "calibrated for 18, not for 21 (serve it with --min-age 18"),
    ({**CALIBRATED, "met": False, "threshold": None, "reason": "the validation split has 0 faces under 18"},
     18, 0.05, "no threshold that met its target: the validation split has 0 faces under 18"),
    ({**CALIBRATED, "test_false_accept_rate": None, "test_minors": 0}, 18, 0.05, "not measured on test faces"),
    (CALIBRATED, 18, 0.02, "let in 2.1% of its 480 test faces under 18, above the limit of 2.0%"),
])
def test_a_model_that_cannot_show_it_keeps_minors_out_is_not_fit(calibrated, min_age, limit, problem):
    fitness = door_fitness(calibrated, min_age, limit)
    assert not fitness.fit and problem in fitness.problems[0]


def _face(index=0, p=0.9, gate="allow", box=(10, 10, 210, 210), reason=None):
    return FaceResult("photo.jpg", index, box, "a male between 25 and 32", adult_probability=p, gate=gate,
                      undefined_reason=reason)


@pytest.mark.parametrize("faces,verdict,why", [
    ([_face(p=0.9)], "allow", "adult 90% (needs 50%)"),
    ([_face(p=0.1, gate="deny")], "deny", "adult 10% (needs 50%)"),
    ([_face(p=0.55)], "ask_for_id", "borderline: adult 55%, the door needs 50%"),
    ([_face(p=0.45, gate="deny")], "ask_for_id", "borderline"),
    ([_face(p=0.9, gate="deny")], "ask_for_id", "the most likely age group is under the door's age"),
    ([_face(p=0.35, gate="deny")], "deny", "and the most likely age group is under the door's age"),
    ([_face(p=None, gate="undefined", reason="face too blurred")], "ask_for_id", "cannot judge this face"),
    ([_face(box=(10, 10, 40, 40))], "ask_for_id", "too small to judge"),
    ([_face(), _face(index=1, p=0.2, gate="deny")], "ask_for_id", "2 faces in view"),
    ([FaceResult("photo.jpg", None, None, "Undefined: no face found", gate="undefined")], "retake", "no face"),
])
def test_only_a_sure_answer_on_one_face_allows_or_denies(faces, verdict, why):
    # Threshold 0.2: p = 0.35 reaches it, yet a face described under the age at below even
    # odds is denied (both readings say minor); at 0.9 the readings conflict: ask.
    got, reason = door_verdict(faces, threshold=0.5 if faces[0].adult_probability != 0.35 else 0.2, borderline=0.1)
    assert got == verdict and why in reason
