"""convnet.engine.threads: the thread-count setting, work splitting, and that splitting never changes a result.

Splitting work between threads must be invisible in the numbers: every
kernel computes each image with the same loop whatever the split, and a row
block of a matrix product is the same product on fewer rows. So a training
step with 2 threads must give *bit-identical* weights to one with 1 thread,
and every split kernel call must equal the serial call exactly.
"""
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from convnet.engine import kernels, threads
from convnet.windows import Window, col2im, im2col
from tests.conftest import seed_model


@pytest.fixture
def num_threads():
    """Set convnet's thread count inside a test; the previous value comes back afterwards."""
    before = threads.get_num_threads()
    yield threads.set_num_threads
    threads.set_num_threads(before)


@pytest.fixture
def always_split(monkeypatch):
    """Split even small jobs, so that the tests' small arrays really go through the helper threads
    (and never fall back to one thread, however busy the machine running the tests is)."""
    monkeypatch.setattr(threads, "MIN_SPLIT_ELEMENTS", 0)
    monkeypatch.setattr(threads, "MIN_SPLIT_FLOPS", 0)
    monkeypatch.setattr(threads, "LATE_SPLITS", 10 ** 9)


# ----------------------------------------------------------------- the setting
def test_set_and_get_num_threads(num_threads):
    num_threads(3)
    assert threads.get_num_threads() == 3
    num_threads(1)
    assert threads.get_num_threads() == 1
    num_threads(None)
    assert threads.get_num_threads() is None


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_set_num_threads_rejects_bad_values(num_threads, bad):
    with pytest.raises(ValueError, match="positive int or None"):
        num_threads(bad)


@pytest.mark.parametrize("text, expected", [("1", 1), (" 4 ", 4), ("none", None), ("None", None), ("", None)])
def test_environment_variable_is_parsed(monkeypatch, text, expected):
    monkeypatch.setenv("CONVNET_NUM_THREADS", text)
    assert threads._from_environment() == expected


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_environment_variable_errors_name_the_variable_and_the_expectation(monkeypatch, text):
    monkeypatch.setenv("CONVNET_NUM_THREADS", text)
    with pytest.raises(ValueError, match=r"CONVNET_NUM_THREADS=.*expected a positive integer or 'none'"):
        threads._from_environment()


def test_default_is_at_most_two_threads(monkeypatch):
    monkeypatch.delenv("CONVNET_NUM_THREADS", raising=False)
    assert threads._from_environment() in (1, 2)


# -------------------------------------------------------------------- matmul
@pytest.mark.parametrize("M, K, F", [(5, 7, 3), (200, 64, 32), (2593, 512, 32), (512, 2592, 32)])
def test_matmul_equals_the_plain_product(num_threads, M, K, F):
    rng = np.random.default_rng(M)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, F)).astype(np.float32)
    num_threads(2)
    with threads.limited():
        split = threads.matmul(a, b)
    np.testing.assert_allclose(split, a @ b, rtol=1e-5, atol=1e-4)
    with threads.limited():                       # the same split twice: exactly the same numbers
        np.testing.assert_array_equal(threads.matmul(a, b), split)


def test_matmul_split_rows_equal_the_serial_product_bit_for_bit(num_threads, always_split):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1000, 300)).astype(np.float32)
    b = rng.standard_normal((300, 32)).astype(np.float32)
    num_threads(1)
    with threads.limited():
        serial = threads.matmul(a, b)
    num_threads(2)
    with threads.limited():
        split = threads.matmul(a, b)
    np.testing.assert_array_equal(split, serial)


