"""``python -m benchmarks.explore_latency``: how long the explorer's requests take, end to end.

Starts the explorer's server on a free port of 127.0.0.1 in this process
and times, over one keep-alive HTTP connection (as the page's ``fetch``
uses), the whole round trip of the requests the page makes:

* ``predict``: ``POST /api/predict`` of an MNIST test digit, the prediction only
  (what the page sends in the middle of a stroke);
* ``predict + layers``: the same with every layer's output (what the
  page sends when a stroke ends; the issue's "well under 50 ms");
* ``prepare``: ``POST /api/prepare`` of a 280x280 PNG drawing
  (convnet.imageprep.mnist_style on the server);
* ``backward``, ``step preview``: the backward view and the training-step view.

Each figure is measured ``--repeats`` times after warm-up, digits taken in
turn; the median, the 90th percentile and the maximum are printed, with the
machine's load average (other work on the machine shows in the tail).
``--model PATH``: a trained model (default: the latest run's, else the
untrained reference model, which costs the same).
"""
import argparse
import http.client
import io
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from .cli import bounded_int


def _percentile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def _png(pixels):
    from PIL import Image

    img = Image.fromarray(np.uint8(255 - np.round(255 * pixels)), mode="L").resize((280, 280))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.explore_latency",
                                description="Round-trip times of the explorer's HTTP requests.")
    p.add_argument("--model", metavar="PATH", help="model .npz (default: the latest run's, else the seed model)")
    p.add_argument("--repeats", type=bounded_int(5, 100000), default=200, help="timed requests per kind (200)")
    args = p.parse_args(argv)

    from convnet.architectures import mnist_cnn
    from convnet.datasets import load_mnist
    from experiments.explore.core import Explorer
    from experiments.explore.server import serve_in_thread
    from experiments.predict import NoModelError, find_latest_model, load_model_for_inference

    path = args.model or find_latest_model()
    if path is not None:
        try:
            model = load_model_for_inference(path)
        except (NoModelError, ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        path, model = "untrained reference model (seed 0)", mnist_cnn(seed=0)
        model.compile()
    _, (x, _) = load_mnist(verbose=False)
    digits = [(x[i] / 255.0).tolist() for i in range(50)]
    pngs = [_png(x[i] / 255.0) for i in range(10)]

    explorer = Explorer(model, model_path=str(path))
    server = serve_in_thread(explorer)
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    session = {"X-Explorer-Session": "0" * 32}

    def post(route, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", route, body=data, headers={"Content-Type": ctype, **session})
        res = conn.getresponse()
        payload = res.read()
        if res.status != 200:
            raise RuntimeError(f"{route}: {res.status} {payload[:200]!r}")
        return len(payload)

    kinds = [
        ("predict", lambda i: post("/api/predict", {"pixels": digits[i % 50]})),
        ("predict + layers", lambda i: post("/api/predict", {"pixels": digits[i % 50], "layers": True})),
        ("prepare (280x280 PNG)", lambda i: post("/api/prepare", pngs[i % 10], "image/png")),
        ("backward", lambda i: post("/api/backward", {"pixels": digits[i % 50], "target": i % 10})),
        ("step preview", lambda i: post("/api/step", {"pixels": digits[i % 50], "label": i % 10})),
    ]
    print(f"model: {path}")
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, load average before: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'request':<24}{'reply':>10}{'median':>10}{'p90':>10}{'max':>10}   (ms, {args.repeats} requests each)")
    try:
        for name, call in kinds:
            repeats = args.repeats if name not in ("backward", "step preview") else max(5, args.repeats // 10)
            for i in range(5):
                size = call(i)
            times = []
            for i in range(repeats):
                t = time.perf_counter()
                call(i)
                times.append((time.perf_counter() - t) * 1000)
            print(f"{name:<24}{size / 1024:>8.0f}kB{statistics.median(times):>10.2f}"
                  f"{_percentile(times, 0.9):>10.2f}{max(times):>10.2f}")
    finally:
        conn.close()
        server.shutdown()
        server.server_close()
        explorer.close()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
