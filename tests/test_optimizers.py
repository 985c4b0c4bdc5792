"""Optimizers against hand-computed Keras-style updates, on a convex quadratic, and across a checkpoint."""
import json
import math

import numpy as np
import pytest

from convnet import optimizers, schedules


def run(optimizer, theta0, grads, dtype=np.float64):
    """Apply ``optimizer`` to one parameter for a sequence of gradients; returns the trajectory."""
    theta = np.array(theta0, dtype=dtype)
    path = []
    for g in grads:
        optimizer.apply([("w", theta, np.array(g, dtype=dtype))])
        path.append(theta.copy())
    return path


# ---------------------------------------------------------------------------- SGD
def test_sgd_plain_by_hand():
    # theta -= lr * g with lr = 0.1
    path = run(optimizers.SGD(0.1), [1.0, -2.0], [[0.5, -1.0], [1.0, 2.0]])
    np.testing.assert_allclose(path[0], [0.95, -1.9], rtol=1e-12)
    np.testing.assert_allclose(path[1], [0.85, -2.1], rtol=1e-12)


def test_sgd_momentum_by_hand():
    # v = 0.9 v - 0.1 g ; theta += v   with g = 1, 2, 3
    #   v = -0.1,  -0.29,  -0.561   ->   theta = 0.9, 0.61, 0.049
    path = run(optimizers.SGD(0.1, momentum=0.9), [1.0], [[1.0], [2.0], [3.0]])
    np.testing.assert_allclose(np.concatenate(path), [0.9, 0.61, 0.049], rtol=1e-12)


def test_sgd_nesterov_by_hand():
    # v = 0.9 v - 0.1 g ; theta += 0.9 v - 0.1 g   with g = 1, 2, 3
    #   step 1: v = -0.1,   theta = 1     - 0.09   - 0.1 = 0.81
    #   step 2: v = -0.29,  theta = 0.81  - 0.261  - 0.2 = 0.349
    #   step 3: v = -0.561, theta = 0.349 - 0.5049 - 0.3 = -0.4559
    path = run(optimizers.SGD(0.1, momentum=0.9, nesterov=True), [1.0], [[1.0], [2.0], [3.0]])
    np.testing.assert_allclose(np.concatenate(path), [0.81, 0.349, -0.4559], rtol=1e-12)


def test_sgd_rejects_bad_momentum():
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        optimizers.SGD(0.1, momentum=1.5)


# --------------------------------------------------------------------------- Adam
def adam_by_hand(theta, grads, lr, b1, b2, eps):
    """Scalar Keras Adam: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t); theta -= lr_t m / (sqrt(v) + eps)."""
    m = v = 0.0
    path = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        theta = theta - lr_t * m / (math.sqrt(v) + eps)
        path.append(theta)
    return path


def test_adam_first_step_moves_by_about_lr():
    # step 1: m = 0.1 g, v = 0.001 g^2, lr_t = lr sqrt(0.001) / 0.1, so the step is
    # lr * g sqrt(0.001) / (|g| sqrt(0.001) + eps) ~ lr * sign(g) whenever |g| >> eps
    path = run(optimizers.Adam(0.1), [1.0, -1.0, 3.0], [[0.5, -2.0, 0.01]])
    np.testing.assert_allclose(path[0], [0.9, -0.9, 2.9], rtol=1e-4)


def test_adam_epsilon_enters_keras_style():
    # with a large eps the Keras and PyTorch formulas differ a lot:
    #   Keras:   1 - 0.1 * sqrt(0.001) / (sqrt(0.001) + 0.1) = 0.97597469...
    #   PyTorch: 1 - 0.1 * 1 / (1 + 0.1)                    = 0.90909...
    path = run(optimizers.Adam(0.1, epsilon=0.1), [1.0], [[1.0]])
    assert path[0][0] == pytest.approx(1 - 0.1 * math.sqrt(0.001) / (math.sqrt(0.001) + 0.1), rel=1e-12)
    assert path[0][0] == pytest.approx(0.975974693, rel=1e-8)


@pytest.mark.parametrize("lr,b1,b2,eps", [(0.001, 0.9, 0.999, 1e-7), (0.05, 0.8, 0.99, 1e-3)])
def test_adam_several_steps_by_hand(lr, b1, b2, eps):
    grads = [0.5, -2.0, 1.5, 0.0, 3.0]
    expected = adam_by_hand(1.0, grads, lr, b1, b2, eps)
    path = run(optimizers.Adam(lr, beta_1=b1, beta_2=b2, epsilon=eps), [1.0], [[g] for g in grads])
    np.testing.assert_allclose(np.concatenate(path), expected, rtol=1e-12)