def test_matmul_transposed_views_are_split_correctly(num_threads, always_split):
    rng = np.random.default_rng(1)
    cols = rng.standard_normal((2000, 256)).astype(np.float32)
    dz = rng.standard_normal((2000, 32)).astype(np.float32)
    num_threads(2)
    with threads.limited():
        dw = threads.matmul(cols.T, dz)               # (256, 32): the conv kernel gradient's shape
    np.testing.assert_allclose(dw, cols.T @ dz, rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------- over_images
def _kernel_calls(rng):
    """(kernel, n, args-with-outputs, outputs) for every kernel the layers split over images."""
    N, H, W, C, F = 5, 9, 9, 3, 4
    kh = kw = 3
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    OH = OW = 7
    window = Window(kh, kw, 1, 1, 0, 0, OH, OW)
    cols = np.full((N * OH * OW, kh * kw * C), np.nan, np.float32)
    dcols = rng.standard_normal(cols.shape).astype(np.float32)
    dx = np.full(x.shape, np.nan, np.float32)
    P = 4
    pool_out, argmax = np.full((N, P, P, C), np.nan, np.float32), np.full((N, P, P, C), -7, np.int32)
    pool_geometry = Window(2, 2, 2, 2, 0, 0, P, P)
    dpool = rng.standard_normal((N, P, P, C)).astype(np.float32)
    true_argmax = np.empty((N, P, P, C), np.int32)
    kernels.maxpool_forward(x, pool_geometry, np.empty((N, P, P, C), np.float32), true_argmax, 0, N)
    dx_pool = np.full(x.shape, np.nan, np.float32)
    dx_fused, dz_fused = np.full(x.shape, np.nan, np.float32), np.full(x.shape, np.nan, np.float32)
    z = rng.standard_normal((N * 6, F)).astype(np.float32)
    z_fused, y_fused = z.copy(), np.full(z.shape, np.nan, np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    y = np.full(x.shape, np.nan, np.float32)
    dz = np.full(x.shape, np.nan, np.float32)
    relu_y = np.maximum(x, 0)
    drop_y, mask = np.full(x.shape, np.nan, np.float32), np.full(x.shape, np.nan, np.float32)
    param, grad = rng.standard_normal((7, 11)).astype(np.float32), rng.standard_normal((7, 11)).astype(np.float32)
    m, v = 0.1 * grad, 0.01 * grad ** 2
    adam_constants = tuple(np.float32(c) for c in (0.9, 0.999, 1e-3, 1e-7))
    return [
        ("im2col_into", N, (x, window, cols), (cols,)),
        ("col2im", N, (dcols, window, dx), (dx,)),
        ("maxpool_forward", N, (x, pool_geometry, pool_out, argmax), (pool_out, argmax)),
        ("maxpool_backward", N, (dpool, true_argmax, dx_pool), (dx_pool,)),
        ("maxpool_relu_backward", N, (dpool, true_argmax, relu_y, dx_fused, dz_fused), (dx_fused, dz_fused)),
        ("add_bias", len(z), (z, b), (z,)),
        ("add_bias_relu", len(z_fused), (z_fused, b, y_fused), (z_fused, y_fused)),
        ("relu_forward", N, (x, y), (y,)),
        ("relu_backward", N, (x, relu_y, dz), (dz,)),
        ("dropout_forward", N, (x, np.uint64(2 ** 63 + 12345), np.uint64(5033165), 1 / 0.7, drop_y, mask),
         (drop_y, mask)),
        ("adam_update", param.size, (param, grad, m, v, *adam_constants), (param, m, v)),
    ]


def test_over_images_gives_exactly_the_serial_result(num_threads, always_split):
    results = {}
    for threads_used in (1, 2):
        num_threads(threads_used)
        for name, n, args, outputs in _kernel_calls(np.random.default_rng(3)):
            threads.over_images(getattr(kernels, name), n, *args)
            results.setdefault(name, []).append([o.copy() for o in outputs])
    for name, (serial, split) in results.items():
        for a, b in zip(serial, split):
            assert not np.isnan(a).any(), f"{name}: an output element was never written"
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_range_kernels_write_only_their_images():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 6, 6, 2)).astype(np.float32)
    window = Window(2, 2, 2, 2, 0, 0, 3, 3)
    out = np.full((4, 3, 3, 2), -5.0, np.float32)
    argmax = np.full((4, 3, 3, 2), -5, np.int32)
    kernels.maxpool_forward(x, window, out, argmax, 1, 3)
    full_out, full_argmax = np.empty_like(out), np.empty_like(argmax)
    kernels.maxpool_forward(x, window, full_out, full_argmax, 0, 4)
    np.testing.assert_array_equal(out[1:3], full_out[1:3])
    np.testing.assert_array_equal(argmax[1:3], full_argmax[1:3])
    assert (out[[0, 3]] == -5).all() and (argmax[[0, 3]] == -5).all()
    cols = np.full((4 * 25, 2 * 2 * 2), -5.0, np.float32)
    kernels.im2col_into(x, Window(2, 2, 1, 1, 0, 0, 5, 5), cols, 2, -1)          # -1: to the end
    np.testing.assert_array_equal(cols[50:], im2col(x, Window(2, 2, 1, 1, 0, 0, 5, 5))[50:])
    assert (cols[:50] == -5).all()
    dcols = rng.standard_normal((4 * 9, 2 * 2 * 2)).astype(np.float32)
    dx = np.full(x.shape, -5.0, np.float32)
    kernels.col2im(dcols, window, dx, 1, 3)
    np.testing.assert_array_equal(dx[1:3], col2im(dcols, window, x.shape)[1:3])
    assert (dx[[0, 3]] == -5).all()
    dpool = rng.standard_normal(out.shape).astype(np.float32)
    kernels.maxpool_backward(dpool, full_argmax, dx, 2, 4)
    np.testing.assert_array_equal(dx[2:], kernels.maxpool_backward(dpool, full_argmax, np.empty_like(dx), 0, 4)[2:])
    assert (dx[0] == -5).all()


