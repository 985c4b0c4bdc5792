"""Callbacks: code that ``Sequential.fit`` runs at fixed points of training.

``fit`` sets ``callback.model`` and then calls

* ``on_train_begin()`` once, before the first epoch;
* ``on_epoch_begin(epoch, steps)`` before each epoch (``steps`` batches);
* ``on_batch_end(batch, logs)`` after every batch (``logs["loss"]`` and
  ``logs["accuracy"]`` are the epoch's running means so far);
* ``on_test_begin()`` and ``on_test_end()`` around the evaluation of
  ``validation_data`` after each epoch;
* ``on_epoch_end(epoch, logs)`` after every epoch, with that epoch's
  ``loss``, ``accuracy``, ``seconds`` (and ``val_*``); a callback may add
  entries, which then go into the history;
* ``on_train_end()`` once at the end (also when training stops on an error).

``fit`` itself adds :class:`ProgressBar` (``verbose``) and
:class:`GradientNorms` (``record_gradients=True``); those and the base
:class:`Callback` live in :mod:`convnet.hooks` (the model imports them
without importing saving) and are importable from here as before.

Setting ``model.stop_training = True`` in a callback ends training after
the current epoch.

:class:`ModelCheckpoint` is what makes training resumable: after each epoch
it saves model, optimizer state, the number of epochs done and the history
so far. Because ``fit`` derives epoch ``e``'s shuffling and dropout masks
from ``(seed, e)`` alone, resuming from a checkpoint reproduces the
uninterrupted run bit for bit::

    ckpt = convnet.load_checkpoint("checkpoint.npz")
    ckpt.model.fit(x, y, epochs=10, seed=seed, initial_epoch=ckpt.epoch,
                   callbacks=[ModelCheckpoint("checkpoint.npz", history=ckpt.history)])
"""
from .hooks import Callback, GradientNorms, ProgressBar


__all__ = ["Callback", "GradientNorms", "ModelCheckpoint", "ProgressBar", "SwapEMAWeights"]


class SwapEMAWeights(Callback):
    """Validate with the weights' moving average instead of the weights themselves (as in Keras).

    For an optimizer with ``use_ema=True``: before each evaluation of
    ``validation_data`` the model's weights and the optimizer's averages
    trade places, and after it they trade back (exact copies both ways, so
    training continues untouched). The ``val_*`` figures then describe the
    averaged weights, which ``fit`` leaves in the model at the end.
    """

    def on_test_begin(self):
        self.model.optimizer.swap_ema_weights(self.model.params_and_grads())

    def on_test_end(self):
        self.model.optimizer.swap_ema_weights(self.model.params_and_grads())


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
        import json

        from .io.npz import json_default, model_path
        self.path = model_path(path)
        json.dumps(metadata, default=json_default)          # a TypeError now, not after the first epoch
        self.include_optimizer = include_optimizer
        self.initial_history = getattr(history, "history", history) or {}
        self.metadata = metadata or {}
        self.verbose = verbose
        self.history = {}
        self.epochs_completed = None

    def on_train_begin(self):
        # what would make the first save fail is found before the first epoch's work
        from .io.npz import check_loadable
        from .files import directory_problem
        if self.path.is_dir():
            raise IsADirectoryError(f"ModelCheckpoint: {self.path} is a directory, expected a file name")
        problem = directory_problem(self.path.parent)
        if problem:
            raise NotADirectoryError(f"ModelCheckpoint: {self.path.parent}: {problem}") if "file" in problem \
                else PermissionError(f"ModelCheckpoint: {self.path.parent}: {problem}")
        check_loadable(self.model)
        self.history = {k: list(v) for k, v in self.initial_history.items()}
        self.epochs_completed = None

    def on_epoch_end(self, epoch, logs):
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        from .io.npz import save_model
        save_model(self.model, self.path, include_optimizer=self.include_optimizer,
                   epoch=epoch + 1, history=self.history, metadata=self.metadata)
        self.epochs_completed = epoch + 1
        if self.verbose:
            print(f"checkpoint: epoch {epoch + 1} saved to {self.path}", flush=True)
