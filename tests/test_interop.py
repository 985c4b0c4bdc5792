"""convnet computes the same numbers as Keras: forward, input gradient, every parameter gradient.

Each test builds a Keras model, converts it with :func:`convnet.interop.from_keras`
and compares, in float32, convnet's forward/backward with Keras's forward and
``tf.GradientTape`` gradients of the same scalar ``sum(output * R)`` (R a fixed
random array, so both backward passes start from dL/d(output) = R).
"""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402  (after the importorskip)

from convnet import Sequential, layers  # noqa: E402
from convnet.interop import ConversionError, from_keras, to_keras  # noqa: E402

pytestmark = pytest.mark.tf

RTOL = 1e-4


def assert_close(actual, expected, what):
    """Element-wise within RTOL relative to the array's scale (float32 summation order differs)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs Keras {expected.shape}"
    scale = max(np.abs(expected).max(), 1e-12)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def keras_model_of(layer_list, input_shape, seed=0):
    """A built Keras Sequential with random (not zero) biases so bias gradients are exercised."""
    keras.utils.set_random_seed(seed)
    km = keras.Sequential([keras.Input(shape=input_shape)] + layer_list)
    rng = np.random.default_rng(seed)
    km.set_weights([w if w.ndim > 1 else rng.normal(0, 0.1, w.shape).astype(np.float32)
                    for w in km.get_weights()])
    return km


def keras_vjp(km, x, R):
    """Keras output, dL/dx and parameter gradients for L = sum(output * R), inference mode."""
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = km(xt, training=False)
        scalar = tf.reduce_sum(out * R)
    grads = tape.gradient(scalar, [xt] + km.trainable_weights)
    return out.numpy(), grads[0].numpy(), [g.numpy() for g in grads[1:]]


def compare_with_keras(layer_list, input_shape, seed=0, batch=3):
    km = keras_model_of(layer_list, input_shape, seed)
    model = from_keras(km)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch,) + tuple(input_shape)).astype(np.float32)
    R = rng.standard_normal((batch,) + tuple(km.output_shape[1:])).astype(np.float32)
    out_k, dx_k, grads_k = keras_vjp(km, x, R)

    out = model.forward(x)
    dx = model.backward(R, input_grad=True)
    assert_close(out, out_k, "forward output")
    assert_close(dx, dx_k, "input gradient")
    ours = [g for _, _, g in model.params_and_grads()]
    assert len(ours) == len(grads_k)
    for (key, _, g), gk in zip(model.params_and_grads(), grads_k):
        assert_close(g, gk, f"gradient of {key}")
    return model, km


LAYER_CASES = {
    "conv valid": ([keras.layers.Conv2D(4, 3)], (7, 7, 2)),
    "conv same": ([keras.layers.Conv2D(3, (3, 2), padding="same", activation="relu")], (6, 5, 2)),
    "conv stride 2 same": ([keras.layers.Conv2D(3, 3, strides=2, padding="same")], (7, 8, 1)),
    "conv stride 2 valid": ([keras.layers.Conv2D(2, 4, strides=(2, 1))], (9, 7, 3)),
    "pool 2x2": ([keras.layers.MaxPooling2D(2)], (6, 7, 2)),
    "pool overlapping 3/2": ([keras.layers.MaxPooling2D(3, strides=2)], (7, 7, 2)),
    "pool same": ([keras.layers.MaxPooling2D(2, padding="same")], (5, 5, 3)),
    "dense linear": ([keras.layers.Dense(5)], (7,)),
    "dense relu": ([keras.layers.Dense(6, activation="relu")], (4,)),
    "dense softmax": ([keras.layers.Dense(4, activation="softmax")], (6,)),
    "relu": ([keras.layers.ReLU()], (3, 4, 2)),
    "softmax": ([keras.layers.Softmax()], (5,)),
    "flatten": ([keras.layers.Flatten(), keras.layers.Dense(3)], (3, 2, 2)),
    "dropout (inference)": ([keras.layers.Dropout(0.5), keras.layers.Dense(3)], (4,)),
}


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layer_matches_keras(case):
    # layer objects can be used once: rebuild them from their configs for each run
    layer_list, shape = LAYER_CASES[case]
    fresh = [type(l).from_config(l.get_config()) for l in layer_list]
    compare_with_keras(fresh, shape)


def seed_keras_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, 4, activation="relu"), keras.layers.MaxPooling2D(2), keras.layers.Dropout(0.25),
        keras.layers.Conv2D(32, 4, activation="relu"), keras.layers.MaxPooling2D(2), keras.layers.Dropout(0.25),
        keras.layers.Flatten(), keras.layers.Dense(256, activation="relu"), keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax")])


def test_seed_model_loss_and_gradients_match_keras():
    km = seed_keras_model()
    rng = np.random.default_rng(3)
    km.set_weights([w if w.ndim > 1 else rng.normal(0, 0.05, w.shape).astype(np.float32) for w in km.get_weights()])
    model = from_keras(km)
    assert model.count_params() == 150_858 == km.count_params()
    model.compile("adam", "sparse_categorical_crossentropy")
    x = rng.random((8, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=8)

    xt = tf.constant(x)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        tape.watch(xt)
        probs_k = km(xt, training=False)
        loss_k = loss_fn(y, probs_k)
    grads_k = tape.gradient(loss_k, [xt] + km.trainable_weights)

    probs = model.forward(x)
    loss, dout, pre = model.compute_loss(y, probs)
    dx = model.backward(dout, preactivation=pre, input_grad=True)
    assert_close(probs, probs_k.numpy(), "probabilities")
    assert abs(loss - float(loss_k)) <= RTOL * abs(float(loss_k))
    assert_close(dx, grads_k[0].numpy(), "input gradient")
    for (key, _, g), gk in zip(model.params_and_grads(), grads_k[1:]):
        assert_close(g, gk.numpy(), f"gradient of {key}")


def test_round_trip_preserves_architecture_and_weights():
    km = seed_keras_model(seed=5)
    back = to_keras(from_keras(km))
    assert [type(l).__name__ for l in back.layers] == [type(l).__name__ for l in km.layers]
    assert [l.name for l in back.layers] == [l.name for l in km.layers]
    for a, b in zip(back.get_weights(), km.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(back.predict(x, verbose=0), km.predict(x, verbose=0), rtol=1e-6)


def test_to_keras_of_a_convnet_model_computes_the_same_function():
    model = Sequential([layers.Conv2D(3, 3, strides=2, padding="same", activation="relu"),
                        layers.MaxPool2D(3, strides=2), layers.Flatten(), layers.Dense(4, activation="softmax")],
                       input_shape=(9, 9, 2), seed=1)
    x = np.random.default_rng(1).standard_normal((4, 9, 9, 2)).astype(np.float32)
    km = to_keras(model)
    assert_close(model.predict(x), km(x, training=False).numpy(), "to_keras output")


def test_keras_trained_model_gives_the_same_test_predictions():
    from convnet.datasets import load_mnist, preprocess

    (x_train, y_train), (x_test, y_test) = load_mnist()
    x_train, x_test = preprocess(x_train[:3000]), preprocess(x_test)
    keras.utils.set_random_seed(0)
    km = keras.Sequential([keras.Input(shape=(28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                           keras.layers.MaxPooling2D(2), keras.layers.Dropout(0.25), keras.layers.Flatten(),
                           keras.layers.Dense(10, activation="softmax")])
    km.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    km.fit(x_train, y_train[:3000], epochs=2, batch_size=32, verbose=0)
    p_keras = km.predict(x_test, batch_size=1000, verbose=0)
    p_ours = from_keras(km).predict(x_test)
    assert (p_keras.argmax(1) == y_test).mean() > 0.8          # it really learned something
    np.testing.assert_array_equal(p_ours.argmax(1), p_keras.argmax(1))
    np.testing.assert_allclose(p_ours, p_keras, atol=1e-4)


def test_unsupported_layer_is_named_in_the_error():
    km = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3, name="ok"),
                           keras.layers.BatchNormalization(name="bn")])
    with pytest.raises(ConversionError, match=r"'bn'.*BatchNormalization.*Conv2D"):
        from_keras(km)


@pytest.mark.parametrize("layer, message", [
    (keras.layers.Dense(3, activation="tanh", name="d"), "activation 'tanh'"),
    (keras.layers.ReLU(negative_slope=0.1, name="r"), "plain ReLU"),
])
def test_unsupported_settings_are_named(layer, message):
    km = keras.Sequential([keras.Input(shape=(4,)), layer])
    with pytest.raises(ConversionError, match=message):
        from_keras(km)


def test_dilated_conv_is_rejected():
    km = keras.Sequential([keras.Input(shape=(8, 8, 1)), keras.layers.Conv2D(2, 3, dilation_rate=2, name="c")])
    with pytest.raises(ConversionError, match="'c'.*dilation_rate"):
        from_keras(km)


def test_non_sequential_model_is_rejected():
    inp = keras.Input(shape=(4,))
    km = keras.Model(inp, keras.layers.Dense(2)(inp))
    with pytest.raises(ConversionError, match="keras.Sequential"):
        from_keras(km)


# ---------------------------------------------------------------- Keras files through convnet.load_model
@pytest.mark.parametrize("name", ["model.keras", "model.h5", "keras-zip-without-suffix", "hdf5-without-suffix"])
def test_load_model_reads_keras_files_by_their_content(name, tmp_path):
    import convnet
    km = keras_model_of([keras.layers.Conv2D(3, 3, activation="relu"), keras.layers.MaxPooling2D(2),
                         keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")], (8, 7, 2))
    saved = tmp_path / ("model.h5" if "h5" in name or "hdf5" in name else "model.keras")
    km.save(saved)
    path = saved if "." in name else saved.rename(tmp_path / name)
    model = convnet.load_model(path)
    x = np.random.default_rng(0).standard_normal((3, 8, 7, 2)).astype(np.float32)
    assert_close(model.predict(x), km.predict(x, verbose=0), "predictions")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]        # nothing left beside it


def test_a_keras_file_with_a_lambda_layer_is_not_run(tmp_path):
    """Keras's safe mode refuses to load the Lambda's code, and the message says Keras refused."""
    import convnet
    from convnet.saving import ModelFileError
    km = keras_model_of([keras.layers.Dense(3), keras.layers.Lambda(lambda t: t * 2)], (4,))
    km.save(tmp_path / "lambda.keras")
    with pytest.raises(ModelFileError, match=r"lambda.keras: is a Keras .keras file .*Keras cannot load it: .*"
                                             r"(?i:lambda)"):
        convnet.load_model(tmp_path / "lambda.keras")


def test_a_keras_model_convnet_cannot_convert_names_the_layer(tmp_path):
    import convnet
    from convnet.saving import ModelFileError
    km = keras_model_of([keras.layers.Dense(3, activation="tanh")], (4,))
    km.save(tmp_path / "tanh.keras")
    with pytest.raises(ModelFileError, match=r"tanh.keras: the Keras model cannot become a convnet model: "
                                             r"layer 'dense.*activation 'tanh'"):
        convnet.load_model(tmp_path / "tanh.keras")
