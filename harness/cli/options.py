"""Argument types every command shares: clear messages for a bad number, age or probability."""
from __future__ import annotations

import argparse
import math

__all__ = ["probability", "age", "port", "positive", "count", "finite_positive"]


def _converted(text: str, convert, expected: str):
    """``convert(text)``, or the argparse error saying what was expected."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def probability(text: str) -> float:
    value = _converted(text, float, "a number between 0 and 1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (a probability), got {text}")
    return value


def age(text: str) -> float:
    """A door's minimum age (the one range of :func:`harness.models.gate.check_door_age`)."""
    from harness.models.gate import check_door_age

    value = _converted(text, float, "an age in years")
    try:
        return check_door_age(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def port(text: str) -> int:
    value = _converted(text, int, "a TCP port number")
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is between 1 and 65535, got {value}")
    return value


def positive(number):
    def parse(text: str):
        try:
            value = number(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive {number.__name__}, got {text}")
        return value
    return parse


def count(text: str) -> int:
    """A whole number of things, none allowed."""
    value = _converted(text, int, "a whole number, 0 or more")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def finite_positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text}")
    return value
