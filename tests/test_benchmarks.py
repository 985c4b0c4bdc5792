"""Tests for the NumPy path (convnet.numpy_path) and the benchmark harness (benchmarks/).

The NumPy kernels must give the numba kernels' results exactly (im2col,
max-pool) or to float32 rounding (col2im, which sums in another order), and
swapping them into the layers must neither change a model's results nor
leave anything patched. The harness is run in its quickest mode without
TensorFlow, and the JSON it writes is checked; one test (marked ``tf``)
checks the TensorFlow side of the kernels when TensorFlow is installed.
"""
import json

import numpy as np
import pytest

from convnet import kernels, layers, numpy_path
from convnet.numpy_path import use_numpy_kernels

# (N, H, W, C, kh, kw, sh, sw, pt, pl, OH, OW): the seed model's shapes, strides,
# overlapping windows, "same" padding, odd sizes
GEOMETRIES = [
    (4, 28, 28, 1, 4, 4, 1, 1, 0, 0, 25, 25),
    (3, 12, 12, 5, 4, 4, 1, 1, 0, 0, 9, 9),
    (3, 25, 25, 4, 2, 2, 2, 2, 0, 0, 12, 12),
    (2, 9, 9, 3, 2, 2, 2, 2, 0, 0, 4, 4),
    (3, 7, 6, 2, 3, 2, 2, 1, 1, 0, 4, 6),
    (2, 5, 5, 3, 3, 3, 1, 1, 1, 1, 5, 5),
    (2, 8, 7, 2, 3, 3, 2, 2, 1, 1, 4, 4),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_numpy_kernels_equal_numba_kernels(geometry):
    N, H, W, C, kh, kw, sh, sw, pt, pl, OH, OW = geometry
    rng = np.random.default_rng(sum(geometry))
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    window = (kh, kw, sh, sw, pt, pl, OH, OW)

    cols = numpy_path.im2col(x, *window)
    assert cols.dtype == np.float32 and cols.flags.c_contiguous
    np.testing.assert_array_equal(cols, kernels.im2col(x, *window))

    dcols = rng.standard_normal(cols.shape).astype(np.float32)
    dx = numpy_path.col2im(dcols, N, H, W, C, *window)
    assert dx.shape == (N, H, W, C) and dx.dtype == np.float32
    np.testing.assert_allclose(dx, kernels.col2im(dcols, N, H, W, C, *window), rtol=1e-5, atol=1e-5)

    out, argmax = numpy_path.maxpool_forward(x, *window)
    ref_out, ref_argmax = kernels.maxpool_forward(x, *window)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(argmax, ref_argmax)
    assert argmax.dtype == ref_argmax.dtype == np.int32

    dout = rng.standard_normal(out.shape).astype(np.float32)
    np.testing.assert_allclose(numpy_path.maxpool_backward(dout, argmax, H, W),
                               kernels.maxpool_backward(dout, ref_argmax, H, W), rtol=1e-6, atol=1e-6)


def test_col2im_is_the_adjoint_of_im2col():
    # <im2col(x), d> == <x, col2im(d)> for any x, d: the defining property of backprop through a copy
    rng = np.random.default_rng(1)
    N, H, W, C, *window = GEOMETRIES[4]
    x = rng.standard_normal((N, H, W, C))
    d = rng.standard_normal(numpy_path.im2col(x, *window).shape)
    lhs = np.sum(numpy_path.im2col(x, *window) * d)
    rhs = np.sum(x * numpy_path.col2im(d, N, H, W, C, *window))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_maxpool_ties_go_to_the_first_maximum():
    x = np.zeros((1, 2, 4, 1), dtype=np.float32)          # every window is a tie of zeros
    x[0, 1, 3, 0] = 5.0                                    # except the second, won at (1, 3)
    out, argmax = numpy_path.maxpool_forward(x, 2, 2, 2, 2, 0, 0, 1, 2)
    assert out[0, 0, :, 0].tolist() == [0.0, 5.0]
    assert argmax[0, 0, :, 0].tolist() == [0, 1 * 4 + 3]   # first max of window 1 is its top-left pixel
    dx = numpy_path.maxpool_backward(np.array([[[[2.0], [3.0]]]], dtype=np.float32), argmax, 2, 4)
    assert dx[0, :, :, 0].tolist() == [[2.0, 0, 0, 0], [0, 0, 0, 3.0]]


def test_overlapping_pool_windows_sum_their_gradients():
    x = np.array([[0, 0, 0], [0, 9, 0], [0, 0, 0]], dtype=np.float32).reshape(1, 3, 3, 1)
    out, argmax = numpy_path.maxpool_forward(x, 2, 2, 1, 1, 0, 0, 2, 2)   # all 4 windows hold the 9
    dx = numpy_path.maxpool_backward(np.ones((1, 2, 2, 1), np.float32), argmax, 3, 3)
    assert dx[0, 1, 1, 0] == 4.0 and dx.sum() == 4.0


def _small_model():
    from benchmarks.convnet_impl import seed_model
    return seed_model(seed=3)


def test_use_numpy_kernels_swaps_and_restores():
    originals = {name: getattr(kernels, name) for name in numpy_path.NUMPY_KERNELS}
    with use_numpy_kernels():
        for name, fn in numpy_path.NUMPY_KERNELS.items():
            assert getattr(kernels, name) is fn
    for name, fn in originals.items():
        assert getattr(kernels, name) is fn
    with pytest.raises(RuntimeError):
        with use_numpy_kernels():
            raise RuntimeError("boom")
    assert all(getattr(kernels, name) is fn for name, fn in originals.items())


def test_use_numpy_kernels_actually_routes_the_layers(monkeypatch):
    calls = []
    wrapped = {name: (lambda fn, name=name: (lambda *a: calls.append(name) or fn(*a)))(fn)
               for name, fn in numpy_path.NUMPY_KERNELS.items()}
    monkeypatch.setattr(numpy_path, "NUMPY_KERNELS", wrapped)
    model = _small_model()
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    with use_numpy_kernels():
        model.train_step(x, np.array([1, 2]))
    assert {"col2im", "maxpool_forward", "maxpool_backward"} <= set(calls)
    assert {"im2col", "im2col_into"} & set(calls)


def test_every_compiled_kernel_has_a_numpy_version():
    # the NumPy path must cover every kernel the layers may call: a new numba kernel
    # in convnet.kernels needs its NumPy twin in convnet.numpy_path (and a test here)
    assert set(numpy_path.compiled_kernels()) <= set(numpy_path.NUMPY_KERNELS)
    assert {"im2col", "col2im", "maxpool_forward", "maxpool_backward"} <= set(numpy_path.compiled_kernels())


def test_numpy_elementwise_kernels_equal_numba_kernels():
    rng = np.random.default_rng(7)
    z = rng.standard_normal((4, 5, 6)).astype(np.float32)
    d = rng.standard_normal(z.shape).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    z2 = z.reshape(-1, 6)
    np.testing.assert_array_equal(numpy_path.add_bias(z2.copy(), b), kernels.add_bias(z2.copy(), b))
    in_place = z2.copy()
    numpy_path.add_bias(in_place, b)
    np.testing.assert_array_equal(in_place, z2 + b)
    y = numpy_path.relu_forward(z)
    np.testing.assert_array_equal(y, kernels.relu_forward(z))
    np.testing.assert_array_equal(numpy_path.relu_backward(d, y), kernels.relu_backward(d, y))
    key, threshold = np.uint64(2 ** 64 - 3), np.uint64(2 ** 22)     # a key near the top: the sums wrap
    for got, want in zip(numpy_path.dropout_forward(z, key, threshold, 1 / 0.75),
                         kernels.dropout_forward(z, key, threshold, 1 / 0.75)):
        np.testing.assert_array_equal(got, want)
    f = np.float32
    states = [[a.copy() for a in (z, d, np.abs(d) * 0.1, np.abs(z) * 0.01)] for _ in range(2)]
    numpy_path.adam_update(*states[0], f(0.9), f(0.999), f(1e-3), f(1e-7))
    kernels.adam_update(*states[1], f(0.9), f(0.999), f(1e-3), f(1e-7))
    for got, want in zip(states[0], states[1]):                 # param, grad, m, v all updated in place
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not np.array_equal(states[0][0], z)


def test_use_numpy_kernels_refuses_an_uncovered_kernel(monkeypatch):
    from numba import njit

    monkeypatch.setattr(kernels, "fused_conv_relu", njit(lambda x: x), raising=False)
    with pytest.raises(NotImplementedError, match="fused_conv_relu"):
        with use_numpy_kernels():
            pass


def test_use_numpy_kernels_patches_names_imported_elsewhere(monkeypatch):
    monkeypatch.setattr(layers, "im2col", kernels.im2col, raising=False)   # as if `from .kernels import im2col`
    with use_numpy_kernels():
        assert layers.im2col is numpy_path.im2col
    assert layers.im2col is kernels.im2col


def test_model_results_are_the_same_on_the_numpy_path():
    rng = np.random.default_rng(5)
    x = rng.random((8, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    fast, slow = _small_model(), _small_model()
    p_fast = fast.predict(x)
    with use_numpy_kernels():
        p_slow = slow.predict(x)
    np.testing.assert_allclose(p_slow, p_fast, rtol=1e-5, atol=1e-6)
    fast.train_step(x, y)
    with use_numpy_kernels():
        slow.train_step(x, y)
    for a, b in zip(fast.get_weights(), slow.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ harness
def test_relative_error_and_compare():
    from benchmarks import checks

    a = np.array([1.0, 2.0, -4.0])
    assert checks.relative_error(a, a) == 0.0
    assert checks.relative_error(a, a + [0, 0, 4e-4]) == pytest.approx(1e-4)
    assert checks.relative_error(a, a[:2]) == float("inf")
    assert checks.relative_error(a, np.array([1.0, np.nan, -4.0])) == float("inf")
    assert checks.compare([a], [a * (1 + 1e-6)])["passed"]
    failed = checks.compare([a, a], [a, a * 1.01])
    assert not failed["passed"] and failed["max_rel_err"] == pytest.approx(0.01 / 1.01, rel=1e-6)
    assert not checks.compare([a], [a, a])["passed"]


def test_timing_summary_and_calibration():
    from benchmarks.timing import Timed, prepare_all, quantile, repeat_all

    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    counter = []
    columns = {"x": Timed(lambda: counter.append(1), scale=3.0)}
    prepare_all(columns, min_repeat_s=0.001)
    result = repeat_all(columns, repeats=4)["x"]
    assert result["repeats"] == 4 and len(result["times_s"]) == 4
    assert result["min_s"] <= result["p25_s"] <= result["median_s"] <= result["p75_s"] <= result["max_s"]
    assert result["first_call_s"] > 0 and result["scale"] == 3.0
    assert result["calls_per_repeat"] > 1                          # a fast call is repeated to fill a repeat
    assert len(counter) == 1 + 2 + 4 * result["calls_per_repeat"]   # first call, 2 warm-up calls, repeats

    long_ops, warm = [], []
    columns = {"epoch": Timed(lambda: long_ops.append(1), warmup=lambda: warm.append(1), number=1)}
    prepare_all(columns, min_repeat_s=10.0)
    assert repeat_all(columns, repeats=3)["epoch"]["calls_per_repeat"] == 1
    assert len(long_ops) == 3 and len(warm) == 3                   # warm-up never runs the long operation
    with pytest.raises(ValueError):
        repeat_all(columns, repeats=0)


def test_bad_arguments_are_refused(capsys):
    from benchmarks.cli import main

    for argv in (["--only", "conv,bogus"], ["--repeats", "0"], ["--steps", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "bogus" in capsys.readouterr().err


def test_quickest_run_without_tensorflow_writes_a_complete_json(tmp_path, capsys):
    from benchmarks.cli import main

    # one thread: on a shared machine, spinning BLAS/OpenMP threads can make a busy CI crawl
    code = main(["--quick", "--no-tf", "--data", "random", "--repeats", "2", "--steps", "2", "--threads", "1",
                 "--images", "50", "--out", str(tmp_path)], log=lambda msg: None)
    assert code == 0
    table = capsys.readouterr().out
    assert "conv1 forward" in table and "epoch (fit)" in table and "TensorFlow left out" in table
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert (tmp_path / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert report["all_checks_passed"] is True
    assert report["columns"][:2] == ["convnet", "numpy"] and "tensorflow" not in report["columns"]
    machine = report["machine"]
    for key in ("date", "cpu_model", "cores", "os", "versions", "numpy_blas", "threads", "env_present"):
        assert key in machine, key
    assert set(machine["env_present"]) == {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}
    assert machine["threads"]["numba"] == 1 and machine["threads"]["requested"] == 1
    assert all(pool["num_threads"] == 1 for pool in machine["threads"]["threadpools"])
    assert machine["numpy_blas"]["internal_api"]
    assert report["settings"]["data_source"] == "random"

    names = [row["name"] for row in report["rows"]]
    assert len(names) == 6 + 4 + 4 + 3
    assert {"conv2 backward-kernel", "pool2 backward", "dense2 backward", "train step", "epoch (fit)",
            "inference (predict)"} <= set(names)
    for row in report["rows"]:
        expected = {"convnet"} if row["group"] == "dense" else {"convnet", "numpy"}
        assert set(row["results"]) == expected, row["name"]
        for result in row["results"].values():
            assert result["median_s"] > 0 and result["first_call_s"] > 0
            assert len(result["times_s"]) == 2
        if row["group"] != "dense":
            check = row["checks"]["numpy"]
            assert check["passed"] and check["max_rel_err"] <= check["tol"] == 1e-4
            assert row["ratios"]["numpy/convnet"] > 0
    epoch = next(r for r in report["rows"] if r["group"] == "epoch")
    assert epoch["results"]["convnet"]["scale"] == 60000 / (2 * 32)
    assert "scaled" in epoch["note"]


def test_failed_agreement_check_is_reported_and_not_timed(tmp_path, monkeypatch, capsys):
    from benchmarks import cli, convnet_impl

    real = convnet_impl.Backend.make_pool_forward

    def wrong_on_numpy_path(self, x, size):
        fn = real(self, x, size)
        return (lambda: fn() * 1.01) if self.numpy_path else fn
    monkeypatch.setattr(convnet_impl.Backend, "make_pool_forward", wrong_on_numpy_path)
    code = cli.main(["--quick", "--no-tf", "--no-plot", "--data", "random", "--repeats", "1", "--only", "pool",
                     "--threads", "1", "--out", str(tmp_path)], log=lambda msg: None)
    assert code == 1
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["all_checks_passed"] is False
    row = next(r for r in report["rows"] if r["name"] == "pool1 forward")
    assert row["checks"]["numpy"]["passed"] is False
    assert "numpy" not in row["results"] and "numpy" in row["skipped"]
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.tf
def test_tensorflow_kernels_agree_with_convnet():
    pytest.importorskip("tensorflow")
    from benchmarks import cases, convnet_impl, tf_impl
    from benchmarks.machine import ThreadSettings

    tf_impl.import_tensorflow(ThreadSettings(1))
    backends = {"convnet": convnet_impl.Backend(), "tensorflow": tf_impl.Backend()}
    rng = np.random.default_rng(0)
    rows = cases.conv_cases(backends, 1, rng) + cases.pool_cases(backends, 1, rng) + \
        cases.dense_cases(backends, 1, rng)
    for case in rows:
        assert case.check(), (case.name, case.checks)
        assert case.checks["tensorflow"]["max_rel_err"] < 1e-5
