"""Export a trained model to ONNX, to run it elsewhere (onnxruntime, other frameworks).

    python -m experiments.export [MODEL] --onnx OUT.onnx [--opset N] [--input-layout NCHW] [--force] [--no-check]

MODEL is a ``.npz`` saved by convnet or a run directory holding ``model.npz``;
by default the latest ``python -m experiments.mnist`` run. The graph takes
the same input as ``model.predict`` (float32, channels last, e.g.
``(N, 28, 28, 1)``) under the name ``input`` and gives its output under the
name ``output`` (see :mod:`convnet.onnx_io`); ``--input-layout NCHW`` makes
it take channels-first images ``(N, C, H, W)``, as PyTorch does.

After writing, the file is run with onnxruntime on a fixed batch of random
inputs and compared with ``model.predict`` (``--no-check`` skips this); the
exit status is 1 if they differ by more than 1e-5.

OUT is written atomically (a temporary file beside it, then moved into
place) and never replaces an existing file unless ``--force`` is given.
Errors (no model, a damaged model file, OUT already there, a layer ONNX
cannot express, onnx not installed) are one line ``error: ...``, exit status 2.
Needs the onnx extra: ``pip install -e ".[onnx]"``.
"""
import argparse
import os
import sys

import numpy as np

__all__ = ["build_parser", "check_with_onnxruntime", "main"]

#: the largest |onnxruntime - model.predict| accepted by the check after writing
CHECK_ATOL = 1e-5
CHECK_IMAGES = 256


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.export",
                                description="Export a trained convnet model to ONNX.")
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="model .npz (or a run directory); default: the latest experiments.mnist run")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset, 13 or newer (default: %(default)s)")
    p.add_argument("--input-layout", choices=("NHWC", "NCHW"), default="NHWC",
                   help="NHWC: the input model.predict takes (default); NCHW: channels first, as PyTorch expects")
    p.add_argument("--force", action="store_true", help="replace OUT.onnx if it exists")
    p.add_argument("--no-check", action="store_true",
                   help="do not run the exported file with onnxruntime to compare it with model.predict")
    p.add_argument("--runs-dir", default="runs", help=argparse.SUPPRESS)
    return p


def check_with_onnxruntime(model, path, n=CHECK_IMAGES, seed=0, input_layout="NHWC"):
    """``(max |difference|, argmax agrees everywhere)`` between onnxruntime and ``model.predict`` on ``n``
    random inputs in [0, 1) (the range of scaled images), given to the file in ``input_layout``."""
    import onnxruntime

    from convnet.onnx_io import INPUT_NAME, OUTPUT_NAME

    x = np.random.default_rng(seed).random((n,) + tuple(model.input_shape), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x_file = np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if input_layout == "NCHW" else x
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x_file})[0]
    expected = model.predict(x)
    if input_layout == "NCHW" and expected.ndim == 4:           # an image output is channels first too
        expected = expected.transpose(0, 3, 1, 2)
    same_argmax = got.ndim != 2 or bool(np.all(got.argmax(axis=1) == expected.argmax(axis=1)))
    return float(np.abs(got - expected).max()), same_argmax


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    try:
        import onnx
    except ImportError:
        return _fail('ONNX export needs the onnx package: pip install -e ".[onnx]"')
    newest = onnx.defs.onnx_opset_version()
    if not 13 <= args.opset <= newest:
        p.error(f"--opset must be from 13 to {newest} (the newest the installed onnx knows), got {args.opset}")
    if os.path.isdir(args.onnx):
        return _fail(f"{args.onnx} is a directory; give the name of the .onnx file to write")
    if os.path.lexists(args.onnx) and not args.force:
        return _fail(f"{args.onnx} already exists; add --force to replace it")

    import convnet
    from convnet.interop import ConversionError, to_onnx
    from experiments.predict import NoModelError, find_latest_model, resolve_model_path

    if args.model is None and find_latest_model(args.runs_dir) is None:
        return _fail(f"no trained model found (looked for {os.path.join(args.runs_dir, 'mnist-*', 'model.npz')}); "
                     f"train one with `python -m experiments.mnist` or give MODEL")
    try:
        model_path = resolve_model_path(args.model, args.runs_dir)
        model = convnet.load_model(model_path, compile=False)
    except (NoModelError, ValueError, OSError) as e:
        return _fail(e)
    try:
        out = to_onnx(model, args.onnx, opset=args.opset, overwrite=args.force, input_layout=args.input_layout)
    except (ConversionError, ValueError, OSError) as e:
        return _fail(e)
    size = os.path.getsize(out)
    print(f"model: {model_path}")
    nchw = args.input_layout == "NCHW"
    shape = (model.input_shape[2], *model.input_shape[:2]) if nchw else model.input_shape
    print(f"wrote {out} ({size / 1e3:,.0f} kB, opset {args.opset}, {model.count_params():,} parameters): "
          f"input 'input' (batch, {', '.join(map(str, shape))}) float32 channels {'first' if nchw else 'last'} "
          f"-> output 'output' (batch, {', '.join(map(str, model.output_shape))})")
    if args.no_check:
        return 0
    try:
        diff, same_argmax = check_with_onnxruntime(model, out, input_layout=args.input_layout)
    except ImportError:
        print('not checked: onnxruntime is not installed (pip install -e ".[onnx]")')
        return 0
    except RuntimeError as e:                 # e.g. an onnxruntime older than the opset written
        print(f"not checked: onnxruntime cannot run {out}: {str(e).strip().splitlines()[0]}")
        return 1
    verdict = "same" if diff <= CHECK_ATOL and same_argmax else "DIFFERENT"
    print(f"onnxruntime vs model.predict on {CHECK_IMAGES} random inputs: max |difference| {diff:.1e}, "
          f"argmax {'equal' if same_argmax else 'NOT equal'}: {verdict}")
    return 0 if verdict == "same" else 1


if __name__ == "__main__":
    sys.exit(main())
