"""Where the engine's Adam used to live: now :mod:`convnet.engine.adam` (this name is kept as an alias)."""
from .adam import Adam, adam_update  # noqa: F401
