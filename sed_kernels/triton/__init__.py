"""Triton backend of the two fused attention ops.

``time_attention`` and ``feature_attention`` each provide plain ``forward``/``backward``
functions on tensors (the backend contract; no autograd here), called by the custom ops of
:mod:`sed_kernels.ops`. They run on CUDA tensors, or on CPU tensors through Triton's
interpreter when ``TRITON_INTERPRET=1`` was set before ``triton`` was imported (tests only).
Launch configurations are chosen in :mod:`sed_kernels.triton._utils`.
"""

import torch

from . import _utils, feature_attention, time_attention

# Triton picks interpreter or compiler when a kernel is decorated, i.e. on this import.
INTERPRETED: bool = _utils.interpreter_active()

__all__ = ["INTERPRETED", "feature_attention", "time_attention", "usable_on"]


def usable_on(device_type: str) -> bool:
    """Whether the backend runs tensors of this device type here: CPU tensors under the
    interpreter (for tests), else CUDA tensors when torch sees a GPU."""
    if INTERPRETED:
        return device_type == "cpu"
    return device_type == "cuda" and torch.cuda.is_available()
