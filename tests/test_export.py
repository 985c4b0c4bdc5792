"""``python -m experiments.export``: writes an ONNX file that onnxruntime runs like model.predict; clear errors."""
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from convnet import Sequential, layers  # noqa: E402  (after the importorskip)
from convnet.interop import from_onnx  # noqa: E402
from experiments import export  # noqa: E402
from convnet.saving import save_model


@pytest.fixture
def model_file(tmp_path):
    model = Sequential([layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"), layers.MaxPool2D(2),
                        layers.Dropout(0.25), layers.Flatten(), layers.Dense(10, activation="softmax")],
                       input_shape=(28, 28, 1), seed=3)
    return model, save_model(model, tmp_path / "model.npz")


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_export_writes_a_file_that_onnxruntime_runs_like_predict(model_file, tmp_path, capsys):
    model, path = model_file
    out = tmp_path / "sub" / "model.onnx"                 # a missing directory is created
    assert export.main([str(path), "--onnx", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "input 'input' (batch, 28, 28, 1)" in printed
    assert "argmax equal: same" in printed
    x = np.random.default_rng(5).random((20, 28, 28, 1), dtype=np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.predict(x), atol=1e-6)
    assert from_onnx(out).get_config() == model.get_config()
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]     # no temporary file left


def test_input_layout_nchw_writes_a_file_that_takes_channels_first_images(model_file, tmp_path, capsys):
    model, path = model_file
    out = tmp_path / "nchw.onnx"
    assert export.main([str(path), "--onnx", str(out), "--input-layout", "NCHW"]) == 0
    printed = capsys.readouterr().out
    assert "input 'input' (batch, 1, 28, 28) float32 channels first" in printed and "argmax equal: same" in printed
    x = np.random.default_rng(6).random((20, 28, 28, 1), dtype=np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
    np.testing.assert_allclose(got, model.predict(x), atol=1e-6)


def test_input_layout_nchw_of_a_model_without_images_is_one_error_line(tmp_path, capsys):
    path = save_model(Sequential([layers.Dense(3)], input_shape=(4,), seed=0), tmp_path / "dense.npz")
    assert export.main([str(path), "--onnx", str(tmp_path / "m.onnx"), "--input-layout", "NCHW"]) == 2
    assert "input_layout='NCHW' is for image inputs" in one_error_line(capsys)


def test_an_existing_file_needs_force(model_file, tmp_path, capsys):
    _, path = model_file
    out = tmp_path / "taken.onnx"
    out.write_bytes(b"not ours")
    assert export.main([str(path), "--onnx", str(out)]) == 2
    assert "already exists; add --force" in one_error_line(capsys)
    assert out.read_bytes() == b"not ours"
    assert export.main([str(path), "--onnx", str(out), "--force", "--no-check"]) == 0
    assert "onnxruntime" not in capsys.readouterr().out                   # --no-check
    assert from_onnx(out).count_params() > 0


def test_bad_inputs_give_one_error_line(model_file, tmp_path, capsys):
    _, path = model_file
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(path.read_bytes()[:500])
    cases = [([str(tmp_path / "missing.npz")], "does not exist"),
             ([str(damaged)], "damaged.npz"),
             ([str(path)], "is a directory"),                           # --onnx names a directory below
             ([], "no trained model found")]
    for argv, message in cases:
        target = tmp_path if message == "is a directory" else tmp_path / "out.onnx"
        code = export.main(argv + ["--onnx", str(target), "--runs-dir", str(tmp_path / "runs")])
        assert code == 2
        assert message in one_error_line(capsys)
        assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("argv", [["m.npz"], ["m.npz", "--onnx", "o.onnx", "--opset", "12"],
                                  ["m.npz", "--onnx", "o.onnx", "--opset", "x"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_without_the_onnx_extra_the_message_says_what_to_install(model_file, tmp_path, monkeypatch, capsys):
    _, path = model_file
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert export.main([str(path), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert 'pip install -e ".[onnx]"' in one_error_line(capsys)


def test_the_check_reports_a_wrong_export(model_file, tmp_path, monkeypatch, capsys):
    """If the written graph did not compute the model's function, the command says so and exits 1."""
    model, path = model_file
    out = tmp_path / "m.onnx"

    def wrong_check(model, path, n=export.CHECK_IMAGES, seed=0, input_layout="NHWC"):
        diff, same = real_check(model, path, n, seed, input_layout)
        return diff + 0.5, same
    real_check = export.check_with_onnxruntime
    monkeypatch.setattr(export, "check_with_onnxruntime", wrong_check)
    assert export.main([str(path), "--onnx", str(out)]) == 1
    assert "DIFFERENT" in capsys.readouterr().out
