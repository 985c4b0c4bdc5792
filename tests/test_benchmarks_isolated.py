"""Tests for ``python -m benchmarks.isolated`` (one fresh process per library, alternating, paired ratios).

Fast: argument handling, the run order and the ratio arithmetic are tested
directly; end-to-end runs use one thread, a few batches and 64 test images.
The Keras end-to-end test (marked ``tf``) is skipped when TensorFlow is not
installed; TensorFlow is never imported into the test process itself.
"""
import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import isolated, isolated_report, isolated_worker
from benchmarks.isolated import EPOCH_STEPS, TEST_IMAGES

TINY = ["--repeats", "1", "--steps", "3", "--images", "64", "--threads", "1", "--warmup-batches", "2"]


def _run(tmp_path, argv, capsys):
    code = isolated.main(argv + ["--out", str(tmp_path)], log=lambda msg: None)
    captured = capsys.readouterr()
    report = json.loads((tmp_path / "isolated.json").read_text())
    return code, report, captured


# ---------------------------------------------------------------- arguments
def test_defaults_quick_and_overrides():
    args = isolated.parse_args([])
    assert (args.repeats, args.steps, args.images) == (5, EPOCH_STEPS, TEST_IMAGES)
    assert args.libs == ["keras", "convnet"] and args.worker is None
    args = isolated.parse_args(["--quick"])
    assert (args.repeats, args.steps, args.images) == (2, 100, 2000)
    args = isolated.parse_args(["--quick", "--steps", "7", "--libs", "convnet"])
    assert (args.repeats, args.steps, args.images) == (2, 7, 2000) and args.libs == ["convnet"]
    args = isolated.parse_args(["--libs", " convnet , keras "])
    assert args.libs == ["convnet", "keras"]


@pytest.mark.parametrize("argv, message", [
    (["--libs", "convnet,torch"], "unknown library ['torch']"),
    (["--libs", ","], "unknown library"),
    (["--libs", "keras,keras"], "named twice"),
    (["--repeats", "0"], "at least 1"),
    (["--repeats", "two"], "expected an integer"),
    (["--steps", str(EPOCH_STEPS + 1)], f"between 1 and {EPOCH_STEPS}"),
    (["--images", "10001"], "between 1 and 10000"),
    (["--images", "0"], "between 1 and 10000"),
    (["--warmup-batches", "1"], "between 2 and 64"),
    (["--threads", "0"], "at least 1"),
    (["--timeout", "-5"], "positive"),
    (["--timeout", "nan"], "positive"),
    (["--data", "cifar"], "invalid choice"),
    (["--worker", "torch", "--weights", "w.npz"], "invalid choice"),
    (["--worker", "convnet"], "--worker needs --weights FILE and --data-dir DIR"),
    (["--worker", "convnet", "--weights", "w.npz"], "--worker needs --weights FILE and --data-dir DIR"),
    (["--worker", "convnet", "--weights", "w.npz", "--data-dir", "d", "--repeats", "2"], "for the parent"),
    (["--weights", "w.npz"], "only for --worker"),
    (["--data-dir", "d"], "only for --worker"),
    (["--batch", "64"], "only for --worker"),
    (["--no-inference"], "only for --worker"),
    (["--scaling", "--steps", "10"], "does not apply to --scaling"),
])
def test_bad_arguments_are_refused_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        isolated.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------ pure functions
def test_run_order_alternates_between_repeats():
    assert [isolated.run_order(["keras", "convnet"], r) for r in range(1, 5)] == [
        ["keras", "convnet"], ["convnet", "keras"], ["keras", "convnet"], ["convnet", "keras"]]
    assert isolated.run_order(["convnet"], 2) == ["convnet"]
    libs = ["convnet", "keras"]
    isolated.run_order(libs, 2)
    assert libs == ["convnet", "keras"]          # the caller's list is not reversed in place


