"""Liveness at the door: is the face in front of the camera a person, not a photo held up?

:mod:`.blink` is the check (the eyes' openness over a live session's frames, from dlib's
68-point landmarks, must show a blink); :mod:`.sequences` makes frame sequences from
real faces (a still photo held up, the same face blinking) to test and measure it.
"""
from harness.deploy.liveness.blink import (
                                           BLINK_CLOSED,
                                           BLINK_REOPENED,
                                           MAX_CLOSED_FRAMES,
                                           MAX_CLOSED_SHARE,
                                           MAX_FRAMES,
                                           MIN_CLOSED_FRAMES,
                                           MIN_FACE_FRAMES,
                                           Liveness,
                                           blink_in,
                                           check_frames,
                                           eye_landmarks,
                                           openness,
)

__all__ = ["Liveness", "check_frames", "blink_in", "openness", "eye_landmarks", "BLINK_CLOSED",
           "BLINK_REOPENED", "MIN_CLOSED_FRAMES", "MAX_CLOSED_FRAMES", "MAX_CLOSED_SHARE", "MIN_FACE_FRAMES",
           "MAX_FRAMES"]
