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
    # exactly MAX_BODY bytes is allowed: read and judged on its content (a string, not 28 rows)
    limit = b"{\"pixels\": \"" + b"x" * (srv.MAX_BODY - 14) + b"\"}"
    assert len(limit) == srv.MAX_BODY
    status, reply = request(server, "POST", "/api/predict", limit, {"Content-Type": "application/json"})
    assert status == 400 and "pixels must be a list of rows" in reply["error"]
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


# ------------------------------------------------------------------ hostile clients, round 2
def _raw(server, data, timeout=10):
    """Send raw bytes on a new connection; everything the server answers until it closes."""
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        return _read_until_closed(s)


def _host(server):
    host, port = server.server_address[:2]
    return f"{host}:{port}"


def test_a_cross_site_upload_or_post_is_refused(server):
    x, _ = mnist_test()
    png = as_png(x[3] / 255.0)
    for ctype in ("text/plain", None, "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        headers = {"Content-Type": ctype} if ctype else {}
        status, reply = request(server, "POST", "/api/prepare", png, headers)
        assert status == 415 and "image type" in reply["error"], (ctype, reply)
    assert request(server, "POST", "/api/prepare", png, {"Content-Type": "application/octet-stream"})[0] == 200
    own = "http://" + _host(server)
    for path, body, ctype in [("/api/prepare", png, "image/png"),
                              ("/api/predict", json.dumps({"pixels": digit_pixels(0)}).encode(), "application/json")]:
        for origin in ("http://evil.example", "null", own + ".evil.example", "https://" + _host(server)):
            status, reply = request(server, "POST", path, body, {"Content-Type": ctype, "Origin": origin})
            assert status == 403 and "another site" in reply["error"], (path, origin)
        assert request(server, "POST", path, body, {"Content-Type": ctype, "Origin": own})[0] == 200
    _alive(server)


@pytest.mark.parametrize("path, text, message", [
    ("/api/predict", '{"pixels": [[' + "1" + "0" * 4400 + ']]}', "pixels has 1 rows"),
    ("/api/predict", '{"pixels": [' + ",".join(["[" + ",".join(["0"] * 28) + "]"] * 27) + ",["
     + ",".join(["0"] * 27) + ",1" + "0" * 4400 + "]]}", "pixels[27][27] is a number of 4,401 digits, outside 0..1"),
    ("/api/predict", '{"pixels": [' + ",".join(["[" + ",".join(["0"] * 28) + "]"] * 27) + ",["
     + ",".join(["0"] * 27) + ",1" + "0" * 400 + "]]}", "pixels[27][27] is a number of 401 digits, outside 0..1"),
    ("/api/train/start", '{"learning_rate": 1' + "0" * 400 + "}", "learning_rate must be in"),
    ("/api/train/start", '{"seed": -1' + "0" * 400 + "}", "seed must be in 0..2147483647, got a number of 401 digits"),
    ("/api/unit", '{"pixels": [], "layer": 1' + "0" * 5000 + "}", "pixels has 0 rows"),
    ("/api/backward", json.dumps({"pixels": [[0.0] * 28] * 28})[:-1] + ', "target": 9' + "9" * 5000 + "}",
     "target must be in 0..9, got a number of 5,001 digits"),
])
def test_numbers_too_big_to_convert_are_a_400_naming_the_field(server, path, text, message):
    status, reply = request(server, "POST", path, text.encode(), {"Content-Type": "application/json",
                                                                 **session_header(7)})
    assert status == 400 and message in reply["error"], reply
    _alive(server)


def test_a_huge_number_in_an_unknown_field_is_ignored(server):
    text = json.dumps({"pixels": digit_pixels(0)})[:-1] + ', "extra": ' + "7" * 5000 + "}"
    status, reply = request(server, "POST", "/api/predict", text.encode(), {"Content-Type": "application/json"})
    assert status == 200 and 0 <= reply["prediction"] <= 9


def test_two_host_headers_are_refused(server):
    reply = _raw(server, f"GET /api/info HTTP/1.1\r\nHost: {_host(server)}\r\nHost: evil.example\r\n\r\n".encode())
    assert reply.startswith("HTTP/1.1 400") and "more than one Host header" in reply
    _alive(server)


def test_a_request_inside_a_get_body_is_not_served(server):
    second = f"GET /api/info HTTP/1.1\r\nHost: {_host(server)}\r\n\r\n".encode()
    first = f"GET /api/info HTTP/1.1\r\nHost: {_host(server)}\r\nContent-Length: {len(second)}\r\n\r\n".encode()
    reply = _raw(server, first + second)
    assert reply.startswith("HTTP/1.1 200") and reply.count("HTTP/1.1 ") == 1 and "Connection: close" in reply
    _alive(server)


def test_a_client_dripping_its_headers_is_cut_off_at_the_deadline(server, monkeypatch):
    import time

    monkeypatch.setattr(srv, "REQUEST_DEADLINE", 1.5)
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(b"GET /api/info HTTP/1.1\r\n")
        closed = False
        for _ in range(12):                 # one byte every 0.4 s: each within the socket timeout
            time.sleep(0.4)
            try:
                s.sendall(b"X")
            except OSError:
                closed = True
                break
            s.setblocking(False)
            try:
                closed = s.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed = True
            s.setblocking(True)
            if closed:
                break
        assert closed, "the connection was still open after 4.8 s"
        assert time.monotonic() - started < 4
    _alive(server)


def test_clients_that_go_away_leave_no_traceback(server, capfd):
    import struct
    import time

    host, port = server.server_address[:2]
    for data in (b"POST /api/predict HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 5\r\n\r\n",
                 f"POST /api/predict HTTP/1.1\r\nHost: {_host(server)}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: 100000\r\n\r\n{{".encode(),
                 b"GARBAGE\r\n\r\n"):
        for _ in range(3):
            s = socket.create_connection((host, port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))    # close = reset
            s.sendall(data)
            s.close()
    time.sleep(0.5)
    _alive(server)
    assert "Traceback" not in capfd.readouterr().err


def test_uploads_are_decoded_a_few_at_a_time(server, monkeypatch):
    """Over MAX_DECODES at once: the others wait for a turn, and past DECODE_WAIT get 503 with Retry-After."""
    import threading

    x, _ = mnist_test()
    png = as_png(x[3] / 255.0)
    release = threading.Event()
    entered = []
    real = srv.prepare_image

    def slow_prepare(raw):
        entered.append(1)
        release.wait(20)
        return real(raw)

    monkeypatch.setattr(srv, "prepare_image", slow_prepare)
    monkeypatch.setattr(srv, "DECODE_WAIT", 0.5)
    results = []

    def upload(_):
        status, body, res = request(server, "POST", "/api/prepare", png, {"Content-Type": "image/png"}, raw=True)
        results.append((status, res.getheader("Retry-After")))

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(srv.MAX_DECODES + 2)]
    for t in threads:
        t.start()
    for t in threads[srv.MAX_DECODES:]:
        t.join(10)                          # the ones without a turn are answered without waiting for the rest
    assert sorted(results) == [(503, str(srv.RETRY_AFTER))] * 2 and len(entered) == srv.MAX_DECODES
    release.set()
    for t in threads:
        t.join(20)
    assert sorted(results) == [(200, None)] * srv.MAX_DECODES + [(503, str(srv.RETRY_AFTER))] * 2


