"""The explorer's HTTP API and command line (experiments/explore/server.py, __main__.py), no browser.

A real server on a free port of 127.0.0.1 serves the untrained reference
model (the API's agreement with ``model.predict`` does not need a trained
one). Every bad request must get a 4xx JSON error naming the problem, and
the server must go on answering afterwards.
"""
import http.client
import json
import socket

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convnet.architectures import mnist_cnn
from convnet.saving import save_model
from experiments.explore import __main__ as cli
from experiments.explore import server as srv
from experiments.explore.core import Explorer, decode
from experiments.predict import load_model_for_inference
from explore_support import (MODEL_KINDS, as_png, digit_pixels, in_threads, mnist_test, model_of_kind, request,
                             session_header)


@pytest.fixture(scope="module")
def model():
    m = mnist_cnn(seed=0)
    m.compile()
    return m


@pytest.fixture(scope="module")
def server(model):
    explorer = Explorer(model, model_path="seed model")
    s = srv.serve_in_thread(explorer)
    yield s
    s.shutdown()
    s.server_close()
    explorer.close()


def _alive(server):
    status, body = request(server, "POST", "/api/predict", {"pixels": [[0.0] * 28] * 28})
    assert status == 200 and 0 <= body["prediction"] <= 9


def test_predict_agrees_with_model_predict(server, model):
    x, _ = mnist_test()
    idx = list(range(0, 10000, 500))
    expected = model.predict(x[idx][..., None].astype(np.float32) / 255)
    for k, i in enumerate(idx):
        status, body = request(server, "POST", "/api/predict", {"pixels": digit_pixels(i)})
        assert status == 200
        assert body["prediction"] == int(expected[k].argmax())
        np.testing.assert_allclose(body["probabilities"], expected[k], rtol=1e-4, atol=1e-6)
        assert len(body["logits"]) == 10 and "layers" not in body


def test_predict_with_layers(server, model):
    status, body = request(server, "POST", "/api/predict", {"pixels": digit_pixels(0), "layers": True})
    assert status == 200
    shapes = [tuple(decode(l["output"]).shape) for l in body["layers"]]
    assert shapes == [tuple(l.output_shape) for l in model.layers]


@pytest.mark.parametrize("body, message", [
    ({"pixels": [[0.0] * 28] * 27}, "27 rows"),
    ({"pixels": [[0.0] * 28] * 27 + [[0.0] * 29]}, "pixels[27] has 29 numbers"),
    ({"pixels": [[0.0] * 28] * 27 + [[0.0] * 27 + [None]]}, "pixels[27][27] is null"),
    ({"pixels": [[0.0] * 28] * 27 + [[0.0] * 27 + ["0.5"]]}, "not a number"),
    ({"pixels": [[0.0] * 28] * 27 + [[0.0] * 27 + [True]]}, "not a number"),
    ({"pixels": [[0.0] * 28] * 27 + [[0.0] * 27 + [1.5]]}, "outside 0..1"),
    ({"pixels": [[0.0] * 28] * 27 + [[0.0] * 27 + [1e400]]}, "Infinity"),
    ({"pixels": "abc"}, "list of rows"),
    ({"picture": []}, "missing field 'pixels'"),
    ({"pixels": [[0.0] * 28] * 28, "layers": "yes"}, "layers must be"),
    ([1, 2], "JSON object"),
])
def test_bad_predict_requests_get_400_naming_the_problem(server, body, message):
    status, reply = request(server, "POST", "/api/predict", body)
    assert status == 400 and message in reply["error"], reply
    _alive(server)


