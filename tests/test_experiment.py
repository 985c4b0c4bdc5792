"""``python -m experiments.mnist`` end to end on real MNIST: results, files, resume, Ctrl-C.

These train on small subsets so they stay quick; MNIST is fetched into the
cache (``~/.cache/convnet/mnist``) on first use.
"""
import json
import os
import shlex
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import one_thread
from convnet import Sequential
from convnet.saving import load_checkpoint, load_model, save_model
from experiments import mnist

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("serial")]    # one thread: see conftest.serial

#: A tiny run: 8 batches of 32 per epoch, 2 epochs, 128 test images.
TINY = ["--limit", "256", "--test-limit", "128", "--batch-size", "32", "--seed", "3", "--quiet", "--no-plots"]


def run(out, *args):
    return mnist.main([*args, "--out", str(out)])


def arrays(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "format"}


def without_seconds(history):
    return {k: v for k, v in history.items() if k != "seconds"}


def assert_same_run(dir_a, dir_b):
    """Bit-identical model, optimizer state and history (timings aside)."""
    a, b = arrays(dir_a / "model.npz"), arrays(dir_b / "model.npz")
    assert a.keys() == b.keys()
    for key in a:
        if key != "training":
            assert np.array_equal(a[key], b[key]), key
    ca, cb = load_checkpoint(dir_a / "model.npz"), load_checkpoint(dir_b / "model.npz")
    assert ca.epoch == cb.epoch
    assert without_seconds(ca.history) == without_seconds(cb.history)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (dir_a, dir_b))
    assert ma["final"] == mb["final"]



@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The reference: 2 epochs without interruption (the default recipe, with --augment)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    with one_thread():
        assert run(out, *TINY, "--epochs", "2", "--augment") == 0
    return out


@pytest.fixture(scope="module")
def straight_keras(tmp_path_factory):
    """The reference for extending a finished run: 2 epochs of the keras recipe without interruption."""
    out = tmp_path_factory.mktemp("straight_keras") / "run"
    with one_thread():
        assert run(out, *TINY, "--epochs", "2", "--recipe", "keras") == 0
    return out


def test_short_run_learns_and_writes_consistent_results(tmp_path, capsys):
    out = tmp_path / "runs" / "ci"
    assert run(out, "--epochs", "1", "--limit", "10000", "--test-limit", "2000", "--quiet") == 0
    printed = capsys.readouterr().out
    assert "final test  loss" in printed and "final train loss" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["final"]["test"]
    assert test["accuracy"] > 0.90, metrics["final"]
    assert metrics["data"] == {"train_examples": 10000, "test_examples": 2000}
    assert metrics["model"]["params"] == 150_858
    assert metrics["epochs_completed"] == 1 and len(metrics["history"]["loss"]) == 1
    assert metrics["seconds_per_epoch"] == metrics["history"]["seconds"]
    assert set(metrics["versions"]) >= {"python", "numpy", "numba", "convnet"}
    assert metrics["seed"] == 0 and metrics["args"]["lr"] == 1e-3 and metrics["args"]["recipe"] == "convnet"
    # the final running mean is the history's last value; the last val_* is the final test result
    assert metrics["final"]["train_running_mean"]["accuracy"] == metrics["history"]["accuracy"][-1]
    assert metrics["history"]["val_accuracy"][-1] == test["accuracy"]
    cm = np.array(metrics["confusion_matrix"])
    assert cm.sum() == 2000 and np.trace(cm) / 2000 == test["accuracy"] and cm.sum() - np.trace(cm) == test["errors"]

    assert metrics["files"] == ["model.npz", "checkpoint.npz", "metrics.json", *mnist.PLOTS]
    for name in metrics["files"]:
        assert (out / name).stat().st_size > 1000, name
    assert not [f for f in os.listdir(out) if f.startswith(".") and f != mnist.RUN_MARKER], \
        "temporary files left behind"
    assert mnist.latest_run(tmp_path / "runs") == out.resolve()

    # the saved model reproduces the reported test result
    from convnet.datasets import load_mnist, preprocess
    _, (x_test, y_test) = load_mnist(verbose=False)
    model = load_model(out / "model.npz")
    assert model.evaluate(preprocess(x_test[:2000]), y_test[:2000]) == [test["loss"], test["accuracy"]]


