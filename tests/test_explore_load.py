"""The explorer server under a burst of requests (experiments/explore/server.py), in a process of its own.

The server is started as ``python -m experiments.explore`` on 127.0.0.1 and
sent, all at once, 200 connections each carrying one prediction (more than
its threads: the rest must wait in the listen queue, not be reset), then 300
predictions 32 at a time with 16 uploads of a 24-megapixel image among them
(each about 180 MB while it is decoded and prepared). Every request must be
answered, 200 or 503 with Retry-After; the server's peak memory (VmHWM) must
stay under :data:`PEAK_RSS_BOUND`; nothing may be printed to its stderr.
Before the caps, 16 such uploads took the server from 201 MB to 2.7 GB.
"""
import concurrent.futures
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convnet.architectures import mnist_cnn
from convnet.saving import save_model

PEAK_RSS_BOUND = 1000 * 2 ** 20      # bytes; see docs/bad-input.md for the measured peak
BURST, REQUESTS, CONCURRENCY, UPLOADS = 200, 300, 32, 16
ROOT = Path(__file__).resolve().parent.parent


def _vm_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read the server's peak memory (Linux)")
    folder = tmp_path_factory.mktemp("load")
    model = mnist_cnn(seed=0)
    model.compile()
    path = save_model(model, folder / "model.npz")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.explore", "--model", str(path), "--no-browser",
                             "--port", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    port = None
    while port is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"Serving on http://127\.0\.0\.1:(\d+)/", line)
        port = int(m.group(1)) if m else None
    if port is None:
        proc.kill()
        pytest.fail(f"the server did not start: {proc.stderr.read()[-2000:]}")
    yield proc, port
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _upload_png():
    """A 8192x2929 greyscale PNG of a thick stroke: about 100 kB on the wire, 24 megapixels to decode."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (8192, 2929), 255)
    ImageDraw.Draw(img).line([(3800, 300), (4300, 2600)], fill=0, width=260)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _send(port, method, path, body, ctype):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype})
        res = conn.getresponse()
        data = res.read()
        return res.status, res.getheader("Retry-After"), data
    finally:
        conn.close()


def test_a_burst_is_answered_in_bounded_memory_without_a_traceback(server):
    proc, port = server
    idle = _vm_hwm(proc.pid)
    started = time.monotonic()
    pixels = json.dumps({"pixels": [[0.0] * 28] * 28}).encode()
    predict = (f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(pixels)}\r\nConnection: close\r\n\r\n").encode() + pixels
    # 1. 200 connections opened at once, more than the server's threads: all queued, all answered
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(BURST)]
    try:
        for s in socks:
            s.sendall(predict)
        statuses = []
        for s in socks:
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
            statuses.append(reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/1.1 ") else reply[:40])
    finally:
        for s in socks:
            s.close()
    assert statuses == [b"200"] * BURST
    # 2. 300 predictions 32 at a time, with 16 uploads of 24 megapixels among them
    png = _upload_png()
    jobs = [("/api/prepare", png, "image/png")] * UPLOADS + [("/api/predict", pixels, "application/json")] * REQUESTS
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        uploads = [pool.submit(_send, port, "POST", *job) for job in jobs[:UPLOADS]]
        others = [pool.submit(_send, port, "POST", *job) for job in jobs[UPLOADS:]]
        upload_results = [f.result() for f in uploads]
        results = [f.result() for f in others]
    assert all(status == 200 for status, _, _ in results), [r[:2] for r in results if r[0] != 200][:3]
    for status, retry_after, data in upload_results:
        assert status == 200 and len(json.loads(data)["pixels"]) == 28 or \
            status == 503 and retry_after is not None, (status, data[:200])
    assert sum(status == 200 for status, _, _ in upload_results) >= 2
    peak = _vm_hwm(proc.pid)
    elapsed = time.monotonic() - started
    answered = BURST + len(results) + len(upload_results)
    print(f"\nload test: {answered} requests answered ({BURST} at once, then {REQUESTS} predictions and "
          f"{UPLOADS} uploads {CONCURRENCY} at a time; uploads 200: "
          f"{sum(s == 200 for s, _, _ in upload_results)}, 503: {sum(s == 503 for s, _, _ in upload_results)}), "
          f"server peak RSS {peak / 2 ** 20:.0f} MiB (at rest {idle / 2 ** 20:.0f} MiB), {elapsed:.1f} s")
    assert peak < PEAK_RSS_BOUND, f"the server peaked at {peak / 2 ** 20:.0f} MiB"
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err[-3000:]
