"""What the explorer computes, without any HTTP: one model, its per-page copies, the numbers each view shows.

:class:`Explorer` holds the model loaded at start-up (never changed) and a
:class:`Session` per open page. A session owns a copy of the model (weights
and optimizer state), so "apply a training step" changes that copy only; a
lock around it keeps two requests of the same page from interleaving. The
functions here read only the public layer contract: ``forward``,
``backward``, ``output``, ``preactivation``, ``grad_output``,
``grad_input``, ``params`` and ``grads``; and of the model ``layers``,
``forward``, ``backward``, ``compute_loss``, ``params_and_grads``,
``get_weights``/``set_weights``, ``train_step`` and ``optimizer``. The
textbook code shown beside the numbers, and which of its lines ran, comes
from :mod:`experiments.explore.source`.

Arrays travel to the page as ``{"shape", "data", "min", "max"}`` with
``data`` the base64 of little-endian float32 (see :func:`encode`): about
four times smaller and a hundred times faster to make than a JSON list.
"""
import base64
import collections
import math
import secrets
import threading
import time

import numpy as np

from convnet import gradcheck, optimizers, schedules, study

from . import source

#: the input every explorer view works on: one MNIST-style digit
INPUT_SHAPE = (28, 28, 1)
CLASSES = 10
#: open pages whose model copies are kept; the least recently used idle one goes first
MAX_SESSIONS = 8
#: sampled entries per gradient tensor in the gradient check, and its bounds
GRADCHECK_DEFAULT, GRADCHECK_MAX = 3, 10
#: live training: bounds of what a page may ask for
TRAIN_LIMITS = {"images": (100, 60000), "epochs": (1, 5), "batch_size": (1, 512)}
TRAIN_LR = (1e-5, 1.0)
#: bounds of the learning rate a page may give the single training step
STEP_LR = (1e-6, 1.0)
#: points kept per training curve (batches are averaged in groups beyond that)
CURVE_POINTS = 400
#: test digits scored during live training, every TEST_EVERY batches (short runs: ten times in all)
TEST_SUBSET, TEST_EVERY = 500, 25


class ExploreError(ValueError):
    """A request the explorer cannot serve; ``status`` is the HTTP status to answer with."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------ encoding
def encode(a):
    """An array for the page: shape, base64 float32 (little-endian) data, min and max."""
    a = np.asarray(a, dtype="<f4")
    return {"shape": list(a.shape), "data": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii"),
            "min": float(a.min()) if a.size else 0.0, "max": float(a.max()) if a.size else 0.0}


def decode(d):
    """Inverse of :func:`encode` (used by tests and scripts)."""
    return np.frombuffer(base64.b64decode(d["data"]), dtype="<f4").reshape(d["shape"])


def _norm(a):
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64)))


# ------------------------------------------------------------------ the model
def clone_model(model, seed=None, fresh=False):
    """A copy of ``model`` with its own weights and optimizer state (default Adam if it has none).

    ``fresh=True`` gives the same architecture with new initial weights
    drawn from ``seed`` and a new optimizer: what a live training run starts from.
    """
    clone = model.clone(seed=seed, weights=not fresh)
    opt = model.optimizer if model.optimizer is not None else optimizers.Adam()
    new_opt = type(opt)(**opt.get_config())
    if not fresh and opt.iterations:
        new_opt.set_state(opt.get_state())
    clone.compile(optimizer=new_opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return clone


def step_learning_rate(optimizer):
    """``(rate, source)``: the rate the explorer's single training step uses unless the page gives one.

    A constant rate is the model's own. A schedule is asked for its initial
    (or, with a warmup, its peak) rate: at the end of a cosine decay the
    scheduled rate is 0, and a step with it would change nothing.
    """
    if optimizer is None:
        return 1e-3, "Adam's default (the model file has no optimizer)"
    lr = optimizer.learning_rate
    if isinstance(lr, schedules.LearningRateSchedule):
        start = float(lr(0))
        peak = max(start, float(getattr(lr, "warmup_target", None) or 0.0))
        now = float(lr(max(optimizer.iterations - 1, 0)))
        what = "peak" if peak > start else "initial"
        return peak, (f"the {what} rate of the model's {type(lr).__name__} schedule (after its "
                      f"{optimizer.iterations:,} training steps the schedule is at {now:.3g})")
    return float(lr), f"the model's {type(optimizer).__name__} learning rate"


def describe_layers(model):
    """Name, type, shapes, activation, parameter shapes and window geometry of every layer."""
    rows = []
    for i, layer in enumerate(model.layers):
        row = {"index": i, "name": layer.name, "type": type(layer).__name__,
               "input_shape": list(layer.input_shape), "output_shape": list(layer.output_shape),
               "activation": getattr(layer, "activation_name", None) or "linear",
               "params": {k: list(p.shape) for k, p in layer.params.items()}}
        window = _window(layer)
        if window:
            row["window"] = {"size": list(window[0]), "strides": list(window[1]), "padding": list(window[2])}
        if hasattr(layer, "rate"):
            row["rate"] = layer.rate
        rows.append(row)
    return rows


def _window(layer):
    """``(size, strides, (pad_top, pad_left))`` of a conv or pooling layer, else None."""
    size = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
    if size is None:
        return None
    from convnet.utils import pad_amounts

    strides = layer.strides
    pads = tuple(pad_amounts(layer.input_shape[d], size[d], strides[d], getattr(layer, "padding", "valid"))[0]
                 for d in range(2))
    return tuple(size), tuple(strides), pads


# ------------------------------------------------------------------ sessions
class Session:
    """One page's copy of the model, its lock, and its live training run (if any)."""

    def __init__(self, sid, base, step_rate):
        self.id = sid
        self.lock = threading.RLock()
        self.model = clone_model(base)
        self.steps_applied = 0
        self.learning_rate, self.learning_rate_source = step_rate
        self.training = None
        self.last_used = time.monotonic()