def test_resume_continues_bit_for_bit(straight_keras, tmp_path):
    out = tmp_path / "run"
    assert run(out, *TINY, "--epochs", "1", "--recipe", "keras") == 0
    assert load_checkpoint(out / "checkpoint.npz").epoch == 1
    assert run(out, *TINY, "--epochs", "2", "--recipe", "keras", "--resume") == 0
    assert load_checkpoint(out / "checkpoint.npz").epoch == 2
    assert_same_run(straight_keras, out)
    assert json.loads((out / "metrics.json").read_text())["resumed_from_epoch"] == 1


def test_convnet_recipe_cannot_be_extended_because_its_schedule_spans_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(out, *TINY, "--epochs", "1") == 0
    capsys.readouterr()
    assert run(out, *TINY, "--epochs", "2", "--resume") == 2
    assert "--epochs must stay 1 (got 2)" in one_error_line(capsys)


def test_checkpoints_from_before_the_recipes_resume_as_the_keras_recipe(tmp_path, capsys):
    fake_checkpoint(tmp_path, drop=("recipe", "augment", "validation"))      # written before these existed
    assert run(tmp_path, *TINY, "--epochs", "2", "--resume") == 2
    assert "changed: --recipe keras -> convnet" in one_error_line(capsys)


def test_recipes_differ_only_in_schedule_and_averaging(tmp_path):
    from convnet import schedules
    keras = mnist.make_optimizer("adam", 1e-3, 0.0, "keras")
    assert keras.get_config() == {"learning_rate": 1e-3, "use_ema": False, "ema_momentum": 0.99,
                                  "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
    ours = mnist.make_optimizer("adam", 1e-3, 0.0, "convnet", total_steps=18750)
    assert isinstance(ours.learning_rate, schedules.CosineDecay)
    assert ours.learning_rate.get_config()["decay_steps"] == 18750
    assert ours.learning_rate(0) == 1e-3 and ours.learning_rate(18750) == 0
    assert ours.use_ema and ours.ema_momentum == mnist.EMA_MOMENTUM == 0.999


def test_the_convnet_recipe_augments_unless_told_not_to(tmp_path):
    def augment(*argv):
        return mnist.parse_args([*argv, "--out", str(tmp_path / "r")]).augment
    assert augment() is True and augment("--no-augment") is False
    assert augment("--recipe", "keras") is False and augment("--recipe", "keras", "--augment") is True


def test_each_recipe_has_its_dropout_unless_given(tmp_path):
    def dropout(*argv):
        return mnist.parse_args([*argv, "--out", str(tmp_path / "r")]).dropout
    assert dropout() == [0.1, 0.1, 0.3] and dropout("--recipe", "keras") == [0.25, 0.25, 0.5]
    assert dropout("--dropout", "0.2,0.2,0.2") == dropout("--recipe", "keras", "--dropout", "0.2,0.2,0.2") == [0.2] * 3


def test_validation_holds_out_the_last_training_images(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(out, "--limit", "300", "--validation", "44", "--epochs", "1", "--seed", "3", "--no-plots") == 0
    printed = capsys.readouterr().out
    assert "MNIST: 256 training and 44 validation images" in printed and "final validation loss" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == {"train_examples": 256, "validation_examples": 44}
    assert "test" not in metrics["final"] and sum(map(sum, metrics["confusion_matrix"])) == 44
    from convnet.datasets import load_mnist, preprocess
    (x, y), _ = load_mnist(verbose=False)
    val = load_model(out / "model.npz").evaluate(preprocess(x[256:300]), y[256:300])
    assert val == [metrics["final"]["validation"]["loss"], metrics["final"]["validation"]["accuracy"]]


def test_the_schedule_spans_every_step_including_a_partial_last_batch(tmp_path):
    # 100 images in batches of 32: three full batches and a partial one, four steps an epoch
    out = tmp_path / "run"
    assert run(out, "--limit", "100", "--test-limit", "64", "--batch-size", "32", "--epochs", "2", "--no-augment",
               "--quiet", "--no-plots") == 0
    opt = load_model(out / "model.npz").optimizer
    assert opt.iterations == 8 == opt.learning_rate.get_config()["decay_steps"]
    assert opt.learning_rate(opt.iterations) == 0


def interrupt_at(monkeypatch, call):
    """Make the ``call``-th training step raise KeyboardInterrupt, as Ctrl-C would."""
    original = Sequential.train_step
    calls = []

    def train_step(self, x, y):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(Sequential, "train_step", train_step)


def test_ctrl_c_keeps_last_epoch_and_resume_command_works(straight, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 8 + 3)                    # epoch 2, batch 3
    assert run(out, *TINY, "--epochs", "2", "--augment") == 130
    err = capsys.readouterr().err
    assert "interrupted after 1 of 2 epochs" in err
    assert load_checkpoint(out / "checkpoint.npz").epoch == 1
    assert not (out / "model.npz").exists() and not (out / "metrics.json").exists()
    assert not [f for f in os.listdir(out) if f.startswith(".") and f != mnist.RUN_MARKER]

    monkeypatch.undo()
    command = shlex.split(err.strip().splitlines()[-1])
    assert command[:3] == ["python", "-m", "experiments.mnist"] and "--resume" in command
    assert mnist.main(command[3:]) == 0
    assert_same_run(straight, out)


def test_ctrl_c_in_first_epoch_says_nothing_to_resume(tmp_path, monkeypatch, capsys):
    interrupt_at(monkeypatch, 2)
    assert run(tmp_path / "run", *TINY, "--epochs", "2") == 130
    assert "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def fake_checkpoint(out, drop=(), **changes):
    """A checkpoint as a TINY run would leave it (epoch 1), without training (``drop``: settings left out)."""
    args = mnist.parse_args([*TINY, "--epochs", "2", "--out", str(out)])
    saved = {k: getattr(args, k) for k in mnist.RESUME_ARGS if k not in drop} | changes
    model = mnist.build_model(3)
    model.compile("adam")
    save_model(model, out / "checkpoint.npz", epoch=1, history={"loss": [2.0]}, metadata={"args": saved})


def one_error_line(capsys):
    """What the command printed on stderr: exactly one line starting with ``error:`` (no traceback)."""
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_resume_refuses_changed_settings(tmp_path, capsys):
    fake_checkpoint(tmp_path, lr=0.01)
    assert run(tmp_path, *TINY, "--epochs", "2", "--resume") == 2
    assert "changed: --lr 0.01 -> 0.001" in one_error_line(capsys)


def test_existing_checkpoint_is_not_overwritten_without_resume(tmp_path, capsys):
    fake_checkpoint(tmp_path)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    assert run(tmp_path, *TINY, "--epochs", "2") == 2
    assert "add --resume" in one_error_line(capsys)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


def test_resume_without_checkpoint_or_out_is_an_error(tmp_path, capsys):
    assert run(tmp_path, *TINY, "--resume") == 2
    assert "no checkpoint" in one_error_line(capsys)
    with pytest.raises(SystemExit):
        mnist.main([*TINY, "--resume"])
    assert "--resume needs --out" in capsys.readouterr().err
    (tmp_path / "checkpoint.npz").write_bytes(b"PK\x03\x04 not really a zip")
    assert run(tmp_path, *TINY, "--resume") == 1
    assert "checkpoint.npz: cannot be read" in one_error_line(capsys)


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum applies to --optimizer sgd only"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--validation", "0"], "--validation must be at least 1"),
    (["--limit", "100", "--validation", "100"], "--validation 100 leaves no training images: expected fewer than 100"),
    (["--recipe", "fast"], "argument --recipe: invalid choice: 'fast'"),
])
def test_bad_arguments_are_explained(argv, message, capsys):
    with pytest.raises(SystemExit):
        mnist.parse_args(argv)
    assert message in capsys.readouterr().err


