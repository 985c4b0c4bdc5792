"""Importing ONNX graphs that other tools wrote (convnet.onnx_import, through convnet.interop.from_onnx).

The graphs are laid out the way ``torch.onnx.export`` and tf2onnx lay them
out, built here with ``onnx.helper`` from a trained convnet model's weights
(no torch needed): the import must give back exactly those weights, and
predict what onnxruntime predicts on the original file. With the bench extra
(TensorFlow and tf2onnx), a file from Keras's own ``model.export(format="onnx")``
is checked the same way.
"""
import importlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings, strategies as st


def import_or_skip(name, reason):
    """The module; skip without it, except in CI (which installs every extra), where that is a failure."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=reason)


onnx = import_or_skip("onnx", 'needs the onnx extra: pip install -e ".[onnx]"')
ort = import_or_skip("onnxruntime", 'needs the onnx extra: pip install -e ".[onnx]"')

import convnet  # noqa: E402  (after the importorskip)
from conftest import damaged_copy, with_random_biases  # noqa: E402
from convnet import Sequential, layers, optimizers  # noqa: E402
from convnet.architectures import mnist_cnn  # noqa: E402
from convnet.interop import from_onnx  # noqa: E402
from convnet.onnx_import import SUPPORTED_OPS  # noqa: E402
from convnet.onnx_io import OnnxFileError  # noqa: E402
from convnet.utils import pad_amounts  # noqa: E402

h, TP = onnx.helper, onnx.TensorProto
ATOL = 1e-5


# --------------------------------------------------------------- building graphs as other tools do
def init(name, array):
    return onnx.numpy_helper.from_array(np.array(array, order="C"), name)     # (ascontiguousarray makes 0-d 1-d)


def ints(name, values):
    return init(name, np.asarray(values, np.int64))


def model_proto(nodes, inits, input_shape, output_shape, producer="pytorch", opset=17, inp="input.1", out="output"):
    graph = h.make_graph(nodes, "main_graph", [h.make_tensor_value_info(inp, TP.FLOAT, input_shape)],
                         [h.make_tensor_value_info(out, TP.FLOAT, output_shape)], initializer=inits)
    return h.make_model(graph, producer_name=producer, producer_version="2.5.0",
                        opset_imports=[h.make_opsetid("", opset)])


def as_ints(values):
    return [int(v) for v in values]


def chw_rows(H, W, C):
    """For each feature of a (c, h, w) flatten, the index of the same value in convnet's (h, w, c) flatten."""
    return np.arange(H * W * C).reshape(H, W, C).transpose(2, 0, 1).ravel()


def pytorch_layout(model, flatten="view", batch="batch_size"):
    """``model`` (Conv/MaxPool/Dropout/Flatten/Dense, relu/softmax) as torch.onnx.export writes the same network.

    NCHW input, OIHW kernels with their biases, Linear weights (out, in) under
    ``transB=1``, the first one's columns in the (c, h, w) order of a flatten
    of NCHW data; ``flatten="view"`` is ``x.view(x.size(0), -1)`` (a Shape,
    Gather, Unsqueeze, Concat, Reshape chain), ``"flatten"`` ``torch.flatten(x, 1)``.
    """
    nodes, inits, x, n = [], [], "input.1", 0

    def add(op, inputs, **attrs):
        nonlocal x, n
        n += 1
        out = f"/{op.lower()}_{n}/{op}_output_0"
        nodes.append(h.make_node(op, inputs, [out], name=f"/{op.lower()}_{n}/{op}", **attrs))
        x = out

    rows = None
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            kh, kw = layer.kernel_size
            (top, bottom), (left, right) = (pad_amounts(n, k, s, layer.padding) for n, k, s in
                                            zip(layer.input_shape[:2], layer.kernel_size, layer.strides))
            inits += [init(f"conv{n}.weight", layer.params["kernel"].transpose(3, 2, 0, 1)),
                      init(f"conv{n}.bias", layer.params["bias"])]
            add("Conv", [x, f"conv{n}.weight", f"conv{n}.bias"], kernel_shape=as_ints([kh, kw]),
                strides=as_ints(layer.strides), pads=as_ints([top, left, bottom, right]), dilations=[1, 1], group=1)
        elif kind == "MaxPool2D":
            add("MaxPool", [x], kernel_shape=as_ints(layer.pool_size), strides=as_ints(layer.strides),
                pads=[0, 0, 0, 0], ceil_mode=0)
        elif kind == "Flatten":
            H, W, C = layer.input_shape
            rows = chw_rows(H, W, C)
            if flatten == "flatten":
                add("Flatten", [x], axis=1)
            else:
                source = x
                inits += [ints("zero", 0), ints("axes", [0]), ints("minus_one", [-1])]
                add("Shape", [source])
                add("Gather", [x, "zero"], axis=0)
                add("Unsqueeze", [x, "axes"])
                add("Concat", [x, "minus_one"], axis=0)
                add("Reshape", [source, x])
        elif kind == "Dense":
            kernel = layer.params["kernel"] if rows is None else layer.params["kernel"][rows]
            rows = None
            inits += [init(f"fc{n}.weight", kernel.T), init(f"fc{n}.bias", layer.params["bias"])]
            add("Gemm", [x, f"fc{n}.weight", f"fc{n}.bias"], alpha=1.0, beta=1.0, transB=1)
        if getattr(layer, "activation_name", None) == "relu":
            add("Relu", [x])
        elif getattr(layer, "activation_name", None) == "softmax":
            add("Softmax", [x], axis=1)
    nodes[-1].output[0] = "output"
    shape = model.input_shape
    return model_proto(nodes, inits, [batch, *((shape[2], *shape[:2]) if len(shape) == 3 else shape)],
                       [batch, *model.output_shape])