def test_adam_keeps_float32_parameters_float32():
    theta = np.ones(3, np.float32)
    opt = optimizers.Adam()
    opt.apply([("w", theta, np.array([1, -1, 2], np.float32))])
    assert theta.dtype == np.float32
    assert opt.get_state()["m/w"].dtype == np.float32


# ---------------------------------------------------------- convergence on a quadratic
A = np.array([1.0, 10.0])
C = np.array([3.0, -2.0])


def quadratic(x):
    """f(x) = 1/2 sum a_i (x_i - c_i)^2, minimum 0 at c; df/dx = a (x - c)."""
    return 0.5 * np.sum(A * (x - C) ** 2), A * (x - C)


@pytest.mark.parametrize("optimizer,steps", [
    (optimizers.SGD(0.05), 200),
    (optimizers.SGD(0.02, momentum=0.9), 300),
    (optimizers.SGD(0.02, momentum=0.9, nesterov=True), 300),
    (optimizers.Adam(0.05), 1000),
])
def test_optimizer_minimises_a_convex_quadratic(optimizer, steps):
    x = np.zeros(2)
    f0, _ = quadratic(x)
    for _ in range(steps):
        _, g = quadratic(x)
        optimizer.apply([("x", x, g)])
    f, _ = quadratic(x)
    assert f < 1e-4 * f0
    np.testing.assert_allclose(x, C, atol=1e-2)
    assert optimizer.iterations == steps


# ------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("make", [lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True),
                                  lambda: optimizers.Adam(0.01)])
def test_get_state_set_state_continues_identically(rng, make):
    grads = rng.standard_normal((6, 2, 3))
    original = make()
    theta = rng.standard_normal(3)
    for g in grads[:3]:
        original.apply([("a", theta[:1], g[0, :1]), ("b", theta[1:], g[1, 1:])])
    state, saved_theta = original.get_state(), theta.copy()

    # the original keeps going; the snapshot must not change with it
    for g in grads[3:]:
        original.apply([("a", theta[:1], g[0, :1]), ("b", theta[1:], g[1, 1:])])

    resumed = make()
    resumed.set_state(state)
    assert resumed.iterations == 3
    theta2 = saved_theta.copy()
    for g in grads[3:]:
        resumed.apply([("a", theta2[:1], g[0, :1]), ("b", theta2[1:], g[1, 1:])])
    np.testing.assert_array_equal(theta2, theta)
    assert resumed.iterations == original.iterations == 6


def test_set_state_copies_the_arrays():
    opt = optimizers.SGD(0.1, momentum=0.5)
    state = {"iterations": 2, "velocity/w": np.array([1.0, 2.0])}
    opt.set_state(state)
    state["velocity/w"][:] = 99
    assert opt.get_state()["velocity/w"].tolist() == [1.0, 2.0]


def test_get_by_name():
    assert isinstance(optimizers.get("adam"), optimizers.Adam)
    assert isinstance(optimizers.get("SGD"), optimizers.SGD)
    sgd = optimizers.SGD(0.3)
    assert optimizers.get(sgd) is sgd
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        optimizers.get("rmsprop")
    assert optimizers.Adam(0.01).get_config() == {"learning_rate": 0.01, "use_ema": False, "ema_momentum": 0.99,
                                                  "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}


# ----------------------------------------------------- schedules and moving average
def test_schedule_sets_each_steps_rate_from_the_steps_before_it():
    # SGD with rates 1.0 for steps 0-1 (the schedule's step), then 0.5: theta -= lr * g with g = 1
    lr = schedules.PiecewiseConstantDecay([1], [1.0, 0.5])
    path = run(optimizers.SGD(lr), [10.0], [[1.0]] * 4)
    np.testing.assert_allclose(np.concatenate(path), [9.0, 8.0, 7.5, 7.0], rtol=1e-12)


def test_adam_with_a_schedule_scales_each_step_by_that_steps_rate():
    lr = schedules.CosineDecay(1e-2, decay_steps=4)
    grads = [0.3, -0.2, 0.5, 0.1]
    path = run(optimizers.Adam(lr), [1.0], [[g] for g in grads])
    theta, m, v, expected = 1.0, 0.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        rate = 1e-2 * 0.5 * (1 + math.cos(math.pi * (t - 1) / 4))
        theta -= rate * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (math.sqrt(v) + 1e-7)
        expected.append(theta)
    np.testing.assert_allclose(np.concatenate(path), expected, rtol=1e-12)


def ema_by_hand(weights, momentum):
    """The average after each step: the first weights, then mu = min(momentum, (1 + t) / (10 + t))."""
    average, out = None, []
    for t, w in enumerate(weights):
        mu = 0.0 if t == 0 else min(momentum, (1 + t) / (10 + t))
        average = w if average is None else mu * average + (1 - mu) * w
        out.append(average)
    return out


def test_moving_average_follows_the_weights_by_hand():
    opt = optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5)
    grads = [[1.0], [-2.0], [0.5], [3.0], [1.0]]
    path = run(opt, [1.0], grads)
    averages = ema_by_hand([p[0] for p in path], 0.5)
    # (1 + t) / (10 + t) is 0.2, 0.25, 0.31, 0.36 for t = 1..4: below 0.5, so the ramp decides here
    np.testing.assert_allclose(opt.slots["average"]["w"], [averages[-1]], rtol=1e-12)
    opt = optimizers.SGD(0.1, use_ema=True, ema_momentum=0.2)      # now the momentum caps it from t = 2 on
    path = run(opt, [1.0], grads)
    np.testing.assert_allclose(opt.slots["average"]["w"], [ema_by_hand([p[0] for p in path], 0.2)[-1]], rtol=1e-12)


