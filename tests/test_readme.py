"""The README stays short and true: its test command is CI's, its figures are today's."""
import json
import os
import re

import pytest

from tools import readme_figures

ROOT = readme_figures.ROOT


def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def test_readme_is_short():
    assert read("README.md").count("\n") <= 300


def test_ci_runs_the_readme_test_command_line_for_line():
    blocks = re.findall(r"^```bash\n(.*?)^```", read("README.md"), re.S | re.M)
    test_block = [b for b in blocks if "python -m pytest" in b]
    assert len(test_block) == 1, "the README has one block that runs the tests"
    ci = read(".ci", "run").splitlines()
    for line in test_block[0].strip().splitlines():
        assert line in ci, f"CI does not run the README's line {line!r}"


def test_readme_and_docs_never_mention_internal_issue_numbers():
    pages = ["README.md"] + [os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")]
    for page in pages:
        for n, line in enumerate(read(page).splitlines(), 1):
            assert not re.search(r"\b[Ii]ssues? #?\d+", line), f"{page}:{n} mentions an issue number: {line}"


def test_the_default_run_figure_is_the_recorded_run():
    record = json.loads(read("experiments", "results", "haswell", "default-seed0.json"))
    text = read("README.md")
    m = re.search(readme_figures.FIGURES["default"][0], text)
    assert m, "the README states the default run's accuracy and errors"
    assert float(m.group(1)) == round(100 * record["final"]["test"]["accuracy"], 2)
    assert int(m.group(2)) == record["final"]["test"]["errors"]
    assert record["args"]["recipe"] == "convnet" and record["seed"] == 0 and record["epochs_completed"] == 10
    assert record["args"]["limit"] is None and record["args"]["test_limit"] is None


def test_stated_rejects_a_readme_without_the_sentence():
    with pytest.raises(ValueError, match="quick"):
        readme_figures.stated("quick", "no figures here")


@pytest.mark.slow
def test_the_quick_model_reaches_the_readme_figure():
    assert readme_figures.measure("quick") == readme_figures.stated("quick", read("README.md"))


def test_the_results_table_is_the_sweeps_summary_of_the_recorded_runs(tmp_path):
    from experiments import sweep
    m = re.search(r"`(python -m experiments\.sweep --from-results [^`]*)`", read("README.md"))
    assert m, "the README names the command that made its results table"
    args = m.group(1).split()[3:]
    args[args.index("--out") + 1] = str(tmp_path / "recorded")
    assert sweep.main(args) == 0
    summary = (tmp_path / "recorded" / "summary.md").read_text()
    made = [row.split("|")[3:] for row in summary.splitlines() if re.match(r"\| \w+ \| recorded \| 10 \|", row)]
    shown = [row.split("|")[2:] for row in read("README.md").splitlines() if re.match(r"\| .* \| 10 \| ", row)]
    assert len(made) == len(shown) == 3
    for a, b in zip(made, shown):
        assert [c.strip().strip("*") for c in a] == [c.strip().strip("*") for c in b]