def tf2onnx_layout(model):
    """``model`` as tf2onnx writes the Keras twin: NHWC input transposed to NCHW (a Reshape when there is one
    channel), back to NHWC before the flatten (a Shape, Gather, Cast, Slice, Concat, Cast chain), MatMul + Add."""
    nodes, inits, x, n = [], [], "keras_tensor", 0

    def add(op, inputs, **attrs):
        nonlocal x, n
        n += 1
        out = f"sequential/{op.lower()}_{n}:0"
        nodes.append(h.make_node(op, inputs, [out], name=f"sequential/{op.lower()}_{n}", **attrs))
        x = out

    H, W, C = model.input_shape if len(model.input_shape) == 3 else (None, None, None)
    channels_first = False
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "MaxPool2D") and not channels_first:
            if C == 1:
                inits.append(ints("new_shape", [-1, 1, H, W]))
                add("Reshape", [x, "new_shape"])
            else:
                add("Transpose", [x], perm=[0, 3, 1, 2])
            channels_first = True
        if kind == "Conv2D":
            kh, kw = layer.kernel_size
            attrs = {"auto_pad": "SAME_UPPER"} if layer.padding == "same" else {}
            inits += [init(f"conv{n}/ReadVariableOp:0", layer.params["kernel"].transpose(3, 2, 0, 1)),
                      init(f"conv{n}/BiasAdd/ReadVariableOp:0", layer.params["bias"])]
            add("Conv", [x, f"conv{n}/ReadVariableOp:0", f"conv{n}/BiasAdd/ReadVariableOp:0"], dilations=[1, 1],
                strides=as_ints(layer.strides), kernel_shape=as_ints([kh, kw]), group=1, **attrs)
        elif kind == "MaxPool2D":
            add("MaxPool", [x], kernel_shape=as_ints(layer.pool_size), strides=as_ints(layer.strides))
        elif kind == "Flatten":
            add("Transpose", [x], perm=[0, 2, 3, 1])
            data = x
            add("Shape", [data])
            inits += [ints("perm_shape", [0, 2, 3, 1]), ints("starts", [0]), ints("ends", [1]),
                      init("features", np.asarray([int(np.prod(layer.input_shape))], np.int32))]
            add("Gather", [x, "perm_shape"])
            add("Cast", [x], to=TP.INT32)
            add("Slice", [x, "starts", "ends", "starts"])
            add("Concat", [x, "features"], axis=0)
            add("Cast", [x], to=TP.INT64)
            add("Reshape", [data, x])
        elif kind == "Dense":
            k = n
            inits += [init(f"dense{k}/MatMul/ReadVariableOp:0", layer.params["kernel"]),
                      init(f"dense{k}/BiasAdd/ReadVariableOp:0", layer.params["bias"])]
            add("MatMul", [x, f"dense{k}/MatMul/ReadVariableOp:0"])
            add("Add", [x, f"dense{k}/BiasAdd/ReadVariableOp:0"])
        if getattr(layer, "activation_name", None) in ("relu", "softmax"):
            add("Relu" if layer.activation_name == "relu" else "Softmax", [x])
    nodes[-1].output[0] = "Identity:0"
    proto = model_proto(nodes, inits, ["unk__40", *model.input_shape], ["unk__41", *model.output_shape],
                        producer="tf2onnx", opset=15, inp="keras_tensor", out="Identity:0")
    proto.opset_import.append(h.make_opsetid("ai.onnx.ml", 2))       # tf2onnx imports it, unused
    return proto


def save(proto, path):
    path.write_bytes(proto.SerializeToString())
    return path


def run_onnx(proto_or_path, x):
    data = proto_or_path.SerializeToString() if isinstance(proto_or_path, onnx.ModelProto) else str(proto_or_path)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def layer_settings(model):
    """Each layer's class and settings, without names (an import names its layers itself) or Dropout."""
    return [(type(layer).__name__, {k: v for k, v in layer.get_config().items() if k != "name"})
            for layer in model.layers if type(layer) is not layers.Dropout]



