"""Agreement checks: before a row is timed, every column must compute the same thing.

Two results agree when, for every array they return, the largest absolute
difference is at most ``tol`` times the largest magnitude in either array
(``tol = 1e-4`` in float32). Scaling by the array's largest entry, rather
than element by element, keeps entries that are nearly zero (and so have
no meaningful relative error) from failing a correct result.
"""
import math

import numpy as np

TOLERANCE = 1e-4


def relative_error(a, b):
    """``max |a - b| / max(|a|, |b|)``; infinity when the shapes differ or a value is not finite."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.inf
    scale = max(np.abs(a).max(), np.abs(b).max())
    if scale == 0:
        return 0.0
    return float(np.abs(a - b).max() / scale)


def compare(reference, other, tol=TOLERANCE, what="outputs"):
    """Compare two lists of arrays; returns a JSON-ready record with ``passed``."""
    if len(reference) != len(other):
        return {"compared": what, "max_rel_err": math.inf, "tol": tol, "passed": False,
                "error": f"{len(reference)} arrays against {len(other)}"}
    errors = [relative_error(r, o) for r, o in zip(reference, other)]
    shapes = [list(np.shape(r)) for r in reference]
    mismatched = [i for i, (r, o) in enumerate(zip(reference, other)) if np.shape(r) != np.shape(o)]
    record = {"compared": what, "arrays": len(errors), "shapes": shapes,
              "max_rel_err": max(errors) if errors else 0.0, "tol": tol,
              "passed": all(e <= tol for e in errors)}
    if mismatched:
        record["error"] = "shape mismatch in array(s) " + ", ".join(
            f"{i}: {np.shape(reference[i])} vs {np.shape(other[i])}" for i in mismatched)
    return record