def test_paired_ratios_divide_within_each_repeat_and_take_the_median():
    convnet = {1: {"epoch_s": 6.0}, 2: {"epoch_s": 9.0}, 3: {"epoch_s": 7.0}, 4: {"epoch_s": 5.0}}
    keras = {1: {"epoch_s": 12.0}, 2: {"epoch_s": 10.0}, 3: {"epoch_s": 20.0}, 5: {"epoch_s": 1.0}}
    out = isolated_report.paired_ratios({"convnet": convnet, "keras": keras}, "epoch_s")
    # only repeats 1-3 have both; ratios 0.5, 0.9, 0.35 -> median 0.5 (not median(convnet)/median(keras))
    assert [p["repeat"] for p in out["per_repeat"]] == [1, 2, 3]
    assert [p["ratio"] for p in out["per_repeat"]] == pytest.approx([0.5, 0.9, 0.35])
    assert out["per_repeat"][1]["convnet"] == 9.0 and out["per_repeat"][1]["keras"] == 10.0
    assert out["median"] == pytest.approx(0.5)
    assert (out["min"], out["max"]) == (pytest.approx(0.35), pytest.approx(0.9))
    assert out["median_over_fastest"] == pytest.approx(7.0 / 10.0)    # median(6, 9, 7) / min(12, 10, 20)
    assert out["fastest"] == pytest.approx(6.0 / 10.0)                # min(6, 9, 7) / min(12, 10, 20)
    # an even number of pairs: the median is the mean of the middle two
    out = isolated_report.paired_ratios({"convnet": {1: {"x": 1.0}, 2: {"x": 3.0}}, "keras": {1: {"x": 2.0}, 2: {"x": 2.0}}},
                                 "x")
    assert out["median"] == pytest.approx(1.0)
    assert isolated_report.paired_ratios({"convnet": convnet, "keras": {}}, "epoch_s") is None
    assert isolated_report.paired_ratios({"convnet": convnet}, "epoch_s") is None


def test_flop_count_of_the_seed_model():
    from benchmarks.convnet_impl import seed_model
    macs = isolated_report.layer_macs(seed_model(0))
    # conv1 25*25 positions x 4*4*1*32; conv2 9*9 x 4*4*32*32; dense 512x256; dense_1 256x10
    assert macs == {"conv2d": (320_000, 320_000), "conv2d_1": (1_327_104, 2 * 1_327_104),
                    "dense": (131_072, 2 * 131_072), "dense_1": (2_560, 2 * 2_560)}
    per_image = 2 * sum(f + b for f, b in macs.values())
    assert per_image == pytest.approx(10.04e6, rel=1e-3)                  # the "about 10 MFLOP"
    assert isolated_report.epoch_flops(seed_model(0)) == pytest.approx(60_000 * per_image)
    assert isolated_report.inference_flops(seed_model(0)) == pytest.approx(10_000 * 2 * sum(f for f, _ in macs.values()))


def test_floor_report_divides_the_fastest_epoch_by_the_best_gemm_speed():
    from benchmarks.convnet_impl import seed_model
    summary = {"convnet": {"epoch_s": {"min": 6.0}}, "keras": {"epoch_s": {"min": 12.0}}}
    floor = isolated_report.floor_report([100.0, 200.0, 150.0], summary, seed_model(0))
    assert floor["gemm_gflops"] == 200.0
    assert floor["epoch_floor_s"] == pytest.approx(floor["epoch_flops"] / 200e9)
    assert floor["convnet_over_floor"] == pytest.approx(6.0 / floor["epoch_floor_s"])
    assert floor["keras_over_floor"] == pytest.approx(12.0 / floor["epoch_floor_s"])


def test_gemm_speed_is_a_plausible_positive_figure():
    from benchmarks.machine import gemm_gflops
    assert 0.1 < gemm_gflops(1, size=256, repeats=2) < 1e5


