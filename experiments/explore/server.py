"""The explorer's HTTP side: the standard library's ``ThreadingHTTPServer``, a JSON API and the page.

Every request is checked before anything is computed: one Host header that
names this server (a page on another site cannot reach it through DNS
tricks), a same-origin ``Origin`` when one is sent, a body with a
Content-Length of at most :data:`MAX_BODY` bytes (413 beyond, before reading
it), and for a POST a content type a cross-site form or "simple" request
cannot send (``application/json``; an image type or
``application/octet-stream`` for an upload), so a browser always asks first.
Each field is validated with a message naming what was wrong, every number
bounded before it is converted. Errors are answered as ``{"error": "..."}``
with a 4xx status; an unexpected exception in one request gives a 500 for
that request only.

Under load, memory and threads are bounded: at most :data:`MAX_DECODES`
uploads are decoded at once (the others wait up to :data:`DECODE_WAIT`
seconds, then get 503 with ``Retry-After``), at most :data:`MAX_THREADS`
connections are served at once while the rest wait in a listen queue of
:data:`LISTEN_BACKLOG`, and a request's line, headers and body must arrive
within :data:`REQUEST_DEADLINE` seconds in all, however slowly they drip.

Static files are served from a table built at start-up from the package's
``static/`` directory: a URL can only name one of those files, never a path.
The model is chosen when the server starts; no request can load another.
"""
import io
import json
import math
import mimetypes
import os
import re
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from . import core
from .core import ExploreError

#: largest request body accepted (bytes); an upload of a phone photo fits, anything bigger gets 413
MAX_BODY = 2 * 1024 * 1024
#: largest uploaded image accepted, in pixels per side and in total (checked before decoding)
MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS = 8192, 24_000_000
#: a connection that sends nothing for this long is closed (a slow client cannot hold a thread forever)
SOCKET_TIMEOUT = 30
#: a request's line, headers and body must all arrive within this many seconds of its first wait
REQUEST_DEADLINE = 30
#: connections served at once; more wait in the listen queue (not reset) until a thread is free
MAX_THREADS = 32
LISTEN_BACKLOG = 1024
#: uploads decoded at once (a 24-megapixel upload takes about 180 MB while it is prepared), and how long
#: another upload waits for its turn before it is answered 503 with Retry-After
MAX_DECODES = 2
DECODE_WAIT = 5.0
RETRY_AFTER = 2
#: JSON integers with more digits than this are not converted (Python's int() of 10^4300 and more
#: raises; float() of 10^400 overflows): every field's range is far smaller
MAX_DIGITS = 40
#: what /api/prepare accepts as its Content-Type: any image type or raw bytes, never a "simple" type
#: (text/plain, form encodings) that a page on another site may send without asking first
UPLOAD_TYPES = ("image/", "application/octet-stream")
#: an oversized body up to this size is read and dropped before the 413 (see Handler._body)
DRAIN_LIMIT = 16 * MAX_BODY
STATIC_DIR = Path(__file__).resolve().parent / "static"
SESSION_HEADER = "X-Explorer-Session"
_SESSION_RE = re.compile(r"^[0-9a-f]{32}$")


def static_files(directory=STATIC_DIR):
    """``{url path: (bytes, content type)}`` of the page's files, read once."""
    table = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype in ("application/javascript", "text/javascript"):
                ctype += "; charset=utf-8"
            table["/static/" + path.name] = (path.read_bytes(), ctype)
    table["/"] = table["/static/index.html"]
    return table


# ------------------------------------------------------------------ validation
def _field(body, name, default=None, required=False):
    if name not in body:
        if required:
            raise ExploreError(f"missing field {name!r}")
        return default
    return body[name]


class HugeNumber:
    """A JSON integer of more than :data:`MAX_DIGITS` digits, kept as text (see :func:`parse_json`)."""

    def __init__(self, text):
        self.digits = len(text.lstrip("-"))

    def __str__(self):
        return f"a number of {self.digits:,} digits"


