"""experiments.prep_eval: the preparations it compares and its command line."""
import json

import numpy as np
import pytest

from convnet import Sequential, layers
from experiments import prep_eval
from convnet.saving import save_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained tiny model: the command's plumbing does not need a good one."""
    model = Sequential([layers.Flatten(), layers.Dense(10, activation="softmax")], input_shape=(28, 28, 1), seed=0)
    model.compile("adam")
    return str(save_model(model, tmp_path_factory.mktemp("m") / "model.npz"))


def dark_bar_on_paper():
    img = np.full((90, 60), 230, np.uint8)
    img[20:70, 26:34] = 20
    return img


@pytest.mark.parametrize("prep", list(prep_eval.PREPS))
def test_every_preparation_makes_an_mnist_like_frame(prep):
    x = prep_eval.PREPS[prep](dark_bar_on_paper())
    assert x.shape == (28, 28) and x.max() == pytest.approx(1) and x.min() == 0
    assert x[0].max() == 0 and x[:, 0].max() == 0                 # black border, bright ink
    rows = np.flatnonzero(x.max(axis=1) > 0.5)
    assert rows[-1] - rows[0] + 1 in (19, 20)                      # the long side fills the 20-pixel box


@pytest.mark.parametrize("prep", list(prep_eval.PREPS))
def test_a_blank_page_is_rejected_not_guessed(prep):
    assert prep_eval.PREPS[prep](np.full((50, 50), 200, np.uint8)) is None


def test_cli_prints_a_table_and_writes_json(model_file, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert prep_eval.main(["--model", model_file, "--n", "3", "--sets", "drawn,restroke", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "drawn" in text and "restroke" in text and "baseline" in text and "current" in text
    record = json.loads(out.read_text())
    assert record["seed"] == 1 and record["split"] == "dev"
    assert set(record["results"]) == {"drawn", "restroke"}
    for row in record["results"].values():
        assert row["n"] == 3 and all(0 <= row[p] <= 1 for p in prep_eval.PREPS)


def test_cli_refuses_to_overwrite_and_rejects_bad_arguments(model_file, tmp_path, capsys):
    out = tmp_path / "exists.json"
    out.write_text("keep me")
    assert prep_eval.main(["--model", model_file, "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "keep me"
    assert prep_eval.main(["--model", str(tmp_path / "nope.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    for bad in (["--sets", "photo,nope"], ["--n", "0"], ["--preps", "magic"]):
        with pytest.raises(SystemExit) as info:
            prep_eval.main(["--model", model_file] + bad)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err


def test_cli_names_the_missing_fonts_after_checking_the_model(model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(prep_eval.hs, "available_fonts", lambda: [])
    assert prep_eval.main(["--model", str(tmp_path / "nope.npz"), "--sets", "fonts"]) == 2
    assert "does not exist" in capsys.readouterr().err             # the model is named first
    assert prep_eval.main(["--model", model_file, "--sets", "fonts"]) == 2
    err = capsys.readouterr().err
    assert "needs a handwriting font" in err and "Traceback" not in err
