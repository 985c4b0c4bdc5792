"""TensorFlow's side of every case: the same work, as TF and Keras do it.

Kernel rows call TF's own ops inside ``tf.function`` (graph mode, traced
once during warm-up; XLA off, TF's CPU default): ``tf.nn.conv2d``,
``Conv2DBackpropInput`` / ``Conv2DBackpropFilter``, ``tf.nn.max_pool2d`` /
``MaxPoolGrad`` (which routes each window's gradient to its first maximum,
like convnet), and ``tf.matmul``. Inputs are made TF tensors once, outside
the timing, as convnet's are NumPy arrays.

Model rows use the equivalent Keras model with convnet's initial weights,
compiled with the same Adam settings and loss: ``train_on_batch`` for a
step, ``fit`` for an epoch and ``predict`` for inference -- the calls a Keras
user makes, as ``train_step``, ``fit`` and ``predict`` are convnet's.
"""
import os

import numpy as np

from .data import BATCH_SIZE, PREDICT_BATCH

tf = keras = None


def import_tensorflow(threads):
    """Import TF (quietly) and give it ``threads.cores`` threads; returns a note or None.

    Raises ImportError when TensorFlow is not installed.
    """
    global tf, keras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")     # no C++ info/warning lines in the table
    import tensorflow
    import keras as keras_module

    tf, keras = tensorflow, keras_module
    keras.utils.disable_interactive_logging()
    return threads.configure_tensorflow(tf)


class Backend:
    name = "tensorflow"

    @staticmethod
    def outputs(fn):
        """Call ``fn`` once; its result as a list of NumPy arrays (for the agreement checks)."""
        result = fn()
        return [np.asarray(r) for r in (result if isinstance(result, (list, tuple)) else [result])]

    # ------------------------------------------------------------ kernels
    def make_conv_forward(self, x, kernel, bias):
        x, kernel, bias = tf.constant(x), tf.constant(kernel), tf.constant(bias)

        @tf.function(jit_compile=False)
        def conv_forward():
            return tf.nn.bias_add(tf.nn.conv2d(x, kernel, strides=1, padding="VALID"), bias)
        return conv_forward

    def make_conv_backward_kernel(self, x, kernel, bias, dz):
        x, dz = tf.constant(x), tf.constant(dz)
        filter_sizes = tf.constant(kernel.shape, dtype=tf.int32)

        @tf.function(jit_compile=False)
        def conv_backward_kernel():
            dk = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=filter_sizes, out_backprop=dz,
                                                 strides=[1, 1, 1, 1], padding="VALID")
            return dk, tf.reduce_sum(dz, axis=[0, 1, 2])
        return conv_backward_kernel

    def make_conv_backward(self, x, kernel, bias, dz):
        input_sizes = tf.constant(x.shape, dtype=tf.int32)
        filter_sizes = tf.constant(kernel.shape, dtype=tf.int32)
        x, kernel, dz = tf.constant(x), tf.constant(kernel), tf.constant(dz)

        @tf.function(jit_compile=False)
        def conv_backward():
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=input_sizes, filter=kernel, out_backprop=dz,
                                                strides=[1, 1, 1, 1], padding="VALID")
            dk = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=filter_sizes, out_backprop=dz,
                                                 strides=[1, 1, 1, 1], padding="VALID")
            return dx, dk, tf.reduce_sum(dz, axis=[0, 1, 2])
        return conv_backward

    def make_pool_forward(self, x, size):
        x = tf.constant(x)

        @tf.function(jit_compile=False)
        def pool_forward():
            return tf.nn.max_pool2d(x, ksize=size, strides=size, padding="VALID")
        return pool_forward

    def make_pool_backward(self, x, size, dz):
        x = tf.constant(x)
        y = tf.nn.max_pool2d(x, ksize=size, strides=size, padding="VALID")   # forward, once, untimed
        dz = tf.constant(dz)

        @tf.function(jit_compile=False)
        def pool_backward():
            return tf.raw_ops.MaxPoolGrad(orig_input=x, orig_output=y, grad=dz, ksize=[1, size, size, 1],
                                          strides=[1, size, size, 1], padding="VALID")
        return pool_backward

    def make_dense_forward(self, x, kernel, bias):
        x, kernel, bias = tf.constant(x), tf.constant(kernel), tf.constant(bias)

        @tf.function(jit_compile=False)
        def dense_forward():
            return tf.matmul(x, kernel) + bias
        return dense_forward

    def make_dense_backward(self, x, kernel, bias, dz):
        x, kernel, dz = tf.constant(x), tf.constant(kernel), tf.constant(dz)

        @tf.function(jit_compile=False)
        def dense_backward():
            # z = x W + b: dx = dz W^T, dW = x^T dz, db = sum over the batch
            return (tf.matmul(dz, kernel, transpose_b=True), tf.matmul(x, dz, transpose_a=True),
                    tf.reduce_sum(dz, axis=0))
        return dense_backward

    # -------------------------------------------------------------- model
    def make_model(self, weights):
        return Model(weights)


def keras_seed_model(weights):
    """Keras's twin of :func:`benchmarks.convnet_impl.seed_model`, with the given weights."""
    L = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 4, activation="relu"), L.MaxPooling2D(2), L.Dropout(0.25),
        L.Conv2D(32, 4, activation="relu"), L.MaxPooling2D(2), L.Dropout(0.25),
        L.Flatten(), L.Dense(256, activation="relu"), L.Dropout(0.5), L.Dense(10, activation="softmax"),
    ])
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=False)
    return model


class Model:
    def __init__(self, weights):
        self.model = keras_seed_model(weights)

    def weights(self):
        return self.model.get_weights()

    def make_train_step(self, x, y):
        return lambda: self.model.train_on_batch(x, y)

    def make_fit(self, x, y, batch_size=BATCH_SIZE):
        return lambda: self.model.fit(x, y, epochs=1, batch_size=batch_size, shuffle=True, verbose=0)

    def make_predict(self, x):
        return lambda: self.model.predict(x, batch_size=PREDICT_BATCH, verbose=0)

    def make_evaluate(self, x, y, batch_size):
        return lambda: self.model.evaluate(x, y, batch_size=batch_size, verbose=0)

    def gradients(self, x, y):
        """Loss and dLoss/dw for every weight (Keras order), dropout off."""
        loss_fn = keras.losses.SparseCategoricalCrossentropy()
        with tf.GradientTape() as tape:
            loss = loss_fn(y, self.model(x, training=False))
        grads = tape.gradient(loss, self.model.trainable_variables)
        return [np.float32(loss)] + [np.asarray(g) for g in grads]
