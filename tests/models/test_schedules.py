"""Learning-rate schedules and early stopping: the numbers every backend is given."""
import math

import pytest

from harness.models.schedules import EarlyStopper, LearningRate
from harness.models.spec import EarlyStopping, Schedule, TrainingSpec


def rates(epochs=10, **schedule):
    training = TrainingSpec(learning_rate=0.1, epochs=epochs, schedule=Schedule(**schedule) if schedule else None)
    return [LearningRate(training).rate(e) for e in range(epochs)]


def test_constant_is_the_rate_throughout():
    assert rates() == [0.1] * 10 and rates(kind="constant") == [0.1] * 10


def test_a_warm_up_climbs_linearly_then_the_schedule_starts():
    assert rates(5, warmup_epochs=3) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    assert rates(6, kind="step", warmup_epochs=2, step_every=2, factor=0.5) == pytest.approx(
        [0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.05, 0.05])


def test_cosine_falls_from_the_rate_to_its_floor_on_the_last_epoch():
    got = rates(5, kind="cosine", floor=0.1)
    assert got[0] == pytest.approx(0.1) and got[-1] == pytest.approx(0.01)
    assert got[2] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))))
    assert all(a > b for a, b in zip(got, got[1:]))


def test_step_multiplies_by_its_factor_every_few_epochs():
    assert rates(7, kind="step", step_every=3, factor=0.1) == pytest.approx([0.1] * 3 + [0.01] * 3 + [0.001])


def test_plateau_steps_down_after_patience_epochs_without_improvement():
    training = TrainingSpec(learning_rate=0.1, epochs=8, schedule=Schedule(kind="plateau", patience=2, factor=0.5))
    rate, seen = LearningRate(training), []
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.92, 0.8, 0.85, 0.85, 0.85]):
        seen.append(rate.rate(epoch))
        rate.observe({"val_loss": loss})
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025])


def _stop(curve, metric="val_joint_accuracy", patience=2, restore_best=True):
    stopper = EarlyStopper(EarlyStopping(metric=metric, patience=patience, restore_best=restore_best))
    for epoch, value in enumerate(curve):
        stopper.observe(epoch, {metric: value})
        if stopper.stopped:
            break
    return stopper


def test_early_stopping_stops_patience_epochs_after_the_best_and_keeps_it():
    stopper = _stop([0.50, 0.55, 0.58, 0.57, 0.58, 0.56, 0.60])
    assert stopper.stopped and (stopper.best_epoch, stopper.last_epoch) == (2, 4)   # a tie is no improvement
    assert stopper.restores and stopper.summary() == {
        "epochs_trained": 5, "epoch_kept": 3, "stopped_early": True,
        "early_stopping_metric": "val_joint_accuracy", "early_stopping_best": 0.58}


def test_losses_and_errors_improve_downwards():
    stopper = _stop([5.3, 5.1, 5.2, 5.0, 5.05, 5.01], metric="val_age_mae")
    assert stopper.stopped and (stopper.best_epoch, stopper.last_epoch) == (3, 5) and stopper.restores


def test_without_restore_the_last_epoch_is_kept_and_without_a_spec_nothing_stops():
    assert _stop([0.5, 0.6, 0.55, 0.54], restore_best=False).summary()["epoch_kept"] == 4
    free = EarlyStopper(None)
    for epoch in range(4):
        free.observe(epoch, {})
    assert not free.stopped and not free.restores and free.summary()["epoch_kept"] == 4


def test_a_measure_the_epoch_does_not_have_is_named():
    with pytest.raises(ValueError, match="early_stopping.metric val_age_mae: no such validation measure"):
        EarlyStopper(EarlyStopping(metric="val_age_mae")).observe(0, {"val_loss": 1.0})


def test_older_training_specs_keep_their_dumps_and_ids():
    assert "schedule" not in TrainingSpec().model_dump() and "early_stopping" not in TrainingSpec().model_dump()
    assert not TrainingSpec().epoch_by_epoch and TrainingSpec(early_stopping=EarlyStopping()).epoch_by_epoch


def test_val_age_mae_needs_a_years_head_before_anything_runs(tmp_path):
    from harness.runs.experiment import ExperimentError
    from harness.runs.experiment_file import load
    from tests.helpers.experiments import TINY, write

    grid = {**TINY["grid"], "training": {"epochs": 3, "early_stopping": {"metric": "val_age_mae"}}}
    with pytest.raises(ExperimentError, match="val_age_mae needs a head that predicts years"):
        load(write(tmp_path, {**TINY, "grid": grid}))
    grid["models"] = [{**grid["models"][0], "head": "years_softmax"}]
    assert load(write(tmp_path, {**TINY, "grid": grid}, "years.yaml"))
