"""The import graph: no circles in convnet, the textbook never imports the engine, experiments and benchmarks apart.

Every ``import`` statement counts, also those inside functions (an import
done on first use still ties the two modules together). ``from .a import
b`` is an arrow to the module ``a.b`` when that is a module, else to ``a``.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the textbook tier: what none of these imports, directly or through others
TEXTBOOK = ["convnet.layers", "convnet.activations", "convnet.losses", "convnet.optimizers", "convnet.windows",
            "convnet.rng"]


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package):
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def imports(path, known):
    """The modules of ``known`` that the file at ``path`` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:        # import a.b.c of a package a.b: the arrow is to a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(*packages):
    known = {}
    for package in packages:
        known.update(modules(package))
    return {name: imports(path, known) for name, path in known.items()}


def circles(edges):
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def reachable(edges, start):
    seen, todo = set(), [start]
    while todo:
        for w in edges.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_resolves_relative_imports():
    edges = graph("convnet")
    assert "convnet.engine.plan" in edges["convnet.engine.model"]          # from . import plan
    assert "convnet.layers" in edges["convnet.engine.plan"]                # from .. import layers
    assert "convnet.engine" in edges["convnet.backends"]                   # from . import engine (on first use)


def test_there_is_no_circle_of_imports_in_convnet():
    assert circles(graph("convnet")) == []


def test_the_textbook_never_imports_the_engine_nor_the_tier_switch():
    edges = graph("convnet")
    for name in TEXTBOOK:
        reached = reachable(edges, name)
        assert not {m for m in reached if m.startswith("convnet.engine") or m == "convnet.backends"}, name


def test_the_engine_never_imports_the_model_or_the_switch():
    edges = graph("convnet")
    for name in (n for n in edges if n.startswith("convnet.engine")):
        assert not reachable(edges, name) & {"convnet.model", "convnet.backends", "convnet.loop"}, name


def test_experiments_and_benchmarks_do_not_import_each_other():
    edges = graph("experiments", "benchmarks")
    crossing = sorted((a, b) for a, targets in edges.items() for b in targets
                      if a.split(".")[0] != b.split(".")[0])
    # the one exception: the benchmark of the explorer's latency times the explorer itself
    assert all(a == "benchmarks.explore_latency" for a, _ in crossing), crossing
