"""Launcher of the CUDA time-attention kernels (``csrc/cuda/time_attention.cu``).

Contract: see the op layer in :mod:`sed_kernels.ops`. float32, float16, bfloat16 and float64
run natively (accumulation in float32, float64 for float64); ``h`` may have any strides.
The workspace holds per-chunk softmax partials (forward) or dq partials (backward).
"""

from __future__ import annotations

import torch

from sed_kernels._launch import accumulator_dtype, dtype_name, steps_arguments
from sed_kernels.cuda import launch_args, require_extension


def _workspace(kernels, h: torch.Tensor) -> torch.Tensor:
    batch, steps, hidden = h.shape
    size = kernels.time_attention_workspace(batch, steps, hidden, dtype_name(h.dtype))
    return torch.empty(size, dtype=accumulator_dtype(h.dtype), device=h.device)


def forward(
    h: torch.Tensor, q: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``out`` (B, H) and ``lse`` (B,), both in float32 (float64 for float64 ``h``)."""
    kernels = require_extension()
    batch, steps, hidden = h.shape
    q = q.to(h.dtype).contiguous()
    lengths = lengths.contiguous()
    out = torch.empty((batch, hidden), dtype=accumulator_dtype(h.dtype), device=h.device)
    lse = torch.empty((batch,), dtype=accumulator_dtype(h.dtype), device=h.device)
    workspace = _workspace(kernels, h)
    kernels.time_attention_forward(
        **steps_arguments(h),
        q=q.data_ptr(), lengths=lengths.data_ptr(), out=out.data_ptr(), lse=lse.data_ptr(),
        workspace=workspace.data_ptr(), batch=batch, steps=steps, hidden=hidden,
        dtype=dtype_name(h.dtype), **launch_args(h),
    )  # fmt: skip
    return out, lse


def backward(
    grad_out: torch.Tensor,
    h: torch.Tensor,
    q: torch.Tensor,
    lengths: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dh`` (B, T, H), zero on padded steps, and ``dq`` (B, H), both in h.dtype."""
    kernels = require_extension()
    batch, steps, hidden = h.shape
    grad_out = grad_out.to(h.dtype).contiguous()
    q = q.to(h.dtype).contiguous()
    out = out.to(accumulator_dtype(h.dtype)).contiguous()
    lse = lse.to(accumulator_dtype(h.dtype)).contiguous()
    lengths = lengths.contiguous()
    grad_h = torch.empty((batch, steps, hidden), dtype=h.dtype, device=h.device)
    grad_q = torch.empty((batch, hidden), dtype=h.dtype, device=h.device)
    workspace = _workspace(kernels, h)
    kernels.time_attention_backward(
        grad_out=grad_out.data_ptr(), **steps_arguments(h), q=q.data_ptr(),
        lengths=lengths.data_ptr(),
        out=out.data_ptr(), lse=lse.data_ptr(), grad_h=grad_h.data_ptr(),
        grad_q=grad_q.data_ptr(), workspace=workspace.data_ptr(), batch=batch, steps=steps,
        hidden=hidden, dtype=dtype_name(h.dtype), **launch_args(h),
    )  # fmt: skip
    return grad_h, grad_q