def test_sgd_defaults():
    args = mnist.parse_args(["--optimizer", "sgd", "--momentum", "0.9", "--out", "x"])
    assert (args.lr, args.momentum) == (0.01, 0.9)
    optimizer = mnist.make_optimizer(args.optimizer, args.lr, args.momentum)
    assert optimizer.get_config() == {"learning_rate": 0.01, "use_ema": False, "ema_momentum": 0.99,
                                      "momentum": 0.9, "nesterov": False}


def test_threads_option_sets_and_restores_convnet_threads():
    from convnet.engine import threads
    before = threads.get_num_threads()
    with mnist._thread_limit(1):
        assert threads.get_num_threads() == 1
    assert threads.get_num_threads() == before
    with mnist._thread_limit(None):
        assert threads.get_num_threads() == before
    assert mnist.parse_args(["--threads", "1", "--out", "x"]).threads == 1


def test_dropout_option_parses_three_rates_and_rejects_others():
    assert mnist.parse_args(["--dropout", "0.2,0.2,0.3", "--out", "x"]).dropout == [0.2, 0.2, 0.3]
    assert mnist.parse_args(["--recipe", "keras", "--out", "x"]).dropout == [0.25, 0.25, 0.5]
    for bad in ("0.2,0.2", "a,b,c", "0.2,0.2,1.0"):
        with pytest.raises(SystemExit):
            mnist.parse_args(["--dropout", bad, "--out", "x"])