def _show(value):
    """A short rendering of a request value for an error message."""
    if isinstance(value, HugeNumber):
        return str(value)
    try:
        return json.dumps(value)[:40]
    except (TypeError, ValueError):
        return type(value).__name__


def integer(value, name, lo, hi):
    """``value`` as an int in ``[lo, hi]`` (JSON numbers that are whole; no booleans, no strings)."""
    if isinstance(value, HugeNumber):
        raise ExploreError(f"{name} must be in {lo}..{hi}, got {value}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not value.is_integer()):
        raise ExploreError(f"{name} must be a whole number in {lo}..{hi}, got {_show(value)}")
    value = int(value)
    if not lo <= value <= hi:
        raise ExploreError(f"{name} must be in {lo}..{hi}, got {value}")
    return value


def number(value, name, lo, hi):
    if isinstance(value, HugeNumber):
        raise ExploreError(f"{name} must be in {lo}..{hi}, got {value}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExploreError(f"{name} must be a number in {lo}..{hi}, got {_show(value)}")
    if not lo <= value <= hi:
        raise ExploreError(f"{name} must be in {lo}..{hi}, got {value}")
    return float(value)


def pixels(value):
    """A 28x28 image from JSON: 28 rows of 28 finite numbers in [0, 1] (ink bright, as in MNIST)."""
    H, W = core.INPUT_SHAPE[:2]
    expected = f"expected 'pixels': {H} rows of {W} numbers in 0..1 (ink bright)"
    if not isinstance(value, list):
        raise ExploreError(f"pixels must be a list of rows; {expected}")
    if len(value) != H:
        raise ExploreError(f"pixels has {len(value)} rows; {expected}")
    for r, row in enumerate(value):
        if not isinstance(row, list):
            raise ExploreError(f"pixels[{r}] is not a list; {expected}")
        if len(row) != W:
            raise ExploreError(f"pixels[{r}] has {len(row)} numbers; {expected}")
        for c, v in enumerate(row):
            if isinstance(v, HugeNumber):
                raise ExploreError(f"pixels[{r}][{c}] is {v}, outside 0..1; {expected}")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ExploreError(f"pixels[{r}][{c}] is {_show(v)}, not a number; {expected}")
    a = np.array(value, dtype=np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ExploreError(f"pixels[{r}][{c}] is {a[r, c]}; {expected}")
    out = (a < 0) | (a > 1)
    if out.any():
        r, c = np.argwhere(out)[0]
        raise ExploreError(f"pixels[{r}][{c}] is {a[r, c]}, outside 0..1; {expected}")
    return a.astype(np.float32)


def _reject_constant(name):
    raise ExploreError(f"the JSON body contains {name}, which is not a number JSON allows")


def _bounded_int(text):
    return int(text) if len(text) <= MAX_DIGITS else HugeNumber(text)


def parse_json(raw):
    """The JSON object in ``raw``; integers of more than :data:`MAX_DIGITS` digits become :class:`HugeNumber`
    (each field's validator names it), NaN and Infinity are refused."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, parse_int=_bounded_int)
    except UnicodeDecodeError:
        raise ExploreError("the body is not UTF-8 text; expected a JSON object") from None
    except RecursionError:
        raise ExploreError("the JSON body is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise ExploreError(f"the body is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(body, dict):
        raise ExploreError(f"the body must be a JSON object, got {type(body).__name__}")
    return body


def prepare_image(raw):
    """An uploaded image file (bytes) made MNIST-style by :func:`convnet.imageprep.mnist_style`.

    The header is read first and the size checked against this server's
    tighter limits before any pixel is decoded; then the bytes go through
    imageprep's own file loading (its pixel limits, shrinking while decoding,
    its error messages), from a temporary file that is removed afterwards.
    """
    import tempfile
    import warnings

    from PIL import Image, UnidentifiedImageError

    from convnet.imageprep import ImagePrepError, mnist_style

    if not raw:
        raise ExploreError("the body is empty; expected an image file (PNG, JPEG, ...)")
    try:
        with warnings.catch_warnings():            # the size is checked just below, against a lower limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as im:     # the header only
                w, h = im.size
    except UnidentifiedImageError:
        raise ExploreError("not an image file that Pillow can read (expected PNG, JPEG, BMP, GIF, ...)",
                           status=415) from None
    except Exception as e:                          # a damaged header
        raise ExploreError(f"cannot read the image ({e})", status=422) from None
    if w < 1 or h < 1 or max(w, h) > MAX_IMAGE_SIDE or w * h > MAX_IMAGE_PIXELS:
        raise ExploreError(f"the image is {w}x{h} pixels; at most {MAX_IMAGE_SIDE} per side and "
                           f"{MAX_IMAGE_PIXELS:,} in all", status=413)
    with tempfile.TemporaryDirectory(prefix="convnet-explore-") as folder:
        path = os.path.join(folder, "upload")
        with open(path, "wb") as f:
            f.write(raw)
        try:
            return mnist_style(path)
        except ImagePrepError as e:
            raise ExploreError(e.reason, status=415 if e.reason.startswith("not an image") else 422) from None


# ------------------------------------------------------------------ the handler
class _DeadlineReader(io.RawIOBase):
    """The connection's reading side, each read given only what is left of the request's deadline.

    A socket timeout alone bounds the wait for each byte, so a client that
    drips one byte every 20 s would hold a thread forever; here the timeout of
    every read shrinks to what is left of :data:`REQUEST_DEADLINE`.
    """

    def __init__(self, sock, handler):
        super().__init__()
        self.sock, self.handler = sock, handler

    def readable(self):
        return True

    def readinto(self, buffer):
        left = self.handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the request did not arrive within {REQUEST_DEADLINE} s")
        self.sock.settimeout(min(left, SOCKET_TIMEOUT))
        try:
            return self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(SOCKET_TIMEOUT)     # the reply is written under the plain timeout


class Busy(ExploreError):
    """503 with ``Retry-After``: the server is at one of its limits; the request may be sent again."""

    def __init__(self, message):
        super().__init__(message, status=503)


class Handler(BaseHTTPRequestHandler):
    server_version = "convnet-explore"
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT
    # the headers and the body leave in two writes: with Nagle's algorithm a small body waits for
    # the client's delayed ACK of the headers (40 ms on Linux), longer than the work itself
    disable_nagle_algorithm = True

    # quiet by default: one line per request would drown the terminal while drawing
    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)

    @property
    def explorer(self):
        return self.server.explorer

    def setup(self):
        super().setup()
        self.deadline = time.monotonic() + REQUEST_DEADLINE
        self.rfile.close()               # the buffered file over the socket: replaced by one with a deadline
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self), 65536)

    def handle_one_request(self):
        self.deadline = time.monotonic() + REQUEST_DEADLINE
        super().handle_one_request()

    # ---------------------------------------------------------------- replies
    def _send(self, status, payload, ctype="application/json", extra=()):
        data = payload if isinstance(payload, bytes) else json.dumps(payload, allow_nan=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in extra:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status, message):
        extra = (("Retry-After", str(RETRY_AFTER)),) if status == 503 else ()
        self._send(status, {"error": message}, extra=extra)

    def _guarded(self, fn):
        self.body_read = (self.headers.get("Content-Length", "0").strip() == "0"
                          and "Transfer-Encoding" not in self.headers)
        if self.command in ("GET", "HEAD") and not self.body_read:
            # a GET's body is never read: what it holds must not be served as a second request
            self.close_connection = True
        try:
            try:
                fn()
            except ExploreError as e:
                if not self.body_read:         # its unread body would be taken for the next request
                    self.close_connection = True
                self._error(e.status, str(e))
        except OSError:                       # the client went away (reset, broken pipe, timeout): nothing to say
            self.close_connection = True
        except Exception as e:                # one request's bug never stops the server
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            try:
                self._error(500, f"internal error: {type(e).__name__}: {e}")
            except OSError:
                pass

    def _check_headers(self):
        """One Host, naming this server; at most one Content-Length; a same-origin Origin, if any."""
        for name in ("Host", "Content-Length", "Origin"):
            if len(self.headers.get_all(name) or ()) > 1:
                self.close_connection = True
                raise ExploreError(f"more than one {name} header")
        self._check_host()
        origin = self.headers.get("Origin")
        if origin is not None:
            host = (self.headers.get("Host") or "").lower()
            if origin.lower() != f"http://{host}":
                raise ExploreError(f"a request from {origin[:80]!r} (another site) is refused; the explorer "
                                   f"answers only its own page", status=403)

    def _check_host(self):
        host = (self.headers.get("Host") or "").lower()
        if self.server.allowed_hosts is not None and host not in self.server.allowed_hosts:
            raise ExploreError(f"Host {host!r} is not this server", status=421)

    def _session(self):
        sid = self.headers.get(SESSION_HEADER)
        if sid is None:
            return None
        if not _SESSION_RE.match(sid):
            raise ExploreError(f"{SESSION_HEADER} must be 32 lowercase hex digits")
        return self.explorer.session(sid)

    def _body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise ExploreError("chunked bodies are not accepted; send a Content-Length", status=411)
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise ExploreError("a Content-Length header is required", status=411)
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ExploreError(f"bad Content-Length {length!r}") from None
        self.body_read = True
        if n > MAX_BODY:
            # a client that is still sending would miss the reply if the socket closed under it:
            # a moderately large body is read and dropped first, a huge one is not waited for
            if n <= DRAIN_LIMIT:
                self._drain(n)
            self.close_connection = True
            raise ExploreError(f"request body of {n:,} bytes is larger than the {MAX_BODY:,} allowed", status=413)
        return self.rfile.read(n)

    def _drain(self, n):
        while n > 0:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                break
            n -= len(chunk)

    def _json(self):
        raw = self._body()
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ExploreError(f"Content-Type must be application/json, got {ctype or 'none'}", status=415)
        return parse_json(raw)

    # ---------------------------------------------------------------- GET
    def do_GET(self):
        self._guarded(self._get)

    def do_HEAD(self):
        self._guarded(self._get)

    def _get(self):
        self._check_headers()
        url = urlsplit(self.path)
        if url.path in self.server.static:
            data, ctype = self.server.static[url.path]
            self._send(200, data, ctype)
            return
        if url.path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
            return
        try:
            query = parse_qs(url.query, max_num_fields=10)
        except ValueError:
            raise ExploreError("too many query parameters (at most 10)") from None
        q = {k: v[-1] for k, v in query.items()}
        route = {"/api/info": self._info, "/api/train/status": self._train_status,
                 "/api/mnist/list": self._mnist_list, "/api/mnist/digit": self._mnist_digit,
                 "/api/mnist/first": self._mnist_first, "/api/source": self._source,
                 "/api/weights": self._weights}.get(url.path)
        if route is None:
            raise ExploreError(f"no such page or API: {url.path[:80]}", status=404)
        self._send(200, route(q))

    def _query_int(self, q, name, default, lo, hi):
        if name not in q:
            return default
        try:
            if len(q[name]) > MAX_DIGITS:          # never converted: int() of a long string is slow, then refused
                raise ValueError
            value = int(q[name])
        except ValueError:
            raise ExploreError(f"{name} must be a whole number in {lo}..{hi}, got {q[name][:20]!r}") from None
        return integer(value, name, lo, hi)

    def _info(self, q):
        e = self.explorer
        session = self._session()
        import convnet

        return {"model_path": e.model_path, "layers": e.layers, "params": int(e.base.count_params()),
                "backend": convnet.get_backend(),
                "session": None if session is None else {
                    "steps_applied": session.steps_applied, "learning_rate": session.learning_rate,
                    "learning_rate_source": session.learning_rate_source,
                    "optimizer": type(session.model.optimizer).__name__},
                "step_learning_rate_limits": list(core.STEP_LR),
                "max_body": MAX_BODY, "train_limits": core.TRAIN_LIMITS, "chain_code": e.chain_code,
                "source_files": {k: v["path"] for k, v in e.sources.items()}}

    def _train_status(self, q):
        return self.explorer.training_status(self._session())

    def _mnist_list(self, q):
        kind = q.get("kind", "all")
        if kind not in ("all", "mistakes"):
            raise ExploreError(f"kind must be 'all' or 'mistakes', got {kind[:20]!r}")
        offset = self._query_int(q, "offset", 0, 0, 10000)
        limit = self._query_int(q, "limit", 60, 1, 200)
        return self.explorer.mnist_list(kind, offset, limit)

    def _source(self, q):
        # read-only, and only the textbook files read at start-up: a name is looked up, never opened
        name = q.get("file", "")
        files = self.explorer.sources
        if name not in files:
            raise ExploreError(f"file must be one of {', '.join(sorted(files))}, got {name[:40]!r}", status=404)
        return {"file": name, **files[name]}

    def _weights(self, q):
        return self.explorer.weights(self._session())

    def _mnist_first(self, q):
        return self.explorer.first_digit(self._query_int(q, "index", 0, 0, 9999))

    def _mnist_digit(self, q):
        if "index" not in q:
            raise ExploreError("missing query parameter index (0..9999)")
        return self.explorer.mnist_digit(self._query_int(q, "index", 0, 0, 9999))

    # ---------------------------------------------------------------- POST
    def do_POST(self):
        self._guarded(self._post)

    def _post(self):
        self._check_headers()
        path = urlsplit(self.path).path
        if path in ("/api/prepare", "/api/prepare/drawing"):
            self._prepare(drawing=path.endswith("/drawing"))
            return
        routes = {"/api/predict": self._predict, "/api/unit": self._unit, "/api/backward": self._backward,
                  "/api/gradcheck": self._gradcheck, "/api/step": self._step, "/api/step/apply": self._apply,
                  "/api/reset": self._reset, "/api/train/start": self._train_start,
                  "/api/train/stop": self._train_stop, "/api/train/use": self._train_use}
        route = routes.get(path)
        if route is None:
            self._body()      # read it, so the connection can be reused
            raise ExploreError(f"no such API: {path[:80]}", status=404)
        body = self._json()
        session = self._session()
        start = time.perf_counter()
        result = route(body, session)
        result["server_ms"] = round((time.perf_counter() - start) * 1000, 3)
        result["new_session"] = bool(session is not None and session.new)
        self._send(200, result)

    def _prepare(self, drawing):
        """An uploaded image made MNIST-like; for the page's own canvas (``drawing``) a canvas without a
        digit yet is a state, answered with no pixels, not an error."""
        raw = self._body()
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not ctype.startswith(UPLOAD_TYPES) or ctype == "image/":
            raise ExploreError(f"Content-Type must be an image type (image/png, image/jpeg, ...) or "
                               f"application/octet-stream, got {ctype[:40] or 'none'}", status=415)
        session = self._session()
        new = bool(session is not None and session.new)
        if not self.server.decodes.acquire(timeout=DECODE_WAIT):
            raise Busy(f"{MAX_DECODES} uploads are being prepared; try again in a moment")
        try:
            image = prepare_image(raw)
        except ExploreError as e:
            if not (drawing and e.status == 422):
                raise
            self._send(200, {"pixels": None, "message": str(e), "new_session": new})
            return
        finally:
            self.server.decodes.release()
        self._send(200, {"pixels": image.astype(np.float64).round(6).tolist(), "new_session": new})

    def _predict(self, body, session):
        layers = _field(body, "layers", False)
        if not isinstance(layers, bool):
            raise ExploreError("layers must be true or false")
        return self.explorer.predict(session, pixels(_field(body, "pixels", required=True)), layers=layers)

    def _unit(self, body, session):
        image = pixels(_field(body, "pixels", required=True))
        n = len(self.explorer.base.layers)
        layer = integer(_field(body, "layer", required=True), "layer", 0, n - 1)
        position = _field(body, "position", required=True)
        if not isinstance(position, list) or not 1 <= len(position) <= 3:
            raise ExploreError("position must be a list of 1 to 3 indices (row, column, channel or unit)")
        position = [integer(p, "position entry", 0, 1 << 20) for p in position]
        return self.explorer.unit(session, image, layer, position)

    def _target(self, body, name="target"):
        return integer(_field(body, name, required=True), name, 0, core.CLASSES - 1)

    def _backward(self, body, session):
        return self.explorer.backward(session, pixels(_field(body, "pixels", required=True)), self._target(body))

    def _gradcheck(self, body, session):
        per = integer(_field(body, "samples", core.GRADCHECK_DEFAULT), "samples", 1, core.GRADCHECK_MAX)
        seed = integer(_field(body, "seed", 0), "seed", 0, 2 ** 31 - 1)
        return self.explorer.gradcheck(session, pixels(_field(body, "pixels", required=True)), self._target(body),
                                       per_tensor=per, seed=seed)

    def _step_rate(self, body):
        rate = _field(body, "learning_rate")
        return None if rate is None else number(rate, "learning_rate", *core.STEP_LR)

    def _step(self, body, session):
        return self.explorer.preview_step(session, pixels(_field(body, "pixels", required=True)),
                                          self._target(body, "label"), learning_rate=self._step_rate(body))

    def _apply(self, body, session):
        return self.explorer.apply_step(session, pixels(_field(body, "pixels", required=True)),
                                        self._target(body, "label"), learning_rate=self._step_rate(body))

    def _reset(self, body, session):
        return self.explorer.reset(session)

    def _train_start(self, body, session):
        lim = core.TRAIN_LIMITS
        args = {k: integer(_field(body, k, d), k, *lim[k]) for k, d in
                (("images", 5000), ("epochs", 1), ("batch_size", 32))}
        args["learning_rate"] = number(_field(body, "learning_rate", 1e-3), "learning_rate", *core.TRAIN_LR)
        args["seed"] = integer(_field(body, "seed", 0), "seed", 0, 2 ** 31 - 1)
        return self.explorer.start_training(session, **args)

    def _train_stop(self, body, session):
        return self.explorer.stop_training(session)

    def _train_use(self, body, session):
        return self.explorer.use_trained(session)

    # anything else: 405 with a JSON error
    def _not_allowed(self):
        self._guarded(lambda: (_ for _ in ()).throw(ExploreError(f"method {self.command} not allowed", 405)))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed


class ExplorerServer(ThreadingHTTPServer):
    """A thread per connection (the page polls training while it draws), at most :data:`MAX_THREADS` at
    once (the accept loop waits for a free one; meanwhile connections queue); threads die with the server."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, explorer, host="127.0.0.1", port=0, verbose=False):
        self.explorer = explorer
        self.threads = threading.BoundedSemaphore(MAX_THREADS)
        self.decodes = threading.BoundedSemaphore(MAX_DECODES)
        self.static = static_files()
        self.verbose = verbose
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)
        port = self.server_address[1]
        if host in ("", "0.0.0.0", "::"):
            self.allowed_hosts = None         # every interface, by the user's choice: any name may reach it
        else:
            names = {host.lower(), "localhost", "127.0.0.1", "[::1]"}
            if ":" in host and not host.startswith("["):
                names.add(f"[{host.lower()}]")
            self.allowed_hosts = {f"{n}:{port}" for n in names} | (names if port == 80 else set())

    def process_request(self, request, client_address):
        self.threads.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.threads.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.threads.release()

    def handle_error(self, request, client_address):
        """A client that went away is not worth a traceback; anything else is still printed."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    @property
    def url(self):
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


def serve_in_thread(explorer, host="127.0.0.1", port=0):
    """Start a server on a background thread (tests, benchmarks); returns it (``shutdown()`` to stop)."""
    server = ExplorerServer(explorer, host, port)
    threading.Thread(target=server.serve_forever, name="explore-server", daemon=True).start()
    return server