def test_the_mnist_view_recovers_when_the_files_appear(model, tmp_path, monkeypatch):
    import shutil

    import convnet.datasets
    from convnet.datasets.mnist import MNIST_FILES, default_data_dir

    real = convnet.datasets.load_mnist
    monkeypatch.setattr(convnet.datasets, "load_mnist",      # offline: only the cache, no source to ask
                        lambda d, verbose: real(d, verbose, sources=()))
    mnist_test()                                             # the real cache is filled
    explorer = Explorer(model, model_path="seed model", data_dir=tmp_path)
    s = srv.serve_in_thread(explorer)
    try:
        status, reply = request(s, "GET", "/api/mnist/list?limit=3")
        assert status == 503 and "MNIST is not available" in reply["error"]
        for f in MNIST_FILES:                                 # the user puts the files in place, as told
            for name in (f.name, f.name + ".gz"):
                if (default_data_dir() / name).exists():
                    shutil.copy(default_data_dir() / name, tmp_path / name)
        status, reply = request(s, "GET", "/api/mnist/list?limit=3")
        assert status == 200 and reply["total"] == 10000
    finally:
        s.shutdown()
        s.server_close()
        explorer.close()


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



def _json_values():
    from hypothesis import strategies as st

    scalars = (st.none() | st.booleans() | st.integers(-10 ** 1000, 10 ** 1000) | st.integers(-3, 30)
               | st.sampled_from([10 ** 400, -10 ** 400, 2 ** 63, 10 ** 40, 10 ** 41]) | st.floats(allow_nan=False)
               | st.text(max_size=6))
    huge = st.integers(10 ** 19, 10 ** 1000) | st.integers(-10 ** 1000, -10 ** 19)     # half the draws
    return huge | st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                               st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


