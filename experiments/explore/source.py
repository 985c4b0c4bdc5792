"""The textbook's code beside the explorer's numbers: which lines of ``convnet/layers.py`` made each view.

For every layer the page shows the source of its textbook ``call`` and
``backprop``, of the activation's ``forward`` and ``backward``
(``convnet/activations.py``) and, for the last layer, of the fused softmax
and cross-entropy gradient (``convnet/losses.py``). The lines come from the
installed files, found with :mod:`inspect` (so they follow the code as it
is). The lines marked to be highlighted are those that ran: the textbook
methods are run once on an image under :func:`sys.settrace`
(:func:`lines_run`), so at inference Dropout's training branch stays plain;
without that record, every statement of the method (not its docstring, not
a comment) is marked.

Only these files are ever served, from a table read once (:func:`source_files`).
"""
import ast
import inspect
import os
import sys
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


def method_lines(function, allowed, ran=None):
    """Where ``function`` is: ``{"file", "qualname", "start", "end", "highlight": [[first, last], ...]}``.

    ``highlight``: the statements among ``ran`` (line numbers that executed,
    see :func:`lines_run`), each with its continuation lines; without ``ran``
    every statement of the body. None when ``function`` is not defined in one
    of the ``allowed`` file names (an engine's code, a method patched in by a test).
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
    shift = start - 1
    if ran:
        # a simple statement with its continuation lines; a compound one (if, for, ...) by its first line
        extent = {}
        for statement in body:
            for node in ast.walk(statement):
                if isinstance(node, ast.stmt):
                    compound = any(isinstance(getattr(node, f, None), list) and getattr(node, f)
                                   and isinstance(getattr(node, f)[0], ast.stmt) for f in ("body", "orelse"))
                    extent[node.lineno + shift] = node.lineno + shift if compound else node.end_lineno + shift
        highlight = [[n, extent[n]] for n in sorted(ran) if n in extent]
    else:
        highlight = []
    if not highlight:
        highlight = [[st.lineno + shift, st.end_lineno + shift] for st in body]
    return {"file": os.path.basename(path), "qualname": function.__qualname__, "start": start,
            "end": start + len(lines) - 1, "highlight": highlight, "traced": bool(ran)}


def lines_run(run, functions):
    """``{function's code object: set of line numbers}``: the lines of ``functions`` that ``run()`` executed.

    Traces this thread only, and only inside those functions (every other
    call returns untraced); any trace function already set is restored.
    """
    codes = {inspect.unwrap(f).__code__ for f in functions}
    ran = {c: set() for c in codes}

    def inside(frame, event, arg):
        if event == "line":
            ran[frame.f_code].add(frame.f_lineno)
        return inside

    def calls(frame, event, arg):
        return inside if frame.f_code in codes else None

    before = sys.gettrace()
    sys.settrace(calls)
    try:
        run()
    finally:
        sys.settrace(before)
    return ran


def textbook_steps(layer, last, fused):
    """``[(pass, what, function)]`` of one layer: the textbook methods its forward and backward run, in order."""
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
    return steps


def run_textbook(model, x, target, fused):
    """One image through the textbook methods of :func:`textbook_steps`, called directly (no backend switch).

    ``model`` is a copy made for this (its layers keep the caches of this
    pass); inference, as the explorer's views are, and every layer computes
    its input gradient, as the Backward view's do.
    """
    import numpy as np

    losses = _modules()["losses"]
    activations = _modules()["activations"]
    kept, a = [], x
    for layer in model.layers:
        act = activations.get(getattr(layer, "activation_name", None))
        z = layer.call(a, False)
        a = act.forward(z)
        kept.append((layer, act, z, a))
    d = None
    for i in range(len(kept) - 1, -1, -1):
        layer, act, z, y = kept[i]
        if d is None:
            if not fused:
                return                    # a loss the explorer does not show the code of: forward only
            _, dz = losses.SparseCategoricalCrossentropy().forward_logits(np.array([target]), z)
        else:
            dz = act.backward(d, y)
        layer.need_input_grad = True
        d = layer.backprop(dz)


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


def layer_code(layer, last, fused, allowed, ran=None):
    """The code of one layer's own forward and backward math, in the order it runs (see :func:`chain_code`).

    ``[{"pass": "forward" | "backward", "what": text, "file", "qualname", "start", "end", "highlight", "traced"}]``,
    taken from the textbook class of the same name in ``convnet.layers`` (the
    engine computes the same numbers behind the same contract); ``ran`` is
    :func:`lines_run`'s record, if there is one.
    """
    out = []
    for when, what, fn in textbook_steps(layer, last, fused):
        code = getattr(inspect.unwrap(fn), "__code__", None)
        where = method_lines(fn, allowed, (ran or {}).get(code))
        if where is not None:
            out.append({"pass": when, "what": what, **where})
    return out
