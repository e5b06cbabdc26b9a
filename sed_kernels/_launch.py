"""What every backend's launchers share: the accumulator dtype, dtype names, and the raw
pointer and strides of ``h`` that the compiled modules take."""

from __future__ import annotations

import torch


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of sums and workspaces: float64 for float64 inputs, float32 for all others."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """The name the compiled modules take ('float32', 'bfloat16', ...)."""
    return str(dtype).removeprefix("torch.")


def steps_arguments(h: torch.Tensor) -> dict[str, int]:
    """``h`` (B, T, H) as the compiled modules take it: its address and element strides."""
    return {
        "h": h.data_ptr(),
        "stride_b": h.stride(0),
        "stride_t": h.stride(1),
        "stride_h": h.stride(2),
    }