def test_moving_average_leaves_training_alone_until_finalized():
    grads = [[0.3, -1.0], [0.2, 0.4], [-0.5, 0.1]]
    plain = run(optimizers.Adam(0.01), [1.0, 2.0], grads)
    opt = optimizers.Adam(0.01, use_ema=True, ema_momentum=0.9)
    theta = np.array([1.0, 2.0])
    for g in grads:
        opt.apply([("w", theta, np.array(g))])
    np.testing.assert_array_equal(theta, plain[-1])                  # the steps themselves are unchanged
    expected = ema_by_hand([np.array(p) for p in plain], 0.9)[-1]
    opt.swap_ema_weights([("w", theta, None)])
    np.testing.assert_allclose(theta, expected, rtol=1e-12)
    opt.swap_ema_weights([("w", theta, None)])                       # swapping twice restores
    np.testing.assert_array_equal(theta, plain[-1])
    opt.finalize_variable_values([("w", theta, None)])
    np.testing.assert_allclose(theta, expected, rtol=1e-12)


def test_without_ema_finalize_changes_nothing():
    opt = optimizers.Adam(0.01)
    path = run(opt, [1.0], [[0.5]])
    theta = path[-1].copy()
    opt.finalize_variable_values([("w", theta, None)])
    np.testing.assert_array_equal(theta, path[-1])
    assert "average" not in opt.slots


def test_config_round_trips_schedule_and_ema():
    opt = optimizers.Adam(schedules.CosineDecay(1e-3, 100, alpha=0.1), use_ema=True, ema_momentum=0.999)
    config = json.loads(json.dumps(opt.get_config()))
    assert config["learning_rate"] == {"class_name": "CosineDecay", "config": opt.learning_rate.get_config()}
    again = optimizers.Adam(**config)
    assert again.get_config() == opt.get_config() and again.learning_rate(50) == opt.learning_rate(50)


def test_bad_ema_momentum_is_named():
    with pytest.raises(ValueError, match=r"ema_momentum must be in \[0, 1\), got 1.0"):
        optimizers.Adam(use_ema=True, ema_momentum=1.0)


@pytest.mark.parametrize("make, message", [
    (lambda: optimizers.Adam(beta_1=1.0), r"beta_1 must be in \[0, 1\), got 1.0"),
    (lambda: optimizers.Adam(beta_2=2.5), r"beta_2 must be in \[0, 1\), got 2.5"),
    (lambda: optimizers.Adam(beta_1=-0.1), r"beta_1 must be in \[0, 1\)"),
    (lambda: optimizers.Adam(epsilon=0.0), r"epsilon must be a positive finite number"),
    (lambda: optimizers.Adam(epsilon=float("inf")), r"epsilon must be a positive finite number"),
    (lambda: optimizers.SGD(float("nan")), r"learning_rate must be a positive finite number"),
    (lambda: optimizers.Adam(-1e-3), r"learning_rate must be a positive finite number"),
])
def test_constructors_refuse_settings_that_cannot_train(make, message):
    with pytest.raises(ValueError, match=message):
        make()
