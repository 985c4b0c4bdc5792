"""ONNX export (convnet.onnx_io, through convnet.interop): onnxruntime computes what model.predict computes.

Every comparison is on values (not just shapes), so the two classic export
mistakes, a conv kernel in the wrong layout and a Flatten in NCHW order, would
fail it: the tests at the end make both mistakes on purpose and check that
the comparison catches them.
"""
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import damaged_copy, with_random_biases  # noqa: E402
from convnet import Sequential, layers, optimizers  # noqa: E402  (after the importorskip)
from convnet.architectures import mnist_cnn  # noqa: E402
from convnet import onnx_io  # noqa: E402
from convnet.interop import ConversionError, from_onnx, to_onnx  # noqa: E402
from convnet.onnx_io import (BATCH_DIM, CONFIG_KEY, INPUT_NAME, MAX_FILE_BYTES, OUTPUT_NAME,  # noqa: E402
                             OnnxFileError)

ATOL = 1e-5


def run_onnx(path_or_proto, x):
    data = path_or_proto.SerializeToString() if isinstance(path_or_proto, onnx.ModelProto) else str(path_or_proto)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def assert_same_function(model, path_or_proto, x):
    """onnxruntime's output equals model.predict within ATOL, relative to the output's scale."""
    expected = model.predict(x)
    got = run_onnx(path_or_proto, x)
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL * scale)



# --------------------------------------------------------------- the 10,000 test images
@pytest.fixture(scope="module")
def trained(mnist_small, tmp_path_factory):
    """The seed architecture trained 1 epoch on 2,000 images (a few seconds), and its ONNX file."""
    x_train, y_train, _, _ = mnist_small
    model = mnist_cnn(seed=0)
    model.compile(optimizers.Adam(), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=1, batch_size=32, seed=0, verbose=0)
    return model, to_onnx(model, tmp_path_factory.mktemp("onnx") / "mnist.onnx")


def test_onnxruntime_equals_predict_on_all_10000_test_images(mnist_small, trained):
    _, _, x_test, y_test = mnist_small
    model, path = trained
    expected = model.predict(x_test)
    got = run_onnx(path, x_test)
    assert got.shape == (10_000, 10)
    assert np.abs(got - expected).max() <= 1e-5
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    assert (expected.argmax(axis=1) == y_test).mean() > 0.75         # trained (80.5%), not a trivial model


def test_file_records_producer_names_shapes_and_passes_the_checker(trained):
    from convnet import __version__
    model, path = trained
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert (proto.producer_name, proto.producer_version) == ("convnet", __version__)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (inp, out)]
    assert dims == [[BATCH_DIM, 28, 28, 1], [BATCH_DIM, 10]]
    stored = json.loads({p.key: p.value for p in proto.metadata_props}[CONFIG_KEY])
    assert stored == json.loads(json.dumps(model.get_config()))            # tuples as JSON lists
    # any batch size runs, the symbolic batch dimension included
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    assert_same_function(model, path, x)


def test_dropout_is_left_out_of_the_graph(trained):
    _, path = trained
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "Dropout" not in ops
    assert ops == ["Transpose", "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Transpose", "Flatten",
                   "Gemm", "Relu", "Gemm", "Softmax"]


