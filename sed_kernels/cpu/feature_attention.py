"""Launcher of the C++/OpenMP feature-attention kernels (``csrc/cpu/kernels.cpp``).

Contract: see the op layer in :mod:`sed_kernels.ops`. float16/bfloat16 inputs are converted
to float32 here (one copy of ``h``) and the outputs converted back; float32 and float64 run
natively. The kernels keep per-step intermediates (u, s, a and their gradients) in per-thread
tiles of a block of steps and recompute them in the backward; dW and dV are reduced in a fixed
order (see :mod:`sed_kernels.cpu`).
"""

from __future__ import annotations

import torch

from sed_kernels.cpu import compute_dtype, dtype_name, require_extension


def forward(
    h: torch.Tensor, W: torch.Tensor, V: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """``out`` (B, H) in h.dtype; ``W`` (d_a, H), ``V`` (H, d_a)."""
    kernels = require_extension()
    dtype = compute_dtype(h.dtype)
    batch, steps, hidden = h.shape
    h_c = h.to(dtype)  # keeps h's strides
    W_c = W.to(dtype).contiguous()
    V_c = V.to(dtype).contiguous()
    lengths = lengths.contiguous()
    out = torch.empty((batch, hidden), dtype=dtype)
    kernels.feature_attention_forward(
        h=h_c.data_ptr(), stride_b=h_c.stride(0), stride_t=h_c.stride(1), stride_h=h_c.stride(2),
        W=W_c.data_ptr(), V=V_c.data_ptr(), lengths=lengths.data_ptr(), out=out.data_ptr(),
        batch=batch, steps=steps, hidden=hidden, attention=W.shape[0], dtype=dtype_name(dtype),
        num_threads=torch.get_num_threads(),
    )  # fmt: skip
    return out.to(h.dtype)


def backward(
    grad_out: torch.Tensor,
    h: torch.Tensor,
    W: torch.Tensor,
    V: torch.Tensor,
    lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dh`` (B, T, H) (zero on padded steps), ``dW`` (d_a, H), ``dV`` (H, d_a), in h.dtype."""
    kernels = require_extension()
    dtype = compute_dtype(h.dtype)
    batch, steps, hidden = h.shape
    h_c = h.to(dtype)
    grad_out_c = grad_out.to(dtype).contiguous()
    W_c = W.to(dtype).contiguous()
    V_c = V.to(dtype).contiguous()
    lengths = lengths.contiguous()
    grad_h = torch.empty((batch, steps, hidden), dtype=dtype)
    grad_W = torch.empty(W.shape, dtype=dtype)
    grad_V = torch.empty(V.shape, dtype=dtype)
    kernels.feature_attention_backward(
        grad_out=grad_out_c.data_ptr(), h=h_c.data_ptr(), stride_b=h_c.stride(0),
        stride_t=h_c.stride(1), stride_h=h_c.stride(2), W=W_c.data_ptr(), V=V_c.data_ptr(),
        lengths=lengths.data_ptr(), grad_h=grad_h.data_ptr(), grad_W=grad_W.data_ptr(),
        grad_V=grad_V.data_ptr(), batch=batch, steps=steps, hidden=hidden,
        attention=W.shape[0], dtype=dtype_name(dtype), num_threads=torch.get_num_threads(),
    )  # fmt: skip
    return grad_h.to(h.dtype), grad_W.to(h.dtype), grad_V.to(h.dtype)