class Explorer:
    """The model chosen at start-up, the sessions of the open pages, MNIST for browsing and training."""

    def __init__(self, model, model_path="", data_dir=None, max_sessions=MAX_SESSIONS):
        if tuple(model.input_shape) != INPUT_SHAPE or tuple(model.output_shape) != (CLASSES,):
            raise ValueError(f"the explorer needs an MNIST model mapping {INPUT_SHAPE} to ({CLASSES},); "
                             f"this one maps {tuple(model.input_shape)} to {tuple(model.output_shape)}")
        self.step_rate = step_learning_rate(model.optimizer)      # from the file's optimizer, before any copy
        if model.loss is None:        # loaded for inference only: the stateless gradient views need a loss
            model = clone_model(model)
        self.base = model
        self.model_path = str(model_path)
        self.base_lock = threading.Lock()
        self.data_dir = data_dir
        self.max_sessions = max_sessions
        self.sessions = collections.OrderedDict()
        self.sessions_lock = threading.Lock()
        self.training_slot = threading.Semaphore(1)       # one live training run at a time: 2 cores
        self._mnist = None
        self.mnist_lock = threading.Lock()
        self.layers = describe_layers(model)
        self.sources = source.source_files()
        # the sessions' copies are compiled with sparse cross-entropy: after a softmax, the two are fused
        fused = getattr(model.layers[-1], "activation_name", None) == "softmax"
        ran = self._lines_run(fused)
        for row, layer in zip(self.layers, model.layers):
            row["code"] = source.layer_code(layer, row["index"] == len(model.layers) - 1, fused, set(self.sources),
                                            ran)
        self.chain_code = source.chain_code(set(self.sources))
        # BLAS on one thread for as long as the explorer lives. It works on one image at a time,
        # from many threads (one per request, one for live training); with BLAS's pool of two,
        # convnet's per-call switch to one thread and back (convnet.engine.threads.limited) made a
        # training step 20-40 times slower in a thread other than the one that used BLAS first.
        from threadpoolctl import threadpool_limits

        self._blas = threadpool_limits(limits=1, user_api="blas")
        self.base.forward(np.zeros((1,) + INPUT_SHAPE, np.float32))     # compile the kernels before the first page

    def _lines_run(self, fused):
        """Which lines of the textbook methods an image's forward and backward pass runs (source.lines_run)."""
        last = len(self.base.layers) - 1
        functions = [fn for i, layer in enumerate(self.base.layers)
                     for _, _, fn in source.textbook_steps(layer, i == last, fused)]
        probe = np.random.default_rng(0).uniform(0, 1, (1,) + INPUT_SHAPE).astype(np.float32)
        copy = clone_model(self.base)
        try:
            return source.lines_run(lambda: source.run_textbook(copy, probe, 0, fused), functions)
        except Exception:      # a layer the textbook run cannot take: every statement is marked instead
            return None

    def close(self):
        """Stop any live training and give BLAS its threads back."""
        for s in list(self.sessions.values()):
            if s.training is not None:
                s.training.stop()
                s.training.thread.join(timeout=30)
        self._blas.restore_original_limits()

    # -------------------------------------------------------------- sessions
    def session(self, sid):
        """The session ``sid`` (created on first use), or None for a stateless request (the loaded model)."""
        if sid is None:
            return None
        with self.sessions_lock:
            s = self.sessions.get(sid)
            if s is None:
                self._evict()
                s = self.sessions[sid] = Session(sid, self.base, self.step_rate)
                s.new = True
            else:
                s.new = False
            self.sessions.move_to_end(sid)
            s.last_used = time.monotonic()
            return s

    def _evict(self):
        while len(self.sessions) >= self.max_sessions:
            idle = [k for k, s in self.sessions.items() if not (s.training and s.training.running)]
            if not idle:
                raise ExploreError(f"too many open pages ({len(self.sessions)}, each training); "
                                   f"close one or stop its training", status=503)
            del self.sessions[idle[0]]

    def _model(self, session):
        """``(model, lock)`` a request works on: the page's copy, or the loaded model for scripts."""
        if session is None:
            return self.base, self.base_lock
        return session.model, session.lock

    # ------------------------------------------------------------- forward
    def predict(self, session, pixels, layers=False):
        """Prediction, probabilities and (``layers=True``) every layer's output for one 28x28 image."""
        model, lock = self._model(session)
        x = pixels.reshape((1,) + INPUT_SHAPE).astype(np.float32)
        with lock:
            out = model.forward(x, training=False)
            probs = out[0].astype(np.float64)
            result = {"prediction": int(np.argmax(probs)), "probabilities": probs.tolist()}
            last = model.layers[-1]
            if last.preactivation is not None:
                result["logits"] = np.asarray(last.preactivation[0], dtype=np.float64).tolist()
            if layers:
                result["layers"] = [{"name": l.name, "type": type(l).__name__, "output": encode(l.output[0])}
                                    for l in model.layers]
        return result

    def unit(self, session, pixels, layer_index, position):
        """How one unit's value was made: its receptive field and the arithmetic (dot product) behind it."""
        model, lock = self._model(session)
        if not 0 <= layer_index < len(model.layers):
            raise ExploreError(f"layer must be an index 0..{len(model.layers) - 1}, got {layer_index}")
        layer = model.layers[layer_index]
        shape = tuple(layer.output_shape)
        if len(position) != len(shape) or not all(0 <= p < n for p, n in zip(position, shape)):
            raise ExploreError(f"unit of layer {layer.name} must be {len(shape)} indices within {list(shape)}, "
                               f"got {list(position)}")
        x = pixels.reshape((1,) + INPUT_SHAPE).astype(np.float32)
        with lock:
            model.forward(x, training=False)
            below = model.layers[layer_index - 1].output[0] if layer_index else x[0]
            out = {"layer": layer.name, "type": type(layer).__name__, "index": layer_index,
                   "position": list(position), "value": float(layer.output[0][tuple(position)]),
                   "activation": getattr(layer, "activation_name", None) or "linear",
                   "receptive_field": receptive_field(model, layer_index, position)}
            out.update(_arithmetic(layer, below, tuple(position)))
        return out

    # ------------------------------------------------------------ backward
    def backward(self, session, pixels, target):
        """Loss for label ``target``; every layer's dL/d(output), dL/d(input), parameter gradients; saliency."""
        model, lock = self._model(session)
        x = pixels.reshape((1,) + INPUT_SHAPE).astype(np.float32)
        y = np.array([target])
        with lock:
            saliency = study.saliency_map(model, x, target=target)[0, :, :, 0].copy()
            out = model.forward(x, training=False)
            loss, dout, pre = model.compute_loss(y, out)
            dx = model.backward(dout, preactivation=pre, input_grad=True)
            layers = []
            for i, layer in enumerate(model.layers):
                row = {"name": layer.name, "type": type(layer).__name__,
                       "grad_output": encode(layer.grad_output[0]), "grad_output_norm": _norm(layer.grad_output),
                       "grad_input": encode(layer.grad_input[0]), "grad_input_norm": _norm(layer.grad_input),
                       "params": {k: {"grad": encode(g), "grad_norm": _norm(g), "param_norm": _norm(layer.params[k])}
                                  for k, g in layer.grads.items()}}
                row.update(_through_the_gate(layer, fused=bool(pre) and i == len(model.layers) - 1))
                layers.append(row)
            probs = out[0].astype(np.float64)
        return {"target": int(target), "loss": float(loss), "probabilities": probs.tolist(),
                "prediction": int(np.argmax(probs)), "fused_softmax": bool(pre), "layers": layers,
                "saliency": encode(saliency), "input_gradient": encode(dx[0, :, :, 0])}

    def gradcheck(self, session, pixels, target, per_tensor=GRADCHECK_DEFAULT, seed=0, h=1e-5):
        """Analytic against central-difference gradients of the loss for a few sampled entries of each array.

        Runs on a float64 copy of the model (:func:`convnet.study.copy_model`)
        with :func:`convnet.gradcheck.numerical_gradient` and
        :func:`convnet.gradcheck.relative_error`; the page's model is untouched.

        An entry whose step of +-h crosses a kink (a ReLU switching, a max-pool
        tie changing its winner: common where a drawing has flat regions of
        ink) has no derivative there, so the central difference need not match.
        Such an entry is recognised by :func:`convnet.gradcheck.switches` (the
        forward pass's discrete choices) differing at w+h or w-h from those at
        w; it is marked ``kink`` and left out of the tensor's ``norm_error``.
        """
        model, lock = self._model(session)
        with lock:
            clone = study.copy_model(model, np.float64)
        x = np.array(pixels.reshape((1,) + INPUT_SHAPE), dtype=np.float64)
        y = np.array([target])
        rng = np.random.default_rng(seed)
        moved = []                   # per call of loss(): did the switches differ from the unperturbed ones?

        def loss():
            value = clone.compute_loss(y, clone.forward(x, training=False))[0]
            moved.append(not _same_switches(gradcheck.switches(clone, x), base))
            return value

        out = clone.forward(x, training=False)
        base = gradcheck.switches(clone, x)
        _, dout, pre = clone.compute_loss(y, out)
        dx = clone.backward(dout, preactivation=pre, input_grad=True)
        targets = [("input", x, dx)] + [(k, p, g.copy()) for k, p, g in clone.params_and_grads()]
        rows = []
        for key, array, grad in targets:
            if key == "input":      # sample pixels the loss depends on (a blank pixel's gradient is exactly 0 both ways)
                pool, kind = np.flatnonzero(x.reshape(-1) > 0), "inked pixels"
            else:                   # entries whose gradient is not exactly 0 (a zero checks little: often both are 0)
                pool, kind = np.flatnonzero(grad.reshape(-1) != 0), "non-zero gradient entries"
            if pool.size < per_tensor:
                pool, kind = np.arange(array.size), "all entries"
            idx = rng.choice(pool, size=min(per_tensor, pool.size), replace=False)
            moved.clear()
            numeric = gradcheck.numerical_gradient(loss, array, h=h, indices=idx).reshape(-1)[idx]
            analytic = grad.reshape(-1)[idx]
            kink = np.array(moved[0::2]) | np.array(moved[1::2])      # at w+h or at w-h
            entries = [{"index": [int(v) for v in np.unravel_index(i, array.shape)][(1 if key == "input" else 0):],
                        "analytic": float(a), "numeric": float(n), "kink": bool(k),
                        "relative_error": gradcheck.relative_error([a], [n])}
                       for i, a, n, k in zip(idx, analytic, numeric, kink)]
            smooth = ~kink
            error = gradcheck.norm_relative_error(analytic[smooth], numeric[smooth]) if smooth.any() else None
            rows.append({"tensor": key, "shape": list(array.shape)[(1 if key == "input" else 0):],
                         "entries": entries, "norm_error": error, "kinks": int(kink.sum()),
                         "sampled": int(idx.size), "pool": int(pool.size), "size": int(array.size),
                         "nonzero": int(np.count_nonzero(grad)),
                         "pool_kind": kind})
        return {"target": int(target), "h": h, "dtype": "float64", "tensors": rows}

    # ------------------------------------------------------- training step
    def _gradients(self, model, x, label):
        out = model.forward(x, training=False)
        loss, dout, pre = model.compute_loss(np.array([label]), out)
        model.backward(dout, preactivation=pre, input_grad=False)
        return float(loss), out[0].astype(np.float64)

    def _step_rate(self, session, learning_rate):
        """The rate of this step: the page's (kept for the session's next steps) or the session's default."""
        if learning_rate is not None:
            lo, hi = STEP_LR
            if not lo <= learning_rate <= hi:
                raise ExploreError(f"learning_rate must be in {lo:g}..{hi:g}, got {learning_rate:g}")
            if learning_rate != session.learning_rate:      # the page sends its field's value every time
                session.learning_rate = float(learning_rate)
                session.learning_rate_source = "chosen on the page"
        return session.learning_rate

    @staticmethod
    def _step_optimizer(opt, rate):
        """A copy of ``opt`` (its slots and step count) whose learning rate is the constant ``rate``."""
        step_opt = type(opt)(**{**opt.get_config(), "learning_rate": rate})
        step_opt.set_state(opt.get_state())
        return step_opt

    def preview_step(self, session, pixels, label, learning_rate=None):
        """The update the session's optimizer would give every parameter for this one digit and label.

        Dropout is off (so the preview and the applied step are the same
        numbers). The optimizer's state is copied, stepped on copies of the
        weights and thrown away: nothing of the session changes (except the
        rate it keeps for its next steps, when ``learning_rate`` is given).
        """
        if session is None:
            raise ExploreError("a training step needs a session (the page sends one)")
        x = pixels.reshape((1,) + INPUT_SHAPE).astype(np.float32)
        with session.lock:
            rate = self._step_rate(session, learning_rate)
            model = session.model
            loss, probs = self._gradients(model, x, label)
            opt = model.optimizer
            trial = self._step_optimizer(opt, rate)
            triples = [(k, p.copy(), g.copy()) for k, p, g in model.params_and_grads()]
            before = [p for _, p, _ in model.params_and_grads()]
            trial.apply(triples)
            params = []
            for (key, new, grad), old in zip(triples, before):
                delta = new - old
                params.append({"key": key, "shape": list(old.shape), "grad": encode(grad), "update": encode(delta),
                               "grad_norm": _norm(grad), "update_norm": _norm(delta), "param_norm": _norm(old),
                               "max_update": float(np.abs(delta).max()),
                               "relative_update": _norm(delta) / max(_norm(old), 1e-12)})
            saved = model.get_weights()
            model.set_weights([new for _, new, _ in triples])
            after = model.forward(x, training=False)[0].astype(np.float64)
            loss_after = model.compute_loss(np.array([label]), model.layers[-1].output)[0]
            model.set_weights(saved)
            info = _optimizer_info(opt, trial, session)
        return {"label": int(label), "optimizer": info, "loss": loss, "loss_after": float(loss_after),
                "probabilities": probs.tolist(), "probabilities_after": after.tolist(), "params": params,
                "steps_applied": session.steps_applied}

    def apply_step(self, session, pixels, label, learning_rate=None):
        """Take the step of :meth:`preview_step` on the session's model (its optimizer state moves on too)."""
        if session is None:
            raise ExploreError("a training step needs a session (the page sends one)")
        x = pixels.reshape((1,) + INPUT_SHAPE).astype(np.float32)
        with session.lock:
            rate = self._step_rate(session, learning_rate)
            model = session.model
            loss, _ = self._gradients(model, x, label)
            stepped = self._step_optimizer(model.optimizer, rate)
            stepped.apply(model.params_and_grads())
            info = _optimizer_info(model.optimizer, stepped, session)
            model.optimizer.set_state(stepped.get_state())
            session.steps_applied += 1
            probs = model.forward(x, training=False)[0].astype(np.float64)
            loss_after = float(model.compute_loss(np.array([label]), model.layers[-1].output)[0])
        return {"label": int(label), "loss_before": loss, "loss_after": loss_after, "probabilities": probs.tolist(),
                "prediction": int(np.argmax(probs)), "steps_applied": session.steps_applied, "optimizer": info}

    def reset(self, session):
        """Give the session a fresh copy of the loaded model (weights and optimizer state)."""
        if session is None:
            raise ExploreError("reset needs a session (the page sends one)")
        with session.lock:
            session.model = clone_model(self.base)
            session.steps_applied = 0
        return {"steps_applied": 0, "reset": True}

    # ---------------------------------------------------------------- MNIST
    def mnist(self):
        """``(x_test uint8 (10000, 28, 28), y_test, predictions of the loaded model)``, loaded on first use.

        A failure is not remembered: the page tells the user to put the files in
        place, and the next request after that finds them.
        """
        with self.mnist_lock:
            if self._mnist is None:
                try:
                    from convnet.datasets import load_mnist

                    (xtr, ytr), (xte, yte) = load_mnist(self.data_dir, verbose=False)
                except Exception as e:      # offline without a cache, damaged files, ...
                    raise ExploreError(f"MNIST is not available: {e}", status=503) from None
                with self.base_lock:
                    pred = self.base.predict(xte[..., None].astype(np.float32) / 255).argmax(axis=1)
                self._mnist = {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte, "pred": pred,
                               "mistakes": np.flatnonzero(pred != yte)}
            return self._mnist

    def first_digit(self, index=0):
        """A test digit for the first screen, or why there is none: the page must open without MNIST too."""
        try:
            return {"available": True, **self.mnist_digit(index)}
        except ExploreError as e:
            if e.status != 503:
                raise
            return {"available": False, "message": str(e)}

    def weights(self, session):
        """Every parameter array of the page's model (or the loaded one), layer by layer."""
        model, lock = self._model(session)
        with lock:
            return {"layers": [{"name": l.name, "params": {k: encode(p) for k, p in l.params.items()}}
                               for l in model.layers]}

    def mnist_list(self, kind, offset, limit):
        """A page of test digits (``kind`` "all" or "mistakes" of the loaded model) as uint8 thumbnails."""
        data = self.mnist()
        indices = data["mistakes"] if kind == "mistakes" else np.arange(len(data["y_test"]))
        chosen = indices[offset:offset + limit]
        images = data["x_test"][chosen]
        return {"kind": kind, "total": int(len(indices)), "offset": offset,
                "items": [{"index": int(i), "label": int(data["y_test"][i]), "prediction": int(data["pred"][i])}
                          for i in chosen],
                "images": base64.b64encode(np.ascontiguousarray(images).tobytes()).decode("ascii")}

    def mnist_digit(self, index):
        data = self.mnist()
        if not 0 <= index < len(data["y_test"]):
            raise ExploreError(f"index must be 0..{len(data['y_test']) - 1}, got {index}")
        return {"index": index, "label": int(data["y_test"][index]), "prediction": int(data["pred"][index]),
                "pixels": (data["x_test"][index] / 255.0).round(6).tolist()}

    # ------------------------------------------------------------ live training
    def start_training(self, session, images=5000, epochs=1, batch_size=32, learning_rate=1e-3, seed=0):
        if session is None:
            raise ExploreError("live training needs a session (the page sends one)")
        with session.lock:
            if session.training is not None and session.training.running:
                raise ExploreError("a training run of this page is already going; stop it first", status=409)
            if not self.training_slot.acquire(blocking=False):
                raise ExploreError("another page is training (2 cores: one run at a time); stop it or wait",
                                   status=409)
            try:
                data = self.mnist()
            except Exception:
                self.training_slot.release()
                raise
            run = TrainingRun(clone_model(self.base, seed=seed, fresh=True), data, images, epochs, batch_size,
                              learning_rate, seed, on_exit=self.training_slot.release)
            session.training = run
            run.start()
        return run.status()

    def training_status(self, session):
        if session is None or session.training is None:
            return {"state": "idle"}
        return session.training.status()

    def stop_training(self, session):
        if session is None or session.training is None:
            return {"state": "idle"}
        session.training.stop()
        return session.training.status()

    def use_trained(self, session):
        """Put the live run's weights (and optimizer state) into the page's model."""
        if session is None or session.training is None:
            raise ExploreError("no training run to take the weights from", status=409)
        run = session.training
        if run.running:
            raise ExploreError("the training run is still going; stop it or let it finish first", status=409)
        with session.lock:
            session.model = clone_model(run.model)
            session.steps_applied = 0
            session.learning_rate, session.learning_rate_source = float(run.learning_rate), "the live run's rate"
        return {"used": True, "steps": run.step}


