"""convnet.hooks: the callbacks fit adds itself (gradient norms per epoch, the progress line)."""
import io

import numpy as np

from convnet import Sequential, callbacks, hooks, layers


def small_model():
    model = Sequential([layers.Flatten(), layers.Dense(3, activation="softmax")], input_shape=(2, 2, 1), seed=0)
    model.compile("sgd")
    return model


def test_gradient_norms_of_an_epoch_average_that_epochs_steps_only(rng):
    x, y = rng.random((12, 2, 2, 1), dtype=np.float32), rng.integers(0, 3, 12)
    recorder = hooks.GradientNorms()
    history = small_model().fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[recorder])
    steps = 3
    last = history.history["grad_norms"][-1]                       # what fit logged for the last epoch
    for key, norms in recorder.norms.items():
        assert len(norms) == 3 * steps
        assert last[key] == sum(norms[2 * steps:]) / steps
        assert last[key] != sum(norms) / len(norms)


def test_the_progress_line_names_the_epoch_and_its_logs():
    out = io.StringIO()
    bar = hooks.ProgressBar(epochs=4, bar=False, stream=out)
    bar.on_epoch_end(1, {"loss": 0.5, "accuracy": 0.75, "seconds": 1.25})
    assert out.getvalue() == "Epoch 2/4 - 1.2s - loss: 0.5000 - accuracy: 0.7500\n"


def test_callbacks_still_offers_every_callback():
    assert callbacks.GradientNorms is hooks.GradientNorms and callbacks.ProgressBar is hooks.ProgressBar
    assert callbacks.Callback is hooks.Callback and issubclass(callbacks.ModelCheckpoint, hooks.Callback)