def test_nan_malformed_and_wrong_type_bodies(server):
    nan_body = ("{\"pixels\": [" + ",".join(["[" + ",".join(["0"] * 28) + "]"] * 27)
                + ",[" + ",".join(["0"] * 27 + ["NaN"]) + "]]}").encode()
    status, reply = request(server, "POST", "/api/predict", nan_body, {"Content-Type": "application/json"})
    assert status == 400 and "NaN" in reply["error"]
    status, reply = request(server, "POST", "/api/predict", nan_body.replace(b"NaN", b"1e999"),
                            {"Content-Type": "application/json"})
    assert status == 400 and "pixels[27][27] is inf" in reply["error"]
    status, reply = request(server, "POST", "/api/predict", b"{\"pixels\": [[0, 1", {"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in reply["error"]
    status, reply = request(server, "POST", "/api/predict", b"[" * 100000, {"Content-Type": "application/json"})
    assert status == 400
    status, reply = request(server, "POST", "/api/predict", b"\xff\xfe", {"Content-Type": "application/json"})
    assert status == 400 and "UTF-8" in reply["error"]
    status, reply = request(server, "POST", "/api/predict", b"{}", {"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in reply["error"]
    _alive(server)


def test_oversized_body_gets_413_and_the_server_goes_on(server):
    big = b"{\"pixels\": \"" + b"x" * (srv.MAX_BODY + 10) + b"\"}"
    status, reply = request(server, "POST", "/api/predict", big, {"Content-Type": "application/json"})
    assert status == 413 and "larger than" in reply["error"]
    # a body announced as huge is refused before it is read
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {10 ** 12}\r\n\r\n".encode())
        reply = _read_until_closed(s)
    assert reply.startswith("HTTP/1.1 413") and "larger than" in reply
    _alive(server)


def _read_until_closed(sock):
    """Everything the server sends until it closes the connection (headers and body may come apart)."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks).decode()
        chunks.append(chunk)


def test_missing_length_routes_methods_and_hosts(server):
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n\r\n".encode())
        assert _read_until_closed(s).startswith("HTTP/1.1 411")
    assert request(server, "GET", "/api/nothing")[0] == 404
    assert request(server, "POST", "/api/nothing", {})[0] == 404
    status, reply = request(server, "DELETE", "/api/predict")
    assert status == 405 and "error" in reply
    status, reply = request(server, "GET", "/api/info", headers={"Host": "evil.example:80"})
    assert status == 421 and "not this server" in reply["error"]
    status, reply = request(server, "GET", "/api/info", headers={"X-Explorer-Session": "../../etc"})
    assert status == 400 and "hex" in reply["error"]
    _alive(server)


def test_a_refused_body_is_not_read_as_the_next_request(server):
    host, port = server.server_address[:2]
    smuggled = b"GET /api/info HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() + b"\r\n\r\n"
    first = (f"POST /api/predict HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(smuggled)}\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(first + smuggled)
        reply = _read_until_closed(s)
    assert reply.startswith("HTTP/1.1 421") and reply.count("HTTP/1.1 ") == 1
    _alive(server)


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/%2e%2e/core.py", "/static/..%2fcore.py",
                                  "/../../experiments/explore/core.py", "/static//etc/passwd", "/static/",
                                  "/static/explore.js/..", "/server.py"])
def test_only_the_packaged_page_files_are_served(server, path):
    status, body, res = request(server, "GET", path, raw=True)
    assert status == 404 and b"def " not in body


def test_the_page_and_its_files(server):
    status, body, res = request(server, "GET", "/", raw=True)
    assert status == 200 and b'<canvas id="draw"' in body and res.getheader("Content-Type").startswith("text/html")
    for name in ("explore.js", "explore.css"):
        status, body, res = request(server, "GET", "/static/" + name, raw=True)
        assert status == 200 and len(body) > 1000
    status, info = request(server, "GET", "/api/info")
    assert info["params"] == 150858 and [l["name"] for l in info["layers"]][:2] == ["conv2d", "max_pooling2d"]


def test_prepare_uses_imageprep_and_rejects_bad_images(server):
    from PIL import Image

    from convnet.imageprep import mnist_style

    x, _ = mnist_test()
    png = as_png(x[3] / 255.0)                    # dark ink on white, 280x280
    status, body = request(server, "POST", "/api/prepare", png, {"Content-Type": "image/png"})
    assert status == 200
    import io

    expected = mnist_style(Image.open(io.BytesIO(png)))
    np.testing.assert_allclose(body["pixels"], expected, atol=1e-6)
    status, body = request(server, "POST", "/api/prepare", b"hello, not an image", {"Content-Type": "image/png"})
    assert status == 415 and "not an image" in body["error"]
    status, body = request(server, "POST", "/api/prepare", as_png(np.zeros((28, 28))), {"Content-Type": "image/png"})
    assert status == 422 and "no ink" in body["error"]
    buf = io.BytesIO()
    Image.new("L", (20000, 20), 255).save(buf, format="PNG")        # small file, too many pixels
    status, body = request(server, "POST", "/api/prepare", buf.getvalue(), {"Content-Type": "image/png"})
    assert status == 413 and "20000x20" in body["error"]
    status, body = request(server, "POST", "/api/prepare", png[:200], {"Content-Type": "image/png"})
    assert status in (415, 422)
    _alive(server)


def test_views_validate_their_fields(server):
    h = session_header(1)
    px = digit_pixels(0)
    assert request(server, "POST", "/api/unit", {"pixels": px, "layer": 0, "position": [3, 4, 5]}, h)[0] == 200
    for body, message in [({"pixels": px, "layer": 99, "position": [0]}, "layer must be in"),
                          ({"pixels": px, "layer": 0, "position": [30, 0, 0]}, "within"),
                          ({"pixels": px, "layer": 0, "position": "x"}, "position must be"),
                          ({"pixels": px, "target": 10}, "target must be in 0..9")]:
        path = "/api/backward" if "target" in body else "/api/unit"
        status, reply = request(server, "POST", path, body, h)
        assert status == 400 and message in reply["error"], reply
    status, reply = request(server, "POST", "/api/gradcheck", {"pixels": px, "target": 1, "samples": 50}, h)
    assert status == 400 and "samples" in reply["error"]
    status, reply = request(server, "POST", "/api/step", {"pixels": px, "label": 3})
    assert status == 400 and "session" in reply["error"]
    status, reply = request(server, "POST", "/api/train/start", {"images": 10}, h)
    assert status == 400 and "images must be in 100..60000" in reply["error"]
    status, reply = request(server, "POST", "/api/train/start", {"learning_rate": -1}, h)
    assert status == 400 and "learning_rate" in reply["error"]
    assert request(server, "GET", "/api/mnist/list?kind=weird")[0] == 400
    assert request(server, "GET", "/api/mnist/digit?index=10000")[0] == 400
    assert request(server, "GET", "/api/mnist/digit?index=abc")[0] == 400
    assert request(server, "GET", "/api/mnist/digit?index=" + "9" * 5000)[0] == 400
    status, reply = request(server, "GET", "/api/mnist/list?" + "&".join(f"a{i}=1" for i in range(20)))
    assert status == 400 and "too many query parameters" in reply["error"]
    _alive(server)


def test_mnist_browsing(server, model):
    status, page = request(server, "GET", "/api/mnist/list?kind=all&offset=10&limit=5")
    assert status == 200 and page["total"] == 10000 and [i["index"] for i in page["items"]] == list(range(10, 15))
    x, y = mnist_test()
    import base64

    thumbs = np.frombuffer(base64.b64decode(page["images"]), np.uint8).reshape(5, 28, 28)
    np.testing.assert_array_equal(thumbs, x[10:15])
    status, page = request(server, "GET", "/api/mnist/list?kind=mistakes&limit=200")
    assert all(i["label"] != i["prediction"] for i in page["items"]) and page["total"] > 100   # untrained model
    status, d = request(server, "GET", "/api/mnist/digit?index=7")
    assert d["label"] == int(y[7]) and np.allclose(d["pixels"], x[7] / 255, atol=1e-6)


def test_sessions_step_apply_reset(server):
    a, b = session_header(2), session_header(3)
    px = digit_pixels(5)
    p0 = request(server, "POST", "/api/predict", {"pixels": px}, a)[1]["probabilities"]
    status, preview = request(server, "POST", "/api/step", {"pixels": px, "label": 4}, a)
    assert status == 200 and len(preview["params"]) == 8
    status, applied = request(server, "POST", "/api/step/apply", {"pixels": px, "label": 4}, a)
    assert applied["steps_applied"] == 1
    assert applied["probabilities"][4] > p0[4]
    assert request(server, "POST", "/api/predict", {"pixels": px}, b)[1]["probabilities"] == p0   # the other tab
    assert request(server, "POST", "/api/predict", {"pixels": px})[1]["probabilities"] == p0      # the loaded model
    request(server, "POST", "/api/reset", {}, a)
    assert request(server, "POST", "/api/predict", {"pixels": px}, a)[1]["probabilities"] == p0


def test_concurrent_requests_from_many_pages(server, model):
    x, _ = mnist_test()
    expected = model.predict(x[:16][..., None].astype(np.float32) / 255).argmax(axis=1)

    def page(n):
        for i in range(16):
            status, body = request(server, "POST", "/api/predict", {"pixels": digit_pixels(i), "layers": True},
                                   session_header(100 + n))
            assert status == 200 and body["prediction"] == expected[i]
    errors = in_threads(page, 6)
    assert not errors, errors[:2]


def test_keep_alive_connection_serves_several_requests(server):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    for i in range(3):
        conn.request("POST", "/api/predict", body=json.dumps({"pixels": digit_pixels(i)}),
                     headers={"Content-Type": "application/json"})
        res = conn.getresponse()
        assert res.status == 200 and "prediction" in json.loads(res.read())
    conn.close()


# ------------------------------------------------------------------ command line
def test_cli_without_a_model_says_how_to_train_one(tmp_path, capsys):
    assert cli.main(["--no-browser", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no trained model found") and "python -m experiments.mnist" in err


def test_cli_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--port", "70000"])
    assert e.value.code == 2 and "port number" in capsys.readouterr().err
    assert cli.main(["--model", str(tmp_path / "nope.npz"), "--no-browser"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    assert cli.main(["--model", str(bad), "--no-browser"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_cli_port_in_use(tmp_path, capsys, server, model):
    path = tmp_path / "m.npz"
    save_model(model, path)
    port = server.server_address[1]
    assert cli.main(["--model", str(path), "--port", str(port), "--no-browser"]) == 2
    assert "cannot listen" in capsys.readouterr().err


def test_textbook_backend_gives_the_same_answers(model, capsys):
    import convnet

    x, _ = mnist_test()
    expected = model.predict(x[:5][..., None].astype(np.float32) / 255)       # the engine
    with convnet.backend("numpy"):
        explorer = Explorer(model, model_path="seed model")
        s = srv.serve_in_thread(explorer)
        try:
            assert request(s, "GET", "/api/info")[1]["backend"] == "numpy"
            for i in range(5):
                status, body = request(s, "POST", "/api/predict", {"pixels": digit_pixels(i), "layers": True})
                assert status == 200
                np.testing.assert_allclose(body["probabilities"], expected[i], rtol=1e-4, atol=1e-6)
        finally:
            s.shutdown()
            s.server_close()
            explorer.close()
    with pytest.raises(SystemExit) as e:
        cli.main(["--backend", "fortran"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------------------ every route on every kind of model
@pytest.fixture(scope="module", params=sorted(MODEL_KINDS))
def kind_server(request):
    """A server of a small model of each kind experiments.mnist makes (and one converted from Keras);
    the textbook-trained one is also served by the textbook backend, as ``--backend numpy`` does."""
    import convnet

    kind = request.param
    path = model_of_kind(kind)
    with convnet.backend("numpy" if kind == "textbook" else "numba"):
        explorer = Explorer(load_model_for_inference(path), model_path=str(path))
        s = srv.serve_in_thread(explorer)
        try:
            yield kind, s
        finally:
            s.shutdown()
            s.server_close()
            explorer.close()


def _ok(server, method, path, body=None, n=50):
    status, reply = request(server, method, path, body, session_header(n))
    assert status == 200, (path, reply)
    return reply


def test_every_route_serves_every_kind_of_model(kind_server):
    import time

    from convnet import schedules

    kind, s = kind_server
    model = load_model_for_inference(model_of_kind(kind))
    px, label = digit_pixels(0), 3
    info = _ok(s, "GET", "/api/info")
    rate = info["session"]["learning_rate"]
    lr = model.optimizer.learning_rate if model.optimizer is not None else 1e-3
    if isinstance(lr, schedules.LearningRateSchedule):          # the default recipe: its initial rate, not 0
        assert rate == pytest.approx(lr(0)) and lr(model.optimizer.iterations) == pytest.approx(0, abs=1e-9)
        assert "schedule" in info["session"]["learning_rate_source"]
    else:
        assert rate == pytest.approx(lr)
    forward = _ok(s, "POST", "/api/predict", {"pixels": px, "layers": True})
    assert len(forward["layers"]) == len(model.layers)
    _ok(s, "POST", "/api/unit", {"pixels": px, "layer": 0, "position": [5, 5, 0]})
    backward = _ok(s, "POST", "/api/backward", {"pixels": px, "target": label})
    status, stateless = request(s, "POST", "/api/backward", {"pixels": px, "target": label})   # no session
    assert status == 200 and stateless["loss"] == pytest.approx(backward["loss"], rel=1e-6), stateless
    check = _ok(s, "POST", "/api/gradcheck", {"pixels": px, "target": label})
    assert all(t["norm_error"] is None or t["norm_error"] < 1e-4 for t in check["tensors"]), check["tensors"]
    preview = _ok(s, "POST", "/api/step", {"pixels": px, "label": label})
    assert preview["optimizer"]["learning_rate"] == pytest.approx(rate)
    assert preview["loss"] == pytest.approx(backward["loss"], rel=1e-5)
    assert preview["loss_after"] < preview["loss"] - 1e-4              # the step moves the model
    applied = _ok(s, "POST", "/api/step/apply", {"pixels": px, "label": label})
    assert applied["loss_after"] == pytest.approx(preview["loss_after"], rel=1e-4)
    assert applied["probabilities"][label] > forward["probabilities"][label]
    faster = _ok(s, "POST", "/api/step", {"pixels": px, "label": label, "learning_rate": 10 * rate})
    assert faster["optimizer"]["learning_rate"] == pytest.approx(10 * rate)
    assert faster["optimizer"]["learning_rate_source"] == "chosen on the page"
    _ok(s, "POST", "/api/reset", {})
    assert _ok(s, "POST", "/api/predict", {"pixels": px})["probabilities"] == forward["probabilities"]
    page = _ok(s, "GET", "/api/mnist/list?kind=mistakes&limit=3")
    assert all(i["label"] != i["prediction"] for i in page["items"])
    assert _ok(s, "GET", "/api/mnist/digit?index=3")["index"] == 3
    _ok(s, "POST", "/api/train/start", {"images": 200, "batch_size": 100, "learning_rate": 1e-3})
    deadline = time.monotonic() + 120
    while (st := _ok(s, "GET", "/api/train/status"))["state"] in ("starting", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert st["state"] == "finished" and st["step"] == 2, st["message"]
    assert _ok(s, "POST", "/api/train/stop", {})["state"] == "finished"
    assert _ok(s, "POST", "/api/train/use", {})["steps"] == 2
    assert _ok(s, "POST", "/api/predict", {"pixels": px})["probabilities"] != forward["probabilities"]


def test_step_learning_rate_is_validated(server):
    px = digit_pixels(0)
    for bad, message in ((0, "learning_rate must be in"), (5.0, "learning_rate must be in"),
                         ("fast", "learning_rate must be a number")):
        status, reply = request(server, "POST", "/api/step", {"pixels": px, "label": 1, "learning_rate": bad},
                                session_header(60))
        assert status == 400 and message in reply["error"], reply


def test_source_files_are_served_read_only_and_nothing_else(server):
    status, info = request(server, "GET", "/api/info")
    assert info["source_files"] == {"activations.py": "convnet/activations.py", "layers.py": "convnet/layers.py",
                                    "losses.py": "convnet/losses.py"}
    conv = next(c for c in info["layers"][0]["code"] if c["qualname"] == "Conv2D.backprop")
    status, src = request(server, "GET", "/api/source?file=layers.py")
    assert status == 200 and src["path"] == "convnet/layers.py"
    assert src["lines"][conv["start"] - 1].strip().startswith("def backprop(self")
    for name in ("../layers.py", "convnet/layers.py", "model.py", "/etc/passwd", "..%2Fsetup.cfg", ""):
        status, reply = request(server, "GET", f"/api/source?file={name}")
        assert status == 404 and "file must be one of" in reply["error"], name
    assert request(server, "POST", "/api/source?file=layers.py", {})[0] == 404


def test_weights_are_the_page_models(server, model):
    status, w = request(server, "GET", "/api/weights", headers=session_header(70))
    assert status == 200 and [l["name"] for l in w["layers"]] == [l.name for l in model.layers]
    np.testing.assert_array_equal(decode(w["layers"][0]["params"]["kernel"]), model.layers[0].params["kernel"])
    request(server, "POST", "/api/step/apply", {"pixels": digit_pixels(1), "label": 2}, session_header(70))
    moved = decode(request(server, "GET", "/api/weights", headers=session_header(70))[1]["layers"][0]["params"]["kernel"])
    assert not np.array_equal(moved, model.layers[0].params["kernel"])


def test_a_drawing_without_a_digit_is_not_an_error_but_an_upload_is(server):
    blank = as_png(np.zeros((28, 28)), invert=False)
    status, reply = request(server, "POST", "/api/prepare/drawing", blank, {"Content-Type": "image/png"})
    assert status == 200 and reply["pixels"] is None and "no ink" in reply["message"]
    status, reply = request(server, "POST", "/api/prepare", blank, {"Content-Type": "image/png"})
    assert status == 422 and "no ink" in reply["error"]
    dot = np.zeros((28, 28))
    dot[13:15, 13:15] = 1                                       # a click on the canvas: a dot is an input
    status, reply = request(server, "POST", "/api/prepare/drawing", as_png(dot, invert=False),
                            {"Content-Type": "image/png"})
    assert status == 200 and np.max(reply["pixels"]) == pytest.approx(1)
    status, reply = request(server, "POST", "/api/prepare/drawing", b"not an image", {"Content-Type": "image/png"})
    assert status == 415                                        # only a page without a digit is answered 200


def test_the_first_digit_with_and_without_mnist(server, model, monkeypatch):
    x, y = mnist_test()
    status, first = request(server, "GET", "/api/mnist/first")
    assert status == 200 and first["available"] and first["index"] == 0 and first["label"] == int(y[0])
    import convnet.datasets

    def offline(*args, **kwargs):
        raise OSError("no network and no cache")
    monkeypatch.setattr(convnet.datasets, "load_mnist", offline)
    explorer = Explorer(model, model_path="seed model")
    s = srv.serve_in_thread(explorer)
    try:
        status, first = request(s, "GET", "/api/mnist/first")
        assert status == 200 and not first["available"] and "no network and no cache" in first["message"]
        assert request(s, "GET", "/api/mnist/digit?index=0")[0] == 503
    finally:
        s.shutdown()
        s.server_close()
        explorer.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=40))
def test_no_other_name_reaches_a_file(server, name):
    from urllib.parse import quote

    status, reply = request(server, "GET", f"/api/source?file={quote(name, safe='')}")
    if name in ("layers.py", "activations.py", "losses.py"):
        assert status == 200
    else:
        assert status in (400, 404) and "error" in reply, (name, status)
