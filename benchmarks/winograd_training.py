"""What would Winograd F(2x2, 4x4) save in *training*? conv2's work timed both ways, on one thread.

    python -m benchmarks.winograd_training [--images 16] [--repeats 100]

Inference computes the seed model's conv2 by Winograd
(:mod:`convnet.engine.inference`); training keeps im2col, the rounding every
recorded result was made with. This script measures what switching training
over would buy, per image, for conv2's two largest parts (issue 15;
docs/performance.md, round 8, has the figures):

* **forward**, today: the engine's pass (im2col and the product over all 81
  output positions, bias, ReLU, the 2x2 pooling with its ``argmax``).
  Winograd: the inference kernels over the 8x8 positions the pooling reads
  (input transform, 25 products, output transform with the pooling), the
  bias/ReLU/pooling pass training keeps over those 64 positions
  (``z``, ``y``, ``argmax``), and the 17 edge positions (9th row and
  column, which no pooling window reads but ``output`` shows) by im2col;
* **kernel gradient**, today: the engine's backward pass without the input
  gradient (im2col rebuilt, ``cols^T dz``). Winograd: each 2x2 block of the
  gradient ``g`` and the 5x5 input window ``d`` under it give a 4x4 block of
  the kernel gradient by F(4x4, 2x2), ``G^T [(A g A^T) * (B^T d B)] G``:
  F(2x2, 4x4)'s matrices with the roles of ``A`` and ``G`` exchanged, so
  ``B^T d B`` is what the forward pass already computed (not timed again),
  and the sum over blocks and images is 25 products over the channels.

It also prints each kernel gradient's error against a float64 reference.
Nothing here is used by convnet itself.
"""
import argparse
import os
import sys

import numpy as np
from numba import njit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.cli import bounded_int  # noqa: E402
from benchmarks.timing import Timed, prepare_all, repeat_all  # noqa: E402
from convnet import layers  # noqa: E402
from convnet.engine import kernels, threads, winograd  # noqa: E402
from convnet.engine import layers as engine_layers  # noqa: E402

H, C, F = 12, 32, 32          # conv2's input: 12x12x32; 32 filters of 4x4
OUT, POOLED = 9, 4            # its 9x9 output, pooled to 4x4 (the 8x8 corner)


@njit(cache=True, nogil=True)
def gradient_tiles(dz, A, D):
    """``D[5i + j, tile, f] = (A g A^T)[i, j]`` for each 2x2 block ``g`` of ``dz[n, :8, :8, f]``."""
    N = dz.shape[0]
    for n in range(N):
        for t in range(POOLED):
            for s in range(POOLED):
                tile = (n * POOLED + t) * POOLED + s
                g00, g01 = dz[n, 2 * t, 2 * s], dz[n, 2 * t, 2 * s + 1]
                g10, g11 = dz[n, 2 * t + 1, 2 * s], dz[n, 2 * t + 1, 2 * s + 1]
                for i in range(5):
                    for j in range(5):
                        o = D[5 * i + j, tile]
                        for f in range(dz.shape[3]):
                            top = A[i, 0] * g00[f] + A[i, 1] * g10[f]
                            bottom = A[i, 0] * g01[f] + A[i, 1] * g11[f]
                            o[f] = top * A[j, 0] + bottom * A[j, 1]
    return D


def input_tiles(x):
    """``B^T d B`` of every tile, ``(25, N * 16, C)``: the forward pass's input transform."""
    V = np.empty((25, len(x) * POOLED * POOLED, C), x.dtype)
    return kernels.winograd4_tiles(x, winograd._BT.astype(x.dtype), POOLED, POOLED, V, 0, len(x))


def output_transform(S):
    """``G^T S G`` per channel pair: the kernel gradient ``(4, 4, C, F)`` from the 25 summed points ``(25, C, F)``."""
    GT = winograd._G.T.astype(S.dtype)
    R = np.matmul(GT, S.reshape(5, 5 * C * F)).reshape(4, 5, C * F)     # R[u, j] = sum_i G[i, u] S[i, j]
    return np.matmul(GT, R).reshape(4, 4, C, F)                         # dK[u, v] = sum_j G[j, v] R[u, j]