def test_round_trip_gives_back_the_same_model(trained, tmp_path):
    model, path = trained
    back = from_onnx(path)
    assert back.get_config() == model.get_config()                 # Dropout layers and names included
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(1).random((5, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    # and it exports to the same bytes
    again = to_onnx(back, tmp_path / "again.onnx")
    assert again.read_bytes() == path.read_bytes()


# --------------------------------------------------------------- every layer, every setting
def model_of(stack, input_shape, seed=0):
    return with_random_biases(Sequential(stack, input_shape=input_shape, seed=seed), seed)


CASES = {
    # padding "same" with an even kernel pads asymmetrically (1 before, 2 after for 4x4)
    "conv same even kernel": lambda: model_of([layers.Conv2D(3, 4, padding="same", activation="relu")], (7, 6, 2)),
    "conv same stride 2 odd": lambda: model_of([layers.Conv2D(4, 3, strides=2, padding="same")], (9, 8, 3)),
    "conv valid strides 2x1": lambda: model_of([layers.Conv2D(2, (4, 2), strides=(2, 1))], (9, 7, 3)),
    "conv softmax over channels": lambda: model_of([layers.Conv2D(5, 3, activation="softmax")], (6, 6, 2)),
    "pool valid floors": lambda: model_of([layers.MaxPool2D(2)], (7, 9, 3)),
    "pool overlapping 3/2": lambda: model_of([layers.MaxPool2D(3, strides=2)], (8, 7, 2)),
    "pool same stride 2 odd": lambda: model_of([layers.MaxPool2D(2, padding="same")], (5, 7, 2)),
    "pool same 3x3 stride 1": lambda: model_of([layers.MaxPool2D(3, strides=1, padding="same")], (5, 6, 2)),
    "pool stride larger than window": lambda: model_of([layers.MaxPool2D(2, strides=3)], (8, 8, 1)),
    "dense linear": lambda: model_of([layers.Dense(5)], (7,)),
    "dense relu, dense softmax": lambda: model_of([layers.Dense(6, activation="relu"),
                                                   layers.Dense(4, activation="softmax")], (5,)),
    "relu and softmax layers on an image": lambda: model_of([layers.Conv2D(3, 2), layers.ReLU(), layers.Softmax()],
                                                            (5, 4, 2)),
    "relu and softmax layers flat": lambda: model_of([layers.Dense(6), layers.ReLU(), layers.Dropout(0.5),
                                                      layers.Softmax()], (4,)),
    "flatten straight from the input": lambda: model_of([layers.Flatten(), layers.Dense(3)], (3, 4, 2)),
    "only dropout": lambda: model_of([layers.Dropout(0.3)], (3, 2, 2)),
    "strided same conv net": lambda: model_of([
        layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"), layers.Dropout(0.2),
        layers.MaxPool2D(2, padding="same"), layers.Conv2D(6, 2, padding="same", activation="relu"),
        layers.MaxPool2D(3, strides=2), layers.Flatten(), layers.Dense(8, activation="relu"), layers.Dropout(0.5),
        layers.Dense(3, activation="softmax")], (17, 13, 3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_layer_and_setting_computes_the_same(case, tmp_path):
    model = CASES[case]()
    x = np.random.default_rng(2).standard_normal((6,) + model.input_shape).astype(np.float32)
    path = to_onnx(model, tmp_path / "m.onnx")
    assert_same_function(model, path, x)
    back = from_onnx(path)
    assert back.get_config() == model.get_config()
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_graph_matches_either_backend(backend, tmp_path):
    """The export reads only the layers' parameters and settings: both tiers compute what it computes."""
    import convnet
    model = CASES["strided same conv net"]()
    path = to_onnx(model, tmp_path / "m.onnx")
    with convnet.backend(backend):
        assert_same_function(model, path, np.random.default_rng(6).random((5, 17, 13, 3), dtype=np.float32))


def test_the_cases_cover_every_layer_class():
    used = {type(layer).__name__ for make in CASES.values() for layer in make().layers}
    assert used == set(layers.LAYER_CLASSES)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_opsets(opset, tmp_path):
    model = CASES["strided same conv net"]()
    path = to_onnx(model, tmp_path / "m.onnx", opset=opset)
    assert onnx.load(str(path)).opset_import[0].version == opset
    assert_same_function(model, path, np.random.default_rng(0).random((2, 17, 13, 3), dtype=np.float32))
    assert from_onnx(path).get_config() == model.get_config()


@pytest.mark.parametrize("case", ["strided same conv net", "conv softmax over channels", "pool same stride 2 odd"])
def test_nchw_input_layout_takes_channels_first_images(case, tmp_path):
    model = CASES[case]()
    path = to_onnx(model, tmp_path / "m.onnx", input_layout="NCHW")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    H, W, C = model.input_shape
    assert [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [BATCH_DIM, C, H, W]
    assert proto.graph.node[0].op_type != "Transpose"                # channels first from the start
    x = np.random.default_rng(5).standard_normal((4,) + model.input_shape).astype(np.float32)
    got, expected = run_onnx(path, np.ascontiguousarray(x.transpose(0, 3, 1, 2))), model.predict(x)
    if expected.ndim == 4:                                           # an image output is channels first too
        expected = expected.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL * max(1.0, float(np.abs(expected).max())))
    back = from_onnx(path)                                           # read back as convnet's own file
    assert back.get_config() == model.get_config()
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_nchw_input_layout_needs_an_image_input(tmp_path):
    with pytest.raises(ValueError, match="input_layout='NCHW' is for image inputs"):
        to_onnx(CASES["dense linear"](), tmp_path / "m.onnx", input_layout="NCHW")
    with pytest.raises(ValueError, match="input_layout must be one of"):
        to_onnx(mnist_cnn(), tmp_path / "m.onnx", input_layout="nchw")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("opset", [12, 0, "17", 17.0, 10_000])
def test_bad_opset_is_refused(opset, tmp_path):
    with pytest.raises(ValueError, match="opset must be an integer from 13"):
        to_onnx(mnist_cnn(), tmp_path / "m.onnx", opset=opset)
    assert not (tmp_path / "m.onnx").exists()


# --------------------------------------------------------------- the two classic mistakes are caught
def edited(path, edit):
    proto = onnx.load(str(path))
    edit(proto.graph)
    return proto


def test_a_kernel_in_the_wrong_layout_would_be_caught(tmp_path):
    model = model_of([layers.Conv2D(4, 3, activation="relu"), layers.Flatten(), layers.Dense(3)], (6, 6, 2))
    path = to_onnx(model, tmp_path / "m.onnx")
    x = np.random.default_rng(3).standard_normal((4, 6, 6, 2)).astype(np.float32)

    def swap_kernel_height_and_width(graph):     # OIWH instead of OIHW: same shape for a square kernel
        kernel = next(t for t in graph.initializer if t.name == "conv2d/kernel")
        array = onnx.numpy_helper.to_array(kernel).transpose(0, 1, 3, 2)
        kernel.CopyFrom(onnx.numpy_helper.from_array(np.ascontiguousarray(array), kernel.name))

    assert_same_function(model, path, x)
    with pytest.raises(AssertionError):
        assert_same_function(model, edited(path, swap_kernel_height_and_width), x)


def test_a_flatten_in_channels_first_order_would_be_caught(tmp_path):
    model = model_of([layers.Conv2D(4, 3, activation="relu"), layers.MaxPool2D(2), layers.Flatten(),
                      layers.Dense(3, activation="softmax")], (8, 8, 1))
    path = to_onnx(model, tmp_path / "m.onnx")
    x = np.random.default_rng(4).standard_normal((4, 8, 8, 1)).astype(np.float32)

    def flatten_nchw(graph):                     # drop the transpose before Flatten: shapes stay valid
        i = next(i for i, n in enumerate(graph.node) if n.name == "flatten/Transpose")
        source = graph.node[i].input[0]
        del graph.node[i]
        graph.node[i].input[0] = source

    wrong = edited(path, flatten_nchw)
    onnx.checker.check_model(wrong, full_check=True)     # a valid graph...
    with pytest.raises(AssertionError):                  # ...computing something else
        assert_same_function(model, wrong, x)


# --------------------------------------------------------------- what cannot be exported
class Square(layers.Layer):
    base_name = "square"

    def call(self, x, training):
        return x * x


class DoubledDense(layers.Dense):
    def call(self, x, training):
        return 2 * super().call(x, training)


@pytest.mark.parametrize("layer, kind", [(Square(name="my_square"), "Square"),
                                         (DoubledDense(3, name="my_dense"), "DoubledDense")])
def test_a_layer_without_onnx_equivalent_is_named(layer, kind, tmp_path):
    model = Sequential([layers.Dense(4), layer], input_shape=(3,), seed=0)
    with pytest.raises(ConversionError, match=rf"layer '{layer.name}' \({kind}\) has no ONNX equivalent"):
        to_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_unbuilt_model_and_non_model_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not built"):
        to_onnx(Sequential([layers.Dense(3)]), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="Sequential"):
        to_onnx("model.npz", tmp_path / "m.onnx")


def test_float64_model_is_exported_in_float32(tmp_path):
    model = mnist_cnn(seed=1).astype(np.float64)
    path = to_onnx(model, tmp_path / "m.onnx")
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(run_onnx(path, x), model.predict(x), atol=1e-6)


# --------------------------------------------------------------- writing the file
def test_an_existing_file_is_not_overwritten_unless_asked(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"someone else's file")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        to_onnx(mnist_cnn(), target)
    assert target.read_bytes() == b"someone else's file"
    to_onnx(mnist_cnn(), target, overwrite=True)
    assert from_onnx(target).count_params() == 150_858
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]       # no temporary file left


def test_a_directory_is_not_a_target(tmp_path):
    with pytest.raises(IsADirectoryError):
        to_onnx(mnist_cnn(), tmp_path)


def test_missing_onnx_package_gives_the_install_command(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "onnx", None)       # makes `import onnx` fail
    with pytest.raises(ImportError, match=r'pip install -e "\.\[onnx\]"'):
        to_onnx(mnist_cnn(), tmp_path / "m.onnx")
    with pytest.raises(ImportError, match=r'pip install -e "\.\[onnx\]"'):
        from_onnx(tmp_path / "m.onnx")


# --------------------------------------------------------------- reading: only what convnet wrote
@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    model = model_of([layers.Conv2D(2, 3, padding="same", activation="relu"), layers.MaxPool2D(2),
                      layers.Dropout(0.5), layers.Flatten(), layers.Dense(3, activation="softmax")], (6, 6, 1))
    return model, to_onnx(model, tmp_path_factory.mktemp("small") / "small.onnx")


def save(proto, path):
    path.write_bytes(proto.SerializeToString())
    return path


def test_garbage_empty_and_truncated_files_are_refused(small_file, tmp_path):
    _, path = small_file
    data = path.read_bytes()
    cases = {"empty.onnx": b"", "text.onnx": b"this is not a model\n" * 10,
             "truncated.onnx": data[:len(data) // 2], "npz.onnx": b"PK\x03\x04" + bytes(100)}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(OnnxFileError, match=name):
            from_onnx(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        from_onnx(tmp_path / "missing.onnx")


def test_a_file_too_large_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.onnx"
    with open(big, "wb") as f:                       # sparse: takes no space on disk
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(OnnxFileError, match="larger than any model convnet exports"):
        from_onnx(big)


def test_a_file_convnet_did_not_write_is_imported_not_checked_against_convnet_graphs(tmp_path):
    """Another producer's graph goes to the importer (tests/test_onnx_import.py); only convnet's own files
    must be, node for node, the graph convnet writes."""
    h = onnx.helper
    graph = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])])
    proto = h.make_model(graph, producer_name="pytorch")
    model = from_onnx(save(proto, tmp_path / "other.onnx"))
    assert [type(layer).__name__ for layer in model.layers] == ["ReLU"]


def test_an_edited_graph_is_refused(small_file, tmp_path):
    _, path = small_file

    def change_strides(graph):
        pool = next(n for n in graph.node if n.op_type == "MaxPool")
        next(a for a in pool.attribute if a.name == "strides").ints[:] = [1, 1]

    def extra_node(graph):
        graph.node[-1].output[0] = "pre"
        graph.node.append(onnx.helper.make_node("Relu", ["pre"], [OUTPUT_NAME], name="extra"))

    def unused_node(graph):
        graph.node.append(onnx.helper.make_node("Identity", [OUTPUT_NAME], ["spare"], name="spare"))

    for edit, message in [(change_strides, "node 3 is MaxPool"),
                          (extra_node, r"node 7 is Softmax 'dense/Softmax' \(dense/Gemm -> pre\)"),
                          (unused_node, "has 9 nodes, but convnet writes 8")]:
        with pytest.raises(OnnxFileError, match=message):
            from_onnx(save(edited(path, edit), tmp_path / "edited.onnx"))


def set_config(proto, edit):
    entry = next(p for p in proto.metadata_props if p.key == CONFIG_KEY)
    config = json.loads(entry.value)
    edit(config)
    entry.value = json.dumps(config)
    return proto


def test_metadata_that_does_not_match_the_weights_is_refused_before_building(small_file, tmp_path):
    _, path = small_file

    def huge_dense(config):                          # would allocate 512 GB if it were built
        config["layers"][-1]["config"]["units"] = 10 ** 9

    def unknown_layer(config):
        config["layers"][0]["class_name"] = "LSTM"

    def not_json(proto):
        next(p for p in proto.metadata_props if p.key == CONFIG_KEY).value = "{not json"

    cases = [(lambda p: set_config(p, huge_dense), r"layer 'dense' would output \(1000000000,\) per image; "
                                                   r"expected positive sizes, at most 1,048,576 values"),
             (lambda p: set_config(p, lambda c: c["layers"][-1]["config"].update(units=4)),
              r"initializer 'dense/kernel' has shape \(18, 3\), but its architecture needs \(18, 4\)"),
             (lambda p: set_config(p, unknown_layer), "layer 0 should be"),
             (lambda p: set_config(p, lambda c: c.update(input_shape=[6, 6, -1])), "'input_shape' should be"),
             (lambda p: set_config(p, lambda c: c["layers"][0]["config"].update(filters="x")),
              "cannot be rebuilt: ValueError"),
             (not_json, "is not valid JSON")]
    for i, (edit, message) in enumerate(cases):
        proto = onnx.load(str(path))
        edit(proto)
        with pytest.raises(OnnxFileError, match=message):
            from_onnx(save(proto, tmp_path / f"case{i}.onnx"))


def test_the_limits_of_npz_files_hold_for_onnx_files(small_file, tmp_path, monkeypatch):
    """convnet.limits: config bytes (before parsing), layers, input size, weights, as for load_model."""
    _, path = small_file
    real_loads = json.loads

    def no_big_parse(text, *a, **k):
        assert len(text) <= 256 * 1024, "a config over the limit was parsed"
        return real_loads(text, *a, **k)

    monkeypatch.setattr(onnx_io.json, "loads", no_big_parse)
    proto = onnx.load(str(path))
    next(p for p in proto.metadata_props if p.key == CONFIG_KEY).value = "[" + "[]," * 400_000 + "[]]"
    with pytest.raises(OnnxFileError, match=r"takes 1,200,004 characters; a model config is at most 262,144"):
        from_onnx(save(proto, tmp_path / "big_config.onnx"))
    cases = [(lambda c: c.update(layers=c["layers"] * 500), r"has 2500 layers; at most 256"),
             (lambda c: c.update(input_shape=[65536, 65536, 1]), r"'input_shape' should be .* at most 1,048,576 "
                                                                   r"values in all"),
             (lambda c: c.update(input_shape=[1 << 17, 1, 1]), r"'input_shape' should be 1 to 3 integers from 1 "
                                                               r"to 65536")]
    for i, (edit, message) in enumerate(cases):
        with pytest.raises(OnnxFileError, match=message):
            from_onnx(save(set_config(onnx.load(str(path)), edit), tmp_path / f"limit{i}.onnx"))
    # a real export above the weight limit (4.2M weights, 16.8 MB) is refused from the initializers' dims
    big = Sequential([layers.Dense(4100)], input_shape=(1024,))
    with pytest.raises(OnnxFileError, match=r"initializers take more than 16,777,216 bytes"):
        from_onnx(to_onnx(big, tmp_path / "big_dense.onnx"))


def test_a_path_that_is_not_a_regular_file_is_named_as_what_it_is(tmp_path):
    os.mkfifo(tmp_path / "fifo.onnx")
    with pytest.raises(OnnxFileError, match=r"fifo\.onnx is a FIFO \(named pipe\), not a regular file"):
        from_onnx(tmp_path / "fifo.onnx")
    with pytest.raises(OnnxFileError, match=r"/dev/zero is a device, not a regular file"):
        from_onnx("/dev/zero")
    (tmp_path / "a.onnx").symlink_to(tmp_path / "b.onnx")
    (tmp_path / "b.onnx").symlink_to(tmp_path / "a.onnx")
    with pytest.raises(OnnxFileError, match=r"a\.onnx is a loop of symbolic links"):
        from_onnx(tmp_path / "a.onnx")
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx does not exist"):
        from_onnx(tmp_path / "missing.onnx")


def test_initializers_are_checked_before_decoding(small_file, tmp_path):
    _, path = small_file

    def as_double(graph):
        t = next(t for t in graph.initializer if t.name == "dense/bias")
        t.CopyFrom(onnx.numpy_helper.from_array(np.zeros(3), t.name))

    def short_data(graph):
        t = next(t for t in graph.initializer if t.name == "dense/kernel")
        t.raw_data = t.raw_data[:-4]

    def external(graph):
        t = next(t for t in graph.initializer if t.name == "dense/kernel")
        t.data_location = onnx.TensorProto.EXTERNAL
        t.ClearField("raw_data")
        t.external_data.add(key="location", value="/etc/passwd")

    for edit, message in [(as_double, "data type 11, expected float32"),
                          (short_data, "holds 53 values, expected 54"), (external, "refers to external data")]:
        with pytest.raises(OnnxFileError, match=message):
            from_onnx(save(edited(path, edit), tmp_path / "bad.onnx"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_files_give_a_clear_error_or_a_model(small_file, tmp_path, data):
    """Random byte flips and cuts anywhere in a valid file: OnnxFileError, or (weights hit) a model."""
    _, path = small_file
    damaged = damaged_copy(data, path, tmp_path)
    try:
        model = from_onnx(damaged)
    except OnnxFileError:
        return
    assert model.output_shape == (3,)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(min_size=1, max_size=300))
def test_random_bytes_give_a_clear_error(tmp_path, content):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(content)
    with pytest.raises(OnnxFileError):
        from_onnx(junk)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_metadata_gives_a_clear_error_or_the_model(small_file, tmp_path, data):
    """Any JSON value put anywhere in the stored config (or any text in its place): OnnxFileError or the model."""
    _, path = small_file
    proto = onnx.load(str(path))
    entry = next(p for p in proto.metadata_props if p.key == CONFIG_KEY)
    if data.draw(st.booleans()):
        entry.value = data.draw(st.text(max_size=60))
    else:
        config = json.loads(entry.value)
        node, key = config, None
        for _ in range(data.draw(st.integers(0, 4))):      # walk down to a random place
            if isinstance(node, dict) and node:
                key = data.draw(st.sampled_from(sorted(node)))
            elif isinstance(node, list) and node:
                key = data.draw(st.integers(0, len(node) - 1))
            else:
                break
            if not isinstance(node[key], (dict, list)):
                break
            node = node[key]
        value = data.draw(_json_values)
        if isinstance(node, dict):
            node[key if key is not None and data.draw(st.booleans()) else data.draw(st.text(max_size=8))] = value
        elif node:
            node[data.draw(st.integers(0, len(node) - 1))] = value
        entry.value = json.dumps(config)
    try:
        model = from_onnx(save(proto, tmp_path / "meta.onnx"))
    except OnnxFileError:
        return
    assert model.output_shape == (3,)
