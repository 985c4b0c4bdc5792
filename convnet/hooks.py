"""What ``Sequential.fit`` calls during training: the :class:`Callback` protocol and the callbacks fit adds itself.

``fit`` sets ``callback.model`` and calls the hooks listed in
:mod:`convnet.callbacks` (which also holds the callbacks you add:
checkpoints, EMA weights); it adds :class:`ProgressBar` (``verbose``) and
:class:`GradientNorms` (``record_gradients=True``) itself. This module
imports nothing of convnet, so the model can use it without depending on
saving.
"""
import sys

import numpy as np


class Callback:
    """Base class: every hook does nothing. Override the ones you need."""

    model = None

    def on_train_begin(self):
        pass

    def on_epoch_begin(self, epoch, steps):
        pass

    def on_batch_end(self, batch, logs):
        pass

    def on_test_begin(self):
        pass

    def on_test_end(self):
        pass

    def on_epoch_end(self, epoch, logs):
        pass

    def on_train_end(self):
        pass


class ProgressBar(Callback):
    """A tqdm bar over each epoch's batches (``bar=True``) and a line per epoch with its logs."""

    def __init__(self, epochs, bar=True, stream=sys.stdout):
        self.epochs, self.bar, self.stream = epochs, bar, stream
        self._tqdm = None

    def on_epoch_begin(self, epoch, steps):
        if self.bar:
            from tqdm.auto import tqdm
            self._tqdm = tqdm(total=steps, desc=f"Epoch {epoch + 1}/{self.epochs}", unit="batch", leave=False,
                              dynamic_ncols=True, mininterval=0.5)

    def on_batch_end(self, batch, logs):
        if self._tqdm is not None:
            self._tqdm.update(1)
            if batch % 25 == 0 or batch == self._tqdm.total - 1:
                self._tqdm.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)

    def on_epoch_end(self, epoch, logs):
        self.on_train_end()
        parts = [f"{k}: {v:.4f}" for k, v in logs.items() if k not in ("seconds", "grad_norms")]
        print(f"Epoch {epoch + 1}/{self.epochs} - {logs['seconds']:.1f}s - " + " - ".join(parts),
              file=self.stream, flush=True)

    def on_train_end(self):
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None


class GradientNorms(Callback):
    """The norm of every parameter gradient after every step.

    ``norms`` maps ``"layer/param"`` to a list with one value per step; at
    the end of an epoch, ``logs["grad_norms"]`` gets each one's mean over
    that epoch's steps (``fit(record_gradients=True)`` adds this callback).
    """

    def __init__(self):
        self.norms = {}
        self._epoch_start = 0

    def on_train_begin(self):
        self.norms = {}

    def on_epoch_begin(self, epoch, steps):
        self._epoch_start = len(next(iter(self.norms.values()), []))

    def on_batch_end(self, batch, logs):
        for key, _, g in self.model.params_and_grads():
            self.norms.setdefault(key, []).append(float(np.linalg.norm(g)))

    def on_epoch_end(self, epoch, logs):
        logs["grad_norms"] = {k: sum(v[self._epoch_start:]) / len(v[self._epoch_start:])
                              for k, v in self.norms.items()}
