"""Shape arithmetic shared by the layers, the window helpers, the references and the exporters.

Keras's rules: ``"valid"`` floors, ``"same"`` pads so that the output is
``ceil(size / stride)``, the odd padding going after (bottom/right).
"""
import math


def normalize_tuple(value, n, name):
    """``2 -> (2, 2)``; ``(2, 3) -> (2, 3)``; anything else is a ValueError."""
    if isinstance(value, int):
        value = (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(f"{name} must be a positive int or a tuple of {n} positive ints, got {value!r}")
    return value


def normalize_padding(padding):
    padding = str(padding).lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    return padding


def conv_output_size(size, k, stride, padding):
    """Output length along one axis, as Keras computes it.

    "valid": ``floor((size - k) / stride) + 1`` (so 25 -> 12 for a 2x2 pool,
    9 -> 4); "same": ``ceil(size / stride)``.
    """
    if padding == "same":
        return math.ceil(size / stride)
    return (size - k) // stride + 1


def pad_amounts(size, k, stride, padding):
    """(before, after) padding along one axis; TensorFlow puts the odd one after."""
    if padding == "valid":
        return 0, 0
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2
