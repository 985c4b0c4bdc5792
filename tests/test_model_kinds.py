"""Every command on every kind of model: the seams between features.

Each kind of model a user can make (the default recipe with its schedule, weight average and
augmentation; Keras's recipe; SGD with momentum; the textbook backend; a resumed run; a model
converted from Keras) goes through every command that takes a model: ``evaluate``,
``experiments.predict``, ``experiments.backprop`` and ``experiments.export --onnx``; every route of
the explorer's API on each of them is ``test_explore_server.test_every_route_serves_every_kind_of_model``.
The models (``explore_support.model_of_kind``) are tiny: the plumbing is what is tested.
"""
import numpy as np
import pytest

import convnet
from explore_support import MODEL_KINDS, as_png, mnist_test, model_of_kind


@pytest.fixture(params=sorted(MODEL_KINDS))
def kind(request):
    return request.param


def test_evaluate_on_both_tiers(kind):
    x, y = mnist_test()
    x = x[:100, ..., None].astype(np.float32) / 255
    model = convnet.load_model(model_of_kind(kind))
    if model.loss is None:                                 # converted from Keras: weights only
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    engine = model.evaluate(x, y[:100])
    with convnet.backend("numpy"):
        textbook = model.evaluate(x, y[:100])
    assert len(engine) == 2 and np.all(np.isfinite(engine)) and 0 <= engine[1] <= 1
    np.testing.assert_allclose(engine, textbook, rtol=1e-4)


def test_predict_command(kind, tmp_path, capsys):
    from experiments import predict
    x, y = mnist_test()
    image = tmp_path / "digit.png"
    image.write_bytes(as_png(x[0] / 255.0))
    assert predict.main([str(image), "--model", str(model_of_kind(kind))]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith(str(image))]
    assert len(line) == 1 and line[0].split(":")[1].strip()[0].isdigit()


def test_backprop_command(kind, tmp_path, capsys):
    from experiments import backprop
    assert backprop.main(["--model", str(model_of_kind(kind)), "--out", str(tmp_path / "bp"), "--batch-size", "4",
                          "--check-entries", "2", "--check-examples", "2"]) == 0
    out = capsys.readouterr().out
    assert "gradient check" in out and "kernel" in out


def test_export_command(kind, tmp_path, capsys):
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from experiments import export
    target = tmp_path / "m.onnx"
    assert export.main([str(model_of_kind(kind)), "--onnx", str(target)]) == 0
    import onnxruntime
    x, _ = mnist_test()
    xb = x[:8, ..., None].astype(np.float32) / 255
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: xb})[0]
    np.testing.assert_allclose(got, convnet.load_model(model_of_kind(kind)).predict(xb), atol=1e-5)
