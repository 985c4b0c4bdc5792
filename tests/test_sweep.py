"""experiments.sweep: the statistics by hand, the grid and its folders, and real sweeps on a local pool
and on a Dask cluster that the tests start themselves (one of its workers killed mid-sweep)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from experiments import mnist, sweep

ROOT = Path(__file__).resolve().parent.parent
#: the tiny sweep: 2 recipes x 2 seeds, 1 epoch on 2,000 images
TINY = ["--recipe", "convnet,keras", "--seeds", "0-1", "--epochs", "1", "--limit", "2000", "--test-limit", "500",
        "--threads", "1"]
RUNS = {f"{r}/default/seed{s}" for r in ("convnet", "keras") for s in (0, 1)}


# ------------------------------------------------------------------ the summary
def rows(accuracies, status=None):
    status = status or {}
    return [{"recipe": r, "setting": "default", "seed": s, "dir": "", "accuracy": a,
             "status": status.get((r, s), "done"), "error": "boom" if (r, s) in status else None}
            for r, seeds in accuracies.items() for s, a in seeds.items()]


def test_summary_lists_every_run_with_statistics_and_the_paired_difference():
    data = {"a": {0: 0.990, 1: 0.992, 2: 0.995, 3: None}, "b": {0: 0.989, 1: 0.990, 2: 0.991}}
    summary = sweep.summarize(rows(data, {("a", 3): "failed"}), "python -m experiments.sweep ...")
    a, b = summary["groups"]
    assert (a["n"], a["runs"], a["failed"], b["n"]) == (3, 4, 1, 3)
    assert a["mean"] == pytest.approx(0.9923333333) and b["sd"] == pytest.approx(0.001)
    (c,) = summary["comparisons"]
    assert (c["a"], c["b"]) == ("a", "b") and c["welch"]["difference"] == pytest.approx(0.0023333333)
    assert [p["seed"] for p in c["pairs"]] == [0, 1, 2]
    assert c["pairs"][2]["difference"] == pytest.approx(0.004)
    assert len(summary["runs"]) == 7                      # the failed run too
    text = sweep.markdown(summary)
    # a: 99.0, 99.2, 99.5 %: sd sqrt(0.12667 / 2) = 0.2517, half-width t(0.975, 2) * 0.2517 / sqrt(3) = 0.6252
    assert "| a | default | 3 (1 failed) | 99.233 | 0.252 | [98.608, 99.858] | 99.00 | 99.20 | 99.50 |" in text
    assert "| a | default | 99.00 | 99.20 | 99.50 | failed |" in text
    assert "| b | default | 98.90 | 99.00 | 99.10 |  |" in text
    assert "- a/default/seed3: failed: boom" in text
    assert "| 2 | 99.50 | 99.10 | +0.40 |" in text
    json.dumps(summary)                                   # all of it is plain JSON


def test_recorded_runs_give_the_readme_table(tmp_path, capsys):
    """The default recipe's ten recorded seeds, through the sweep's statistics: the README's mean, sd, median."""
    assert sweep.main(["--from-results", str(ROOT / "experiments/results"), "--groups", "default,mnist",
                       "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    default, convnet_keras = summary["groups"]
    assert default["n"] == 10 and round(100 * default["mean"], 3) == 99.542
    assert round(100 * default["sd"], 3) == 0.042 and round(100 * default["median"], 2) == 99.54
    assert round(100 * convnet_keras["mean"], 3) == 99.260
    assert "| default | recorded | 10 | 99.542 | 0.042 |" in capsys.readouterr().out
    assert (tmp_path / "summary.png").stat().st_size > 5000


def test_a_broken_record_is_listed_not_dropped(tmp_path):
    (tmp_path / "x-seed0.json").write_text(json.dumps({"final": {"test": {"accuracy": 0.99}}}))
    (tmp_path / "x-seed1.json").write_text(json.dumps({"final": {"test": {}}}))
    (tmp_path / "x-seed2.json").write_text(json.dumps({"final": {"test": {"accuracy": 99.1}}}))   # a percentage
    assert sweep.main(["--from-results", str(tmp_path), "--groups", "x", "--out", str(tmp_path / "s")]) == 1
    runs = json.loads((tmp_path / "s/summary.json").read_text())["runs"]
    assert [(r["seed"], r["status"]) for r in runs] == [(0, "done"), (1, "failed"), (2, "failed")]
    assert "no final test accuracy" in runs[1]["error"]
    assert "expected a number in [0, 1]" in runs[2]["error"]


# ------------------------------------------------------------------ the grid
@given(st.sets(st.integers(0, 10 ** 6), min_size=1, max_size=20))
def test_seed_lists_round_trip(seeds):
    assert sweep.parse_seeds(",".join(map(str, seeds))) == sorted(seeds)


def test_seed_ranges():
    assert sweep.parse_seeds("0-3,7, 9-10") == [0, 1, 2, 3, 7, 9, 10]
    for text, message in [("3-1", "backwards"), ("1,1", "listed twice"), ("0-2,2", "listed twice"),
                          ("a", "expected seeds"), ("-1", "expected seeds"), ("0-99999999", "more than")]:
        with pytest.raises(ValueError, match=message):
            sweep.parse_seeds(text)


def test_settings_are_written_one_way_and_name_stable_folders():
    dims = [sweep.parse_setting("lr=2e-3,0.001"), sweep.parse_setting("dropout=0.25/0.25/0.5")]
    assert dims == [("lr", ["0.002", "0.001"]), ("dropout", ["0.25-0.25-0.5"])]
    named = sweep.settings(dims)
    assert [n for n, _ in named] == ["lr=0.002,dropout=0.25-0.25-0.5", "lr=0.001,dropout=0.25-0.25-0.5"]
    assert named[0][1] == ["--lr", "0.002", "--dropout", "0.25,0.25,0.5"]
    assert sweep.settings([]) == [("default", [])]
    assert sweep.settings([sweep.parse_setting("augment=Off")]) == [("augment=off", ["--no-augment"])]


@pytest.mark.parametrize("argv, message", [
    (["--set", "learning_rate=1e-3"], "unknown key 'learning_rate'"),
    (["--set", "lr"], "expected KEY=VALUE"),
    (["--set", "lr=fast"], "--set lr: 'fast' is not a number"),
    (["--set", "lr=1e-3,0.001"], "listed twice"),
    (["--set", "lr=1e-3", "--set", "lr=2e-3"], "--set lr is given twice"),
    (["--set", "epochs=2", "--epochs", "3"], "both give the epochs"),
    (["--recipe", "adam"], "unknown recipe 'adam'"),
    (["--seeds", "5-2"], "backwards"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--workers", "999"], "more than the"),
    (["--scheduler", "localhost"], "like tcp://HOST:8786"),
    (["--scheduler", "tcp://h:1", "--workers", "1"], "--workers is for this machine"),
])
def test_command_line_mistakes_are_one_line_without_traceback(argv, message, tmp_path, capsys):
    base = {"--recipe": "keras", "--seeds": "0-1"}
    for i in range(0, len(argv), 2):
        base.pop(argv[i], None)
    full = [x for kv in base.items() for x in kv] + argv + ["--out", str(tmp_path / "s")]
    with pytest.raises(SystemExit) as e:
        sweep.main(full)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_values_experiments_mnist_refuses_are_refused_before_any_run(tmp_path, capsys):
    assert sweep.main(["--recipe", "keras", "--seeds", "0", "--set", "momentum=0.9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "error: --recipe keras --set momentum=0.9: --momentum applies to --optimizer sgd only\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, text", [("summary.json", '{"mine": 1}'), ("summary.json", "notes"),
                                        ("summary.md", "# my notes")])
def test_a_summary_file_the_sweep_did_not_write_is_left_alone(tmp_path, capsys, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as e:
        sweep.main([*TINY, "--out", str(tmp_path)])
    assert e.value.code == 2 and "left as it is" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == [name] and (tmp_path / name).read_text() == text


def grid(tmp_path, *extra):
    return sweep.build_grid(sweep.parse_args([*TINY, "--out", str(tmp_path), *extra]))


def fake_metrics(run, **changes):
    args = mnist._train_args(sweep._mnist_args([*run.argv, "--seed", str(run.seed), "--out", run.out]))
    record = {"args": {**args, **changes}, "epochs_completed": args["epochs"],
              "final": {"test": {"accuracy": 0.9}}}
    Path(run.out).mkdir(parents=True, exist_ok=True)
    (Path(run.out) / mnist.METRICS).write_text(json.dumps(record))


def test_runs_get_absolute_paths_whatever_the_workers_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").mkdir()
    run = sweep.build_grid(sweep.parse_args([*TINY, "--data-dir", "cache", "--out", "s"]))[0]
    assert run.out == str(tmp_path / "s" / "convnet" / "default" / "seed0")
    assert run.command()[run.command().index("--data-dir") + 1] == str(tmp_path / "cache")
    assert run.command()[1:3] == ["-m", "experiments.mnist"] and "--resume" in run.command(resume=True)


def test_what_counts_as_finished(tmp_path):
    runs = grid(tmp_path)
    assert [r.name for r in runs] == ["convnet/default/seed0", "convnet/default/seed1", "keras/default/seed0",
                                      "keras/default/seed1"]
    assert runs[0].out == str(tmp_path / "convnet" / "default" / "seed0")
    assert sweep.run_state(runs[0]) == ("new", None)
    fake_metrics(runs[0])
    assert sweep.run_state(runs[0])[0] == "done"
    fake_metrics(runs[1], lr=0.5)                              # another run's folder: never overwritten
    state, message = sweep.run_state(runs[1])
    assert state == "conflict" and "--lr 0.5 (the sweep's: 0.001)" in message
    fake_metrics(runs[2], epochs=1)
    record = json.loads((Path(runs[2].out) / mnist.METRICS).read_text())
    (Path(runs[2].out) / mnist.METRICS).write_text(json.dumps({**record, "epochs_completed": 0}))
    assert sweep.run_state(runs[2]) == ("new", None)          # fewer epochs than asked, no checkpoint
    (Path(runs[2].out) / mnist.CHECKPOINT).write_bytes(b"")
    assert sweep.run_state(runs[2]) == ("resume", None)
    Path(runs[3].out).mkdir(parents=True)
    (Path(runs[3].out) / mnist.METRICS).write_text("{not json")
    assert sweep.run_state(runs[3])[0] == "conflict"


# ------------------------------------------------------------------ real sweeps
def start_sweep(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "experiments.sweep", *TINY, "--out", str(out), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_metrics(out, sweep_process, count=1, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(out.glob("*/*/seed*/metrics.json"))
        if len(found) >= count:
            return found
        assert sweep_process.poll() is None, sweep_process.communicate()
        time.sleep(0.2)
    raise AssertionError(f"no run finished in {timeout} s")


def check_complete(out):
    summary = json.loads((out / "summary.json").read_text())
    names = [f"{r['recipe']}/{r['setting']}/seed{r['seed']}" for r in summary["runs"]]
    assert sorted(names) == sorted(RUNS)                                # every run, exactly once
    assert all(r["status"] == "done" for r in summary["runs"]), summary["runs"]
    for r in summary["runs"]:
        record = json.loads((out / r["recipe"] / "default" / f"seed{r['seed']}" / "metrics.json").read_text())
        assert (record["args"]["recipe"], record["seed"], record["epochs_completed"]) == (r["recipe"], r["seed"], 1)
        assert record["final"]["test"]["accuracy"] == r["accuracy"]
    assert {(g["recipe"], g["n"]) for g in summary["groups"]} == {("convnet", 2), ("keras", 2)}
    assert len(summary["comparisons"]) == 1 and len(summary["comparisons"][0]["pairs"]) == 2
    return summary


@pytest.mark.slow
def test_local_sweep_stopped_and_started_again_reruns_nothing_finished(tmp_path):
    out = tmp_path / "sweep"
    first = start_sweep(out, "--workers", "2")
    wait_for_metrics(out, first)
    os.killpg(first.pid, signal.SIGINT)                        # Ctrl-C: the sweep and its runs
    _, err = first.communicate(timeout=120)
    # Known bug, left for the next session: in about one Ctrl-C in four (more on a loaded machine) the
    # sweep exits 130 without its closing lines or summary (no atexit handler runs; not reproduced
    # under strace). The finished runs are kept either way, which is what this test holds it to.
    assert first.returncode == 130, err
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/*/seed*/metrics.json")}
    assert finished

    second = start_sweep(out, "--workers", "2")
    stdout, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert f"{len(finished)} finished already, {4 - len(finished)} to run" in stdout
    assert {p: p.stat().st_mtime_ns for p in finished} == finished      # not run again
    done_lines = [line for line in stdout.splitlines() if line.startswith("done ")]
    assert len(done_lines) == 4 - len(finished)
    check_complete(out)
    assert "| convnet | default | 2 |" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_a_failing_run_is_reported_and_the_others_go_on(tmp_path):
    out = tmp_path / "sweep"
    blocked = out / "keras" / "default" / "seed1"
    blocked.mkdir(parents=True)
    (blocked / "notes.txt").write_text("mine")                 # experiments.mnist refuses such a folder
    result = subprocess.run([sys.executable, "-m", "experiments.sweep", "--recipe", "keras", "--seeds", "0,1",
                             "--epochs", "1", "--limit", "500", "--test-limit", "200", "--workers", "1",
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "failed  keras/default/seed1: error: --out" in result.stdout
    assert "already holds files" in result.stdout
    assert (blocked / "notes.txt").read_text() == "mine" and sorted(os.listdir(blocked)) == ["notes.txt"]
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert [(r["seed"], r["status"]) for r in runs] == [(0, "done"), (1, "failed")]
    assert "already holds files" in runs[1]["error"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """A Dask scheduler and two one-thread workers on 127.0.0.1, able to import convnet from this checkout."""
    from dask.distributed import Client
    address = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    log = open(tmp_path / "dask.log", "w")
    common = dict(cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    processes = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port",
                                   address.rsplit(":", 1)[1], "--no-dashboard"], **common)]
    try:
        for i in range(2):
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                 "--host", "127.0.0.1", "--name", f"w{i}", "--local-directory", str(tmp_path / f"w{i}")], **common))
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address, processes[1:]
    finally:
        for p in processes:                    # nothing to keep: no graceful shutdown to wait for
            if p.poll() is None:
                p.kill()
            p.wait()
        log.close()


def proc_stat(pid):
    """(state, parent) of a process from /proc, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def alive(pid):
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in "ZX"            # a zombie has stopped: nobody reaped it yet


def children(pid, containing):
    """The live processes whose parent is ``pid`` and whose command line contains ``containing``."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        stat = proc_stat(entry.name)
        try:
            if stat and stat[1] == pid and alive(entry.name) and containing in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def training_worker(address, workers, out):
    """The worker process now training a run that has no metrics yet, and that run's name."""
    from dask.distributed import Client
    with Client(address, timeout="30s") as client:
        names = {addr: info["name"] for addr, info in client.scheduler_info()["workers"].items()}
        for addr, keys in client.processing().items():
            for key in keys:
                name = str(key).removeprefix("sweep-").rsplit("-", 1)[0]
                if not (out / name / "metrics.json").exists():
                    return workers[int(str(names[addr]).removeprefix("w"))], name
    return None, None


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker's runs in /proc")
def test_dask_sweep_survives_a_worker_killed_mid_run(dask_cluster, tmp_path):
    address, workers = dask_cluster
    out = tmp_path / "sweep"
    running = start_sweep(out, "--scheduler", address)
    wait_for_metrics(out, running)
    deadline = time.monotonic() + 120
    trainers = []
    while not trainers and time.monotonic() < deadline:         # a worker whose experiments.mnist is training
        victim, lost = training_worker(address, workers, out)
        if victim is not None:
            trainers = children(victim.pid, str(out / lost).encode())
        time.sleep(0.2)
    assert trainers, "no worker was training after the first run finished"
    victim.kill()                                              # mid-run: the run is lost with its worker
    victim.wait()
    written = (out / lost / "metrics.json").exists()           # (it may just have finished)
    deadline = time.monotonic() + 10                           # and its experiments.mnist dies with it
    while any(alive(pid) for pid in trainers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in trainers if alive(pid)]

    stdout, err = running.communicate(timeout=300)
    assert running.returncode == 0, err
    check_complete(out)
    # each reported once: trained, or (a task whose worker died after writing its run) found finished
    finished = [line.split()[1] for line in stdout.splitlines() if line.startswith(("done ", "found "))]
    assert sorted(finished) == sorted(RUNS), stdout
    if not written:
        assert f"done    {lost} " in stdout                    # the lost run was trained again
