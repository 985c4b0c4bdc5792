"""Tests for the benchmark harness (benchmarks/).

The harness is run in its quickest mode without TensorFlow, and the JSON it
writes is checked; its "numpy" column is convnet's textbook backend (the
tiers' agreement itself is tested in test_tiers.py). One test (marked
``tf``) checks the TensorFlow side of the kernels when TensorFlow is installed.
"""
import json

import numpy as np
import pytest

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
        assert set(row["results"]) == {"convnet", "numpy"}, row["name"]
        for result in row["results"].values():
            assert result["median_s"] > 0 and result["first_call_s"] > 0
            assert len(result["times_s"]) == 2
        check = row["checks"]["numpy"]
        assert check["passed"] and check["max_rel_err"] <= check["tol"] == 1e-4
        assert row["ratios"]["numpy/convnet"] > 0
    epoch = next(r for r in report["rows"] if r["group"] == "epoch")
    assert epoch["results"]["convnet"]["scale"] == 60000 / (2 * 32)
    assert "scaled" in epoch["note"]


def test_failed_agreement_check_is_reported_and_not_timed(tmp_path, monkeypatch, capsys):
    from benchmarks import cli, convnet_impl

    real = convnet_impl.Backend.make_pool_forward

    def wrong_on_the_numpy_backend(self, x, size):
        fn = real(self, x, size)
        return (lambda: fn() * 1.01) if self.backend == "numpy" else fn
    monkeypatch.setattr(convnet_impl.Backend, "make_pool_forward", wrong_on_the_numpy_backend)
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


def test_unusable_out_and_bad_numbers_are_usage_errors_before_any_timing(tmp_path, capsys):
    """A mistake on the command line is one line ``error: ...`` and exit status 2, found before any work."""
    from benchmarks import cli, isolated, profile_step
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    cases = [(cli.parse_args, ["--out", str(a_file)], "is a file, not a directory"),
             (cli.parse_args, ["--out", str(a_file / "sub")], f"{a_file} is a file, not a directory"),
             (isolated.parse_args, ["--out", str(a_file)], "is a file, not a directory"),
             (profile_step.main, ["--batch", "0"], "expected an integer at least 1, got 0"),
             (profile_step.main, ["--threads", "many"], "expected a positive integer or 'none'")]
    for parse, argv, message in cases:
        with pytest.raises(SystemExit) as e:
            parse(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert message in err.splitlines()[-1] and "error: " in err.splitlines()[-1] and "Traceback" not in err
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_a_layer_timed_alone_runs_with_the_pools_a_model_sets_up(backend):
    from threadpoolctl import threadpool_info

    from benchmarks.convnet_impl import Backend
    from convnet.engine import threads

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    inside = Backend(backend)._wrap(blas_threads)()
    assert inside and all(n == 1 for n in inside) or threads.get_num_threads() is None


def test_each_timed_convnet_call_starts_splitting_again():
    """A busy spell caused by TensorFlow's pools in the same process does not carry over into the next timing."""
    from benchmarks.convnet_impl import Backend
    from convnet.engine import threads

    threads._late, threads._serial_left = 2, 400
    try:
        seen = Backend("numba")._wrap(lambda: (threads._late, threads._serial_left))()
    finally:
        threads.forget_busy_spell()
    assert seen == (0, 0)


def test_profile_step_times_the_runs_of_layers_and_undoes_its_wrappers(rng, make_seed_model):
    """The training step's runs (convnet/engine/plan.py) get phases of their own, and after the
    profile every wrapped function and method is the original again."""
    from benchmarks import profile_step
    model = make_seed_model(0)
    model.compile("adam", "sparse_categorical_crossentropy")
    data = [(rng.random((8, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 8)) for _ in range(4)]
    originals = model.optimizer.apply
    plain_ms, phases = profile_step.profile(model, data, warmup=2)
    assert plain_ms > 0
    assert phases["run of layers, forward"] > 0 and phases["run of layers, backward"] > 0
    assert phases["dense forward"] > 0 and phases["dense_1 backward"] > 0
    assert model.optimizer.apply == originals
    steps = model.runner().plan(True).steps
    assert not any("forward" in vars(step) or "backward" in vars(step) for step in steps)


def test_kernel_profile_times_every_product_and_kernel_on_one_thread_and_undoes_its_wrappers(rng, make_seed_model):
    """``profile_step --kernels``: the seed model's products are labelled by shape and engine method, with
    their FLOP rate; the kernels by name; the rows and the rest add up to the step; and afterwards the
    kernels, the engine modules' numpy and the thread count are what they were."""
    from benchmarks import profile_step
    from convnet.engine import kernels, layers as engine_layers, threads
    model = make_seed_model(0)
    model.compile("adam", "sparse_categorical_crossentropy")
    data = [(rng.random((8, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 8)) for _ in range(4)]
    before = (threads.get_num_threads(), kernels.im2col_into, engine_layers.im2col_into, engine_layers.np, threads.np)
    plain_ms, step_ms, rows = profile_step.kernel_profile(model, data, warmup=2)
    assert (threads.get_num_threads(), kernels.im2col_into, engine_layers.im2col_into, engine_layers.np,
            threads.np) == before
    names = {name: (ms, calls, gflops) for name, ms, calls, gflops in rows}
    # conv2's forward product: blocks of 4 images x 81 positions by 4x4x32 inputs, 32 filters: 2 per step
    ms, calls, gflops = names["product 324x512 @ 512x32 (Conv2D.start)"]
    assert calls == 2 and ms > 0 and gflops > 0
    assert names["product 8x512 @ 512x256 (Dense.call)"][1] == 1
    assert names["im2col_into"][1] >= 2 and names["adam_update"][1] == 8       # 4 layers x (kernel, bias)
    assert plain_ms > 0 and rows[-1][0].startswith("(the rest")
    assert sum(r[1] for r in rows) == pytest.approx(step_ms)
    products, engine_kernels, rest = profile_step.groups(rows)
    assert products[1] + engine_kernels[1] + rest[1] == pytest.approx(step_ms)
    assert products[2] > 0
