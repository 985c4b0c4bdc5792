"""Which tier runs a model's layers: ``"textbook"`` or ``"engine"``, chosen at this one seam.

    convnet.set_backend("textbook")       # every layer runs its own call/backprop
    convnet.get_backend()                 # -> "textbook"
    with convnet.backend("engine"): ...   # the engine (the default), then back

The textbook tier (:mod:`convnet.layers`, :mod:`convnet.activations`,
:mod:`convnet.optimizers`, ...) states the math in plain NumPy and knows
nothing of the engine. A model does not call its layers itself: it hands
them to a *runner* (:func:`runner`), either the textbook's own loop
(:class:`convnet.loop.LayerLoop`: each layer's ``forward`` in order, each
``backward`` in reverse) or the engine's (:class:`convnet.engine.model.EngineModel`:
the same contract, computed by fused kernels and threads). The engine
imports the textbook, never the other way; it is imported on first use, so
the textbook tier alone never loads numba. A layer the engine does not know
(one you wrote yourself) runs its own code on either tier.

``"numpy"`` and ``"numba"`` are the older names of the two tiers and keep
working. Switch between training steps, not inside one: a forward pass and
its backward pass must run on the same tier (each keeps what its own
backward needs).
"""
import contextlib
import weakref

from .loop import LayerLoop

#: the two tiers
TIERS = ("textbook", "engine")
#: older names of the tiers, still accepted
ALIASES = {"numpy": "textbook", "numba": "engine"}
#: every name :func:`set_backend` accepts
BACKENDS = TIERS + tuple(ALIASES)
_current = "engine"
_engine_runners = weakref.WeakKeyDictionary()     # model -> its engine runner (which keeps its plans)


def set_backend(name):
    """Choose the tier that runs every model from now on: ``"textbook"`` or ``"engine"`` (or an alias)."""
    global _current
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(map(repr, BACKENDS))}")
    _current = name


def get_backend():
    """The backend in use, by the name it was set with (``"engine"`` unless set otherwise)."""
    return _current


def tier():
    """The tier in use: ``"textbook"`` or ``"engine"`` (an alias resolved)."""
    return ALIASES.get(_current, _current)


@contextlib.contextmanager
def backend(name):
    """Run the block with backend ``name``; the previous one is restored afterwards."""
    before = _current
    set_backend(name)
    try:
        yield
    finally:
        set_backend(before)


def runner(layers, owner=None):
    """What runs ``layers`` (a list) on the current tier: an object with ``forward``, ``backward``,
    ``infer``, ``apply``, ``augmenter`` and ``running``.

    ``owner`` (a model) keeps the engine's runner, and with it the plans
    the engine made for these layers, from one call to the next.
    """
    if tier() == "textbook":
        return LayerLoop(layers)
    from . import engine                  # imported on first use: the textbook never needs numba
    if owner is None:
        return engine.EngineModel(layers)
    found = _engine_runners.get(owner)
    if found is None or found.layers is not layers:
        found = _engine_runners[owner] = engine.EngineModel(layers)
    return found


def running():
    """Context for a model-level call: BLAS on one thread inside (:class:`convnet.cpu.limited`), on either tier.

    Runners enter it themselves; this older name is kept for code that
    times or profiles single layers.
    """
    from . import cpu
    return cpu.limited()
