"""experiments.seeds: the seed tables and plot from recorded runs (small fake records)."""
import json

import pytest

from experiments import seeds


def record(path, accuracies):
    path.write_text(json.dumps({"final": {"test": {"accuracy": accuracies[-1]}},
                                "history": {"val_accuracy": accuracies}}))


@pytest.fixture
def results(tmp_path):
    for s, acc in enumerate([0.9930, 0.9940, 0.9935]):
        record(tmp_path / f"keras-seed{s}.json", [0.98, acc])
    for s, acc in enumerate([0.9904, 0.9932]):
        record(tmp_path / f"mnist-seed{s}.json", [0.98, 0.99, acc])
    (tmp_path / "mnist-dropout-0.2-seed0.json").write_text("{}")        # another study: not a group member
    return tmp_path


def test_table_lists_every_seed_with_mean_sd_median_min(results, capsys, tmp_path):
    assert seeds.main(["--results", str(results), "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "| Keras 3.15 / TF 2.21, seed recipe (3 seeds) | 99.30 | 99.40 | 99.35 | 99.350 | 0.050 | 99.35 | 99.30 |" in out
    assert "| convnet, --recipe keras (2 seeds) | 99.04 | 99.32 |  | 99.180 | 0.198 | 99.18 | 99.04 |" in out
    # (99.18 - 99.35) / sqrt(0.198^2 / 2 + 0.05^2 / 3)
    # Welch-Satterthwaite: 1.09 degrees of freedom, so t(0.975) is large (experiments.sweep's statistics)
    assert ("convnet (--recipe keras) - Keras: -0.170 points, standard error 0.143 (-1.2 standard errors), "
            "95% CI [-1.680, +1.340] (Welch)") in out
    assert (tmp_path / "p.png").stat().st_size > 5000


def test_a_broken_record_is_named(results, capsys):
    (results / "keras-seed7.json").write_text('{"final": {}}')
    with pytest.raises(SystemExit, match="keras-seed7.json: not a recorded run"):
        seeds.main(["--results", str(results)])


def test_empty_or_missing_directory_is_a_usage_error(tmp_path, capsys):
    for argv in (["--results", str(tmp_path)], ["--results", str(tmp_path / "nope")]):
        with pytest.raises(SystemExit) as e:
            seeds.main(argv)
        assert e.value.code == 2
    assert "no recorded runs" in capsys.readouterr().err


def test_per_epoch_means_over_seeds(results):
    groups = {key: seeds.load_group(results, prefix) for key, prefix, _ in seeds.GROUPS}
    text = seeds.per_epoch_table(groups)
    assert "| Keras 3.15 / TF 2.21, seed recipe | 98.00 | 99.35 |  |" in text
    assert "| convnet, --recipe keras | 98.00 | 99.00 | 99.18 |" in text


def test_runs_longer_than_ten_epochs_get_a_table_of_their_own(results):
    record(results / "long-seed0.json", [0.98] * 29 + [0.9960])
    groups = {key: seeds.load_group(results, prefix) for key, prefix, _ in seeds.GROUPS}
    short, long = seeds.per_epoch_table(groups).split("\n\n")
    assert "| convnet, --recipe keras | 98.00 | 99.00 | 99.18 |" in short and "long" not in short
    assert long.splitlines()[0].endswith("| 30 |") and long.splitlines()[2].endswith("| 99.60 |")
