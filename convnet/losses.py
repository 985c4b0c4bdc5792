"""Losses. The cross-entropy is computed from logits with a stable log-softmax.

A loss object has ``forward(y_true, y_pred) -> float`` (mean over the batch)
and ``backward() -> dL/d y_pred``. When the network ends in a softmax, the
model calls :meth:`SparseCategoricalCrossentropy.forward_logits` instead and
hands the logits' gradient straight to the last layer (see
:meth:`convnet.Sequential.train_step`): softmax and cross-entropy fused.
"""
import numpy as np

from .activations import log_softmax


class SparseCategoricalCrossentropy:
    """Cross-entropy for integer class labels (one-hot labels are accepted too).

    ``L = -(1/N) sum_n log p[n, y_n]`` with ``p = softmax(z)``.

    From logits: ``log p = z - logsumexp(z)`` never takes ``log(0)``, and the
    fused gradient is ``dL/dz = (p - onehot(y)) / N``.

    From probabilities (``from_logits=False`` and no softmax to fuse with),
    ``p`` is clipped to ``[eps, 1 - eps]`` as Keras does, and
    ``dL/dp = -onehot(y) / (p * N)``.
    """

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits=False, epsilon=1e-7):
        self.from_logits = from_logits
        self.epsilon = epsilon

    def _targets(self, y_true, y_pred):
        """Integer labels -> one-hot of y_pred's shape and dtype; one-hot is checked and passed on."""
        y_true = np.asarray(y_true)
        N, K = y_pred.shape
        if y_true.shape == (N, K):
            return y_true.astype(y_pred.dtype, copy=False)
        if y_true.shape in ((N,), (N, 1)):
            labels = y_true.reshape(N)
            if not np.issubdtype(labels.dtype, np.integer):
                if not np.all(labels == np.round(labels)):
                    raise ValueError("sparse labels must be whole numbers")
                labels = labels.astype(np.int64)
            if labels.size and (labels.min() < 0 or labels.max() >= K):
                raise ValueError(f"labels must be in [0, {K}), got values from {labels.min()} to {labels.max()}")
            onehot = np.zeros((N, K), dtype=y_pred.dtype)
            onehot[np.arange(N), labels] = 1
            return onehot
        raise ValueError(f"{self.name}: labels of shape {y_true.shape} do not fit predictions of shape "
                         f"{y_pred.shape}; expected ({N},) integer labels or ({N}, {K}) one-hot")

    def forward_logits(self, y_true, logits):
        """Loss and dL/dlogits in one go (softmax + cross-entropy, fused)."""
        t = self._targets(y_true, logits)
        logp = log_softmax(logits)
        N = logits.shape[0]
        loss = -np.sum(t * logp) / N
        # dL/dz = (softmax(z) * sum(t) - t) / N ; rows of t sum to 1
        dlogits = (np.exp(logp) * t.sum(axis=1, keepdims=True) - t) / logits.dtype.type(N)
        return float(loss), dlogits

    def forward(self, y_true, y_pred):
        """Mean loss for the batch; remembers what :meth:`backward` needs."""
        y_pred = np.asarray(y_pred)
        if y_pred.ndim != 2:
            raise ValueError(f"{self.name}: predictions must be (batch, classes), got shape {y_pred.shape}")
        if self.from_logits:
            loss, self._grad = self.forward_logits(y_true, y_pred)
            return loss
        t = self._targets(y_true, y_pred)
        eps = self.epsilon
        p = np.clip(y_pred, eps, 1 - eps)
        N = y_pred.shape[0]
        # dL/dp = -t / p / N where p was not clipped (clip has zero slope outside)
        inside = (y_pred >= eps) & (y_pred <= 1 - eps)
        self._grad = np.where(inside, -t / p, 0).astype(y_pred.dtype) / y_pred.dtype.type(N)
        return float(-np.sum(t * np.log(p)) / N)

    __call__ = forward

    def backward(self):
        """dL/d y_pred for the last :meth:`forward` call."""
        return self._grad

    def get_config(self):
        return {"from_logits": self.from_logits}


LOSSES = {"sparse_categorical_crossentropy": SparseCategoricalCrossentropy}


def get(loss):
    if isinstance(loss, str):
        try:
            return LOSSES[loss]()
        except KeyError:
            raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)}") from None
    return loss
