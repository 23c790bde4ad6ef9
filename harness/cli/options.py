"""Argument types every command shares: clear messages for a bad number, age or probability."""
from __future__ import annotations

import argparse
import math

__all__ = ["probability", "age", "positive"]


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (a probability), got {text}")
    return value


def age(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an age in years, got {text!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 150.0:
        raise argparse.ArgumentTypeError(f"must be an age in years between 0 and 150, got {text}")
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
