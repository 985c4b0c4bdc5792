"""The engine tier: everything in convnet that exists only for speed.

It imports the textbook (:mod:`convnet.layers`, ...) and computes the same
records, never the other way round. A model hands its layers to
:class:`EngineModel` (:mod:`convnet.engine.model`) when the tier is
``"engine"`` (the default); that runner makes one plan per model
(:mod:`convnet.engine.plan` for training, :mod:`convnet.engine.inference`
for prediction) and runs it with the engine's versions of the layers' math
(:mod:`convnet.engine.layers`), the kernels (one module per topic:
:mod:`~convnet.engine.im2col`, :mod:`~convnet.engine.pooling`,
:mod:`~convnet.engine.fused`, :mod:`~convnet.engine.winograd`,
:mod:`~convnet.engine.elementwise`, :mod:`~convnet.engine.dropout`,
:mod:`~convnet.engine.adam`, :mod:`~convnet.engine.affine`; all listed in
:mod:`convnet.engine.kernels`) and the threads that share the work
(:mod:`convnet.engine.threads`).
"""
from .model import EngineModel

__all__ = ["EngineModel"]
