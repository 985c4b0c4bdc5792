"""Training plots: correct counts, real PNG files written atomically, clear errors on bad input."""
import os

import numpy as np
import pytest
from PIL import Image

from convnet import plotting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) of a PNG file, checking that it is one."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        return image.size


def test_confusion_matrix_counts_by_hand():
    y_true = [0, 0, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 2, 0, 2]
    expected = np.array([[1, 1, 0],
                         [0, 1, 0],
                         [1, 0, 2]])
    assert np.array_equal(plotting.confusion_matrix(y_true, y_pred, num_classes=3), expected)
    probabilities = np.eye(3)[y_pred] * 0.8 + 0.05           # rows whose argmax is y_pred
    assert np.array_equal(plotting.confusion_matrix(y_true, probabilities, num_classes=3), expected)


def test_confusion_matrix_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        plotting.confusion_matrix([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="3 true labels but 2 predictions"):
        plotting.confusion_matrix([0, 1, 2], [0, 1], num_classes=3)


def test_every_plot_writes_a_png_and_nothing_else(tmp_path):
    rng = np.random.default_rng(0)
    history = {"loss": [1.0, 0.5, 0.25], "accuracy": [0.6, 0.8, 0.9],
               "val_loss": [0.8, 0.4, 0.3], "val_accuracy": [0.7, 0.85, 0.88], "seconds": [1, 1, 1]}
    y_true = rng.integers(0, 10, 50)
    probs = rng.random((50, 10))
    x = rng.random((50, 28, 28, 1))
    paths = [
        plotting.plot_history(history, tmp_path / "history.png", title="t"),
        plotting.plot_confusion_matrix(y_true, probs.argmax(1), tmp_path / "cm.png"),
        plotting.plot_misclassified(x, y_true, probs, tmp_path / "wrong.png", n=9),
        plotting.plot_filters(rng.normal(size=(4, 4, 1, 32)), tmp_path / "filters.png"),
        plotting.plot_filters(rng.normal(size=(3, 3, 5, 4)), tmp_path / "filters_rgb.png", max_channels=3),
    ]
    for path in paths:
        width, height = png_size(path)
        assert width > 200 and height > 150
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths)


def test_misclassified_grid_shows_most_confident_mistakes_first(tmp_path, monkeypatch):
    """Capture the captions drawn: only wrong predictions, most confident first, at most n."""
    y_true = np.array([0, 1, 2, 3, 4])
    probs = np.full((5, 10), 0.01)
    probs[0, 0] = 0.9                      # right
    probs[1, 7] = 0.6                      # wrong, 60%
    probs[2, 5] = 0.95                     # wrong, 95%
    probs[3, 3] = 0.9                      # right
    probs[4, 9] = 0.7                      # wrong, 70%
    captions = []
    from matplotlib.axes import Axes
    original = Axes.text
    monkeypatch.setattr(Axes, "text", lambda self, x, y, text, *a, **k: (captions.append(text),
                                                                          original(self, x, y, text, *a, **k))[1])
    plotting.plot_misclassified(np.zeros((5, 28, 28)), y_true, probs, tmp_path / "m.png", n=2)
    assert captions == ["pred 5 / true 2\n95% sure", "pred 9 / true 4\n70% sure"]


def test_misclassified_without_mistakes_still_draws(tmp_path):
    path = plotting.plot_misclassified(np.zeros((3, 28, 28)), [1, 2, 3], [1, 2, 3], tmp_path / "none.png")
    png_size(path)


def test_bad_inputs_are_explained(tmp_path):
    with pytest.raises(ValueError, match=r"\(kh, kw, in_channels, filters\).*\(4, 4\)"):
        plotting.plot_filters(np.zeros((4, 4)), tmp_path / "f.png")
    with pytest.raises(ValueError, match="no 'loss'"):
        plotting.plot_history({"loss": []}, tmp_path / "h.png")
    with pytest.raises(ValueError, match="3 images, 2 labels, 3 predictions"):
        plotting.plot_misclassified(np.zeros((3, 28, 28)), [1, 2], [1, 2, 3], tmp_path / "m.png")
    assert os.listdir(tmp_path) == []


def test_failed_render_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plotting.plot_filters(np.ones((2, 2, 1, 2)), tmp_path / "f.png")
    assert os.listdir(tmp_path) == []


def test_one_saver_keeps_each_figures_own_margins_and_resolution(tmp_path):
    """A constrained-layout figure (convnet.study's) keeps its margins and its dpi; any other is cropped."""
    from matplotlib.figure import Figure
    from PIL import Image

    from convnet import study
    from convnet.plotting import save_figure
    constrained, _ = study.new_figure(figsize=(2, 1))
    plain = Figure(figsize=(2, 1), dpi=100)
    plain.subplots()
    save_figure(constrained, tmp_path / "c.png")
    save_figure(plain, tmp_path / "p.png")
    assert Image.open(tmp_path / "c.png").size == (220, 110)              # 2 x 1 inches at 110 dpi, uncropped
    assert Image.open(tmp_path / "p.png").size != (200, 100)              # cropped to its content
    assert study.save_figure(constrained, tmp_path / "s.png") == str(tmp_path / "s.png")