# ------------------------------------------------------------ every mistake: one line, no traceback
@pytest.mark.parametrize("argv, message", [
    (["--lr", "nan"], "--lr must be positive (and finite), got nan"),
    (["--lr", "inf"], "--lr must be positive (and finite), got inf"),
    (["--optimizer", "sgd", "--momentum", "1.5"], "--momentum must be in [0, 1], got 1.5"),
    (["--optimizer", "sgd", "--momentum", "-0.1"], "--momentum must be in [0, 1]"),
    (["--optimizer", "sgd", "--momentum", "nan"], "--momentum must be in [0, 1], got nan"),
    (["--seed", "-1"], "--seed must be a non-negative integer"),
])
def test_bad_numbers_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        mnist.parse_args([*argv, "--out", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: " + message in err.splitlines()[-1] and "Traceback" not in err


def test_paths_that_are_files_are_usage_errors(tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    cases = [(["--data-dir", str(a_file)], f"--data-dir {a_file}: is a file, not a directory"),
             (["--data-dir", str(a_file / "mnist")], f"--data-dir {a_file / 'mnist'}: {a_file} is a file"),
             (["--out", str(a_file)], f"--out {a_file}: is a file, not a directory"),
             (["--out", str(a_file / "run")], f"--out {a_file / 'run'}: {a_file} is a file, not a directory")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            mnist.parse_args(argv + ([] if "--out" in argv else ["--out", str(tmp_path / "run")]))
        assert e.value.code == 2
        assert message in capsys.readouterr().err.splitlines()[-1]
    monkeypatch.setenv("CONVNET_DATA", str(a_file))
    with pytest.raises(SystemExit):
        mnist.parse_args(["--out", str(tmp_path / "run")])
    assert f"CONVNET_DATA {a_file}: is a file, not a directory" in capsys.readouterr().err
    assert a_file.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_read_only_out_is_a_usage_error(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(SystemExit):
        mnist.parse_args(["--out", str(locked / "run")])
    assert f"{locked} is not writable" in capsys.readouterr().err


def test_out_holding_other_files_is_refused_and_left_alone(tmp_path, capsys):
    (tmp_path / "model.npz").write_bytes(b"my own model")
    assert run(tmp_path, *TINY, "--epochs", "1") == 2
    assert "already holds files" in one_error_line(capsys)
    assert os.listdir(tmp_path) == ["model.npz"] and (tmp_path / "model.npz").read_bytes() == b"my own model"


def test_checkpoint_that_is_a_directory_or_lacks_settings(tmp_path, capsys):
    (tmp_path / "a" / "checkpoint.npz").mkdir(parents=True)
    assert run(tmp_path / "a", *TINY, "--resume") == 1
    assert "checkpoint.npz: is a directory" in one_error_line(capsys)
    (tmp_path / "b").mkdir()
    model = mnist.build_model(3)
    save_model(model, tmp_path / "b" / "checkpoint.npz", epoch=1, metadata={"args": ["not", "a", "dict"]})
    assert run(tmp_path / "b", *TINY, "--resume") == 1
    assert "does not record the settings of its run" in one_error_line(capsys)


def test_ctrl_c_before_training_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    def interrupted(args, say):
        raise KeyboardInterrupt
    monkeypatch.setattr(mnist, "load_data", interrupted)
    out = tmp_path / "runs" / "new"
    assert run(out, *TINY) == 130
    assert "nothing to resume" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []                  # neither runs/new nor runs is left


def test_mnist_unavailable_is_one_error(tmp_path, monkeypatch, capsys):
    from convnet.datasets import MNISTUnavailableError

    def unavailable(args, say):
        raise MNISTUnavailableError("could not obtain the MNIST file(s) train-images-idx3-ubyte.")
    monkeypatch.setattr(mnist, "load_data", unavailable)
    assert run(tmp_path / "run", *TINY) == 1
    assert "MNIST could not be loaded: could not obtain" in one_error_line(capsys)


def test_diverging_loss_is_one_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Sequential, "train_step", lambda self, x, y: (float("nan"), 0))
    assert run(tmp_path / "run", *TINY) == 1
    assert "loss became nan" in one_error_line(capsys)


def test_disk_full_keeps_the_last_checkpoint_and_prints_the_resume_command(straight, tmp_path, monkeypatch,
                                                                            capsys):
    import errno
    from convnet import saving
    original, saves = saving.save_model, []

    def full_disk(model, path, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(model, path, **kwargs)

    monkeypatch.setattr(saving, "save_model", full_disk)           # what ModelCheckpoint calls
    out = tmp_path / "run"
    assert run(out, *TINY, "--epochs", "2", "--augment") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / 'checkpoint.npz'}: No space left on device (the disk is full")
    assert "Traceback" not in err
    assert load_checkpoint(out / "checkpoint.npz").epoch == 1
    assert not [f for f in os.listdir(out) if f.startswith(".") and f != mnist.RUN_MARKER]
    monkeypatch.undo()
    command = shlex.split(err.strip().splitlines()[-1])
    assert mnist.main(command[3:]) == 0
    assert_same_run(straight, out)


def test_resume_command_reproduces_every_setting(tmp_path):
    args = mnist.parse_args(["--epochs", "3", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9",
                             "--seed", "7", "--dropout", "0.1,0.2,0.3", "--limit", "100", "--test-limit", "50",
                             "--threads", "1", "--data-dir", str(tmp_path), "--quiet", "--no-plots",
                             "--out", str(tmp_path / "run")])
    command = shlex.split(mnist._resume_command(args))
    again = mnist.parse_args(command[3:])
    assert vars(again) == {**vars(args), "resume": True}
    args = mnist.parse_args(["--recipe", "keras", "--augment", "--validation", "500", "--out", str(tmp_path / "r")])
    again = mnist.parse_args(shlex.split(mnist._resume_command(args))[3:])
    assert vars(again) == {**vars(args), "resume": True}


def test_latest_pointer_is_written_only_over_a_pointer(tmp_path, capsys):
    (tmp_path / "latest").write_text("my shopping list\n")
    assert mnist._point_latest_at(tmp_path / "run") is None
    assert (tmp_path / "latest").read_text() == "my shopping list\n"
    assert "left as it is" in capsys.readouterr().err
    (tmp_path / "latest").write_text(f"{tmp_path / 'old'}\n")
    mnist._point_latest_at(tmp_path / "run")
    assert mnist.latest_run(tmp_path) == (tmp_path / "run").resolve()
    for text in (b"", b"relative/run\n", b"\xff\xfe", b"/" + b"x" * 10 ** 6):
        (tmp_path / "latest").write_bytes(text)
        if len(text) > 4096:
            assert len(str(mnist.latest_run(tmp_path))) <= 4096     # read no further than a path
        else:
            with pytest.raises(FileNotFoundError, match="does not name a run directory"):
                mnist.latest_run(tmp_path)


# ------------------------------------------------------------------ one writer per run
def test_a_second_writer_of_a_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = mnist.RunOwner(out)                    # a run in progress (flock: per open file, so this conflicts)
    try:
        assert run(out, *TINY, "--epochs", "1") == 1
        err = one_error_line(capsys)
        assert f"is in use by another experiments.mnist (pid {os.getpid()} on " in err and "choose another --out" in err
        fake_checkpoint(out)
        assert run(out, *TINY, "--epochs", "2", "--resume") == 1
        assert "is in use by another experiments.mnist" in one_error_line(capsys)
        assert sorted(os.listdir(out)) == [mnist.RUN_MARKER, "checkpoint.npz"]
    finally:
        holder.release()


def test_the_lock_of_a_dead_run_is_no_obstacle(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / mnist.RUN_MARKER).write_text("pid 999999999 on elsewhere\n")   # left by a killed run: not locked
    fake_checkpoint(out)
    seen = []
    monkeypatch.setattr(mnist, "_resume", lambda args, path: seen.append(
        (out / mnist.RUN_MARKER).read_text()) or (_ for _ in ()).throw(mnist.CLIError("stop here")))
    assert run(out, *TINY, "--epochs", "2", "--resume") == 2
    assert seen == [f"pid {os.getpid()} on {mnist.platform.node()}\n"]
    assert (out / mnist.RUN_MARKER).exists()              # the run's own marker: kept


def test_two_runs_started_together_on_one_new_directory(tmp_path):
    """Real processes: one trains, the other is refused (before: both said "results in DIR/")."""
    import subprocess
    import sys

    out = tmp_path / "same"
    root = Path(mnist.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "experiments.mnist", *TINY, "--epochs", "1", "--out", str(out)]
    procs = [subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = sorted((p.wait(300), p.stdout.read(), p.stderr.read()) for p in procs)
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    (ok, out_a, _), (refused, _, err_b) = results
    assert ok == 0 and f"results in {out}" in out_a
    assert refused in (1, 2) and err_b.startswith("error: ") and "Traceback" not in err_b, err_b
    assert "in use by another experiments.mnist" in err_b or "add --resume" in err_b or "already holds" in err_b


def test_resume_in_a_folder_no_run_made_leaves_the_users_files_alone(tmp_path, capsys):
    fake_checkpoint(tmp_path)                            # a checkpoint copied into the user's own folder
    (tmp_path / "model.npz").write_bytes(b"my own model")
    (tmp_path / "metrics.json").write_text("{\"mine\": true}")
    assert run(tmp_path, *TINY, "--epochs", "2", "--resume") == 2
    err = one_error_line(capsys)
    assert "was not made by experiments.mnist" in err and "model.npz, metrics.json" in err
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz", "metrics.json", "model.npz"]
    assert (tmp_path / "model.npz").read_bytes() == b"my own model"


def test_sigterm_is_handled_like_ctrl_c(tmp_path, monkeypatch, capsys):
    import signal

    def terminated(args, say):                           # SIGTERM during start-up
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt")
    monkeypatch.setattr(mnist, "load_data", terminated)
    out = tmp_path / "runs" / "new"
    assert run(out, *TINY) == 130
    assert "nothing to resume" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # given back


def test_a_refused_resume_leaves_no_folder_or_marker_behind(tmp_path, capsys):
    assert run(tmp_path / "runs" / "new", *TINY, "--resume") == 2
    assert "no checkpoint" in one_error_line(capsys)
    assert os.listdir(tmp_path) == []
    fake_checkpoint(tmp_path)                            # a folder of the user's: only the marker it made goes
    assert run(tmp_path, *TINY, "--epochs", "2", "--resume", "--lr", "0.5") == 2
    assert "changed: --lr" in one_error_line(capsys)
    assert os.listdir(tmp_path) == ["checkpoint.npz"]
