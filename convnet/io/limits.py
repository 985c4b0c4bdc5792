"""The limits every model file is held to, whatever its format (``.npz``, ONNX, and any importer).

They are checked from what a file says about itself (sizes in a zip
directory, ``.npy`` headers, tensor dims, a config's byte length) before
anything large is read, decoded or parsed into objects. One table, so that a
format cannot be the way around another's limits.
"""
MAX_WEIGHT_BYTES = 16 * 2 ** 20      # all weight arrays together (4.2M float32 values; the seed model: 0.6 MB)
MAX_LAYERS = 256
MAX_UNITS = 2 ** 20                  # elements of the input, and of every layer's output, per image
MAX_WINDOW_VALUES = 2 ** 22          # a conv/pool layer's windows per image (out rows x cols x window x channels)
MAX_JSON_BYTES = 256 * 2 ** 10       # a model's config (and a .npz file's format and compile settings)
MAX_TRAINING_JSON_BYTES = 4 * 2 ** 20  # a checkpoint's history and metadata
MAX_IMAGE_SIDE = 1 << 16             # an input image's side, or a flat input's length
#: a whole single-message model file (ONNX): the weights, their names and the graph fit well within this
MAX_MODEL_FILE_BYTES = 2 * MAX_WEIGHT_BYTES + 4 * MAX_JSON_BYTES


class LimitError(ValueError):
    """A model asks for more than these limits allow (the message names the limit)."""


def _prod(shape):
    result = 1
    for d in shape:
        result *= int(d)
    return result


def input_shape_problem(shape):
    """What is wrong with a model's input shape (a list or tuple), or None ("should be ..."; the caller
    names the shape)."""
    if (not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 3
            or not all(type(d) is int and 1 <= d <= MAX_IMAGE_SIDE for d in shape)
            or _prod(shape) > MAX_UNITS):
        return (f"should be 1 to 3 integers from 1 to {MAX_IMAGE_SIDE}, at most {MAX_UNITS:,} "
                f"values in all (convnet.limits), got {str(shape)[:80]}")
    return None


def layer_shapes(layer_objs, input_shape):
    """Walk ``layer_objs`` over ``input_shape`` without allocating anything, enforcing the limits.

    Returns ``[(layer, its input shape, its output shape)]``; raises ValueError
    naming the layer and the limit when a layer would output more than
    :data:`MAX_UNITS` values or slide windows over more than
    :data:`MAX_WINDOW_VALUES` per image, and when the parameters together
    would take more than :data:`MAX_WEIGHT_BYTES` as float32.
    """
    if len(layer_objs) > MAX_LAYERS:
        raise LimitError(f"the architecture has {len(layer_objs)} layers; at most {MAX_LAYERS} (convnet.limits)")
    problem = input_shape_problem(input_shape)
    if problem:
        raise LimitError(f"the input shape {problem}")
    shape, out, weights = tuple(input_shape), [], 0
    for layer in layer_objs:
        inp = shape
        shape = tuple(layer.compute_output_shape(shape))
        if not all(isinstance(d, int) and d >= 1 for d in shape) or _prod(shape) > MAX_UNITS:
            raise LimitError(f"layer {layer.name!r} would output {shape} per image; expected positive sizes, "
                             f"at most {MAX_UNITS:,} values (convnet.limits.MAX_UNITS)")
        window = getattr(layer, "window_size", None)      # conv and pool: what im2col copies per image
        if window is not None and _prod(shape[:-1]) * _prod(window) * inp[-1] > MAX_WINDOW_VALUES:
            raise LimitError(f"layer {layer.name!r} slides a {window} window over {inp}, more than "
                             f"{MAX_WINDOW_VALUES:,} window values per image (convnet.limits.MAX_WINDOW_VALUES)")
        layer.input_shape = inp                            # param_shapes needs it; nothing is allocated
        weights += 4 * sum(_prod(s) for s in layer.param_shapes().values())
        if weights > MAX_WEIGHT_BYTES:
            raise LimitError(f"the weights up to layer {layer.name!r} would take {weights:,} bytes as float32; "
                             f"at most {MAX_WEIGHT_BYTES:,} (convnet.limits.MAX_WEIGHT_BYTES)")
        out.append((layer, inp, shape))
    return out



def file_problem(path):
    """Why ``path`` (a ``pathlib.Path``) cannot be read as a model file, or None for a regular file.

    A FIFO would block the reader, ``/dev/zero`` never ends, and a loop of
    links never resolves: each is named as what it is, not as missing.
    """
    import os
    import stat

    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == 40:                                    # ELOOP
            return f"{path} is a loop of symbolic links"
        if path.is_symlink():
            return f"{path} is a symbolic link to {os.readlink(path)}, which does not exist"
        if isinstance(e, FileNotFoundError):
            return f"{path} does not exist"
        return f"{path} cannot be read: {e.strerror or e}"
    if stat.S_ISDIR(mode):
        return f"{path} is a directory, not a model file"
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or
                stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "a special file")
        return f"{path} is {kind}, not a regular file"
    return None
