"""Every Python block of the README and of the docs runs as written, and the docs site builds.

A page's blocks run in order in one fresh process (a later block may use an earlier one's names),
in an empty working folder. The only change a test makes is to the data: ``load_mnist`` returns the
first images of each split, so that a block training on MNIST runs in seconds. A block that cannot
run here (it needs the reader's own file) is fenced ```` ```python notest ```` and is the exception.
"""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
PAGES = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                               if f.endswith(".md"))
FENCE = re.compile(r"^([ \t]*)```([^\n`]*)\n(.*?)^\1```[ \t]*$", re.S | re.M)     # indented blocks too

#: the data a block trains on, shrunk: the first images of each split
TRAIN_IMAGES, TEST_IMAGES = 2000, 1000

PRELUDE = f"""
import convnet.datasets, convnet.datasets.mnist
_load = convnet.datasets.mnist.load_mnist
def _first_images(*args, **kwargs):
    (xtr, ytr), (xte, yte) = _load(*args, **kwargs)
    return (xtr[:{TRAIN_IMAGES}], ytr[:{TRAIN_IMAGES}]), (xte[:{TEST_IMAGES}], yte[:{TEST_IMAGES}])
convnet.datasets.load_mnist = convnet.datasets.mnist.load_mnist = _first_images
"""

RUNNER = """
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
exec(compile(sys.argv[2], "<prelude>", "exec"), {})
for line, source in blocks:
    try:
        exec(compile(source, f"{sys.argv[3]}, block at line {line}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: the block at line {line} of {sys.argv[3]}", file=sys.stderr)
        sys.exit(1)
"""


def python_blocks(text):
    """``[(line, source)]`` of the blocks fenced ```` ```python ````; ```` ```python notest ```` is left out."""
    blocks = []
    for m in FENCE.finditer(text):
        info = m.group(2).split()
        if info[:1] == ["python"] and "notest" not in info[1:]:
            blocks.append((text.count("\n", 0, m.start()) + 2, textwrap.dedent(m.group(3))))
    return blocks


def read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def test_python_blocks_finds_blocks_and_honours_notest():
    text = "a\n```python\nx = 1\n```\n\n```python notest\nopen('mine.png')\n```\n```bash\nls\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n")]
    assert python_blocks("- item:\n\n  ```python\n  if x:\n      y = 2\n  ```\n") == [(4, "if x:\n    y = 2\n")]


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(read(p))])
def test_every_python_block_runs(page, tmp_path):
    blocks = python_blocks(read(page))
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "blocks.json"), PRELUDE, page],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, textwrap.shorten(done.stdout, 2000) + "\n" + done.stderr[-4000:]


def test_a_failing_block_fails_the_page(tmp_path):
    (tmp_path / "blocks.json").write_text(json.dumps([(1, "x = 1\n"), (5, "assert x == 2\n")]))
    done = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "blocks.json"), "", "page.md"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "block at line 5 of page.md" in done.stderr


def test_docs_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
    pytest.importorskip("mkdocstrings", reason="the docs extra (mkdocstrings) is not installed")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8").count("Conv2D") > 3
    # the hook copied the linked source files, so links into the code resolve in the site
    assert (tmp_path / "site" / "repo" / "convnet" / "layers.py").is_file()
