"""Benchmarks: convnet's kernels and training loop against TensorFlow (and PyTorch if installed).

Run ``python -m benchmarks`` (``--help`` for the options); see
``benchmarks/README.md`` for what is measured and how. Modules:

* :mod:`benchmarks.cli`       -- the command line, and the order of the run;
* :mod:`benchmarks.machine`   -- thread settings and the machine description;
* :mod:`benchmarks.timing`    -- warm-up, repeats, median and spread;
* :mod:`benchmarks.cases`     -- what is timed: one :class:`~benchmarks.cases.Case` per table row;
* :mod:`benchmarks.checks`    -- the agreement checks run before any timing;
* :mod:`benchmarks.tf_impl`, :mod:`benchmarks.torch_impl` -- the other libraries' side of each case;
* :mod:`benchmarks.data`      -- MNIST (or random data of its shape, with a note);
* :mod:`benchmarks.report`    -- terminal table, JSON file and bar chart.

This package imports nothing heavy at import time, so that thread settings
can be made before NumPy, numba or TensorFlow start their thread pools.
"""