def test_scaling_rows_take_each_cell_at_its_fastest_repeat_and_render():
    results = {("convnet", 32, 1): [{"epoch_s": 12.0}, {"epoch_s": 10.0}],
               ("keras", 32, 1): [{"epoch_s": 20.0}],
               ("convnet", 64, 2): [{"epoch_s": 6.0}]}
    rows = isolated_report.scaling_rows(results)
    assert [(r["batch"], r["threads"]) for r in rows] == [(32, 1), (64, 2)]
    assert rows[0]["convnet_epoch_s"] == 10.0 and rows[0]["convnet_epoch_values"] == [12.0, 10.0]
    assert rows[0]["convnet_images_per_s"] == pytest.approx(6000.0) and rows[0]["ratio"] == pytest.approx(0.5)
    assert "keras_epoch_s" not in rows[1] and "ratio" not in rows[1]
    text = isolated_report.render_scaling(rows)
    assert "6,000" in text and "0.50" in text and text.splitlines()[-1].split()[:2] == ["64", "2"]


def test_summarize_reports_median_and_extremes_per_library():
    runs = {"convnet": {1: {"epoch_s": 3.0, "accuracy": 0.9}, 2: {"epoch_s": 1.0, "accuracy": 0.8},
                        3: {"epoch_s": 2.0, "accuracy": 0.7}}}
    s = isolated_report.summarize(runs)["convnet"]
    assert s["repeats_ok"] == 3
    assert s["epoch_s"] == {"median": 2.0, "min": 1.0, "max": 3.0, "values": [3.0, 1.0, 2.0]}
    assert s["accuracy"]["median"] == pytest.approx(0.8)
    assert s["predict_s"] is None                # not measured: no figure rather than a made-up one


def test_weights_round_trip_in_order(tmp_path):
    weights = [np.full((2, 3), k, np.float32) for k in range(12)]   # > 10: arr_10 must not sort before arr_2
    isolated.write_weights(weights, tmp_path / "w.npz")
    back = isolated_worker.read_weights(tmp_path / "w.npz")
    assert [float(w[0, 0]) for w in back] == list(range(12))
    with pytest.raises(isolated_worker.WorkerError, match="does not exist"):
        isolated_worker.read_weights(tmp_path / "missing.npz")


# ---------------------------------------------------------------- end to end
def test_convnet_only_end_to_end_writes_a_complete_scaled_json(tmp_path, capsys):
    code, report, captured = _run(tmp_path, ["--libs", "convnet"] + TINY, capsys)
    assert code == 0, captured.err
    assert report["kind"] == "isolated" and report["all_workers_ok"] is True and report["failures"] == []
    assert report["settings"]["steps"] == 3 and report["settings"]["images"] == 64
    assert report["settings"]["epoch_scale"] == pytest.approx(EPOCH_STEPS / 3)
    assert [r["library"] for r in report["runs"]] == ["convnet"]
    run = report["runs"][0]
    assert run["status"] == "ok" and run["repeat"] == 1
    rec = run["result"]
    assert rec["library"] == "convnet" and rec["pid"] > 0
    for key in ("epoch_s", "epoch_measured_s", "predict_s", "predict_measured_s", "peak_rss_mb", "startup_s"):
        assert rec[key] > 0 and math.isfinite(rec[key]), key
    assert rec["epoch_s"] == pytest.approx(rec["epoch_measured_s"] * EPOCH_STEPS / 3)
    assert rec["predict_s"] == pytest.approx(rec["predict_measured_s"] * TEST_IMAGES / 64)
    assert 0.0 <= rec["accuracy"] <= 1.0
    assert set(rec["evaluate_s"]) == {"32", "256", "1000"} and all(v > 0 for v in rec["evaluate_s"].values())
    assert rec["inference_s"] == min(rec["evaluate_s"].values())
    assert rec["evaluate_s"][str(rec["inference_batch"])] == rec["inference_s"]
    assert 0 < rec["first_step_s"] < rec["startup_s"]
    assert 0 < rec["peak_rss_train_mb"] <= rec["peak_rss_mb"]
    assert report["floor"]["convnet_over_floor"] == pytest.approx(
        rec["epoch_s"] / report["floor"]["epoch_floor_s"])
    assert rec["threads"]["convnet"] == 1                  # the engine's own threads follow --threads
    assert rec["startup_from"] == "parent launch" and rec["phases_s"]["python_start_s"] >= 0
    assert rec["startup_s"] >= rec["phases_s"]["warmup_s"]
    assert rec["threads"]["numba"] == 1
    summary = report["summary"]
    assert list(summary) == ["convnet"] and summary["convnet"]["repeats_ok"] == 1
    assert summary["convnet"]["epoch_s"]["median"] == rec["epoch_s"]
    assert report["ratios"] is None and report["epoch_ratio"] is None
    machine = report["machine"]
    assert machine["numpy_blas"]["internal_api"] and "OPENBLAS_CORETYPE" in machine["env"]
    assert machine["threads"]["per_library"]["convnet"]["numba"] == 1
    assert "benchmarks.isolated" in machine["command"]
    assert any("scaled" in n for n in report["notes"])
    assert "convnet" in captured.out and "numpy BLAS" in captured.out
    assert not list(tmp_path.glob(".isolated.json.*"))   # the JSON was written through a renamed temp file


