"""Triton backend of the two fused attention ops.

``time_attention`` and ``feature_attention`` each provide plain ``forward``/``backward``
functions on tensors (the backend contract; no autograd here), called by the custom ops of
:mod:`sed_kernels.ops`. They run on CUDA tensors, or on CPU tensors through Triton's
interpreter when ``TRITON_INTERPRET=1`` was set before ``triton`` was imported (tests only).
Launch configurations are chosen in :mod:`sed_kernels.triton._utils`.
"""

from . import feature_attention, time_attention

__all__ = ["feature_attention", "time_attention"]
