"""Mutation testing: plant each realistic bug of :mod:`tools.mutations` and see whether the tests notice.

    python -m tools.mutants                     # every mutation (tens of minutes on 2 cores)
    python -m tools.mutants --only ID [ID ...]  # some of them; their results are merged into the report
    python -m tools.mutants --file convnet/rng.py
    python -m tools.mutants --list              # the table, nothing run

The working tree is never touched: the repository's files (tracked, and
untracked ones that git does not ignore) are copied to a temporary
directory, and each mutation is applied there, tested and undone. The test
files that should catch a bug in the mutated file (:data:`tools.mutations.TESTS`)
run with ``python -m pytest -x -q -p no:cacheprovider``: the first failure
kills the mutant; a mutant that passes them all survived. A run that
exceeds ``--timeout`` seconds of CPU time counts as killed (the bug made the
tests hang) but is listed apart, as a timeout.

numba's on-disk cache never passes from one mutant to another: every
test run gets a fresh ``NUMBA_CACHE_DIR``. It starts as a copy of the cache
the unmutated code compiled in the baseline run, except for mutations of
the files whose code that cache holds (:data:`tools.mutations.NUMBA_CACHED`),
which start empty and compile the mutant.

Before any mutant, the baseline (unmutated) run of every test file involved
must pass, or nothing is measured. Results go to ``tools/results/mutants.json``
(``--out``): per mutation its status (``killed``, ``survived``, ``timeout``),
the first failing test, the seconds it took, and the kill rate over the
mutations not marked equivalent.
"""
import argparse
import datetime
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .mutations import MUTATIONS, NUMBA_CACHED, TESTS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tools" / "results" / "mutants.json"
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]


class UsageError(Exception):
    pass


def apply(text, mutation):
    """``text`` with the mutation's snippet replaced; the snippet must occur exactly once."""
    count = text.count(mutation.original)
    if count != 1:
        raise ValueError(f"mutation {mutation.id}: its snippet occurs {count} times in {mutation.file}, "
                         f"expected exactly once (the code changed: update tools/mutations.py)")
    return text.replace(mutation.original, mutation.replacement)