def test_missing_tensorflow_leaves_the_keras_column_out_with_a_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(isolated_worker.HIDE_TF_ENV, "1")      # inherited by the workers
    code, report, captured = _run(tmp_path, ["--libs", "keras,convnet", "--repeats", "2", "--steps", "2",
                                             "--images", "32", "--threads", "1", "--warmup-batches", "2"], capsys)
    assert code == 0, captured.err
    assert list(report["summary"]) == ["convnet"] and report["summary"]["convnet"]["repeats_ok"] == 2
    # keras tried once (repeat 1, first), then left out; convnet ran in both repeats
    assert [(r["repeat"], r["library"], r["status"]) for r in report["runs"]] == [
        (1, "keras", "unavailable"), (1, "convnet", "ok"), (2, "convnet", "ok")]
    assert report["settings"]["orders"] == [["keras", "convnet"], ["convnet", "keras"]]
    assert report["epoch_ratio"] is None and report["failures"] == []
    assert any(n.startswith("keras left out") and isolated_worker.HIDE_TF_ENV in n for n in report["notes"])
    assert "keras left out" in captured.out


def test_a_failing_worker_is_reported_with_library_repeat_and_stderr(tmp_path, capsys, monkeypatch):
    def bad_weights(weights, path):
        path.write_bytes(b"this is not an npz file")
    monkeypatch.setattr(isolated, "write_weights", bad_weights)
    code = isolated.main(["--libs", "convnet", "--repeats", "2", "--steps", "2", "--images", "32", "--threads", "1",
                          "--out", str(tmp_path)], log=lambda msg: None)
    captured = capsys.readouterr()
    assert code == 1
    report = json.loads((tmp_path / "isolated.json").read_text())
    assert report["all_workers_ok"] is False and report["summary"] == {}
    [failure] = report["failures"]                     # not retried in repeat 2
    assert failure["library"] == "convnet" and failure["repeat"] == 1 and failure["returncode"] == 1
    assert "isolated worker (convnet): error: cannot read weights file" in failure["stderr_tail"]
    assert "convnet, repeat 1" in captured.out and "cannot read weights file" in captured.out
    assert any("later repeats were not run" in n for n in report["notes"])


def test_a_worker_that_overruns_the_timeout_is_stopped_and_reported(tmp_path, capsys):
    code = isolated.main(["--libs", "convnet", "--repeats", "1", "--steps", "1", "--images", "8", "--threads", "1",
                          "--timeout", "0.2", "--out", str(tmp_path)], log=lambda msg: None)
    capsys.readouterr()
    assert code == 1
    [failure] = json.loads((tmp_path / "isolated.json").read_text())["failures"]
    assert failure["library"] == "convnet" and failure["error"] == "timed out after 0.2 s"
    assert failure["returncode"] is None


