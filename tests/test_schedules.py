"""Learning-rate schedules: values against hand-computed ones, JSON round trips, bad configs."""
import json
import math

import pytest

from convnet import schedules


def test_cosine_decay_by_hand():
    lr = schedules.CosineDecay(1e-3, decay_steps=100)
    assert lr(0) == pytest.approx(1e-3, rel=1e-15)
    assert lr(50) == pytest.approx(0.5e-3, rel=1e-12)           # cos(pi/2) = 0
    assert lr(25) == pytest.approx(1e-3 * (1 + math.sqrt(0.5)) / 2, rel=1e-12)
    assert lr(100) == pytest.approx(0.0, abs=1e-18)
    assert lr(1000) == lr(100)                                   # held at the end


def test_cosine_decay_alpha_is_the_floor():
    lr = schedules.CosineDecay(2.0, decay_steps=10, alpha=0.1)
    assert lr(10) == pytest.approx(0.2, rel=1e-12)
    assert lr(5) == pytest.approx(2.0 * (0.9 * 0.5 + 0.1), rel=1e-12)


def test_cosine_decay_warmup_rises_linearly_then_decays_from_the_target():
    lr = schedules.CosineDecay(0.0 + 1e-4, decay_steps=10, warmup_target=1e-3, warmup_steps=4)
    assert [lr(s) for s in range(5)] == pytest.approx([1e-4, 3.25e-4, 5.5e-4, 7.75e-4, 1e-3], rel=1e-12)
    assert lr(4 + 5) == pytest.approx(0.5e-3, rel=1e-12)


def test_piecewise_constant_changes_after_each_boundary():
    lr = schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    assert [lr(s) for s in (0, 10, 11, 20, 21, 10 ** 6)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]


@pytest.mark.parametrize("schedule", [
    schedules.CosineDecay(1e-3, 18750, alpha=0.01),
    schedules.CosineDecay(1e-4, 500, warmup_target=1e-3, warmup_steps=50),
    schedules.PiecewiseConstantDecay([3, 7], [1e-3, 1e-4, 1e-5]),
])
def test_serialize_round_trips_through_json(schedule):
    again = schedules.deserialize(json.loads(json.dumps(schedules.serialize(schedule))))
    assert type(again) is type(schedule)
    assert again.get_config() == schedule.get_config()
    assert [again(s) for s in range(0, 20000, 97)] == [schedule(s) for s in range(0, 20000, 97)]


@pytest.mark.parametrize("make, message", [
    (lambda: schedules.CosineDecay(1e-3, 0), "decay_steps must be a positive integer"),
    (lambda: schedules.CosineDecay(1e-3, 10.5), "decay_steps must be a positive integer"),
    (lambda: schedules.CosineDecay(-1.0, 10), "initial_learning_rate must be > 0"),
    (lambda: schedules.CosineDecay(float("nan"), 10), "initial_learning_rate must be a finite number"),
    (lambda: schedules.CosineDecay(1e-3, 10, alpha=2), r"alpha must be in \[0, 1\]"),
    (lambda: schedules.CosineDecay(1e-3, 10, warmup_steps=-1), "warmup_steps must be a non-negative"),
    (lambda: schedules.PiecewiseConstantDecay([5], [1.0]), "one more entry"),
    (lambda: schedules.PiecewiseConstantDecay([5, 5], [1.0, 2.0, 3.0]), "boundaries must increase"),
    (lambda: schedules.deserialize({"class_name": "Nope", "config": {}}), "unknown learning-rate schedule 'Nope'"),
    (lambda: schedules.deserialize({"class_name": "CosineDecay", "config": {"x": 1}}), "bad config for CosineDecay"),
    (lambda: schedules.deserialize([1, 2]), "a schedule is stored as"),
])
def test_bad_configs_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()
