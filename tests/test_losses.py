"""Sparse categorical cross-entropy: stable values, label formats, fused gradient, errors.

(The numerical gradient checks of the loss are in test_gradcheck.py.)
"""
import warnings

import numpy as np
import pytest

from convnet import losses
from convnet.activations import log_softmax, softmax

# exp(-2000) underflowing to 0 is harmless and expected; overflow, division by
# zero (log 0) and invalid operations (NaN) are what a stable loss must avoid.
STRICT = dict(over="raise", divide="raise", invalid="raise")


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(**STRICT):
            yield


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_give_finite_loss_and_gradient(no_warnings, dtype):
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    z = np.array([[1000, -1000, 0], [-1000, 1000, 0]], dtype=dtype)
    value, grad = loss.forward_logits(np.array([0, 0]), z)
    # row 0: log p[0] = 0;  row 1: log p[0] = -2000  -> mean 1000
    assert np.isfinite(value)
    assert value == pytest.approx(1000.0, rel=1e-6)
    assert np.all(np.isfinite(grad)) and grad.dtype == dtype
    # dL/dz = (softmax(z) - onehot) / N
    np.testing.assert_allclose(grad, np.array([[0, 0, 0], [-1, 1, 0]]) / 2, atol=1e-7)


def test_log_softmax_never_takes_log_of_zero(no_warnings):
    out = log_softmax(np.array([[1000.0, -1000.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.0, -2000.0, -1000.0]])


def test_known_values():
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    K = 10
    assert loss(np.array([3, 7]), np.zeros((2, K))) == pytest.approx(np.log(K))   # uniform prediction
    z = np.array([[2.0, 1.0, 0.1]])
    assert loss(np.array([1]), z) == pytest.approx(-np.log(np.exp(1.0) / np.exp(z).sum()))


def test_probabilities_are_clipped_so_zero_probability_is_finite(no_warnings):
    loss = losses.SparseCategoricalCrossentropy()
    p = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    value = loss(np.array([1, 2]), p)
    assert value == pytest.approx((-np.log(1e-7) - np.log(0.5)) / 2)
    grad = loss.backward()
    assert np.all(np.isfinite(grad))
    # the clipped entry gets no gradient (clip is flat there); the other is -1 / (p N)
    np.testing.assert_allclose(grad, [[0, 0, 0], [0, 0, -1 / (0.5 * 2)]])


def test_probabilities_and_logits_agree(rng):
    z = rng.standard_normal((5, 4))
    y = np.array([0, 1, 2, 3, 1])
    from_probs = losses.SparseCategoricalCrossentropy()(y, softmax(z))
    from_logits = losses.SparseCategoricalCrossentropy(from_logits=True)(y, z)
    assert from_probs == pytest.approx(from_logits, rel=1e-10)


@pytest.mark.parametrize("from_logits", [True, False])
def test_one_hot_labels_equal_sparse_labels(rng, from_logits):
    z = rng.standard_normal((6, 5))
    y_pred = z if from_logits else softmax(z)
    sparse = np.array([4, 0, 2, 2, 1, 3])
    onehot = np.eye(5)[sparse]
    loss = losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    value_sparse, grad_sparse = loss(sparse, y_pred), loss.backward().copy()
    value_onehot, grad_onehot = loss(onehot, y_pred), loss.backward().copy()
    assert value_sparse == pytest.approx(value_onehot, rel=1e-12)
    np.testing.assert_allclose(grad_sparse, grad_onehot, rtol=1e-12)
    # column vectors (N, 1) and float labels holding whole numbers are sparse labels too
    assert loss(sparse.reshape(-1, 1), y_pred) == pytest.approx(value_sparse, rel=1e-12)
    assert loss(sparse.astype(np.float32), y_pred) == pytest.approx(value_sparse, rel=1e-12)


def test_fused_gradient_equals_softmax_backward_of_the_probability_gradient(rng):
    """(p - onehot)/N is what the chain rule through softmax gives for dL/dp = -onehot/(p N)."""
    z = rng.standard_normal((4, 3))
    y = np.array([2, 0, 1, 1])
    p = softmax(z)
    plain = losses.SparseCategoricalCrossentropy()
    plain(y, p)
    dp = plain.backward()
    dz_chain = p * (dp - np.sum(dp * p, axis=1, keepdims=True))      # softmax vector-Jacobian product
    _, dz_fused = losses.SparseCategoricalCrossentropy().forward_logits(y, z)
    np.testing.assert_allclose(dz_fused, dz_chain, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dz_fused, (p - np.eye(3)[y]) / 4, rtol=1e-12)


@pytest.mark.parametrize("labels,match", [
    ([0, 3], r"labels must be in \[0, 3\), got values from 0 to 3"),
    ([-1, 2], r"labels must be in \[0, 3\), got values from -1 to 2"),
    ([0.5, 1.0], "whole numbers"),
    ([[0, 1, 0, 0], [1, 0, 0, 0]], r"labels of shape \(2, 4\) do not fit .* or \(2, 3\) one-hot"),
    ([0, 1, 2], r"labels of shape \(3,\) do not fit predictions of shape \(2, 3\)"),
])
def test_bad_labels_raise(labels, match):
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=match):
        loss(np.array(labels), z)


def test_predictions_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"\(batch, classes\).*\(2, 3, 1\)"):
        losses.SparseCategoricalCrossentropy()(np.array([0, 1]), np.zeros((2, 3, 1)))


def test_get_by_name():
    assert isinstance(losses.get("sparse_categorical_crossentropy"), losses.SparseCategoricalCrossentropy)
    custom = losses.SparseCategoricalCrossentropy(from_logits=True)
    assert losses.get(custom) is custom
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        losses.get("mse")
