"""The backprop guide names only code that exists, and links each name to the file that defines it."""
import importlib
import inspect
import os
import re

import pytest

DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs")
GUIDE = os.path.join(DOCS, "backprop.md")

NAME = re.compile(r"\bconvnet(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
# [`convnet.x.y`](../convnet/x.py)
LINK = re.compile(r"\[`(convnet(?:\.[A-Za-z_]\w*)+)`\]\(([^)]+)\)")


def resolve(dotted):
    """The object a dotted name refers to: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)          # AttributeError: the name does not exist
        return obj
    raise ImportError(dotted)


def guide_text():
    with open(GUIDE, encoding="utf-8") as f:
        return f.read()


def test_guide_mentions_many_functions():
    names = set(NAME.findall(guide_text()))
    assert len(names) >= 30


@pytest.mark.parametrize("name", sorted(set(NAME.findall(guide_text()))))
def test_every_named_object_exists(name):
    try:
        resolve(name)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"docs/backprop.md mentions {name}, which does not exist ({e})")


@pytest.mark.parametrize("name, target", sorted(set(LINK.findall(guide_text()))))
def test_links_point_to_the_defining_file(name, target):
    path = os.path.normpath(os.path.join(DOCS, target))
    assert os.path.isfile(path), f"link target {target} of {name} does not exist"
    obj = resolve(name)
    module = obj if inspect.ismodule(obj) else inspect.getmodule(inspect.unwrap(getattr(obj, "py_func", obj)))
    defining = os.path.normpath(module.__file__)
    assert os.path.samefile(defining, path), f"{name} is defined in {defining}, but the guide links to {target}"


def test_resolve_rejects_names_that_do_not_exist():
    with pytest.raises(AttributeError):
        resolve("convnet.layers.Conv2D.no_such_method")
    with pytest.raises(AttributeError):
        resolve("convnet.no_such_module")
