"""Learning-rate schedules, as Keras's ``keras.optimizers.schedules``: a rate that depends on the step.

An optimizer given a schedule as ``learning_rate`` asks it for the rate of
every step: ``schedule(step)`` with ``step`` the number of updates made
before this one (0 for the first), as Keras does.

>>> from convnet import optimizers, schedules
>>> lr = schedules.CosineDecay(1e-3, decay_steps=10 * 1875)      # to 0 over 10 epochs of 1875 steps
>>> opt = optimizers.Adam(learning_rate=lr)

``get_config()``/``from_config()`` and :func:`serialize`/:func:`deserialize`
turn a schedule into JSON and back, which is how saved models keep theirs.
"""
import math


class LearningRateSchedule:
    """Base class: subclasses define ``__call__(step) -> float`` and ``get_config()``."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _number(name, value, low=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    return value


class CosineDecay(LearningRateSchedule):
    """Half a cosine from ``initial_learning_rate`` down to ``alpha * initial_learning_rate``.

    ``lr(step) = initial * ((1 - alpha) * (1 + cos(pi * s / decay_steps)) / 2 + alpha)`` with
    ``s = min(step, decay_steps)``: large steps while the loss is high, small ones that settle
    the weights at the end. Optionally preceded by ``warmup_steps`` of linear growth from
    ``initial_learning_rate`` to ``warmup_target`` (then the cosine starts from ``warmup_target``), as
    in Keras.
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
        self.initial_learning_rate = float(_number("initial_learning_rate", initial_learning_rate, 0, True))
        if isinstance(decay_steps, bool) or not isinstance(decay_steps, int) or decay_steps < 1:
            raise ValueError(f"decay_steps must be a positive integer, got {decay_steps!r}")
        self.decay_steps = decay_steps
        self.alpha = float(_number("alpha", alpha, 0))
        if self.alpha > 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        self.warmup_target = None if warmup_target is None else float(
            _number("warmup_target", warmup_target, 0, True))
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        peak = self.initial_learning_rate
        if self.warmup_target is not None:
            if step < self.warmup_steps:
                return peak + (self.warmup_target - peak) * step / self.warmup_steps
            peak, step = self.warmup_target, step - self.warmup_steps
        s = min(step, self.decay_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * s / self.decay_steps))
        return peak * ((1 - self.alpha) * cosine + self.alpha)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[i]`` while ``boundaries[i-1] <= step < boundaries[i]`` (Keras: the rate changes after
    ``step > boundary``; here as there, ``values[0]`` up to and including ``boundaries[0]``)."""

    def __init__(self, boundaries, values):
        boundaries, values = list(boundaries), list(values)
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"values must have one more entry than boundaries, got {len(boundaries)} boundaries "
                             f"and {len(values)} values")
        for b in boundaries:
            if isinstance(b, bool) or not isinstance(b, int) or b < 0:
                raise ValueError(f"boundaries must be non-negative integers, got {b!r}")
        if any(b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries must increase, got {boundaries}")
        self.boundaries = boundaries
        self.values = [float(_number("values", v, 0)) for v in values]

    def __call__(self, step):
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return value
        return self.values[-1]

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values)}


SCHEDULES = {cls.__name__: cls for cls in (CosineDecay, PiecewiseConstantDecay)}


def serialize(schedule):
    """``{"class_name": ..., "config": {...}}``: JSON-ready, read back by :func:`deserialize`."""
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(spec):
    """The schedule that :func:`serialize` described; ValueError naming what is wrong otherwise."""
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        raise ValueError(f"a schedule is stored as {{'class_name': ..., 'config': {{...}}}}, got {spec!r}")
    try:
        cls = SCHEDULES[spec.get("class_name")]
    except (KeyError, TypeError):
        raise ValueError(f"unknown learning-rate schedule {spec.get('class_name')!r}; "
                         f"expected one of {sorted(SCHEDULES)}") from None
    try:
        return cls.from_config(spec["config"])
    except TypeError as e:
        raise ValueError(f"bad config for {cls.__name__}: {e}") from None