def kernel_gradient(V, dz):
    """conv2's kernel gradient ``(4, 4, C, F)`` by F(4x4, 2x2) from the input tiles ``V`` and ``dz``.

    Only ``dz[:, :8, :8]`` is read: the 9th row and column of conv2's
    gradient are zero in the seed model, whose flooring pool never reads them.
    """
    A = winograd._AT.T.astype(dz.dtype)
    D = gradient_tiles(dz, A, np.empty((25, V.shape[1], F), dz.dtype))
    return output_transform(np.matmul(V.transpose(0, 2, 1), D))       # the sums over tiles, point by point


def reference_gradient(x, dz):
    """The kernel gradient in float64: ``sum over images and outputs of x[i + u, j + v] dz[i, j]``."""
    x, dz = x.astype(np.float64), dz.astype(np.float64)
    return np.stack([np.stack([np.einsum("nijc,nijf->cf", x[:, u:u + OUT, v:v + OUT], dz) for v in range(4)])
                     for u in range(4)])


def seed_conv2(rng):
    """conv2 and the pooling after it as the engine runs them: ``(conv engine, pool engine, layer)``."""
    conv = layers.Conv2D(F, (4, 4), activation="relu")
    pool = layers.MaxPool2D((2, 2))
    conv.build((H, H, C))
    pool.build(conv.output_shape)
    conv.params["kernel"][...] = rng.normal(0, 0.05, conv.params["kernel"].shape)
    conv.params["bias"][...] = rng.normal(0, 0.01, F)
    return engine_layers.Conv2D(conv), engine_layers.MaxPool2D(pool), conv


#: each repeat of a part calls it back to back for at least this long (benchmarks.timing calibrates the count)
MIN_REPEAT_S = 0.005


def _settle_allocator():
    """Free one large block first, as a training process keeps doing.

    glibc then serves blocks up to that size (the scratch buffers here,
    under 1 MB) from memory it keeps, instead of fresh pages that fault on
    first touch at every call; without it, this script alone (few, short-
    lived arrays) timed im2col at ten times its cost inside a training step.
    """
    block = np.ones(4 * 1024 * 1024, np.float32)
    del block


