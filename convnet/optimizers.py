"""Optimizers with Keras semantics. Parameters are updated in place.

An optimizer sees a list of ``(key, param, grad)`` triples (key like
``"conv2d/kernel"``), keeps its per-parameter state in dicts under the same
keys, and counts its steps in ``iterations``. ``get_state``/``set_state``
expose that state for checkpoints.

Every optimizer also takes, as in Keras:

* ``learning_rate``: a number, or a schedule from :mod:`convnet.schedules`
  (asked for the rate of each step with the number of steps made before it);
* ``use_ema=True``: keep an exponential moving average of the weights
  (``ema_momentum``) in the slot ``"average"``; ``fit`` puts the averages in
  place of the weights when training ends (:meth:`Optimizer.finalize_variable_values`).
"""
import math

import numpy as np

from . import schedules


class Optimizer:
    name = "optimizer"

    def __init__(self, learning_rate, use_ema=False, ema_momentum=0.99):
        if isinstance(learning_rate, dict):               # a schedule as get_config() stored it
            learning_rate = schedules.deserialize(learning_rate)
        if not isinstance(learning_rate, schedules.LearningRateSchedule):
            learning_rate = float(learning_rate)
            if not 0 < learning_rate < math.inf:
                raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate}")
        self.learning_rate = learning_rate
        if not 0 <= ema_momentum < 1:
            raise ValueError(f"ema_momentum must be in [0, 1), got {ema_momentum}")
        self.use_ema, self.ema_momentum = bool(use_ema), float(ema_momentum)
        self.iterations = 0
        self.slots = {}          # slot name -> {param key -> array}

    def current_learning_rate(self):
        """The rate of step ``iterations`` (the one being made): a schedule is asked with the number
        of steps made before it, ``iterations - 1``, as Keras asks with its step counter."""
        if isinstance(self.learning_rate, schedules.LearningRateSchedule):
            return self.learning_rate(max(self.iterations - 1, 0))
        return self.learning_rate

    def slot(self, name, key, like):
        """Per-parameter state array (zeros the first time it is asked for)."""
        table = self.slots.setdefault(name, {})
        if key not in table:
            table[key] = np.zeros_like(like)
        return table[key]

    def apply(self, params_and_grads, update_all=None):
        """One update step for every ``(key, param, grad)`` (step number ``iterations`` after it).

        ``update_all``: what computes the updates of the step (default: this
        optimizer's own :meth:`update_all`); the engine's runner passes its
        fused version of the same update.
        """
        params_and_grads = list(params_and_grads)
        self.iterations += 1
        (update_all or self.update_all)(params_and_grads)
        if self.use_ema:
            self.update_average(params_and_grads)

    def update_average(self, params_and_grads):
        """``average = mu * average + (1 - mu) * param`` after the step, for every parameter.

        ``mu`` is ``ema_momentum``, except that the first step sets the average to the weights
        (as Keras does) and early steps use ``min(ema_momentum, (1 + t) / (10 + t))`` (t the steps
        before this one, as TensorFlow's ExponentialMovingAverage with ``num_updates``): without it
        a short run's average would still be mostly its first weights.
        """
        t = self.iterations - 1
        mu = 0.0 if t == 0 else min(self.ema_momentum, (1 + t) / (10 + t))
        for key, param, _ in params_and_grads:
            average = self.slot("average", key, param)
            f = param.dtype.type
            average *= f(mu)
            average += f(1 - mu) * param

    def finalize_variable_values(self, params_and_grads):
        """End of training (``fit`` calls this): with ``use_ema``, the weights become their averages."""
        if self.use_ema and self.slots.get("average"):
            for key, param, _ in params_and_grads:
                np.copyto(param, self.slots["average"][key])

    def swap_ema_weights(self, params_and_grads):
        """Trade every weight with its average in place (twice restores both; see ``SwapEMAWeights``)."""
        for key, param, _ in params_and_grads:
            average = self.slots.get("average", {}).get(key)
            if average is not None:
                kept = param.copy()
                np.copyto(param, average)
                np.copyto(average, kept)

    def update_all(self, params_and_grads):
        for key, param, grad in params_and_grads:
            self.update(key, param, grad)

    def update(self, key, param, grad):
        """Update ``param`` in place from ``grad`` (and this optimizer's slots for ``key``)."""
        raise NotImplementedError

    def get_config(self):
        lr = self.learning_rate
        return {"learning_rate": schedules.serialize(lr) if isinstance(lr, schedules.LearningRateSchedule) else lr,
                "use_ema": self.use_ema, "ema_momentum": self.ema_momentum}

    def get_state(self):
        """{"iterations": int, "slot/key": array}: everything needed to resume.

        The arrays are copies: a snapshot taken now stays as it is while
        training goes on (the slots are updated in place).
        """
        state = {"iterations": self.iterations}
        for slot_name, table in self.slots.items():
            for key, arr in table.items():
                state[f"{slot_name}/{key}"] = arr.copy()
        return state

    def set_state(self, state):
        self.iterations = int(state["iterations"])
        self.slots = {}
        for name, arr in state.items():
            if name == "iterations":
                continue
            slot_name, key = name.split("/", 1)
            self.slots.setdefault(slot_name, {})[key] = np.array(arr)


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum, as in Keras.

    * plain:     ``theta -= lr * g``
    * momentum:  ``v = mu * v - lr * g``;  ``theta += v``
    * Nesterov:  ``v = mu * v - lr * g``;  ``theta += mu * v - lr * g``
    """

    name = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, use_ema=False, ema_momentum=0.99):
        super().__init__(learning_rate, use_ema, ema_momentum)
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def update(self, key, param, grad):
        lr = param.dtype.type(self.current_learning_rate())
        if self.momentum == 0:
            param -= lr * grad
            return
        mu = param.dtype.type(self.momentum)
        v = self.slot("velocity", key, param)
        v *= mu
        v -= lr * grad
        if self.nesterov:
            param += mu * v - lr * grad
        else:
            param += v

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam as Keras computes it (bias correction folded into the step size).

    ``m = b1 m + (1 - b1) g``;  ``v = b2 v + (1 - b2) g^2``;
    ``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)``;
    ``theta -= lr_t m / (sqrt(v) + eps)``.

    (PyTorch divides by ``sqrt(v / (1 - b2^t)) + eps`` instead, which differs
    slightly through where epsilon enters.)
    """

    name = "adam"

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, use_ema=False,
                 ema_momentum=0.99):
        super().__init__(learning_rate, use_ema, ema_momentum)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        # beta = 1 divides by 1 - beta^t = 0 in the step size; beyond 1 the averages grow without bound
        for name, beta in (("beta_1", self.beta_1), ("beta_2", self.beta_2)):
            if not 0 <= beta < 1:
                raise ValueError(f"{name} must be in [0, 1), got {beta}")
        if not 0 < self.epsilon < math.inf:
            raise ValueError(f"epsilon must be a positive finite number, got {self.epsilon}")

    def step_size(self):
        """``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)`` for the current step ``t`` (bias correction)."""
        t = self.iterations
        return self.current_learning_rate() * np.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)

    def update(self, key, param, grad):
        f = param.dtype.type
        b1, b2 = f(self.beta_1), f(self.beta_2)
        m = self.slot("m", key, param)
        v = self.slot("v", key, param)
        m *= b1
        m += (1 - b1) * grad                      # m = b1 m + (1 - b1) g
        v *= b2
        v += (1 - b2) * grad * grad               # v = b2 v + (1 - b2) g^2
        param -= f(self.step_size()) * m / (np.sqrt(v) + f(self.epsilon))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def get(optimizer):
    if isinstance(optimizer, str):
        try:
            return OPTIMIZERS[optimizer.lower()]()
        except KeyError:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {sorted(OPTIMIZERS)}") from None
    return optimizer
