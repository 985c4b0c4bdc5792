"""Every engine kernel under its old name: the kernels now live one topic per module.

* :mod:`convnet.engine.jit`: how kernels are compiled, their conventions, ranges of images;
* :mod:`convnet.engine.im2col`: ``im2col_into``, ``col2im`` (of :mod:`convnet.windows`);
* :mod:`convnet.engine.pooling`: max-pooling forward and backward (of :class:`convnet.layers.MaxPool2D`);
* :mod:`convnet.engine.fused`: bias + ReLU (+ pooling) in one pass;
* :mod:`convnet.engine.winograd`: Winograd F(2x2, 4x4) for inference;
* :mod:`convnet.engine.elementwise`: bias, ReLU and its backward, column sums;
* :mod:`convnet.engine.dropout`: the counter-based dropout stream (of :mod:`convnet.rng`);
* :mod:`convnet.engine.adam`: Adam's update (of :class:`convnet.optimizers.Adam`);
* :mod:`convnet.engine.affine`: bilinear resampling (of :func:`convnet.augment.affine`).
"""
from .adam import adam_update  # noqa: F401
from .affine import affine_bilinear  # noqa: F401
from .dropout import dropout_forward  # noqa: F401
from .elementwise import add_bias, relu_backward, relu_forward, sum_rows  # noqa: F401
from .fused import add_bias_relu, bias_relu_maxpool2x2  # noqa: F401
from .im2col import SHORT_ROW, col2im, im2col_into  # noqa: F401
from .pooling import maxpool2x2_backward, maxpool_backward, maxpool_forward, maxpool_relu_backward, tiles_2x2  # noqa: F401
from .winograd import winograd4_bias_relu_maxpool, winograd4_tiles  # noqa: F401
