"""experiments.keras_parity: the side-by-side run from the same weights (a few steps)."""
import numpy as np
import pytest

from experiments import keras_parity


def test_relative_difference_is_the_largest_over_the_arrays():
    a = [np.array([1.0, 0.0]), np.array([3.0, 4.0])]
    b = [np.array([1.0, 0.0]), np.array([3.0, 0.0])]
    assert keras_parity.relative_difference(a, b) == pytest.approx(4.0 / 3.0)
    assert keras_parity.relative_difference(b, b) == 0.0


def test_bad_arguments_exit_with_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        keras_parity.main(["--steps", "0"])
    assert e.value.code == 2 and "--steps must be between 1 and 1875, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_a_few_steps_agree_with_keras(capsys):
    pytest.importorskip("tensorflow")
    assert keras_parity.main(["--steps", "3", "--report", "1", "--test-images", "200"]) == 0
    out = capsys.readouterr().out
    assert "start: largest relative weight difference 0.0e+00" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    for step, ours, theirs, keras_diff, numpy_diff in rows:
        assert float(ours) == pytest.approx(float(theirs), rel=1e-3)    # same losses step by step
        assert float(keras_diff) < 1e-3 and float(numpy_diff) < 1e-3
    assert "test accuracy after 3 steps" in out
