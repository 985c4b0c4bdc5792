"""experiments.keras_mnist's command line (the training itself needs TensorFlow and minutes: not here)."""
import argparse

import pytest

from experiments import keras_mnist


@pytest.mark.parametrize("text, seeds", [("0-9", list(range(10))), ("3", [3]), ("5,1,1,2-3", [1, 2, 3, 5])])
def test_seed_lists(text, seeds):
    assert keras_mnist.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "3-1", "-2", "0-5000", "1,,2"])
def test_bad_seed_lists_are_explained(text):
    with pytest.raises(argparse.ArgumentTypeError, match="seeds"):
        keras_mnist.parse_seeds(text)


def test_bad_arguments_exit_with_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        keras_mnist.main(["--epochs", "0"])
    assert e.value.code == 2
    assert "--epochs must be between 1 and 1000, got 0" in capsys.readouterr().err


def test_recorded_seeds_are_not_run_again(tmp_path, capsys):
    for s in (1, 2):
        (tmp_path / f"keras-seed{s}.json").write_text("{}")
    assert keras_mnist.main(["--seeds", "1-2", "--out-dir", str(tmp_path)]) == 0
    assert "already recorded, skipped: seeds 1, 2" in capsys.readouterr().out
    assert (tmp_path / "keras-seed1.json").read_text() == "{}"