def repository_files(root):
    """Paths (relative) of the files git tracks, and the untracked ones it does not ignore."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=root, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (root / p).is_file()]


def copy_repository(root, dest):
    for rel in repository_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)           # keeps mtimes: numba's cache index compares them


#: the wall-clock limit of a test run is this many times its CPU-time limit (a deadlock uses no CPU)
WALL_FACTOR = 6


def _limit_cpu(seconds):
    def limit():
        resource.setrlimit(resource.RLIMIT_CPU, (int(seconds), int(seconds) + 5))
    return limit


def run_tests(repo, tests, cache_dir, timeout):
    """Run pytest on ``tests`` inside ``repo``; returns (status, first failing test or None, seconds, tail).

    ``timeout`` limits the CPU time of the run (on a machine shared with
    other work, wall-clock time says little about a hang), and ``WALL_FACTOR``
    times it its wall-clock time. The run is its own process group, killed
    whole if this process is interrupted.
    """
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": str(repo)}
    start = time.monotonic()
    proc = subprocess.Popen(PYTEST + tests, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, preexec_fn=_limit_cpu(timeout))
    try:
        output, _ = proc.communicate(timeout=timeout * WALL_FACTOR)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "timeout", None, time.monotonic() - start, ""
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    seconds = time.monotonic() - start
    tail = "\n".join(output.strip().splitlines()[-15:])
    if proc.returncode == 0:
        return "passed", None, seconds, tail
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout", None, seconds, tail
    failed = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    if proc.returncode in (1, 2) or proc.returncode < 0:      # failures, collection errors, a crash
        return "failed", failed.group(1) if failed else f"exit status {proc.returncode}", seconds, tail
    return "error", None, seconds, tail


def summary(results):
    """Counts and the kill rate (killed / mutations not marked equivalent)."""
    by_id = {m.id: m for m in MUTATIONS}
    real = [r for r in results if not by_id[r["id"]].equivalent]
    killed = sum(r["status"] in ("killed", "timeout") for r in real)
    return {"mutations": len(results), "equivalent": len(results) - len(real), "killed": killed,
            "survived": [r["id"] for r in real if r["status"] == "survived"],
            "timeouts": [r["id"] for r in real if r["status"] == "timeout"],
            "kill_rate": round(killed / len(real), 4) if real else None}


def _git_commit(root):
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def select(only, files):
    known = {m.id for m in MUTATIONS}
    unknown = [i for i in only or [] if i not in known]
    if unknown:
        raise UsageError(f"unknown mutation id(s) {', '.join(unknown)}; see python -m tools.mutants --list")
    bad_files = [f for f in files or [] if f not in TESTS]
    if bad_files:
        raise UsageError(f"no mutations in {', '.join(bad_files)}; expected one of {', '.join(sorted(TESTS))}")
    chosen = [m for m in MUTATIONS if (not only or m.id in only) and (not files or m.file in files)]
    if not chosen:
        raise UsageError("no mutation matches --only and --file together")
    return chosen


def load_previous(out):
    """Earlier results to merge with (a report that cannot be read is not merged, nor overwritten silently)."""
    if not out.exists():
        return {}
    try:
        data = json.loads(out.read_text())
        return {r["id"]: r for r in data["results"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read the earlier report {out} ({exc}); move it away or pass --fresh") from None


def run(mutations, out, timeout, merge, log=print):
    previous = load_previous(out) if merge else {}
    commit = _git_commit(ROOT)
    with tempfile.TemporaryDirectory(prefix="convnet-mutants-") as tmp:
        tmp = Path(tmp)
        repo, baseline_cache = tmp / "repo", tmp / "numba-baseline"
        copy_repository(ROOT, repo)
        test_files = sorted({t for m in mutations for t in TESTS[m.file]})
        log(f"baseline: {len(test_files)} test files on the unmutated copy in {repo} ...")
        status, failed, seconds, tail = run_tests(repo, test_files, baseline_cache, timeout * 3)
        if status != "passed":
            log(tail)
            raise RuntimeError(f"the unmutated code does not pass its tests ({status}: {failed}); "
                               f"fix that before measuring mutants")
        log(f"baseline passed in {seconds:.0f} s")
        results = dict(previous)
        for number, m in enumerate(mutations, 1):
            path = repo / m.file
            original = path.read_text()
            path.write_text(apply(original, m))
            cache = tmp / f"numba-{number}"
            if m.file in NUMBA_CACHED:
                cache.mkdir()
            else:
                shutil.copytree(baseline_cache, cache)
            try:
                status, failed, seconds, tail = run_tests(repo, TESTS[m.file], cache, timeout)
            finally:
                shutil.copy2(ROOT / m.file, path)     # the original, with its mtime
                shutil.rmtree(cache, ignore_errors=True)
            if status == "error":
                log(tail)
                raise RuntimeError(f"mutation {m.id}: pytest itself failed; see the output above")
            verdict = {"passed": "survived", "failed": "killed"}.get(status, status)
            results[m.id] = {"id": m.id, "file": m.file, "bug": m.bug, "status": verdict,
                             "killed_by": failed, "seconds": round(seconds, 1), "commit": commit,
                             "date": datetime.date.today().isoformat(),
                             **({"equivalent": m.equivalent} if m.equivalent else {})}
            note = f" (equivalent: {m.equivalent})" if m.equivalent and verdict == "survived" else ""
            log(f"[{number}/{len(mutations)}] {verdict:8s} {m.id:32s} {seconds:5.0f} s  {failed or ''}{note}")
    ordered = [results[m.id] for m in MUTATIONS if m.id in results]
    report = {"command": "python -m tools.mutants", "summary": summary(ordered), "results": ordered}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp_out, out)
    return report


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.mutants", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutations only")
    parser.add_argument("--file", nargs="+", metavar="PATH", help="run the mutations of these files only")
    parser.add_argument("--timeout", type=float, default=600,
                        help="CPU seconds per mutant's test run (default 600; wall clock: 6 times that)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report (default tools/results/mutants.json)")
    parser.add_argument("--fresh", action="store_true", help="do not merge with the results already in --out")
    parser.add_argument("--list", action="store_true", help="print the table and exit")
    args = parser.parse_args(argv)
    try:
        if not args.timeout > 0:
            raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout}")
        mutations = select(args.only, args.file)
        if args.list:
            for m in mutations:
                print(f"{m.id:32s} {m.file:30s} {m.bug}" + (f"  [equivalent: {m.equivalent}]" if m.equivalent else ""))
            return 0
        if args.out.exists() and args.out.is_dir():
            raise UsageError(f"--out {args.out} is a directory; expected a .json file path")
        for m in mutations:                      # every snippet still in place, before any work
            apply((ROOT / m.file).read_text(), m)
        for sig in (signal.SIGINT, signal.SIGTERM):   # stopped either way: the running tests and the copy go too
            signal.signal(sig, _interrupt)
        report = run(mutations, args.out, args.timeout, merge=not args.fresh)
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; the report was not written", file=sys.stderr)
        return 130
    s = report["summary"]
    print(f"killed {s['killed']} of {s['mutations'] - s['equivalent']} mutations "
          f"({100 * s['kill_rate']:.0f}%), {s['equivalent']} marked equivalent; survived: "
          f"{', '.join(s['survived']) or 'none'}; report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
