"""The ``cuda`` backend: CUDA C++ kernels of ``csrc/cuda`` (module ``sed_kernels._cuda``).

One launcher module per op (``time_attention``, ``feature_attention``) with the plain
``forward``/``backward`` functions of the backend contract.

- ``EXTENSION_LOADED``: the compiled module imported (it loads without a GPU: it links the
  static CUDA runtime and needs the driver only when a kernel runs).
- ``AVAILABLE``: the module loaded and torch sees a CUDA device.

A missing module warns at import only when a GPU is present (on CPU-only machines the
module is not expected). Kernels compute in float32 for float16/bfloat16/float32 inputs
(float64 natively), run on ``torch.cuda.current_stream()`` of the tensors' device and use
workspaces from torch's caching allocator; dW/dV and every sum over steps go through
partials reduced in a fixed order (bitwise reproducible, independent of the GPU model).
"""

from __future__ import annotations

from types import ModuleType

import torch

from sed_kernels._native import REBUILD_HINT, load_extension

extension = load_extension("_cuda", "cuda", warn=torch.cuda.is_available())
EXTENSION_LOADED: bool = extension is not None
AVAILABLE: bool = EXTENSION_LOADED and torch.cuda.is_available()

__all__ = [
    "AVAILABLE", "EXTENSION_LOADED", "extension", "launch_args", "require_extension", "usable_on"
]


def usable_on(device_type: str) -> bool:
    """Whether the backend runs tensors of this device type here: CUDA, with the module and
    a GPU."""
    return AVAILABLE and device_type == "cuda"


def require_extension() -> ModuleType:
    """The compiled ``sed_kernels._cuda`` module; RuntimeError when it was not built."""
    if extension is None:
        raise RuntimeError(
            "sed_kernels: the 'cuda' backend needs sed_kernels._cuda, built when nvcc is found "
            f"(PATH or $CUDA_HOME/bin); {REBUILD_HINT}"
        )
    return extension


def launch_args(tensor: torch.Tensor) -> dict[str, int]:
    """Device index and current-stream handle for kernels working on ``tensor``."""
    if tensor.device.type != "cuda":
        raise RuntimeError(
            f"sed_kernels: the 'cuda' backend needs CUDA tensors, got {tensor.device}"
        )
    device = tensor.device.index if tensor.device.index is not None else torch.cuda.current_device()
    return {"device": device, "stream": torch.cuda.current_stream(device).cuda_stream}
