"""``python -m experiments.explore [--model PATH] [--host 127.0.0.1] [--port N] [--no-browser] [--backend B]``.

Loads the model (default: the latest ``experiments.mnist`` run's), serves
the explorer page and opens it in the default browser. Ctrl-C stops it.
"""
import argparse
import sys
import webbrowser


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.explore",
                                description="Explore a trained MNIST model in the browser: layers, "
                                            "gradients, a training step, live training.")
    p.add_argument("--model", metavar="PATH",
                   help="model .npz, .onnx (convnet's or one from PyTorch, tf2onnx, Keras), .keras or .h5 "
                        "(or a run directory); default: the latest experiments.mnist run")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="port (default: %(default)s; 0 picks a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--backend", choices=("numba", "numpy"), default="numba",
                   help="numba: the engine (default); numpy: the textbook layers of convnet/layers.py, "
                        "the code the page's numbers then come from")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.add_argument("--runs-dir", default="runs", help=argparse.SUPPRESS)
    return p


def _port(text):
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}")
    return n


def main(argv=None):
    args = build_parser().parse_args(argv)
    import convnet

    convnet.set_backend(args.backend)
    from experiments.predict import NoModelError, load_model_for_inference, resolve_model_path

    try:
        path = resolve_model_path(args.model, args.runs_dir)
        model = load_model_for_inference(path)        # an uncompiled import: the Explorer compiles a copy
    except (NoModelError, ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .core import Explorer
    from .server import ExplorerServer

    explorer = Explorer(model, model_path=path)
    try:
        server = ExplorerServer(explorer, args.host, args.port, verbose=args.verbose)
    except OSError as e:
        explorer.close()
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}"
              f"{' (try --port 0 for a free port)' if args.port else ''}", file=sys.stderr)
        return 2
    print(f"model: {path} (backend: {args.backend})")
    print(f"Serving on {server.url}  (Ctrl-C stops)", flush=True)
    if not args.no_browser:
        try:
            webbrowser.open(server.url)
        except Exception:          # no browser here: the URL above is printed
            pass
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
        explorer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
