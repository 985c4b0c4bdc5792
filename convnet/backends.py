"""Which tier computes the layers' math: ``"numpy"`` (the textbook) or ``"numba"`` (the engine).

    convnet.set_backend("numpy")          # every layer runs its own call/backprop
    convnet.get_backend()                 # -> "numpy"
    with convnet.backend("numba"): ...    # the engine (the default), then back

The textbook tier (:mod:`convnet.layers`, :mod:`convnet.activations`,
:mod:`convnet.optimizers`) states the math in plain NumPy. The engine
(:mod:`convnet.engine`) registers, for some of those classes, a faster
version with the same contract (same inputs, same outputs, same ``grads``,
same updates); :func:`implementation` hands out one or the other. A class the
engine does not know (a layer you wrote yourself) always runs its own code.

Switch between training steps, not inside one: a forward pass and its
backward pass must run on the same backend (each keeps what its own backward
needs).
"""
import contextlib
import weakref

BACKENDS = ("numpy", "numba")
_current = "numba"
_engine_classes = None                        # textbook class -> engine class, once the engine is loaded
_bound = weakref.WeakKeyDictionary()          # textbook object -> its engine object


def set_backend(name):
    """Choose the tier that computes every layer, activation and optimizer step from now on."""
    global _current
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(map(repr, BACKENDS))}")
    _current = name


def get_backend():
    """The backend in use: ``"numpy"`` or ``"numba"``."""
    return _current


@contextlib.contextmanager
def backend(name):
    """Run the block with backend ``name``; the previous one is restored afterwards."""
    before = _current
    set_backend(name)
    try:
        yield
    finally:
        set_backend(before)


def _engine():
    global _engine_classes
    if _engine_classes is None:
        from . import engine                  # imported on first use: the textbook never needs numba
        _engine_classes = engine.IMPLEMENTATIONS
    return _engine_classes


def implementation(obj):
    """What computes ``obj``'s math now: ``obj`` itself, or the engine's version of it (same methods)."""
    if _current == "numpy":
        return obj
    cls = _engine().get(type(obj))
    if cls is None:
        return obj
    impl = _bound.get(obj)
    if impl is None:
        impl = _bound[obj] = cls(obj)
    return impl


def running():
    """Context for a model-level call (a step, a prediction), where the thread pools are set up once.

    On either backend BLAS runs on one thread inside (many small products
    are slower on a pool of threads that wait for each other); the engine's
    own threads share the work instead (:mod:`convnet.engine.threads`).
    """
    from .engine import threads
    return threads.limited()
