"""What is timed: one :class:`Case` per table row, built from the seed model's real shapes.

Rows, by group (``--only`` picks groups):

* ``conv``  -- both Conv2D layers (28x28x1 -> 25x25x32 and 12x12x32 -> 9x9x32,
  4x4 kernels), batch 32: forward, backward-kernel (dW and db), and the full
  backward (dx, dW and db: convnet's layer always computes dW with dx, so a
  dx-only row would time code the library never runs);
* ``pool``  -- both MaxPool2D layers (25x25x32 -> 12x12x32, 9x9x32 -> 4x4x32): forward, backward;
* ``dense`` -- both Dense layers (512 -> 256, 256 -> 10): forward, backward (dx, dW, db);
* ``step``  -- one training step of the whole model: forward, loss, backward, Adam update;
* ``epoch`` -- one epoch of ``fit`` on MNIST (60,000 images, batch 32), or ``--steps`` batches
  scaled to 1,875 (an epoch's worth);
* ``inference`` -- ``predict`` over the 10,000 test images in batches of 1,000.

Each column (library) gets the same inputs and weights; :meth:`Case.check`
compares their results with convnet's before anything is timed.
"""
import math

import numpy as np

from . import checks
from .timing import Timed

GROUPS = ("conv", "pool", "dense", "step", "epoch", "inference")
EPOCH_SIZE = 60_000
TEST_SIZE = 10_000
BATCH = 32

CONVS = [("conv1", (BATCH, 28, 28, 1), 32, 4), ("conv2", (BATCH, 12, 12, 32), 32, 4)]
POOLS = [("pool1", (BATCH, 25, 25, 32), 2), ("pool2", (BATCH, 9, 9, 32), 2)]
DENSES = [("dense1", (BATCH, 512), 256), ("dense2", (BATCH, 256), 10)]


class Case:
    """One row: its columns (``Timed`` per library) and how their agreement is checked."""

    def __init__(self, group, name, detail, fns, compare_with, repeats, scale=1.0, number=None,
                 warmups=None, skipped=None, note=None):
        self.group, self.name, self.detail = group, name, detail
        self.columns = {lib: Timed(fn, warmup=(warmups or {}).get(lib), scale=scale, number=number)
                        for lib, fn in fns.items()}
        self.compare_with = compare_with        # callable(lib) -> check record, or None
        self.repeats = repeats
        self.skipped = skipped or {}            # library -> why it has no figure in this row
        self.note = note
        self.checks = {}

    def check(self):
        """Compare every other column with convnet's; returns True when all agree."""
        for lib in self.columns:
            if lib != "convnet":
                self.checks[lib] = self.compare_with(lib)
        return all(c["passed"] for c in self.checks.values())


def _shape(shape):
    return "x".join(map(str, shape))


