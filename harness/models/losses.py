"""Loss formulas, written once over an array namespace.

``xp`` is NumPy when the harness scores saved predictions, and
``tensorflow.experimental.numpy`` inside a backend's training graph, so both
frameworks train on - and the reports measure - literally the same formula.
"""
from __future__ import annotations

from harness.models.heads import part_losses, parts

EPSILON = 1e-7


def categorical_crossentropy(xp, y_true, y_pred):
    return -xp.sum(y_true * xp.log(xp.clip(y_pred, EPSILON, 1.0)), axis=-1)


def mean_squared_error(xp, y_true, y_pred):
    return xp.mean(xp.square(y_true - y_pred), axis=-1)


def _signed(y_true):
    # Hinge losses want targets in {-1, 1}; 0/1 targets are converted as Keras does.
    return 2.0 * y_true - 1.0


def hinge(xp, y_true, y_pred):
    return xp.mean(xp.maximum(1.0 - _signed(y_true) * y_pred, 0.0), axis=-1)


def squared_hinge(xp, y_true, y_pred):
    return xp.mean(xp.square(xp.maximum(1.0 - _signed(y_true) * y_pred, 0.0)), axis=-1)


# Huber's transition, on the years regression's scale (years / 100): 5 years. Within it
# the loss is squared; beyond it linear, so a mislabelled or odd face pulls no harder
# than a 5-year miss does.
HUBER_DELTA = 0.05


def huber(xp, y_true, y_pred):
    error = xp.abs(y_true - y_pred)
    quadratic = xp.minimum(error, HUBER_DELTA)
    return xp.mean(0.5 * xp.square(quadratic) + HUBER_DELTA * (error - quadratic), axis=-1)


FORMULAS = {f.__name__: f for f in (categorical_crossentropy, mean_squared_error, hinge, squared_hinge, huber)}


def per_sample(xp, head: str, loss: str | None, y_true, y_pred):
    """Sum over the head's parts of each part's loss: shape (N,)."""
    total, start = None, 0
    for part, name in zip(parts(head), part_losses(head, loss)):
        stop = start + part.units
        term = FORMULAS[name](xp, y_true[:, start:stop], y_pred[:, start:stop])
        total = term if total is None else total + term
        start = stop
    return total