# --------------------------------------------------------------- a trained model, the 10,000 test images
@pytest.fixture(scope="module")
def trained(mnist_small):
    """The seed architecture trained 1 epoch on 2,000 images (a few seconds)."""
    x_train, y_train, _, _ = mnist_small
    model = mnist_cnn(seed=0)
    model.compile(optimizers.Adam(), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=1, batch_size=32, seed=0, verbose=0)
    return model


def assert_predicts_as_onnxruntime(model, proto_or_path, x, x_onnx):
    got, expected = model.predict(x), run_onnx(proto_or_path, x_onnx)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= ATOL
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


@pytest.mark.parametrize("flatten", ["view", "flatten"])
def test_a_pytorch_layout_file_imports_with_its_weights_and_predicts_as_onnxruntime(flatten, mnist_small, trained,
                                                                                       tmp_path):
    _, _, x_test, y_test = mnist_small
    path = save(pytorch_layout(trained, flatten), tmp_path / "torch.onnx")
    model = from_onnx(path)
    assert model.input_shape == (28, 28, 1)                         # NCHW in the file, NHWC in convnet
    assert layer_settings(model) == layer_settings(trained)
    for got, original in zip(model.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(got, original)               # OIHW -> HWIO and (c,h,w) rows undone exactly
    assert_predicts_as_onnxruntime(model, path, x_test, nchw(x_test))
    assert (model.predict(x_test).argmax(axis=1) == y_test).mean() > 0.75       # trained (80.5%), not random


def test_a_tf2onnx_layout_file_imports_with_its_weights_and_predicts_as_onnxruntime(mnist_small, trained, tmp_path):
    _, _, x_test, _ = mnist_small
    path = save(tf2onnx_layout(trained), tmp_path / "tf2onnx.onnx")
    model = from_onnx(path)
    assert layer_settings(model) == layer_settings(trained)
    for got, original in zip(model.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(got, original)
    assert_predicts_as_onnxruntime(model, path, x_test, x_test)


def test_load_model_reads_a_foreign_onnx_file_by_its_content(trained, tmp_path):
    path = save(pytorch_layout(trained), tmp_path / "model.bin")        # no .onnx suffix
    model = convnet.load_model(path)
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(model.predict(x), trained.predict(x), atol=1e-6)


def test_an_imported_model_trains_saves_and_runs_on_both_tiers(mnist_small, trained, tmp_path):
    x_train, y_train, _, _ = mnist_small
    model = from_onnx(save(pytorch_layout(trained), tmp_path / "torch.onnx"))
    x = x_train[:64]
    with convnet.backend("numpy"):
        textbook = model.predict(x)
    with convnet.backend("numba"):
        engine = model.predict(x)
    np.testing.assert_allclose(textbook, engine, atol=1e-5)
    model.compile(optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    before = model.evaluate(x_train[:256], y_train[:256], verbose=0)
    model.fit(x_train[:256], y_train[:256], epochs=2, batch_size=32, seed=0, verbose=0)
    after = model.evaluate(x_train[:256], y_train[:256], verbose=0)
    assert after[0] < before[0]
    saved = convnet.save_model(model, tmp_path / "imported.npz")
    np.testing.assert_array_equal(convnet.load_model(saved).predict(x), model.predict(x))


def test_the_explorer_loads_an_onnx_file_and_shows_its_forward_and_backward(mnist_small, trained, tmp_path):
    from experiments.explore.core import Explorer
    from experiments.predict import load_model_for_inference, resolve_model_path
    path = save(pytorch_layout(trained), tmp_path / "model.onnx")
    # what `python -m experiments.explore --model model.onnx` does
    model = load_model_for_inference(resolve_model_path(str(path)))
    assert model.loss is None                                 # imported: uncompiled, the Explorer copes
    image = mnist_small[2][0, :, :, 0]
    explorer = Explorer(model, model_path=path)
    try:
        shown = explorer.predict(None, image)
        assert shown["prediction"] == int(trained.predict(image[None, :, :, None])[0].argmax())
        assert explorer.backward(None, image, 3)["saliency"]["shape"] == [28, 28]
    finally:
        explorer.close()


# --------------------------------------------------------------- a file from Keras's own exporter
@pytest.mark.tf
def test_a_file_from_keras_export_imports_and_predicts_as_onnxruntime(mnist_small, tmp_path):
    import_or_skip("tf2onnx", "Keras's ONNX export needs tf2onnx (the bench extra)")
    keras = import_or_skip("keras", "needs TensorFlow with Keras 3 (the bench extra)")
    x_train, y_train, x_test, y_test = mnist_small
    keras.utils.set_random_seed(0)
    km = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                           keras.layers.MaxPooling2D(2), keras.layers.Conv2D(16, 3, strides=2, padding="same",
                                                                             activation="relu"),
                           keras.layers.Flatten(), keras.layers.Dropout(0.3), keras.layers.Dense(32, activation="relu"),
                           keras.layers.Dense(10, activation="softmax")])
    km.compile("adam", "sparse_categorical_crossentropy")
    km.fit(x_train, y_train, epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "keras.onnx"
    km.export(str(path), format="onnx", verbose=False)
    model = from_onnx(path)
    assert [type(layer).__name__ for layer in model.layers] == ["Conv2D", "MaxPool2D", "Conv2D", "Flatten",
                                                                "Dense", "Dense"]
    assert model.input_shape == (28, 28, 1)
    assert_predicts_as_onnxruntime(model, path, x_test, x_test)
    assert (model.predict(x_test).argmax(axis=1) == y_test).mean() > 0.5      # trained (75.4%), not random (10%)


# --------------------------------------------------------------- every supported form
def small_cnn(seed=0, padding="valid", channels=2):
    return with_random_biases(Sequential([layers.Conv2D(3, 3, padding=padding, activation="relu"),
                                          layers.MaxPool2D(2), layers.Flatten(),
                                          layers.Dense(4, activation="softmax")],
                                         input_shape=(7, 6, channels), seed=seed), seed)


def dense_net(seed=0):
    return with_random_biases(Sequential([layers.Dense(5, activation="relu"), layers.Dense(3)], input_shape=(6,),
                                         seed=seed), seed)


def edit_nodes(proto, edit):
    edit(proto.graph)
    return proto


def gemm_as_matmul_add(graph):
    """Gemm(x, W, b, transB=1) -> MatMul(x, W^T) + Add(b): how PyTorch writes Linear on 3-D inputs."""
    inits = {t.name: t for t in graph.initializer}
    for i, node in enumerate(list(graph.node)):
        if node.op_type == "Gemm":
            w = onnx.numpy_helper.to_array(inits[node.input[1]])
            inits[node.input[1]].CopyFrom(init(node.input[1], w.T))
            mm = h.make_node("MatMul", node.input[:2], [node.output[0] + "_mm"], name=node.name + "_mm")
            add = h.make_node("Add", [node.output[0] + "_mm", node.input[2]], [node.output[0]], name=node.name + "_add")
            graph.node.remove(node)
            graph.node.insert(i, add)
            graph.node.insert(i, mm)


def gemm_transb_0_alpha_beta(graph):
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Gemm":
            w = onnx.numpy_helper.to_array(inits[node.input[1]])
            b = onnx.numpy_helper.to_array(inits[node.input[2]])
            inits[node.input[1]].CopyFrom(init(node.input[1], w.T / 2))
            inits[node.input[2]].CopyFrom(init(node.input[2], (b / 4).reshape(1, -1)))
            del node.attribute[:]
            node.attribute.extend([h.make_attribute("alpha", 2.0), h.make_attribute("beta", 4.0)])


def gemm_batch_second(graph):
    """Y^T = W @ X^T (the data as Gemm's B), transposed back: the batch travels second in between."""
    for i, node in enumerate(list(graph.node)):
        if node.op_type == "Gemm":
            w, b = node.input[1], node.input[2]
            t = h.make_node("Transpose", [node.output[0] + "_t"], [node.output[0]], perm=[1, 0], name=node.name + "_t")
            gemm = h.make_node("Gemm", [w, node.input[0], b + "_col"], [node.output[0] + "_t"], transB=1,
                               name=node.name)
            inits = {t.name: t for t in graph.initializer}
            graph.initializer.append(init(b + "_col", onnx.numpy_helper.to_array(inits[b]).reshape(-1, 1)))
            graph.node.remove(node)
            graph.node.insert(i, t)
            graph.node.insert(i, gemm)
            return


def conv_bias_as_add(graph):
    """Conv without B, then Add of a (C, 1, 1) constant."""
    for i, node in enumerate(list(graph.node)):
        if node.op_type == "Conv":
            bias = next(t for t in graph.initializer if t.name == node.input[2])
            graph.initializer.append(init("bias_c11", onnx.numpy_helper.to_array(bias).reshape(-1, 1, 1)))
            out = node.output[0]
            node.output[0] = out + "_nobias"
            del node.input[2]
            graph.node.insert(i + 1, h.make_node("Add", ["bias_c11", out + "_nobias"], [out], name="bias_add"))
            return


def with_dropout_and_identity(graph):
    """A Dropout (ratio as an input, its mask unused) and an Identity before the first Gemm."""
    i = next(i for i, n in enumerate(graph.node) if n.op_type == "Gemm")
    source = graph.node[i].input[0]
    graph.initializer.append(init("ratio", np.asarray(0.25, np.float32)))
    graph.node.insert(i, h.make_node("Identity", ["dropped"], ["same"], name="identity"))
    graph.node.insert(i, h.make_node("Dropout", [source, "ratio"], ["dropped", "mask"], name="dropout"))
    graph.node[i + 2].input[0] = "same"


def as_static_batch_one(proto):
    """torch.onnx.export without dynamic axes: batch 1 everywhere, the flatten a constant Reshape to (1, -1)."""
    graph = proto.graph
    graph.input[0].type.tensor_type.shape.dim[0].Clear()
    graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    graph.output[0].type.tensor_type.shape.dim[0].Clear()
    graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    graph.initializer.append(ints("flat_shape", [1, -1]))
    i = next(i for i, n in enumerate(graph.node) if n.op_type == "Flatten")
    node = graph.node[i]
    graph.node.remove(node)
    graph.node.insert(i, h.make_node("Reshape", [node.input[0], "flat_shape"], list(node.output), name="reshape"))
    return proto


def as_opset_11(proto):
    proto.opset_import[0].version = 11
    for node in proto.graph.node:
        if node.op_type == "Unsqueeze":          # axes an attribute before opset 13
            axes = node.input.pop()
            node.attribute.append(h.make_attribute("axes", [0]))
            assert axes
    return proto


FORMS = {
    "pytorch view": (lambda: pytorch_layout(small_cnn()), True),
    "pytorch flatten": (lambda: pytorch_layout(small_cnn(), "flatten"), True),
    "pytorch same padding": (lambda: pytorch_layout(small_cnn(padding="same")), True),
    "pytorch opset 11": (lambda: as_opset_11(pytorch_layout(small_cnn())), True),
    "pytorch static batch 1": (lambda: as_static_batch_one(pytorch_layout(small_cnn(), "flatten", batch=1)), True),
    "matmul + add": (lambda: edit_nodes(pytorch_layout(small_cnn()), gemm_as_matmul_add), True),
    "gemm transB=0, alpha, beta": (lambda: edit_nodes(pytorch_layout(small_cnn()), gemm_transb_0_alpha_beta), True),
    "gemm with the batch second": (lambda: edit_nodes(pytorch_layout(small_cnn()), gemm_batch_second), True),
    "conv bias as add": (lambda: edit_nodes(pytorch_layout(small_cnn()), conv_bias_as_add), True),
    "dropout and identity": (lambda: edit_nodes(pytorch_layout(small_cnn()), with_dropout_and_identity), True),
    "tf2onnx one channel": (lambda: tf2onnx_layout(small_cnn(channels=1)), False),
    "tf2onnx three channels, same": (lambda: tf2onnx_layout(small_cnn(padding="same", channels=3)), False),
    "dense only": (lambda: pytorch_layout(dense_net()), False),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_supported_form_predicts_as_onnxruntime(form, tmp_path):
    make, channels_first = FORMS[form]
    proto = make()
    onnx.checker.check_model(proto, full_check=True)
    model = from_onnx(save(proto, tmp_path / "m.onnx"))
    batch = 1 if "batch 1" in form else 5
    x = np.random.default_rng(1).standard_normal((batch,) + model.input_shape).astype(np.float32)
    got, expected = model.predict(x), run_onnx(proto, nchw(x) if channels_first else x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    if form == "dropout and identity":
        assert [type(layer).__name__ for layer in model.layers][2:4] == ["Flatten", "Dropout"]
        assert model.layers[3].rate == 0.25


def test_a_relu_alone_from_elsewhere_is_a_relu_model(tmp_path):
    proto = model_proto([h.make_node("Relu", ["x"], ["y"])], [], [1, 3], [1, 3], inp="x", out="y")
    model = from_onnx(save(proto, tmp_path / "relu.onnx"))
    assert [type(layer).__name__ for layer in model.layers] == ["ReLU"]
    np.testing.assert_array_equal(model.predict(np.array([[-1, 0, 2]], np.float32)), [[0, 0, 2]])


# --------------------------------------------------------------- what cannot be imported, and why
def replace_op(op, **attrs):
    def edit(graph):
        node = next(n for n in graph.node if n.op_type == "Relu")
        node.op_type = op
        node.attribute.extend(h.make_attribute(k, v) for k, v in attrs.items())
    return edit


def set_attr(op, name, value):
    def edit(graph):
        node = next(n for n in graph.node if n.op_type == op)
        for a in list(node.attribute):
            if a.name == name:
                node.attribute.remove(a)
        node.attribute.append(h.make_attribute(name, value))
    return edit


def skip_connection(graph):
    """x + relu(conv(x))-style: an Add of two tensors on the data path."""
    relu = next(n for n in graph.node if n.op_type == "Relu")
    out = relu.output[0]
    relu.output[0] = out + "_r"
    graph.node.insert(list(graph.node).index(relu) + 1,
                      h.make_node("Add", [out + "_r", relu.input[0]], [out], name="residual"))


def second_input(graph):
    graph.input.append(h.make_tensor_value_info("other", TP.FLOAT, ["batch_size", 3]))


def flatten_at_the_end(graph):
    """The output is a flatten of NCHW data: features in (c, h, w) order, no Dense to absorb it."""
    i = next(i for i, n in enumerate(graph.node) if n.op_type == "Flatten")
    graph.node[i].output[0] = "output"
    del graph.node[i + 1:]
    graph.output[0].type.tensor_type.shape.dim[1].dim_value = 12


def conv_on_nhwc(graph):
    graph.node.insert(0, h.make_node("Transpose", ["input.1"], ["nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"))
    graph.node[1].input[0] = "nhwc"


def symbolic_height(graph):
    graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"


def custom_domain(graph):
    next(n for n in graph.node if n.op_type == "Relu").domain = "com.example"


def dropout_in_training(graph):
    with_dropout_and_identity(graph)
    graph.initializer.append(init("training", np.asarray(True)))
    next(n for n in graph.node if n.op_type == "Dropout").input.append("training")


def external_weights(graph):
    t = graph.initializer[0]
    t.data_location = TP.EXTERNAL
    t.ClearField("raw_data")
    t.external_data.add(key="location", value="/etc/passwd")


def double_weights(graph):
    t = graph.initializer[0]
    t.CopyFrom(init(t.name, onnx.numpy_helper.to_array(t).astype(np.float64)))


def maxpool_indices_used(graph):
    pool = next(n for n in graph.node if n.op_type == "MaxPool")
    pool.output.append("indices")
    graph.output.append(h.make_tensor_value_info("indices", TP.INT64, None))


def position_dependent_add(graph):
    conv_bias_as_add(graph)
    bias = next(t for t in graph.initializer if t.name == "bias_c11")
    bias.CopyFrom(init("bias_c11", np.arange(3 * 5 * 4, dtype=np.float32).reshape(3, 5, 4)))


def reshape_across_batch(graph):
    graph.initializer.append(ints("odd_shape", [-1, 9]))
    i = next(i for i, n in enumerate(graph.node) if n.op_type == "Flatten")
    graph.node[i].op_type = "Reshape"
    graph.node[i].input.append("odd_shape")
    del graph.node[i].attribute[:]


BAD = {
    "LeakyRelu": (replace_op("LeakyRelu", alpha=0.1),
                  r"node 1 '/relu_2/Relu' \(LeakyRelu\): has no convnet equivalent; convnet imports Conv, MaxPool"),
    "Sigmoid": (replace_op("Sigmoid"), r"\(Sigmoid\): has no convnet equivalent"),
    "BatchNormalization": (replace_op("BatchNormalization"), r"\(BatchNormalization\): has no convnet equivalent"),
    "custom domain": (custom_domain, r"op 'Relu' of domain 'com.example' has no convnet equivalent"),
    "dilated conv": (set_attr("Conv", "dilations", [2, 2]), r"\(Conv\): dilations=\[2, 2\] is not supported"),
    "grouped conv": (set_attr("Conv", "group", 2), r"\(Conv\): group=2 is not supported"),
    "symmetric pad stride 2": (lambda g: (set_attr("Conv", "pads", [1, 1, 1, 1])(g),
                                          set_attr("Conv", "strides", [2, 2])(g)),
                               r"\(Conv\): pads=\[1, 1, 1, 1\] with strides=\[2, 2\] on a 7x6 input is neither "
                               r"'valid' \(no padding\) nor 'same' \(pads=\[1, 0, 1, 1\] here"),
    "unknown attribute": (set_attr("MaxPool", "spatial_scale", 2.0),
                          r"\(MaxPool\): attribute 'spatial_scale' is not supported \(supported: auto_pad, ceil_mode"),
    "softmax over channels-first rows": (set_attr("Softmax", "axis", 0), r"\(Softmax\): softmax over axis 0"),
    "skip connection": (skip_connection, r"'residual' \(Add\): adds two tensors \(a skip connection\?\)"),
    "two inputs": (second_input, r"has 2 inputs \('input.1', 'other'\)"),
    "flatten order at the output": (flatten_at_the_end, r"features in another order"),
    "conv on channels-last data": (conv_on_nhwc, r"\(Conv\): reads a tensor of shape \(batch, 7, 6, 2\) that is not "
                                                 r"a batch of NCHW images"),
    "symbolic height": (symbolic_height, r"input 'input.1' has dimension 2 = height; convnet needs a fixed size"),
    "dropout in training mode": (dropout_in_training, r"\(Dropout\): training_mode must be a constant false"),
    "external data": (external_weights, r"refers to external data"),
    "float64 weights": (double_weights, r"has data type 11; convnet reads float32 weights"),
    "maxpool indices used": (maxpool_indices_used, r"has 2 outputs; a convnet model has one"),
    "position-dependent add": (position_dependent_add, r"'bias_add' \(Add\): adds a constant of shape \(3, 5, 4\) "
                                                       r"that differs across positions"),
    "reshape across the batch": (reshape_across_batch, r"\(Reshape\): target shape \[-1, 9\] does not keep the batch"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_unsupported_op_and_bad_layout_gets_its_message(case, tmp_path):
    edit, message = BAD[case]
    proto = pytorch_layout(small_cnn(), "flatten")
    edit(proto.graph)
    with pytest.raises(OnnxFileError, match=message):
        from_onnx(save(proto, tmp_path / "bad.onnx"))


def test_the_unsupported_op_message_lists_what_is_supported(tmp_path):
    proto = pytorch_layout(small_cnn(), "flatten")
    replace_op("Tanh")(proto.graph)
    with pytest.raises(OnnxFileError) as info:
        from_onnx(save(proto, tmp_path / "bad.onnx"))
    assert str(info.value).endswith(", ".join(SUPPORTED_OPS))
    assert "bad.onnx" in str(info.value)


def test_weights_beyond_the_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    from convnet import limits
    monkeypatch.setattr(limits, "MAX_WEIGHT_BYTES", 100)
    with pytest.raises(OnnxFileError, match="initializers and constants take more than 100 bytes"):
        from_onnx(save(pytorch_layout(small_cnn()), tmp_path / "m.onnx"))


# --------------------------------------------------------------- fuzzing
@pytest.fixture(scope="module")
def foreign_file(tmp_path_factory):
    return save(pytorch_layout(small_cnn()), tmp_path_factory.mktemp("foreign") / "torch.onnx")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_foreign_files_give_a_clear_error_or_a_model(foreign_file, tmp_path, data):
    damaged = damaged_copy(data, foreign_file, tmp_path)
    try:
        model = from_onnx(damaged)
    except OnnxFileError as e:
        assert str(e).startswith(str(damaged))
        return
    assert len(model.layers) >= 1


WILD_OPS = ["Conv", "MaxPool", "Relu", "Softmax", "Dropout", "Flatten", "Reshape", "Gemm", "MatMul", "Add",
            "Transpose", "Identity", "Cast", "Shape", "Gather", "Concat", "Unsqueeze", "Squeeze", "Slice", "Constant",
            "Tanh", "Pad"]
WILD_ATTRS = {"kernel_shape": st.lists(st.integers(-1, 4), max_size=3),
              "strides": st.lists(st.integers(-1, 3), max_size=3), "pads": st.lists(st.integers(-1, 3), max_size=5),
              "axis": st.integers(-4, 4), "perm": st.lists(st.integers(-1, 4), max_size=5),
              "transB": st.integers(-1, 2), "to": st.integers(0, 12), "group": st.integers(0, 2),
              "auto_pad": st.sampled_from(["VALID", "SAME_UPPER", "SAME_LOWER", "X"]), "ceil_mode": st.integers(0, 2),
              "alpha": st.floats(-2, 2)}


def window_out(n, k, s, before, after, ceil=False):
    span = n + before + after - k
    return -1 if span < 0 else (-(-span // s) if ceil else span // s) + 1


@st.composite
def random_graphs(draw):
    """Chains of 1 to 6 nodes, most of them plausible (weights that fit, attributes in range, in any layout
    and padding), some anything at all (any op, random attributes and constant inputs)."""
    rank = draw(st.sampled_from([2, 4]))
    # distinct sizes, so that the input's layout (NCHW or NHWC) shows in the imported model's input shape
    shape = draw(st.lists(st.integers(1, 7), min_size=rank - 1, max_size=rank - 1, unique=True))
    input_shape = ["N"] + shape
    nodes, inits, x = [], [], "x"
    floats = st.floats(-1, 1, width=32)

    def weight(name, dims):
        inits.append(init(name, np.asarray(draw(st.lists(floats, min_size=int(np.prod(dims)),
                                                         max_size=int(np.prod(dims)))), np.float32).reshape(dims)))
        return name

    for i in range(draw(st.integers(1, 6))):
        name, out, attrs, inputs, new_shape = f"n{i}", f"v{i}", {}, [x], shape
        choices = ["Relu", "Softmax", "Transpose", "Add", "Dropout", "wild"]
        choices += ["Conv", "MaxPool", "Flatten", "Reshape"] if len(shape) == 3 else ["Gemm", "MatMul"]
        op = draw(st.sampled_from(choices))
        if op == "Conv" or op == "MaxPool":
            C, H, W = shape
            k = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
            strides = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
            pads = draw(st.sampled_from([[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1], [1, 0, 1, 0]]))
            ceil = op == "MaxPool" and draw(st.booleans())
            attrs = {"kernel_shape": k, "strides": strides, "pads": pads}
            if ceil:
                attrs["ceil_mode"] = 1
            oh, ow = (window_out(n, kk, s, pads[a], pads[a + 2], ceil) for a, (n, kk, s) in
                      enumerate(zip((H, W), k, strides)))
            if min(oh, ow) < 1:
                break
            F = draw(st.integers(1, 3)) if op == "Conv" else C
            if op == "Conv":
                inputs += [weight(f"w{i}", (F, C, *k)), weight(f"b{i}", (F,))]
            new_shape = [F, oh, ow]
        elif op == "Softmax":
            attrs = {"axis": draw(st.integers(-len(shape) - 1, len(shape)))}
        elif op == "Transpose":
            attrs = {"perm": [0] + draw(st.permutations(range(1, len(shape) + 1)))}
            new_shape = [shape[p - 1] for p in attrs["perm"][1:]]
        elif op == "Add":
            dims = draw(st.sampled_from([[shape[0]] + [1] * (len(shape) - 1), shape[-1:], [1], shape]))
            inputs.append(weight(f"c{i}", dims))
        elif op in ("Flatten", "Reshape"):
            if op == "Reshape":
                inits.append(ints(f"s{i}", draw(st.sampled_from([[0, -1], [-1, int(np.prod(shape))]]))))
                inputs.append(f"s{i}")
            new_shape = [int(np.prod(shape))]
        elif op in ("Gemm", "MatMul"):
            units, trans_b = draw(st.integers(1, 4)), draw(st.integers(0, 1)) if op == "Gemm" else 0
            inputs.append(weight(f"w{i}", (units, shape[0]) if trans_b else (shape[0], units)))
            if op == "Gemm":
                attrs = {"transB": trans_b, "alpha": draw(st.sampled_from([1.0, 0.5]))}
                if draw(st.booleans()):
                    inputs.append(weight(f"b{i}", (units,)))
            new_shape = [units]
        elif op == "wild":
            op = draw(st.sampled_from(WILD_OPS))
            for k in range(draw(st.integers(0, 2))):
                dims = draw(st.lists(st.integers(1, 4), max_size=3))
                dtype = draw(st.sampled_from([np.float32, np.int64]))
                values = draw(st.lists(st.integers(-2, 5), min_size=int(np.prod(dims)), max_size=int(np.prod(dims))))
                inits.append(init(f"c{i}_{k}", np.asarray(values, dtype).reshape(dims)))
                inputs.append(f"c{i}_{k}")
            attrs = {key: draw(WILD_ATTRS[key]) for key in draw(st.lists(st.sampled_from(sorted(WILD_ATTRS)),
                                                                         max_size=2, unique=True))}
            attrs = {key: v for key, v in attrs.items() if not (isinstance(v, list) and not v)}
            inputs = [] if op == "Constant" else inputs
        nodes.append(h.make_node(op, inputs, [out], name=name, **attrs))
        x, shape = out, new_shape
        if op not in ("Relu", "Softmax", "Transpose", "Add", "Dropout", "Conv", "MaxPool", "Flatten", "Reshape",
                      "Gemm", "MatMul"):
            shape = None                                # a wild node ends the chain, its output shape unknown
            break
    if not nodes:
        nodes.append(h.make_node("Relu", ["x"], ["v"], name="relu"))
        x = "v"
    return model_proto(nodes, inits, input_shape, None if shape is None else ["N"] + shape, out=x, inp="x")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(proto=random_graphs())
def test_random_graphs_give_a_clear_error_or_a_model_that_predicts_as_onnxruntime(proto, tmp_path):
    path = save(proto, tmp_path / "random.onnx")
    note(onnx.printer.to_text(proto.graph))
    try:
        model = from_onnx(path)
    except OnnxFileError:
        return
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
    x_onnx = np.random.default_rng(0).standard_normal([2] + dims).astype(np.float32)
    x = x_onnx if len(dims) != 3 or model.input_shape == tuple(dims) else nhwc(x_onnx)
    expected = run_onnx(proto, x_onnx)
    got = model.predict(x)
    candidates = [got] + ([got.transpose(0, 3, 1, 2)] if got.ndim == 4 else [])   # an image output: NHWC or NCHW
    assert any(c.shape == expected.shape and np.allclose(c, expected, rtol=1e-5, atol=1e-5) for c in candidates)


def test_a_graph_onnx_itself_rejects_for_its_types_is_refused(tmp_path):
    # found by the random-graph fuzzing: a convolution's bias added as an int64 constant imported,
    # while onnxruntime refuses the file
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["z"], name="n0"), helper.make_node("Add", ["z", "c"], ["y"], name="n1")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 26, 26])],
        [numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w"),
         numpy_helper.from_array(np.ones((1, 2, 1, 1), np.int64), "c")])
    proto = helper.make_model(graph, producer_name="pytorch", opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxFileError, match="type and shape inference"):
        from_onnx(save(proto, tmp_path / "m.onnx"))