def _glorot(rng, shape):
    fan_in = int(np.prod(shape[:-1]))
    fan_out = int(np.prod(shape[:-2])) * shape[-1] if len(shape) > 2 else shape[-1]
    limit = math.sqrt(6 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def _kernel_case(backends, group, name, detail, make, args, repeats):
    """A row whose columns each call ``backend.<make>(*args)``; checked output against output."""
    fns = {lib: getattr(backend, make)(*args) for lib, backend in backends.items()}

    def compare_with(lib):
        reference = backends["convnet"].outputs(fns["convnet"])
        return checks.compare(reference, backends[lib].outputs(fns[lib]))
    return Case(group, name, detail, fns, compare_with, repeats)


def conv_cases(backends, repeats, rng):
    cases = []
    for name, xshape, filters, k in CONVS:
        n, h, w, c = xshape
        oshape = (n, h - k + 1, w - k + 1, filters)
        x = rng.standard_normal(xshape, dtype=np.float32)
        kernel = _glorot(rng, (k, k, c, filters))
        bias = (0.1 * rng.standard_normal(filters)).astype(np.float32)
        dz = rng.standard_normal(oshape, dtype=np.float32)
        detail = f"{_shape(xshape)} -> {_shape(oshape)}, {k}x{k}"
        cases += [
            _kernel_case(backends, "conv", f"{name} forward", detail, "make_conv_forward", (x, kernel, bias), repeats),
            _kernel_case(backends, "conv", f"{name} backward-kernel", detail + " (dW, db)",
                         "make_conv_backward_kernel", (x, kernel, bias, dz), repeats),
            _kernel_case(backends, "conv", f"{name} backward-input+kernel", detail + " (dx, dW, db)",
                         "make_conv_backward", (x, kernel, bias, dz), repeats),
        ]
    return cases


def pool_cases(backends, repeats, rng):
    cases = []
    for name, xshape, size in POOLS:
        n, h, w, c = xshape
        oshape = (n, h // size, w // size, c)
        x = rng.standard_normal(xshape, dtype=np.float32)      # continuous values: no ties in a window
        dz = rng.standard_normal(oshape, dtype=np.float32)
        detail = f"{_shape(xshape)} -> {_shape(oshape)}, {size}x{size}"
        cases += [
            _kernel_case(backends, "pool", f"{name} forward", detail, "make_pool_forward", (x, size), repeats),
            _kernel_case(backends, "pool", f"{name} backward", detail, "make_pool_backward", (x, size, dz), repeats),
        ]
    return cases


def dense_cases(backends, repeats, rng):
    cases = []
    for name, xshape, units in DENSES:
        x = rng.standard_normal(xshape, dtype=np.float32)
        kernel = _glorot(rng, (xshape[1], units))
        bias = (0.1 * rng.standard_normal(units)).astype(np.float32)
        dz = rng.standard_normal((xshape[0], units), dtype=np.float32)
        detail = f"{_shape(xshape)} -> {xshape[0]}x{units}"
        cases += [
            _kernel_case(backends, "dense", f"{name} forward", detail, "make_dense_forward", (x, kernel, bias),
                         repeats),
            _kernel_case(backends, "dense", f"{name} backward", detail + " (dx, dW, db)", "make_dense_backward",
                         (x, kernel, bias, dz), repeats),
        ]
    return cases


def step_case(backends, weights, data, repeats):
    """One training step on the first batch; checked by comparing loss gradients (dropout off)."""
    xb, yb = data.x_train[:BATCH], data.y_train[:BATCH]
    fns = {lib: b.make_model(weights).make_train_step(xb, yb) for lib, b in backends.items()}

    def compare_with(lib):
        reference = backends["convnet"].make_model(weights).gradients(xb, yb)
        other = backends[lib].make_model(weights).gradients(xb, yb)
        return checks.compare(reference, other, what="loss and gradient of every weight, dropout off")
    return Case("step", "train step", f"batch {BATCH}: forward, loss, backward, Adam",
                fns, compare_with, repeats)


def epoch_case(backends, weights, data, repeats, steps=None):
    """``fit`` for one epoch, or for ``steps`` batches with the time scaled to a full epoch."""
    n = EPOCH_SIZE if steps is None else min(EPOCH_SIZE, steps * BATCH)
    x, y = data.x_train[:n], data.y_train[:n]
    scale = EPOCH_SIZE / n
    models = {lib: b.make_model(weights) for lib, b in backends.items()}
    fns = {lib: m.make_fit(x, y) for lib, m in models.items()}
    # warm-up: a two-batch fit compiles kernels and traces TF's train function
    warmups = {lib: m.make_fit(x[:2 * BATCH], y[:2 * BATCH]) for lib, m in models.items()}

    def compare_with(lib):
        # an epoch's dropout masks and shuffles differ between libraries, so the check is
        # that every library starts from the same weights; the step row checks the math
        return checks.compare(backends["convnet"].make_model(weights).weights(),
                              backends[lib].make_model(weights).weights(),
                              what="initial weights (the math of a step is checked in 'train step')")
    note = None if n == EPOCH_SIZE else f"{steps} batches of {BATCH} timed, scaled x{scale:g} to an epoch"
    return Case("epoch", "epoch (fit)", f"{EPOCH_SIZE:,} images, batch {BATCH}", fns, compare_with, repeats,
                scale=scale, number=1, warmups=warmups, note=note)


def inference_case(backends, weights, data, repeats, images=TEST_SIZE):
    """``predict`` over the test images in batches of 1,000; checked prediction against prediction."""
    n = min(TEST_SIZE, images)
    x = data.x_test[:n]
    scale = TEST_SIZE / n
    fns = {lib: b.make_model(weights).make_predict(x) for lib, b in backends.items()}

    def compare_with(lib):
        reference = backends["convnet"].outputs(fns["convnet"])
        return checks.compare(reference, backends[lib].outputs(fns[lib]), what="predicted probabilities")
    note = None if n == TEST_SIZE else f"{n:,} images timed, scaled x{scale:g} to 10,000"
    return Case("inference", "inference (predict)", f"{TEST_SIZE:,} images, batch 1000", fns, compare_with,
                repeats, scale=scale, note=note)


def build_cases(backends, data, groups, repeats, long_repeats, steps=None, inference_images=TEST_SIZE, seed=0):
    """All rows of the selected groups, in table order."""
    from .convnet_impl import seed_model

    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown benchmark group(s) {unknown}; expected some of {', '.join(GROUPS)}")
    rng = np.random.default_rng(seed)
    weights = seed_model(seed).get_weights()
    cases = []
    if "conv" in groups:
        cases += conv_cases(backends, repeats, rng)
    if "pool" in groups:
        cases += pool_cases(backends, repeats, rng)
    if "dense" in groups:
        cases += dense_cases(backends, repeats, rng)
    if "step" in groups:
        cases.append(step_case(backends, weights, data, repeats))
    if "epoch" in groups:
        cases.append(epoch_case(backends, weights, data, long_repeats, steps))
    if "inference" in groups:
        cases.append(inference_case(backends, weights, data, long_repeats, inference_images))
    return cases