def _worker(weights, data_dir):
    return subprocess.run([sys.executable, "-m", "benchmarks.isolated", "--worker", "convnet", "--weights",
                           str(weights), "--data-dir", str(data_dir), "--steps", "1", "--images", "8",
                           "--threads", "1"], capture_output=True, text=True, timeout=120)


def test_worker_alone_refuses_a_bad_weights_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    isolated_worker.write_data("random", tmp_path / "data", 64, 8)
    proc = _worker(bad, tmp_path / "data")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "isolated worker (convnet): error: cannot read weights file" in proc.stderr
    assert str(bad) in proc.stderr and "Traceback" not in proc.stderr


def test_worker_alone_refuses_missing_data(tmp_path):
    proc = _worker(tmp_path / "w.npz", tmp_path / "nowhere")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "cannot read the data in" in proc.stderr and "x_train.npy" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_written_data_is_what_load_data_gives_cut_to_size(tmp_path):
    from benchmarks.data import load_data
    note = isolated_worker.write_data("random", tmp_path, 96, 10)
    data = isolated_worker.read_data(tmp_path)
    want = load_data("random")
    assert data.x_train.shape == (96, 28, 28, 1) and data.x_test.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(data.x_train, want.x_train[:96])
    np.testing.assert_array_equal(data.y_test, want.y_test[:10])
    assert data.source == "random" and "random" in note


@pytest.mark.tf
def test_keras_and_convnet_end_to_end_give_paired_ratios(tmp_path, capsys):
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed")
    code, report, captured = _run(tmp_path, ["--libs", "keras,convnet"] + TINY, capsys)
    assert code == 0, captured.err
    assert list(report["summary"]) == ["convnet", "keras"]
    keras = report["runs"][0]
    assert keras["library"] == "keras" and keras["status"] == "ok"
    assert keras["result"]["threads"]["tensorflow"] == {"intra_op": 1, "inter_op": 1}
    assert 0.0 <= keras["result"]["accuracy"] <= 1.0
    [pair] = report["ratios"]["epoch"]["per_repeat"]
    c, k = (report["summary"][lib]["epoch_s"]["median"] for lib in ("convnet", "keras"))
    assert pair["ratio"] == pytest.approx(c / k) and report["epoch_ratio"] == pytest.approx(c / k)
    assert isinstance(report["epoch_ratio_meets_target"], bool)
    assert isinstance(report["inference_ratio_meets_target"], bool)
    assert report["inference_ratio"] == pytest.approx(report["summary"]["convnet"]["inference_s"]["min"]
                                                      / report["summary"]["keras"]["inference_s"]["min"])
    assert report["machine"]["versions"]["tensorflow"]
    assert "EPOCH RATIO" in captured.out


def test_scaling_mode_writes_a_table_json_and_plot(tmp_path, capsys):
    code = isolated.main(["--scaling", "--quick", "--libs", "convnet", "--repeats", "1", "--warmup-batches", "2",
                          "--images", "64", "--out", str(tmp_path)], log=lambda msg: None)
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads((tmp_path / "scaling.json").read_text())
    assert report["kind"] == "scaling" and report["failures"] == []
    cells = {(r["batch"], r["threads"]) for r in report["rows"]}
    assert cells == {(b, t) for b in (32, 64, 128, 256) for t in (1, 2)}
    for run in report["runs"]:
        assert run["result"]["batch"] == run["batch"]
        assert run["result"]["threads"]["convnet"] == run["threads"]
        assert "inference_s" not in run["result"]              # fit only
    assert (tmp_path / "scaling.png").stat().st_size > 1000
    assert "images/s" in out
