"""Callbacks: code that ``Sequential.fit`` runs at fixed points of training.

``fit`` sets ``callback.model`` and then calls

* ``on_train_begin()`` once, before the first epoch;
* ``on_batch_end(batch, logs)`` after every batch (``logs["loss"]`` is the
  epoch's running mean so far);
* ``on_epoch_end(epoch, logs)`` after every epoch, with that epoch's
  ``loss``, ``accuracy``, ``seconds`` (and ``val_*``).

Setting ``model.stop_training = True`` in a callback ends training after
the current epoch.

:class:`ModelCheckpoint` is what makes training resumable: after each epoch
it saves model, optimizer state, the number of epochs done and the history
so far. Because ``fit`` derives epoch ``e``'s shuffling and dropout masks
from ``(seed, e)`` alone, resuming from a checkpoint reproduces the
uninterrupted run bit for bit::

    ckpt = convnet.saving.load_checkpoint("checkpoint.npz")
    ckpt.model.fit(x, y, epochs=10, seed=seed, initial_epoch=ckpt.epoch,
                   callbacks=[ModelCheckpoint("checkpoint.npz", history=ckpt.history)])
"""
from .saving import model_path, save_model


class Callback:
    """Base class: every hook does nothing. Override the ones you need."""

    model = None

    def on_train_begin(self):
        pass

    def on_batch_end(self, batch, logs):
        pass

    def on_epoch_end(self, epoch, logs):
        pass


class ModelCheckpoint(Callback):
    """Save a resumable checkpoint (model + optimizer + epochs done + history) after every epoch.

    ``path``: the ``.npz`` file, rewritten atomically each epoch, so it
    always holds the last *completed* epoch even if training is killed
    mid-way. ``history``: the history of earlier epochs when resuming (a
    dict of lists or a :class:`~convnet.History`), so the file always holds
    the whole run. ``metadata``: a JSON-serialisable dict stored alongside
    (e.g. the experiment's arguments). ``verbose=1`` prints a line per save.

    After training, ``self.history`` holds every epoch's logs (earlier ones
    included) and ``self.epochs_completed`` the epoch count last saved.
    """

    def __init__(self, path, include_optimizer=True, history=None, metadata=None, verbose=0):
        self.path = model_path(path)
        self.include_optimizer = include_optimizer
        self.initial_history = getattr(history, "history", history) or {}
        self.metadata = metadata or {}
        self.verbose = verbose
        self.history = {}
        self.epochs_completed = None

    def on_train_begin(self):
        self.history = {k: list(v) for k, v in self.initial_history.items()}
        self.epochs_completed = None

    def on_epoch_end(self, epoch, logs):
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        save_model(self.model, self.path, include_optimizer=self.include_optimizer,
                   epoch=epoch + 1, history=self.history, metadata=self.metadata)
        self.epochs_completed = epoch + 1
        if self.verbose:
            print(f"checkpoint: epoch {epoch + 1} saved to {self.path}", flush=True)