def measure(n_images=16, repeats=100, seed=0):
    """``(rows, errors)``: ``rows`` ``[(path, part, us per image)]``; ``errors`` the kernel gradients' relative errors.

    Each part's figure is its fastest repeat (:mod:`benchmarks.timing`: the parts timed in turn, a repeat
    being the mean of calls back to back).
    """
    _settle_allocator()
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(size=(n_images, H, H, C)), 0).astype(np.float32)     # a pooled ReLU output
    dz = rng.normal(size=(n_images, OUT, OUT, F)).astype(np.float32)
    dz[:, 8, :] = dz[:, :, 8] = 0                     # the flooring pool never reads the 9th row and column
    conv, pool, layer = seed_conv2(rng)
    K, b = layer.params["kernel"], layer.params["bias"]
    U = winograd.TransformedKernel(layer).refresh()    # G K G^T, as inference computes it
    AT = winograd._AT.astype(np.float32)
    V = input_tiles(x)
    edge_rows = np.empty((n_images * 17, 4 * 4 * C), np.float32)
    z_edge = np.empty((n_images * 17, F), np.float32)
    z_in = rng.normal(size=(n_images * 64, F)).astype(np.float32)   # stands in for the transform's output
    y_in = np.empty_like(z_in)
    pooled, argmax = pool.outputs(n_images, np.float32)
    bottom = layer.window._replace(OH=1, OW=OUT)       # the 9th row: 9 windows on rows 8..11
    right = layer.window._replace(OH=8, OW=1)          # the 9th column: 8 windows on columns 8..11

    def forward_today():
        step = conv.start(x, relu=True, pool=pool)[3]
        step.run(0, n_images)

    def winograd_interior():
        M = np.matmul(input_tiles(x), U)
        kernels.winograd4_bias_relu_maxpool(M, AT, b, np.empty((n_images, POOLED, POOLED, F), np.float32),
                                            0, n_images)

    def kept_for_backward():        # what training keeps of the 64 positions: z, y = max(z, 0), the argmax
        kernels.add_bias_relu(z_in, b, y_in, 0, len(z_in))
        kernels.maxpool_forward(y_in.reshape(n_images, 8, 8, F), pool.layer.window, pooled, argmax, 0, n_images)

    def edges():
        kernels.im2col_into(np.ascontiguousarray(x[:, 8:]), bottom, edge_rows[:n_images * 9], 0, n_images)
        kernels.im2col_into(np.ascontiguousarray(x[:, :11, 8:]), right, edge_rows[n_images * 9:], 0, n_images)
        np.matmul(edge_rows, K.reshape(-1, F), out=z_edge)
        kernels.add_bias_relu(z_edge, b, np.empty_like(z_edge), 0, len(z_edge))

    def gradient_today():
        layer.cache = {"x": x, "cols": None}    # as at batch 32: forward's cols too large to keep, rebuilt
        step, finish = conv.start_backward(dz)
        step.run(0, n_images)
        finish()                                    # the blocks' partial sums added: layer.grads

    A = winograd._AT.T.astype(np.float32)
    D = np.empty((25, V.shape[1], F), np.float32)
    S = np.empty((25, C, F), np.float32)
    VT = V.transpose(0, 2, 1)
    parts = {("today", "forward: im2col + product (81 positions), bias, ReLU, pooling"): forward_today,
             ("Winograd", "forward: input transform, 25 products, output transform + pooling (64 positions)"):
                 winograd_interior,
             ("Winograd", "forward: z, y and argmax kept for backward (64 positions)"): kept_for_backward,
             ("Winograd", "forward: the 17 edge positions by im2col + product"): edges,
             ("today", "kernel gradient: im2col rebuilt + cols^T dz"): gradient_today,
             ("Winograd", "kernel gradient: transform of dz's 2x2 blocks"): lambda: gradient_tiles(dz, A, D),
             ("Winograd", "kernel gradient: 25 products over the tiles"): lambda: np.matmul(VT, D, out=S),
             ("Winograd", "kernel gradient: output transform (once per call)"): lambda: output_transform(S)}
    columns = {key: Timed(fn, scale=1e6 / n_images) for key, fn in parts.items()}    # microseconds per image
    layer.need_input_grad = False
    with threads.limited():                         # BLAS on one thread, as inside a training step
        prepare_all(columns, MIN_REPEAT_S)
        summaries = repeat_all(columns, repeats)    # the parts in turn, repeat by repeat
        gradient_today()
        im2col_grad = layer.grads["kernel"]
    rows = [(path, part, summaries[(path, part)]["min_s"]) for path, part in parts]
    ref = reference_gradient(x, dz)
    norm = np.linalg.norm(ref)
    errors = {"im2col (today)": float(np.linalg.norm(im2col_grad - ref) / norm),
              "Winograd": float(np.linalg.norm(kernel_gradient(V, dz) - ref) / norm)}
    return rows, errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=bounded_int(1, 1024), default=16,
                        help="images per call (16: a thread's share of a batch of 32)")
    parser.add_argument("--repeats", type=bounded_int(1, 100_000), default=100)
    args = parser.parse_args(argv)
    rows, errors = measure(args.images, args.repeats)
    print(f"conv2 of the seed model, {args.images} images per call, one thread, fastest of {args.repeats} repeats:")
    for path, part, us in rows:
        print(f"  {path:<9} {part:<86}{us:7.2f} us/image")
    totals = {p: sum(us for path, _, us in rows if path == p) for p in ("today", "Winograd")}
    saved = totals["today"] - totals["Winograd"]
    print(f"  total: today {totals['today']:.1f} us/image, Winograd {totals['Winograd']:.1f}: {saved:.1f} us/image "
          f"saved, {saved * 16 / 1e3:.2f} ms per two-thread step at batch 32 (16 images per thread)")
    for name, err in errors.items():
        print(f"  kernel gradient error against float64, {name}: {err:.1e} of the norm")


if __name__ == "__main__":
    main()