def _same_switches(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def _optimizer_info(opt, stepped, session):
    """What the page shows of a step: the optimizer, its settings, the rate used and where it came from."""
    config = opt.get_config()
    info = {"name": type(opt).__name__, "config": config, "iterations_before": opt.iterations,
            "iterations_after": stepped.iterations, "learning_rate": float(stepped.learning_rate),
            "learning_rate_source": session.learning_rate_source}
    if isinstance(config["learning_rate"], dict):
        info["schedule"] = config["learning_rate"]
    if isinstance(stepped, optimizers.Adam):          # the step size with Keras's bias correction folded in
        info["lr_t"] = float(stepped.step_size())
    return info


def _through_the_gate(layer, fused):
    """dL/dz before the layer's activation, and what its gate let through (ReLU) or picked (max-pool).

    dL/dz is the textbook activation's own ``backward`` (:mod:`convnet.activations`)
    applied to the layer's dL/d(output) and output; with the fused softmax and
    cross-entropy the last layer's dL/d(output) already is dL/dz.
    """
    from convnet import activations

    name = getattr(layer, "activation_name", None) or "linear"
    out = {"activation": name}
    if fused:
        dz = layer.grad_output[0]
        out["grad_preactivation"] = encode(dz)
        out["grad_preactivation_norm"] = _norm(dz)
        out["fused"] = True
        return out
    if name != "linear":
        y, dy = layer.output[0], layer.grad_output[0]
        dz = activations.get(name).backward(dy[None], y[None])[0]
        out["grad_preactivation"] = encode(dz)
        out["grad_preactivation_norm"] = _norm(dz)
        if name == "relu":
            dark = y <= 0
            out["gate"] = {"units": int(y.size), "dark": int(dark.sum()),
                           "dark_with_grad_output": int((dark & (dy != 0)).sum()),
                           "dark_with_grad_z": int((dark & (dz != 0)).sum())}
    if type(layer).__name__ == "MaxPool2D":
        out["winners"] = {"windows": int(layer.grad_output[0].size),
                          "inputs_with_gradient": int((layer.grad_input[0] != 0).sum()),
                          "inputs": int(layer.grad_input[0].size)}
    return out


# ---------------------------------------------------------------- receptive fields
def receptive_field(model, layer_index, position):
    """``{"top", "bottom", "left", "right"}`` (inclusive) of the input pixels a unit depends on.

    Walks down from the unit: a window layer (conv, pool) widens the range
    ``[a, b]`` of its output to ``[a*s - pad, b*s - pad + k - 1]`` of its input;
    a Flatten unit maps back to one position; after a Dense layer a unit
    depends on every pixel.
    """
    H, W = INPUT_SHAPE[:2]
    rows = cols = None
    for i in range(layer_index, -1, -1):
        layer = model.layers[i]
        if rows is None:                       # the unit itself, in layer i's output
            if len(position) == 3:
                rows, cols = [position[0]] * 2, [position[1]] * 2
            elif type(layer).__name__ == "Flatten":
                h, w, _ = np.unravel_index(position[0], layer.input_shape)
                rows, cols = [int(h)] * 2, [int(w)] * 2
                continue                       # already in this layer's input coordinates
            else:
                return {"top": 0, "bottom": H - 1, "left": 0, "right": W - 1, "whole": True}
        window = _window(layer)
        if window is not None:
            (kh, kw), (sh, sw), (pt, pl) = window
            rows = [rows[0] * sh - pt, rows[1] * sh - pt + kh - 1]
            cols = [cols[0] * sw - pl, cols[1] * sw - pl + kw - 1]
        elif len(layer.input_shape) != 3:
            return {"top": 0, "bottom": H - 1, "left": 0, "right": W - 1, "whole": True}
    return {"top": max(rows[0], 0), "bottom": min(rows[1], H - 1), "left": max(cols[0], 0),
            "right": min(cols[1], W - 1), "whole": False}


def _arithmetic(layer, below, pos):
    """The numbers that made ``layer``'s unit ``pos`` from the layer's input ``below`` (one image)."""
    kind = type(layer).__name__
    pre = getattr(layer, "preactivation", None)
    z = float(pre[0][pos]) if pre is not None else None
    if kind == "Conv2D":
        (kh, kw), (sh, sw), (pt, pl) = _window(layer)
        i, j, f = pos
        H, W, C = below.shape
        patch = np.zeros((kh, kw, C), np.float64)
        r0, c0 = i * sh - pt, j * sw - pl
        rs, cs = slice(max(r0, 0), min(r0 + kh, H)), slice(max(c0, 0), min(c0 + kw, W))
        patch[rs.start - r0:rs.stop - r0, cs.start - c0:cs.stop - c0] = below[rs, cs]
        weights = layer.params["kernel"][:, :, :, f].astype(np.float64)
        products = patch * weights
        bias = float(layer.params["bias"][f])
        per_channel = products.sum(axis=(0, 1))
        total = float(products.sum())
        return {"kind": "dot", "window": {"top": r0, "left": c0, "height": kh, "width": kw},
                "inputs": encode(patch), "weights": encode(weights), "products": encode(products),
                "channel_sums": per_channel.tolist(), "sum": total, "bias": bias, "z": total + bias,
                "preactivation": z}
    if kind == "Dense":
        u = pos[0]
        inputs = below.astype(np.float64).reshape(-1)
        weights = layer.params["kernel"][:, u].astype(np.float64)
        products = inputs * weights
        top = np.argsort(-np.abs(products))[:12]
        total = float(products.sum())
        bias = float(layer.params["bias"][u])
        return {"kind": "dot", "inputs": encode(inputs), "weights": encode(weights), "products": encode(products),
                "top": [{"input": int(k), "x": float(inputs[k]), "w": float(weights[k]), "product": float(products[k])}
                        for k in top],
                "sum": total, "bias": bias, "z": total + bias, "preactivation": z}
    if kind == "MaxPool2D":
        (kh, kw), (sh, sw), (pt, pl) = _window(layer)
        i, j, c = pos
        r0, c0 = i * sh - pt, j * sw - pl
        H, W, _ = below.shape
        window = np.full((kh, kw), -np.inf)
        rs, cs = slice(max(r0, 0), min(r0 + kh, H)), slice(max(c0, 0), min(c0 + kw, W))
        window[rs.start - r0:rs.stop - r0, cs.start - c0:cs.stop - c0] = below[rs, cs, c]
        win = int(np.argmax(window))        # first maximum in scan order, as the kernel picks it
        return {"kind": "max", "window": {"top": r0, "left": c0, "height": kh, "width": kw},
                "values": np.where(np.isfinite(window), window, 0).tolist(), "winner": [win // kw, win % kw],
                "max": float(window.reshape(-1)[win])}
    if kind == "Flatten":
        src = [int(v) for v in np.unravel_index(pos[0], below.shape)]
        return {"kind": "copy", "source": src, "input_value": float(below[tuple(src)])}
    # Dropout at inference, and any layer without parameters: output = activation(input)
    return {"kind": "copy", "source": list(pos), "input_value": float(below[pos]), "preactivation": z}


# ---------------------------------------------------------------- live training
class TrainingRun:
    """A short training run in a background thread; :meth:`status` is what the page polls.

    The model is a fresh copy of the loaded architecture (new weights from
    ``seed``), trained with ``train_step`` batch by batch so that
    :meth:`stop` takes effect after the current batch.
    """

    def __init__(self, model, data, images, epochs, batch_size, learning_rate, seed, on_exit=None):
        model.optimizer.learning_rate = float(learning_rate)
        self.model = model
        self.images, self.epochs, self.batch_size, self.seed = images, epochs, batch_size, seed
        self.learning_rate = learning_rate
        n = min(images, len(data["y_train"]))
        self.x = data["x_train"][:n]
        self.y = data["y_train"][:n].astype(np.int64)
        self.x_test = data["x_test"][:TEST_SUBSET][..., None].astype(np.float32) / 255
        self.y_test = data["y_test"][:TEST_SUBSET].astype(np.int64)
        self.steps_per_epoch = math.ceil(n / batch_size)
        self.steps = self.steps_per_epoch * epochs
        self.group = max(1, math.ceil(self.steps / CURVE_POINTS))
        self.test_every = max(1, min(TEST_EVERY, self.steps // 10))      # a short run gets ten test points too
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.on_exit = on_exit
        self.state, self.message = "starting", ""
        self.step = 0
        self.curve = {"step": [], "loss": [], "accuracy": []}
        self.test = {"step": [], "loss": [], "accuracy": []}
        self.grad_norms = {k: [] for k, _, _ in model.params_and_grads()}
        self.started = time.monotonic()
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, name="explore-training", daemon=True)

    @property
    def running(self):
        return self.state in ("starting", "running")

    def start(self):
        self.thread.start()

    def stop(self):
        self._stop.set()

    def _run(self):
        try:
            self.state = "running"
            self._test_point()
            sums = {"loss": 0.0, "correct": 0, "seen": 0}
            gsum = {k: 0.0 for k in self.grad_norms}
            for epoch in range(self.epochs):
                order = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))
                for b in range(self.steps_per_epoch):
                    if self._stop.is_set():
                        raise _Stopped
                    idx = order[b * self.batch_size:(b + 1) * self.batch_size]
                    xb = self.x[idx][..., None].astype(np.float32) / 255
                    with self.lock:
                        loss, correct = self.model.train_step(xb, self.y[idx])
                        for k, _, g in self.model.params_and_grads():
                            gsum[k] += _norm(g)
                        self.step += 1
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"the loss became {loss} at step {self.step}; "
                                                 f"try a lower learning rate")
                    sums["loss"] += loss * len(idx)
                    sums["correct"] += correct
                    sums["seen"] += len(idx)
                    if self.step % self.group == 0 or self.step == self.steps:
                        with self.lock:
                            n = self.group if self.step % self.group == 0 else self.step % self.group
                            self.curve["step"].append(self.step)
                            self.curve["loss"].append(sums["loss"] / sums["seen"])
                            self.curve["accuracy"].append(sums["correct"] / sums["seen"])
                            for k in gsum:
                                self.grad_norms[k].append(gsum[k] / n)
                        sums = {"loss": 0.0, "correct": 0, "seen": 0}
                        gsum = {k: 0.0 for k in gsum}
                    if self.step % self.test_every == 0 or self.step == self.steps:
                        self._test_point()
            self.state = "finished"
        except _Stopped:
            self.state, self.message = "stopped", f"stopped after {self.step} of {self.steps} steps"
        except Exception as e:           # shown on the page; the server goes on
            self.state, self.message = "error", f"{type(e).__name__}: {e}"
        finally:
            self.seconds = time.monotonic() - self.started
            if self.on_exit is not None:
                self.on_exit()

    def _test_point(self):
        with self.lock:
            loss, acc = self.model.evaluate(self.x_test, self.y_test, batch_size=TEST_SUBSET)
            self.test["step"].append(self.step)
            self.test["loss"].append(float(loss))
            self.test["accuracy"].append(float(acc))

    def status(self):
        with self.lock:
            first = next((l for l in self.model.layers if l.params), None)
            filters = encode(first.params["kernel"]) if first is not None else None
            return {"state": self.state, "message": self.message, "step": self.step, "steps": self.steps,
                    "images": len(self.x), "epochs": self.epochs, "batch_size": self.batch_size,
                    "learning_rate": self.learning_rate, "seed": self.seed, "test_images": len(self.y_test),
                    "seconds": (time.monotonic() - self.started) if self.running else self.seconds,
                    "curve": {k: list(v) for k, v in self.curve.items()},
                    "test": {k: list(v) for k, v in self.test.items()},
                    "grad_norms": {k: list(v) for k, v in self.grad_norms.items()},
                    "filters": filters, "filters_layer": first.name if first is not None else None}


class _Stopped(Exception):
    pass


def new_session_id():
    return secrets.token_hex(16)
