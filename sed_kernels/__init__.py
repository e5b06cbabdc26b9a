"""Fused time- and feature-attention ops of the attention-based dense LSTM (Xie et al., 2019).

Public API::

    time_attention(h, q, lengths, *, backend="auto") -> Tensor (B, H)
    feature_attention(h, W, V, lengths, *, backend="auto") -> Tensor (B, H)
    available_backends(device=None) -> list[str]
    reference  # the eager formulas (the specification), with *_with_weights variants for plots

See :mod:`sed_kernels.backends` for the backends and how ``auto`` chooses.
"""

from . import reference
from .backends import BACKEND_NAMES, available_backends
from .ops import feature_attention, time_attention

__all__ = [
    "BACKEND_NAMES",
    "available_backends",
    "feature_attention",
    "reference",
    "time_attention",
]
