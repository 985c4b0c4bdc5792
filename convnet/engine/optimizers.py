"""The engine's Adam: the textbook update fused into one pass over every parameter at once."""
import numpy as np

from . import kernels, threads


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
            threads.over_elements(kernels.adam_update, groups, f(opt.beta_1), f(opt.beta_2),
                                  f(opt.step_size()), f(opt.epsilon))
