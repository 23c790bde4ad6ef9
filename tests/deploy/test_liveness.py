"""The blink check (issue 27 §4): a still photo held up to the camera never passes, a real
face blinking does; on real faces, through dlib's 68-point landmarks."""
import numpy as np
import pytest
from PIL import Image

from harness.deploy.classify import FaceResult
from harness.deploy.door import door_verdict
from harness.deploy.liveness import MAX_FRAMES, Liveness, blink_in, check_frames, eye_landmarks, openness
from harness.deploy.liveness.sequences import blink_sequence, close_eyes, rocked_sequence, still_sequence

OPEN, SHUT = 0.12, 0.04


@pytest.mark.parametrize("values,state", [
    ([OPEN] * 8 + [SHUT, SHUT] + [OPEN] * 8, "blink"),
    ([OPEN] * 8 + [0.06, 0.07] + [OPEN] * 8, "blink"),                # half shut in two frames is enough
    ([OPEN, None, OPEN, None] * 3 + [SHUT, None, SHUT] + [OPEN] * 4, "blink"),   # frames without a face are skipped
    ([OPEN] * 8 + [SHUT] + [OPEN] * 9, "no_blink"),                   # one frame: landmark jitter
    ([OPEN] * 18, "no_blink"),                                        # a still photo
    ([SHUT] * 18, "no_blink"),                                        # a photo of closed eyes
    ([OPEN] * 14 + [SHUT] * 4, "no_blink"),                           # closed, never open again
    ([SHUT] * 4 + [OPEN] * 14, "no_blink"),                           # open, never closed before
    ([OPEN] * 8 + [0.095, 0.095] + [OPEN] * 8, "no_blink"),           # four fifths open is no blink
    ([OPEN] * 6 + [SHUT] * 6 + [OPEN] * 8, "no_blink"),               # shut for 0.75 s: not a blink
    ([OPEN, SHUT, SHUT] * 6, "no_blink"),                             # flickering landmarks
    ([OPEN, SHUT, SHUT, OPEN] + [None] * 14, "too_few_faces"),
])
def test_a_blink_is_eyes_that_close_and_open_again(values, state):
    assert blink_in(values).state == state


def test_one_photo_is_not_checked_and_too_many_frames_are_refused():
    assert check_frames([]).state == "not_checked" and not check_frames([]).passed
    with pytest.raises(ValueError, match=f"at most {MAX_FRAMES}"):
        check_frames([Image.new("RGB", (8, 8))] * (MAX_FRAMES + 1))


def test_painting_the_lids_shut_closes_the_eyes_the_landmarks_see(face_photo):
    frame = Image.new("RGB", (640, 480), (120, 120, 120))
    frame.paste(Image.open(face_photo).convert("RGB").resize((260, 260)), (190, 110))
    points = eye_landmarks(frame)
    assert points is not None and points.shape == (68, 2)
    shut = eye_landmarks(close_eyes(frame, points, 1.0))
    assert openness(shut) < 0.6 * openness(points)
    # Nothing but the eyes changes: the mouth and the face's outline stay where they were
    # (within 2 % of the face's 260 px; the landmark model fits the face as a whole).
    assert np.abs(shut[48:68] - points[48:68]).max() <= 5 and np.abs(shut[:17] - points[:17]).max() <= 5


def test_a_still_or_rocked_photo_never_passes_and_the_same_face_blinking_does(face_photo):
    face = Image.open(face_photo)
    for seed in range(3):
        for sequence in (still_sequence, rocked_sequence):
            held = check_frames(sequence(face, np.random.default_rng(seed)))
            assert held.state in ("no_blink", "too_few_faces") and not held.passed, (sequence.__name__, held)
    blinking = check_frames(blink_sequence(face, np.random.default_rng(7)))
    assert blinking.passed and blinking.frames == 20 and blinking.frames_with_face >= 18, blinking


def _adult(p=0.9):
    return FaceResult("camera", 0, (10, 10, 210, 210), "a male between 25 and 32", adult_probability=p, gate="allow")


@pytest.mark.parametrize("liveness,verdict", [
    (Liveness("blink", "a blink was seen"), "allow"),
    (Liveness("no_blink", "no blink in 24 frames"), "ask_for_id"),
    (Liveness("not_checked", "one photo cannot show a blink"), "ask_for_id"),
    (None, "allow"),   # the door does not check liveness
])
def test_only_a_person_who_blinked_is_allowed(liveness, verdict):
    got, why = door_verdict([_adult()], threshold=0.5, borderline=0.1, liveness=liveness)
    assert got == verdict and (liveness is None or liveness.passed or liveness.why in why)
    denied, _ = door_verdict([_adult(0.1).__class__("camera", 0, (10, 10, 210, 210), "a child", adult_probability=0.1,
                                                    gate="deny")], 0.5, 0.1, liveness=liveness)
    assert denied == "deny"   # liveness never turns a deny into anything else
