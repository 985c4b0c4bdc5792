"""benchmarks/winograd_training.py: the Winograd kernel gradient it times is the right one, and the script runs."""
import numpy as np
import pytest

from benchmarks import winograd_training as wt
from convnet import backends, layers


def _inputs(rng, n):
    x = np.maximum(rng.normal(size=(n, 12, 12, 32)), 0).astype(np.float32)
    dz = rng.normal(size=(n, 9, 9, 32)).astype(np.float32)
    dz[:, 8, :] = dz[:, :, 8] = 0                 # what a flooring 2x2 pool sends back
    return x, dz


def test_the_winograd_kernel_gradient_is_the_textbook_ones_to_float32_rounding(rng):
    x, dz = _inputs(rng, 3)
    conv = layers.Conv2D(32, (4, 4))
    conv.build((12, 12, 32))
    conv.astype(np.float64)
    with backends.backend("textbook"):
        conv.forward(x.astype(np.float64))
        conv.backward(dz.astype(np.float64))
    textbook = conv.grads["kernel"]
    assert np.allclose(wt.reference_gradient(x, dz), textbook, rtol=0, atol=1e-12 * np.abs(textbook).max())
    winograd = wt.kernel_gradient(wt.input_tiles(x), dz)
    assert winograd.shape == textbook.shape and winograd.dtype == np.float32
    assert np.linalg.norm(winograd - textbook) / np.linalg.norm(textbook) < 1e-5


def test_one_gradient_value_lands_on_the_kernel_taps_it_multiplies(rng):
    """dz = 1 at output (i, j) of one filter: the gradient of tap (u, v) is x[i + u, j + v]."""
    x, dz = _inputs(rng, 1)
    dz[:] = 0
    dz[0, 5, 2, 7] = 1.0
    dK = wt.kernel_gradient(wt.input_tiles(x), dz)
    expected = np.zeros_like(dK)
    expected[:, :, :, 7] = x[0, 5:9, 2:6, :]
    assert np.allclose(dK, expected, atol=1e-5)


def test_measure_times_both_paths_and_reports_their_errors():
    rows, errors = wt.measure(n_images=2, repeats=1)
    assert [path for path, _, _ in rows].count("today") == 2 and len(rows) == 8
    assert all(us > 0 for _, _, us in rows)
    assert errors["im2col (today)"] < 1e-6 and errors["Winograd"] < 1e-5


def test_the_command_line(capsys):
    wt.main(["--images", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "us/image saved" in out and "Winograd" in out
    with pytest.raises(SystemExit) as e:
        wt.main(["--images", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "error: " in err and "expected an integer between 1 and 1024, got 0" in err
