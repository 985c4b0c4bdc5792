"""The textbook code shown beside the explorer's numbers (experiments/explore/source.py).

The excerpts must be the installed files' own lines: each method found by
name, its statements (not its docstring or comments) marked, and nothing
outside the three textbook files ever named.
"""
import inspect

from convnet import activations, layers, losses
from convnet.architectures import mnist_cnn
from experiments.explore import source


def _text(files, ref):
    return files[ref["file"]]["lines"][ref["start"] - 1:ref["end"]]


def test_the_served_files_are_the_textbook_files():
    files = source.source_files()
    assert sorted(files) == ["activations.py", "layers.py", "losses.py"]
    for name, module in (("layers.py", layers), ("activations.py", activations), ("losses.py", losses)):
        with open(inspect.getsourcefile(module), encoding="utf-8") as f:
            assert files[name]["lines"] == f.read().splitlines()
        assert files[name]["path"] == f"convnet/{name}"


def test_each_layer_shows_its_own_call_and_backprop_with_the_computing_lines_marked():
    files = source.source_files()
    model = mnist_cnn(seed=0)
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        refs = source.layer_code(layer, i == last, True, set(files))
        names = [r["qualname"] for r in refs]
        kind = type(layer).__name__
        assert f"{kind}.call" in names and f"{kind}.backprop" in names, names
        for r in refs:
            lines = _text(files, r)
            assert lines[0].lstrip().startswith("def "), (r, lines[0])
            marked = [n for a, b in r["highlight"] for n in range(a, b + 1)]
            assert marked and all(r["start"] < n <= r["end"] for n in marked)
            for n in marked:                          # statements only: no docstring, no comment line
                text = files[r["file"]]["lines"][n - 1].strip()
                assert text and not text.startswith("#") and not text.startswith('"""'), (r["qualname"], text)
    dense = source.layer_code(model.layers[-3], False, True, set(files))     # the relu Dense layer
    backprop = next(r for r in dense if r["qualname"] == "Dense.backprop")
    marked = [files["layers.py"]["lines"][n - 1] for a, b in backprop["highlight"] for n in range(a, b + 1)]
    assert any('self.grads["kernel"]' in t for t in marked)
    assert [r["qualname"] for r in dense] == ["Dense.call", "ReLUFunction.forward", "ReLUFunction.backward",
                                             "Dense.backprop"]
    top = [r["qualname"] for r in source.layer_code(model.layers[-1], True, True, set(files))]
    assert top == ["Dense.call", "SoftmaxFunction.forward", "SparseCategoricalCrossentropy.forward_logits",
                   "Dense.backprop"]
    chain = [r["qualname"] for r in source.chain_code(set(files))]
    assert chain == ["Layer.forward", "Layer.backward"]


def test_code_outside_the_textbook_files_is_never_named():
    assert source.method_lines(inspect.getsource, {"layers.py"}) is None          # the standard library
    assert source.method_lines(layers.Dense.call, {"activations.py"}) is None     # not an allowed file
    assert source.method_lines(len, {"layers.py"}) is None                        # no Python source at all


def test_the_lines_marked_are_the_lines_that_ran():
    import numpy as np

    from experiments.explore.core import Explorer

    model = mnist_cnn(seed=0)
    model.compile()
    explorer = Explorer(model)
    try:
        files = explorer.sources["layers.py"]["lines"]
        rows = {row["name"]: {c["qualname"]: c for c in row["code"]} for row in explorer.layers}
    finally:
        explorer.close()

    def marked(ref):
        return [files[n - 1].strip() for a, b in ref["highlight"] for n in range(a, b + 1)]
    dropout = rows["dropout"]["Dropout.call"]
    assert dropout["traced"] and marked(dropout)[0].startswith("if not training")
    assert not any("uniforms" in t for t in marked(dropout))            # the training branch did not run
    backprop = rows["conv2d"]["Conv2D.backprop"]
    assert backprop["traced"] and "return None" not in marked(backprop)
    assert any(t.startswith("return col2im(") for t in marked(backprop))
    # the record is of this thread only, and a trace function already set comes back
    seen = []

    def outer(frame, event, arg):
        seen.append(frame.f_code.co_name)
        return None
    import sys

    flat = layers.Flatten()
    sys.settrace(outer)
    try:
        ran = source.lines_run(lambda: layers.Flatten.call(flat, np.zeros((1, 2, 2, 1)), False), [layers.Flatten.call])
        assert sys.gettrace() is outer
    finally:
        sys.settrace(None)
    assert ran == {layers.Flatten.call.__code__: {inspect.getsourcelines(layers.Flatten.call)[1] + 1}}