#: a valid body of each JSON route and its fields (for /api/train/start, epochs 0 keeps any training from starting)
_ROUTES = {"/api/predict": {"pixels": None, "layers": False},
           "/api/unit": {"pixels": None, "layer": 0, "position": [1, 2, 3]},
           "/api/backward": {"pixels": None, "target": 3},
           "/api/gradcheck": {"pixels": None, "target": 3, "samples": 1, "seed": 0},
           "/api/step": {"pixels": None, "label": 3},
           "/api/step/apply": {"pixels": None, "label": 3},
           "/api/reset": {}, "/api/train/stop": {}, "/api/train/use": {},
           "/api/train/start": {"images": 100, "epochs": 0, "batch_size": 32, "learning_rate": 0.01}}


def test_fuzzed_json_bodies_get_an_answer_never_a_500(server):
    """A valid body with one field (or one pixel, or one position entry) replaced by any JSON value,
    and extra fields: 200 or a 4xx naming the problem, never a 500; the server goes on."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    @settings(max_examples=300, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(route=st.sampled_from(sorted(_ROUTES)), data=st.data(), with_session=st.booleans())
    def check(route, data, with_session):
        body = {k: ([[0.0] * 28 for _ in range(28)] if k == "pixels" else v) for k, v in _ROUTES[route].items()}
        field = data.draw(st.sampled_from(sorted(body) + ["extra"]))
        value = data.draw(_json_values())
        if field == "pixels" and data.draw(st.booleans()):
            body["pixels"][data.draw(st.integers(0, 27))][data.draw(st.integers(0, 27))] = value
        elif field == "position" and data.draw(st.booleans()):
            body["position"][data.draw(st.integers(0, 2))] = value
        elif not (route == "/api/train/start" and field == "epochs"):
            body[field] = value
        status, reply = request(server, "POST", route, body, session_header(9) if with_session else None)
        assert status == 200 or 400 <= status < 500 and reply["error"], (route, field, status, reply)

    check()
    _alive(server)


def test_a_burst_of_connections_is_queued_not_dropped(model):
    """While every thread is busy, new connections wait in the listen queue: 300 at once all get in.

    The server here accepts nothing (its loop is not started), as when all its threads are taken;
    with the old queue of 32 the kernel dropped the connections beyond it (connect timed out).
    """
    explorer = Explorer(model, model_path="seed model")
    server = srv.ExplorerServer(explorer)            # listening, never accepting
    socks = []
    try:
        for _ in range(300):
            socks.append(socket.create_connection(server.server_address[:2], timeout=0.5))
    finally:
        for s in socks:
            s.close()
        server.server_close()
        explorer.close()
    assert len(socks) == 300


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=40))
def test_no_other_name_reaches_a_file(server, name):
    from urllib.parse import quote

    status, reply = request(server, "GET", f"/api/source?file={quote(name, safe='')}")
    if name in ("layers.py", "activations.py", "losses.py"):
        assert status == 200
    else:
        assert status in (400, 404) and "error" in reply, (name, status)


def test_the_drawing_route_is_an_upload_like_any_other(server):
    png = as_png(np.zeros((28, 28)))
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        status, reply = request(server, "POST", "/api/prepare/drawing", png, {"Content-Type": ctype})
        assert status == 415 and "Content-Type" in reply["error"], ctype
    status, reply = request(server, "POST", "/api/prepare/drawing", png,
                            {"Content-Type": "image/png", "Origin": "http://evil.example"})
    assert status == 403
    status, reply = request(server, "POST", "/api/prepare/drawing", png, {"Content-Type": "image/png"})
    assert status == 200 and reply["pixels"] is None              # a blank canvas: no digit yet, no error
