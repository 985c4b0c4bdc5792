"""argparse types shared by the command lines of the experiments and the benchmarks.

Each turns a command-line word into a value or raises
``argparse.ArgumentTypeError`` with one clear message (argparse prints it
as ``error: argument ...: <message>``, no traceback).
"""
import argparse


def bounded_int(low, high=None):
    """An argparse type: an integer of at least ``low`` (and at most ``high``), else a clear error."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"expected an integer {bounds}, got {value}")
        return value
    return parse


def comma_list(text, allowed, what):
    """``"a,b"`` -> ``["a", "b"]``, each one of ``allowed``; else an error naming the unknown ``what``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown or [text]}; expected a comma-separated "
                                         f"list of {','.join(allowed)}")
    return items
