"""The textbook's code beside the explorer's numbers: which lines of ``convnet/layers.py`` made each view.

For every layer the page shows the source of its textbook ``call`` and
``backprop``, of the activation's ``forward`` and ``backward``
(``convnet/activations.py``) and, for the last layer, of the fused softmax
and cross-entropy gradient (``convnet/losses.py``). The lines come from the
installed files, found with :mod:`inspect` (so they follow the code as it
is); the statements of each method body (not its docstring, not comments)
are the lines that computed the numbers and are marked to be highlighted.

Only these files are ever served, from a table read once (:func:`source_files`).
"""
import ast
import inspect
import os
import textwrap

#: the textbook modules whose source the page may show
MODULES = ("layers", "activations", "losses")


def _modules():
    from convnet import activations, layers, losses

    return {"layers": layers, "activations": activations, "losses": losses}


def source_files():
    """``{"layers.py": {"path": "convnet/layers.py", "lines": [...]}, ...}``: the files the page may read."""
    table = {}
    for name, module in _modules().items():
        path = inspect.getsourcefile(module)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        table[os.path.basename(path)] = {"path": f"convnet/{os.path.basename(path)}", "lines": text.splitlines()}
    return table


def method_lines(function, allowed):
    """Where ``function`` is: ``{"file", "qualname", "start", "end", "highlight": [[first, last], ...]}``.

    None when it is not defined in one of the ``allowed`` file names (an
    engine's code, a method patched in by a test).
    """
    function = inspect.unwrap(function)
    try:
        path = inspect.getsourcefile(function)
        lines, start = inspect.getsourcelines(function)
    except (TypeError, OSError):
        return None
    if path is None or os.path.basename(path) not in allowed:
        return None
    tree = ast.parse(textwrap.dedent("".join(lines)))
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]                                  # the docstring computes nothing
    return {"file": os.path.basename(path), "qualname": function.__qualname__, "start": start,
            "end": start + len(lines) - 1,
            "highlight": [[start + st.lineno - 1, start + st.end_lineno - 1] for st in body]}


def chain_code(allowed):
    """``Layer.forward`` and ``Layer.backward``: how every layer chains its own math and its activation."""
    base = _modules()["layers"].Layer
    out = []
    for when, what, fn in (("forward", "every layer's forward: z = call(x), then y = activation(z)", base.forward),
                           ("backward", "every layer's backward: dL/dz from dL/dy through the activation, "
                                        "then backprop(dL/dz)", base.backward)):
        where = method_lines(fn, allowed)
        if where is not None:
            out.append({"pass": when, "what": what, **where})
    return out


def layer_code(layer, last, fused, allowed):
    """The code of one layer's own forward and backward math, in the order it runs (see :func:`chain_code`).

    ``[{"pass": "forward" | "backward", "what": text, "file", "qualname", "start", "end", "highlight"}]``,
    taken from the textbook class of the same name in ``convnet.layers`` (the
    engine computes the same numbers behind the same contract).
    """
    mods = _modules()
    textbook = getattr(mods["layers"], type(layer).__name__, None)
    if not isinstance(textbook, type):
        return []
    act = mods["activations"].get(getattr(layer, "activation_name", None))
    linear = type(act).__name__ == "LinearFunction"
    steps = [("forward", "z = call(x): the layer's own math", textbook.call)]
    if not linear:
        steps.append(("forward", f"y = {type(act).__name__}.forward(z)", type(act).forward))
    if last and fused:
        loss = mods["losses"].SparseCategoricalCrossentropy
        steps.append(("backward", "dL/dz = softmax(z) - onehot(target), fused with the loss", loss.forward_logits))
    elif not linear:
        steps.append(("backward", f"dL/dz = {type(act).__name__}.backward(dL/dy, y)", type(act).backward))
    steps.append(("backward", "dL/dx (and the parameter gradients) = backprop(dL/dz)", textbook.backprop))
    out = []
    for when, what, fn in steps:
        where = method_lines(fn, allowed)
        if where is not None:
            out.append({"pass": when, "what": what, **where})
    return out
