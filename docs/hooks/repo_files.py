"""MkDocs hook: the docs link to the code they describe (``../convnet/layers.py``); those files are
outside ``docs/``, so this hook copies each linked file into the site under ``repo/`` and points the
links there. A link to a file that does not exist is left alone, and ``mkdocs build --strict`` fails
on it."""
import os
import re

from mkdocs.structure.files import File

LINK = re.compile(r"\]\(\.\./([^)#\s]+)(#[^)\s]*)?\)")
ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
PREFIX = "repo/"


def _targets(docs_dir):
    found = set()
    for name in os.listdir(docs_dir):
        if name.endswith(".md"):
            with open(os.path.join(docs_dir, name), encoding="utf-8") as f:
                found.update(m.group(1) for m in LINK.finditer(f.read()))
    return found


def on_files(files, config):
    for rel in sorted(_targets(config["docs_dir"])):
        path = os.path.join(ROOT, rel)
        if os.path.isfile(path) and not rel.endswith(".md"):
            files.append(File.generated(config, PREFIX + rel, abs_src_path=path))
        elif os.path.isdir(path):
            continue
    return files


def on_page_markdown(markdown, page, config, files):
    def repl(m):
        rel, anchor = m.group(1), m.group(2) or ""
        path = os.path.join(ROOT, rel)
        if os.path.isfile(path) and not rel.endswith(".md"):
            return f"]({PREFIX}{rel}{anchor})"
        return m.group(0)
    return LINK.sub(repl, markdown)