def test_over_images_raises_a_helper_threads_error(num_threads, always_split):
    calls = []

    def kernel(values, n0, n1):
        calls.append((n0, n1))
        if n0 > 0:
            raise ArithmeticError(f"bad block {n0}:{n1}")
    num_threads(2)
    with pytest.raises(ArithmeticError, match="bad block 2:4"):
        threads.over_images(kernel, 4, np.zeros(4))
    assert sorted(calls) == [(0, 2), (2, 4)]
    threads.over_images(lambda v, a, b: calls.append((a, b)), 4, np.zeros(4))    # the helpers still work
    assert sorted(calls[2:]) == [(0, 2), (2, 4)]


def test_small_jobs_and_one_thread_are_not_split(num_threads):
    calls = []
    num_threads(2)
    threads.over_images(lambda v, a, b: calls.append((a, b)), 8, np.zeros(10))   # under MIN_SPLIT_ELEMENTS
    num_threads(1)
    threads.over_images(lambda v, a, b: calls.append((a, b)), 8, np.zeros(10 ** 6))
    num_threads(None)
    threads.over_images(lambda v, a, b: calls.append((a, b)), 8, np.zeros(10 ** 6))
    assert calls == [(0, 8)] * 3


# ------------------------------------------------------------------- limited
def _blas_threads():
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_limited_holds_blas_at_one_thread_and_restores_it(num_threads):
    from threadpoolctl import threadpool_limits

    num_threads(2)
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        with threads.limited():
            assert all(n == 1 for n in _blas_threads())
            with threads.limited():                       # nested: still one, and no early restore
                pass
            assert all(n == 1 for n in _blas_threads())
        assert _blas_threads() == before


def test_limited_with_none_leaves_the_pools_alone(num_threads):
    from threadpoolctl import threadpool_limits

    num_threads(None)
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        with threads.limited():
            assert _blas_threads() == before


def test_limited_restores_after_an_exception(num_threads):
    from threadpoolctl import threadpool_limits

    num_threads(2)
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        with pytest.raises(KeyError):
            with threads.limited():
                raise KeyError("x")
        assert _blas_threads() == before
        with threads.limited():                           # the nesting depth was unwound too
            assert all(n == 1 for n in _blas_threads())


