"""Winograd F(2x2, 4x4) (convnet.engine.winograd) against the direct convolution.

Inference computes the seed model's second convolution + ReLU + 2x2 pool
this way: these tests hold the kernels to the direct convolution within
1e-5 of the norm, check where Winograd is chosen, and that the transformed
kernel follows the weights.
"""
import numpy as np

from convnet import Sequential, layers
from convnet.engine import EngineModel, kernels, winograd
from convnet.engine.winograd import TransformedKernel

from test_engine_inference import textbook
from test_tiers import close


def test_winograd_is_chosen_only_where_it_fits(make_seed_model):
    seed = make_seed_model()
    assert not winograd.fits(seed.layers[0], seed.layers[1])      # one input channel: im2col
    assert winograd.fits(seed.layers[3], seed.layers[4])          # 4x4 on 32 channels
    assert not winograd.fits(seed.layers[3], None)                # no pooling to end in
    model = Sequential([layers.Conv2D(4, 3, activation="relu"), layers.MaxPool2D(2), layers.Flatten(),
                        layers.Dense(2)], input_shape=(9, 9, 8))
    assert not winograd.fits(model.layers[0], model.layers[1])   # a 3x3 kernel
    model = Sequential([layers.Conv2D(4, 4, strides=2, activation="relu"), layers.MaxPool2D(2), layers.Flatten(),
                        layers.Dense(2)], input_shape=(13, 13, 8))
    assert not winograd.fits(model.layers[0], model.layers[1])   # strides


def test_winograd_kernels_match_the_direct_convolution_and_write_only_their_range(rng):
    """Input transform, products, output transform: conv + bias + ReLU + 2x2 pool on a range of images."""
    x = rng.standard_normal((5, 12, 14, 9)).astype(np.float32)
    K = rng.standard_normal((4, 4, 9, 7)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    PH, PW = 4, 5                                    # outputs 9x11, the pooling reads 8x10
    U = np.einsum("ik,klcf,jl->ijcf", winograd._G, K.astype(np.float64), winograd._G).reshape(25, 9, 7)
    V = np.full((25, 5 * PH * PW, 9), 7.0, np.float32)
    kernels.winograd4_tiles(x, winograd._BT.astype(np.float32), PH, PW, V, 1, 4)
    out = np.full((5, PH, PW, 7), 7.0, np.float32)
    kernels.winograd4_bias_relu_maxpool(np.matmul(V, U.astype(np.float32)), winograd._AT.astype(np.float32),
                                        b, out, 1, 4)
    z = np.einsum("nhwc,hwcf->nf", np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (4, 4), axis=(1, 2))
                  .transpose(0, 1, 2, 4, 5, 3)[:, :8, :10].reshape(-1, 4, 4, 9), K.astype(np.float64))
    z = z.reshape(5, 8, 10, 7) + b
    want = np.maximum(z.reshape(5, 4, 2, 5, 2, 7).max(axis=(2, 4)), 0)
    close(out[1:4], want[1:4])
    assert (out[0] == 7).all() and (out[4] == 7).all()
    assert (V[:, :PH * PW] == 7).all() and (V[:, 4 * PH * PW:] == 7).all()


def test_the_transformed_winograd_kernel_follows_the_weights(rng, make_seed_model):
    """U = G K G^T is kept between batches, and computed again once the kernel's values change."""
    model = make_seed_model(1)
    x = rng.random((6, 28, 28, 1), dtype=np.float32)
    transformed = TransformedKernel(model.layers[3])
    first = transformed.refresh()
    assert transformed.refresh() is first and transformed.U is first
    model.layers[3].params["kernel"] *= 0.5                       # in place, as an optimizer updates it
    assert transformed.refresh() is not first
    run = EngineModel(model.layers)
    close(run.infer(x)[1], textbook(model, x)[1])
    model.layers[3].params["kernel"] *= 0.5                       # the runner's kept plan sees it too
    close(run.infer(x)[1], textbook(model, x)[1])
