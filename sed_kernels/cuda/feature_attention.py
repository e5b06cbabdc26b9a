"""Launcher of the CUDA feature-attention kernels (``csrc/cuda/feature_attention.cu``).

Contract: see the op layer in :mod:`sed_kernels.ops`. float32, float16, bfloat16 and float64
run natively (accumulation in float32, float64 for float64); ``h`` may have any strides.
The kernels read the weights both as given and transposed (``W^T`` (H, d_a), ``V^T``
(d_a, H), small copies made here) so that every weight read is coalesced. Workspaces: the
per-block output partials (forward); the per-split dW/dV partials and the u, ds, dz operands
of the weight-gradient GEMMs (backward; every element read is written first, so it is not
zero-filled).

Matrix products: fp16/bf16 on tensor cores (mma.sync / wmma, operands in the input dtype,
fp32 accumulation); fp32 in IEEE fp32 FMA unless ``SED_KERNELS_CUDA_TF32=1`` asks for TF32
tensor cores (operands rounded to 10 mantissa bits, fp32 accumulation: about fp16's
accuracy); fp64 in fp64.
"""

from __future__ import annotations

import os

import torch

from sed_kernels._launch import accumulator_dtype, dtype_name, steps_arguments
from sed_kernels.cuda import launch_args, require_extension


def use_tf32(dtype: torch.dtype) -> bool:
    """Whether the kernels for ``dtype`` run their fp32 matrix products in TF32: only for
    float32 and only when the environment sets ``SED_KERNELS_CUDA_TF32=1`` (read per call)."""
    return dtype == torch.float32 and os.environ.get("SED_KERNELS_CUDA_TF32") == "1"


def forward(
    h: torch.Tensor, W: torch.Tensor, V: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """``out`` (B, H) in h.dtype; ``W`` (d_a, H), ``V`` (H, d_a)."""
    kernels = require_extension()
    batch, steps, hidden = h.shape
    attention = W.shape[0]
    W_t = W.to(h.dtype).t().contiguous()  # (H, d_a)
    V_t = V.to(h.dtype).t().contiguous()  # (d_a, H)
    lengths = lengths.contiguous()
    out = torch.empty((batch, hidden), dtype=h.dtype, device=h.device)
    size = kernels.feature_attention_forward_workspace(batch, steps, hidden)
    workspace = torch.empty(size, dtype=accumulator_dtype(h.dtype), device=h.device)
    kernels.feature_attention_forward(
        **steps_arguments(h),
        W_t=W_t.data_ptr(), V_t=V_t.data_ptr(), lengths=lengths.data_ptr(), out=out.data_ptr(),
        workspace=workspace.data_ptr(), batch=batch, steps=steps, hidden=hidden,
        attention=attention, dtype=dtype_name(h.dtype), tf32=use_tf32(h.dtype), **launch_args(h),
    )  # fmt: skip
    return out


def backward(
    grad_out: torch.Tensor,
    h: torch.Tensor,
    W: torch.Tensor,
    V: torch.Tensor,
    lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dh`` (B, T, H) (zero on padded steps), ``dW`` (d_a, H), ``dV`` (H, d_a), in h.dtype."""
    kernels = require_extension()
    batch, steps, hidden = h.shape
    attention = W.shape[0]
    W = W.to(h.dtype).contiguous()
    V = V.to(h.dtype).contiguous()
    W_t, V_t = W.t().contiguous(), V.t().contiguous()
    grad_out = grad_out.to(h.dtype).contiguous()
    lengths = lengths.contiguous()
    grad_h = torch.empty((batch, steps, hidden), dtype=h.dtype, device=h.device)
    grad_W = torch.empty_like(W)
    grad_V = torch.empty_like(V)
    size = kernels.feature_attention_backward_workspace(
        batch, steps, hidden, attention, dtype_name(h.dtype)
    )
    workspace = torch.empty(size, dtype=accumulator_dtype(h.dtype), device=h.device)
    kernels.feature_attention_backward(
        grad_out=grad_out.data_ptr(), **steps_arguments(h), W=W.data_ptr(), V=V.data_ptr(),
        W_t=W_t.data_ptr(), V_t=V_t.data_ptr(), lengths=lengths.data_ptr(),
        grad_h=grad_h.data_ptr(), grad_W=grad_W.data_ptr(), grad_V=grad_V.data_ptr(),
        workspace=workspace.data_ptr(), batch=batch, steps=steps, hidden=hidden,
        attention=attention, dtype=dtype_name(h.dtype), tf32=use_tf32(h.dtype), **launch_args(h),
    )  # fmt: skip
    return grad_h, grad_W, grad_V
