"""The mutation table of ``python -m tools.mutants`` stays true to the code it mutates.

Each mutation's snippet must occur exactly once in its file (when the code
changes under it, this fails instead of the mutant silently testing
nothing), applying it must change the file into valid Python, and every
mutated file has test files that exist. The mutants themselves are run by
the tool, not here (tens of minutes).
"""
import ast
import json
from pathlib import Path

import pytest

from tools import mutants
from tools.mutations import MUTATIONS, NUMBA_CACHED, TESTS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_snippet_occurs_once_and_the_mutant_is_valid_python(mutation):
    text = (ROOT / mutation.file).read_text()
    assert text.count(mutation.original) == 1, f"{mutation.id}: snippet not found exactly once in {mutation.file}"
    mutated = mutants.apply(text, mutation)
    assert mutated != text
    ast.parse(mutated)                 # a syntax error would be 'killed' without testing anything


def test_table_is_well_formed():
    ids = [m.id for m in MUTATIONS]
    assert len(ids) == len(set(ids)) and len(ids) >= 40
    for m in MUTATIONS:
        assert m.file in TESTS, m.id
        assert m.bug and m.original != m.replacement
        assert m.equivalent is None or len(m.equivalent) > 10
    for file, tests in TESTS.items():
        assert (ROOT / file).is_file(), file
        assert tests and all((ROOT / t).is_file() for t in tests), file
    assert NUMBA_CACHED <= set(TESTS)


def test_apply_refuses_a_snippet_that_is_missing_or_repeated():
    m = MUTATIONS[0]
    with pytest.raises(ValueError, match="occurs 0 times"):
        mutants.apply("nothing here", m)
    with pytest.raises(ValueError, match="occurs 2 times"):
        mutants.apply(m.original + m.original, m)


def test_summary_leaves_equivalent_mutants_out_of_the_rate():
    real = next(m for m in MUTATIONS if not m.equivalent)
    other = next(m for m in MUTATIONS if not m.equivalent and m.id != real.id)
    equivalent = next(m for m in MUTATIONS if m.equivalent)
    s = mutants.summary([{"id": real.id, "status": "killed"}, {"id": other.id, "status": "survived"},
                         {"id": equivalent.id, "status": "survived"}])
    assert s == {"mutations": 3, "equivalent": 1, "killed": 1, "survived": [other.id], "timeouts": [],
                 "kill_rate": 0.5}


def test_the_committed_report_covers_the_whole_table():
    report = json.loads((ROOT / "tools" / "results" / "mutants.json").read_text())
    assert [r["id"] for r in report["results"]] == [m.id for m in MUTATIONS]
    assert report["summary"] == mutants.summary(report["results"])


@pytest.mark.parametrize("argv,message", [
    (["--only", "no-such-mutation"], "unknown mutation id"),
    (["--file", "convnet/utils.py"], "no mutations in convnet/utils.py"),
    (["--timeout", "0"], "--timeout must be a positive"),
    (["--only", MUTATIONS[0].id, "--file", "convnet/rng.py"] if MUTATIONS[0].file != "convnet/rng.py"
     else ["--only", MUTATIONS[0].id, "--file", "convnet/model.py"], "no mutation matches"),
])
def test_command_line_mistakes_are_one_error_line(argv, message, capsys):
    assert mutants.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_list_prints_the_table_without_running_anything(capsys):
    assert mutants.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(MUTATIONS) and lines[0].startswith(MUTATIONS[0].id)
