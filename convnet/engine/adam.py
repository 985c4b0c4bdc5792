"""The engine's Adam: :meth:`convnet.optimizers.Adam.update` fused into one pass over every parameter at once.

Validated bit for bit against the textbook's update (``tests/test_engine_adam.py``).
"""
import numpy as np
from numba import njit

from . import threads
from .jit import _stop, _u


@njit(cache=True, nogil=True, error_model="numpy")   # numpy error model: no zero-division check, so it vectorises
def adam_update(param, grad, m, v, b1, b2, lr_t, eps, n0=0, n1=-1):
    """One Adam step for one parameter array, in place, in a single pass.

    ``m = b1 m + (1 - b1) g``;  ``v = b2 v + (1 - b2) g^2``;
    ``param -= lr_t m / (sqrt(v) + eps)``  (``lr_t`` carries the bias correction).
    The arrays are seen flat; a range ``n0 <= k < n1`` updates those elements only.
    """
    stop = _stop(n1, param.size)
    p, g = param.reshape(-1)[n0:stop], grad.reshape(-1)[n0:stop]      # the range, as views
    mf, vf = m.reshape(-1)[n0:stop], v.reshape(-1)[n0:stop]
    one = p.dtype.type(1)
    c1, c2 = one - b1, one - b2
    for k in range(_u(p.size)):         # from 0 over the views: the loop vectorises
        gk = g[k]
        mk = b1 * mf[k] + c1 * gk
        vk = b2 * vf[k] + c2 * gk * gk
        mf[k] = mk
        vf[k] = vk
        p[k] -= lr_t * mk / (np.sqrt(vk) + eps)


class Adam:
    """Same update as :class:`convnet.optimizers.Adam`, one numba pass, shared between threads."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def update_all(self, params_and_grads):
        opt = self.optimizer
        fused = {}                        # dtype -> [(param, grad, m, v)]
        for key, param, grad in params_and_grads:
            m, v = opt.slot("m", key, param), opt.slot("v", key, param)
            if all(a.flags.c_contiguous and a.dtype == param.dtype for a in (grad, m, v, param)):
                fused.setdefault(param.dtype, []).append((param, grad, m, v))
            else:                         # the kernel needs contiguous arrays of one dtype
                opt.update(key, param, grad)
        for dtype, groups in fused.items():
            f = np.dtype(dtype).type
            threads.over_elements(adam_update, groups, f(opt.beta_1), f(opt.beta_2),
                                  f(opt.step_size()), f(opt.epsilon))
