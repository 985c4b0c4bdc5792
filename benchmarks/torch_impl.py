"""PyTorch's side of every case; its column appears only when ``import torch`` works.

PyTorch is channels-first (NCHW, conv weights ``(out, in, kh, kw)``), so
inputs are converted once, outside the timing, and results are converted
back to convnet's layouts only for the agreement checks. Kernel rows call
the ATen ops autograd itself uses: ``conv2d`` and ``convolution_backward``
(with an output mask choosing dx and/or dW, db), ``max_pool2d`` with
indices and ``max_pool2d_with_indices_backward``, and ``addmm``/``mm``.

Model rows use the equivalent ``nn.Sequential`` with convnet's initial
weights (a channels-last flatten keeps the Dense weights' meaning), Adam
with the same settings (PyTorch puts epsilon after the bias correction,
a difference far below the check's tolerance for one step) and
cross-entropy on logits; a step is ``zero_grad, forward, loss, backward,
step``, an epoch is that over shuffled batches, inference is ``no_grad``
forward passes in batches of 1,000.
"""
import numpy as np

from .data import BATCH_SIZE, PREDICT_BATCH

torch = None


def import_torch(threads):
    """Import torch and give it ``threads.cores`` threads; ImportError when it is not installed."""
    global torch
    import torch as torch_module

    torch = torch_module
    threads.configure_torch(torch)


def _images(x):
    """NHWC NumPy -> NCHW tensor view (channels-last memory, no copy)."""
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def _conv_weight(kernel):
    """Keras ``(kh, kw, in, out)`` -> PyTorch ``(out, in, kh, kw)``."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def _nhwc(t):
    return t.permute(0, 2, 3, 1).numpy()


def _hwio(t):
    return t.permute(2, 3, 1, 0).numpy()


def _converting(fn, *converters):
    """Attach how to turn ``fn()``'s tensors into convnet-layout arrays (used by the checks only)."""
    fn.converters = converters
    return fn


class Backend:
    name = "torch"

    @staticmethod
    def outputs(fn):
        result = fn()
        result = result if isinstance(result, (list, tuple)) else [result]
        return [convert(r) for convert, r in zip(fn.converters, result)]

    # ------------------------------------------------------------ kernels
    def make_conv_forward(self, x, kernel, bias):
        x, w, b = _images(x), _conv_weight(kernel), torch.from_numpy(bias)
        return _converting(lambda: torch.nn.functional.conv2d(x, w, b), _nhwc)

    def _conv_backward(self, x, kernel, dz, mask):
        x, w, dz = _images(x), _conv_weight(kernel), _images(dz)
        conv_backward = torch.ops.aten.convolution_backward

        def backward():
            dx, dw, db = conv_backward(dz, x, w, [w.shape[0]], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)
            return (dw, db) if not mask[0] else (dx, dw, db)
        return backward

    def make_conv_backward_kernel(self, x, kernel, bias, dz):
        return _converting(self._conv_backward(x, kernel, dz, [False, True, True]), _hwio, torch.Tensor.numpy)

    def make_conv_backward(self, x, kernel, bias, dz):
        return _converting(self._conv_backward(x, kernel, dz, [True, True, True]),
                           _nhwc, _hwio, torch.Tensor.numpy)

    def make_pool_forward(self, x, size):
        x = _images(x)
        return _converting(lambda: torch.nn.functional.max_pool2d(x, size, return_indices=True)[0], _nhwc)

    def make_pool_backward(self, x, size, dz):
        x = _images(x)
        _, indices = torch.nn.functional.max_pool2d(x, size, return_indices=True)   # forward, once, untimed
        dz = _images(dz)
        pool_backward = torch.ops.aten.max_pool2d_with_indices_backward
        return _converting(
            lambda: pool_backward(dz, x, [size, size], [size, size], [0, 0], [1, 1], False, indices), _nhwc)

    def make_dense_forward(self, x, kernel, bias):
        x, w, b = (torch.from_numpy(a) for a in (x, kernel, bias))
        return _converting(lambda: torch.addmm(b, x, w), torch.Tensor.numpy)

    def make_dense_backward(self, x, kernel, bias, dz):
        x, w, dz = (torch.from_numpy(a) for a in (x, kernel, dz))

        def backward():
            # z = x W + b: dx = dz W^T, dW = x^T dz, db = sum over the batch
            return torch.mm(dz, w.t()), torch.mm(x.t(), dz), dz.sum(0)
        return _converting(backward, *([torch.Tensor.numpy] * 3))

    # -------------------------------------------------------------- model
    def make_model(self, weights):
        return Model(weights)


def _flatten_nhwc():
    """A module flattening NCHW activations in NHWC order, as Keras's and convnet's Flatten do."""
    class FlattenNHWC(torch.nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1).flatten(1)
    return FlattenNHWC()


class Model:
    def __init__(self, weights):
        nn = torch.nn
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 4), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
            nn.Conv2d(32, 32, 4), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
            _flatten_nhwc(), nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10))
        k1, b1, k2, b2, w3, b3, w4, b4 = weights
        with torch.no_grad():
            for module, (w, b) in zip(self._trainable(), ((k1, b1), (k2, b2), (w3, b3), (w4, b4))):
                module.weight.copy_(_conv_weight(w) if w.ndim == 4 else torch.from_numpy(w.T.copy()))
                module.bias.copy_(torch.from_numpy(b))
        self.loss = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3, eps=1e-7)

    def _trainable(self):
        return [m for m in self.net if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]

    def weights(self):
        out = []
        for m in self._trainable():
            w = m.weight.detach()
            out += [_hwio(w) if w.ndim == 4 else w.t().numpy().copy(), m.bias.detach().numpy().copy()]
        return out

    def _step(self, xb, yb):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.net(xb), yb)
        loss.backward()
        self.optimizer.step()
        return loss

    def make_train_step(self, x, y):
        xb, yb = _images(x), torch.from_numpy(np.asarray(y, dtype=np.int64))
        self.net.train()
        return lambda: self._step(xb, yb)

    def make_fit(self, x, y):
        y = np.asarray(y, dtype=np.int64)

        def fit():
            self.net.train()
            order = np.random.default_rng(0).permutation(len(x))
            for start in range(0, len(x), BATCH_SIZE):
                idx = order[start:start + BATCH_SIZE]
                self._step(_images(x[idx]), torch.from_numpy(y[idx]))
        return fit

    def make_predict(self, x):
        def predict():
            self.net.eval()
            with torch.no_grad():
                outs = [torch.softmax(self.net(_images(x[i:i + PREDICT_BATCH])), dim=1)
                        for i in range(0, len(x), PREDICT_BATCH)]
            self.net.train()
            return torch.cat(outs)
        return _converting(predict, torch.Tensor.numpy)

    def gradients(self, x, y):
        """Loss and dLoss/dw for every weight, in Keras order and layouts, dropout off."""
        self.net.eval()
        self.net.zero_grad(set_to_none=True)
        loss = self.loss(self.net(_images(x)), torch.from_numpy(np.asarray(y, dtype=np.int64)))
        loss.backward()
        self.net.train()
        grads = []
        for m in self._trainable():
            g = m.weight.grad
            grads += [_hwio(g) if g.ndim == 4 else g.t().numpy().copy(), m.bias.grad.numpy().copy()]
        return [np.float32(loss.item())] + grads
