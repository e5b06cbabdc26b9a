"""Launcher of the C++/OpenMP time-attention kernels (``csrc/cpu/kernels.cpp``).

Contract: see the op layer in :mod:`sed_kernels.ops`. float16/bfloat16 inputs are converted
to float32 here, before the kernels run (one copy of ``h``), and the gradients converted back
(``out`` stays in float32, as the contract asks); float32 and float64 run
natively. ``h`` may have any strides: they are passed to the kernel, which never reads
padded steps.
"""

from __future__ import annotations

import torch

from sed_kernels._launch import accumulator_dtype, dtype_name, steps_arguments
from sed_kernels.cpu import require_extension


def forward(
    h: torch.Tensor, q: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``out`` (B, H) and ``lse`` (B,), both in float32 (float64 for float64 ``h``)."""
    kernels = require_extension()
    dtype = accumulator_dtype(h.dtype)
    batch, steps, hidden = h.shape
    h_c = h.to(dtype)  # keeps h's strides
    q_c = q.to(dtype).contiguous()
    lengths = lengths.contiguous()
    out = torch.empty((batch, hidden), dtype=dtype)
    lse = torch.empty((batch,), dtype=dtype)
    kernels.time_attention_forward(
        **steps_arguments(h_c),
        q=q_c.data_ptr(), lengths=lengths.data_ptr(), out=out.data_ptr(), lse=lse.data_ptr(),
        batch=batch, steps=steps, hidden=hidden, dtype=dtype_name(dtype),
        num_threads=torch.get_num_threads(),
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
    dtype = accumulator_dtype(h.dtype)
    batch, steps, hidden = h.shape
    h_c = h.to(dtype)
    grad_out_c = grad_out.to(dtype).contiguous()
    q_c = q.to(dtype).contiguous()
    out_c = out.to(dtype).contiguous()
    lse_c = lse.to(dtype).contiguous()
    lengths = lengths.contiguous()
    grad_h = torch.empty((batch, steps, hidden), dtype=dtype)
    grad_q = torch.empty((batch, hidden), dtype=dtype)
    kernels.time_attention_backward(
        grad_out=grad_out_c.data_ptr(), **steps_arguments(h_c), q=q_c.data_ptr(),
        lengths=lengths.data_ptr(), out=out_c.data_ptr(), lse=lse_c.data_ptr(),
        grad_h=grad_h.data_ptr(), grad_q=grad_q.data_ptr(), batch=batch, steps=steps,
        hidden=hidden, dtype=dtype_name(dtype), num_threads=torch.get_num_threads(),
    )  # fmt: skip
    return grad_h.to(h.dtype), grad_q.to(h.dtype)