# ---------------------------------------------------------------- determinism
def _trained_weights(n_threads, steps=3):
    threads.set_num_threads(n_threads)
    model = seed_model(seed=0)
    model.compile("adam")
    rng = np.random.default_rng(0)
    for _ in range(steps):
        model.train_step(rng.random((32, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 32))
    return model.get_weights(), model.predict(rng.random((70, 28, 28, 1), dtype=np.float32))


def test_training_steps_are_bit_identical_with_one_and_two_threads(num_threads):
    w1, p1 = _trained_weights(1)
    w2, p2 = _trained_weights(2)
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize("M, K, F", [(16, 20000, 32), (32, 1152, 256), (32, 256, 1152), (1152, 32, 256)])
def test_matmul_split_by_rows_or_columns_equals_the_serial_product_bit_for_bit(num_threads, always_split, M, K, F):
    # the seed model's conv1 kernel gradient and the dense layer's three products
    rng = np.random.default_rng(M + F)
    a = rng.standard_normal((K, M)).astype(np.float32).T if M == 16 else rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, F)).astype(np.float32)
    num_threads(1)
    with threads.limited():
        serial = threads.matmul(a, b)
    num_threads(2)
    with threads.limited():
        split = threads.matmul(a, b)
    np.testing.assert_allclose(serial, a @ b, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(split, serial)


def test_sum_rows_kernel_equals_numpys_sum_bit_for_bit():
    # not a threading matter, but a kernel added with this work: the conv bias gradient,
    # bit-for-bit numpy's sum (so results recorded before the kernel existed are reproduced)
    rng = np.random.default_rng(9)
    for shape in [(20000, 32), (2592, 32), (7, 3)]:
        z = rng.standard_normal(shape).astype(np.float32)
        got = kernels.sum_rows(z)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, z.sum(axis=0))
        np.testing.assert_allclose(got, z.astype(np.float64).sum(axis=0), rtol=1e-4, atol=1e-3)
    z64 = rng.standard_normal((500, 32))
    assert kernels.sum_rows(z64).dtype == np.float64
    np.testing.assert_allclose(kernels.sum_rows(z64), z64.sum(axis=0), rtol=1e-12)


# ------------------------------------------- reductions and the fused optimizer step
def test_add_in_order_adds_the_partial_sums_left_to_right():
    # the order is the rounding: (1 + 1e8) - 1e8 is 0 in float32, 1 + (1e8 - 1e8) is 1
    parts = np.array([[1.0], [1e8], [-1e8]], np.float32)
    assert threads.add_in_order(parts)[0] == (np.float32(1.0) + np.float32(1e8)) - np.float32(1e8) == 0
    assert threads.add_in_order(parts[::-1])[0] == 1                # -1e8 + 1e8 first, then the 1


@pytest.mark.parametrize("n", [1, 2, 3])
def test_over_elements_updates_every_group_exactly_as_one_call_each(num_threads, always_split, n):
    num_threads(n)
    shapes = [(4, 4, 1, 32), (32,), (3, 3, 32, 16), (16,), (7,)]      # the split falls inside a group
    def state():
        r = np.random.default_rng(9)
        return [[r.standard_normal(s).astype(np.float32) for _ in range(4)] for s in shapes]
    serial, shared = state(), state()
    constants = tuple(np.float32(c) for c in (0.9, 0.999, 1e-3, 1e-7))
    for group in serial:
        kernels.adam_update(*group, *constants)
    calls = []
    def kernel(*a):
        calls.append(a[-2:])
        kernels.adam_update(*a)
    threads.over_elements(kernel, shared, *constants)
    for a, b in zip(serial, shared):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    total = sum(int(np.prod(s)) for s in shapes)
    assert sum(hi - lo for lo, hi in calls) == total            # every element once
    if n == 1:
        assert len(calls) == len(shapes)                         # one call per group, whole
    else:
        assert len(calls) > len(shapes)                          # a group was cut between threads


@pytest.mark.parametrize("n_items, expected", [(32, [(0, 16), (16, 32)]), (5, [(0, 2), (2, 5)]), (1, [(0, 1)])])
def test_reduction_blocks_depend_only_on_the_batch(num_threads, n_items, expected):
    for n in (1, 2, 4):
        num_threads(n)
        assert threads.reduction_blocks(n_items) == expected


def test_conv_gradients_are_bit_identical_for_any_thread_count(num_threads, always_split):
    from convnet import layers
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 12, 12, 8)).astype(np.float32)
    dout = rng.standard_normal((6, 9, 9, 5)).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        num_threads(n)
        layer = layers.Conv2D(5, 4)
        layer.build(x.shape[1:], np.random.default_rng(0))
        layer.forward(x, training=True)
        dx = layer.backward(dout)
        results.append((dx, layer.grads["kernel"], layer.grads["bias"]))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    cols = im2col(x.astype(np.float64), Window(4, 4, 1, 1, 0, 0, 9, 9))
    np.testing.assert_allclose(results[0][1].reshape(-1, 5), cols.T @ dout.reshape(-1, 5), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------ a busy machine
def test_helpers_that_keep_the_caller_waiting_make_the_next_splits_serial(num_threads, always_split, monkeypatch):
    """A helper late LATE_SPLITS times in a row (it could not get a core) -> SERIAL_CALLS unsplit calls."""
    import time
    monkeypatch.setattr(threads, "LATE_WAIT_SECONDS", 0.005)
    monkeypatch.setattr(threads, "LATE_SPLITS", 3)
    monkeypatch.setattr(threads, "SERIAL_CALLS", 4)
    num_threads(2)
    calls = []

    def job(n0, n1, helper_delay):
        calls.append((n0, n1))
        if n0 > 0:
            time.sleep(helper_delay)

    def split(helper_delay):
        calls.clear()
        threads.in_parallel(lambda n0, n1: job(n0, n1, helper_delay), 4, 10 ** 6)
        return sorted(calls)
    halves, whole = [(0, 2), (2, 4)], [(0, 4)]
    assert [split(0.03) for _ in range(threads.LATE_SPLITS)] == [halves] * threads.LATE_SPLITS
    assert [split(0.0) for _ in range(4)] == [whole] * 4        # serial for SERIAL_CALLS calls
    assert split(0.0) == halves                                  # then split again
    # late twice, on time once: the count starts again, nothing goes serial
    assert [split(d) for d in (0.03, 0.03, 0.0, 0.03, 0.03)] == [halves] * 5
    assert split(0.0) == halves
    # a wait (here about 20 ms) shorter than the caller's own share (60 ms) is not late
    threads.in_parallel(lambda n0, n1: time.sleep(0.06 if n0 == 0 else 0.08), 4, 10 ** 6)
    assert threads._late == 0


def test_setting_the_thread_count_forgets_a_busy_spell(num_threads):
    num_threads(2)
    threads._late, threads._serial_left = 2, 100
    num_threads(2)
    assert (threads._late, threads._serial_left) == (0, 0)


def test_blocks_within_gives_whole_reduction_blocks_or_refuses():
    blocks = threads.reduction_blocks(32)
    assert threads.blocks_within(0, 32, 32) == blocks
    assert threads.blocks_within(*blocks[1], 32) == [blocks[1]]
    with pytest.raises(ValueError, match="not whole reduction blocks"):
        threads.blocks_within(0, 20, 32)                    # a share that cuts a block would lose images


def test_a_products_blocks_depend_on_its_shape_alone(num_threads):
    # BLAS may round a block's rows differently from the whole product's (seen with OpenBLAS's
    # Haswell kernels on AMD EPYC): one thread computes the same blocks as two, one after the other
    bounds, by_rows = threads._matmul_blocks(1000, 300, 32)
    assert by_rows and len(bounds) == threads.MATMUL_BLOCKS and bounds[0][0] == 0 and bounds[-1][1] == 1000
    assert threads._matmul_blocks(32, 512, 256)[0] == [(0, 256)]          # too small to share: one block
