"""Launcher of the CPU feature-attention kernels (``csrc/cpu/kernels.cpp``).

Contract: see the op layer in :mod:`sed_kernels.ops`. The valid steps of ``h`` are packed
into one (N, H) matrix (N = sum of lengths), so that the four matrix products of the forward
and backward are plain GEMMs, run by ``torch.mm`` at the machine's matrix-multiply rate on
every CPU; the compiled kernels do everything between them in one pass each (packing, the
softmax with the weighted sum over steps, the softmax backward, tanh', unpacking).

On the CPU memory is plentiful, so the forward keeps packed ``h``, ``u = tanh(h W^T)`` and
``a = softmax(u V^T)`` for the backward instead of recomputing them (12 N H d_a FLOPs for
forward+backward instead of 16): one (N, 2H + d_a) buffer in the compute dtype, the
``saved`` tensor of the contract (its size depends on the lengths: under torch.compile it
is a data-dependent size). float16/bfloat16 inputs are converted to float32 first.
"""

from __future__ import annotations

import torch

from sed_kernels._launch import accumulator_dtype, dtype_name, steps_arguments
from sed_kernels.cpu import require_extension


def saved_shape(valid_steps: int, hidden: int, attention: int) -> tuple[int, int]:
    """Shape of the forward's saved buffer: one row per valid step (N, 2H + d_a).

    Its memory holds three contiguous matrices one after the other, packed h (N, H),
    u (N, d_a) and a (N, H), not three column blocks of each row (see :func:`_saved_views`).
    """
    return (valid_steps, 2 * hidden + attention)


def _saved_views(saved, valid, hidden, attention):
    """(packed h (N, H), u (N, d_a), a (N, H)): contiguous views into ``saved``."""
    flat = saved.view(-1)
    h_end, u_end = valid * hidden, valid * (hidden + attention)
    packed_h = flat[:h_end].view(valid, hidden)
    u = flat[h_end:u_end].view(valid, attention)
    a = flat[u_end:].view(valid, hidden)
    return packed_h, u, a


def _threads() -> int:
    return torch.get_num_threads()


def forward_for_backward(
    h: torch.Tensor, W: torch.Tensor, V: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``out`` (B, H) in h.dtype and the ``saved`` buffer that :func:`backward_from_saved` reads."""
    kernels = require_extension()
    dtype = accumulator_dtype(h.dtype)
    batch, steps, hidden = h.shape
    attention = W.shape[0]
    h_c = h.to(dtype)  # keeps h's strides
    W_c = W.to(dtype).contiguous()
    V_c = V.to(dtype).contiguous()
    lengths = lengths.contiguous()
    valid = int(lengths.sum())
    saved = torch.empty(saved_shape(valid, hidden, attention), dtype=dtype)
    packed_h, u, a = _saved_views(saved, valid, hidden, attention)
    kernels.pack_steps(
        **steps_arguments(h_c),
        lengths=lengths.data_ptr(), packed=packed_h.data_ptr(), batch=batch, steps=steps,
        hidden=hidden, dtype=dtype_name(dtype), num_threads=_threads(),
    )  # fmt: skip
    torch.mm(packed_h, W_c.t(), out=u)  # z = h W^T      (N, d_a)
    torch.tanh_(u)  # u = tanh(z)
    torch.mm(u, V_c.t(), out=a)  # s = u V^T            (N, H)
    out = torch.empty((batch, hidden), dtype=dtype)
    kernels.softmax_pool(
        scores=a.data_ptr(), packed_h=packed_h.data_ptr(), lengths=lengths.data_ptr(),
        out=out.data_ptr(), batch=batch, hidden=hidden, dtype=dtype_name(dtype),
        num_threads=_threads(),
    )  # fmt: skip  (a = softmax(s) in place, out[b] = sum_t a_t * h_t)
    return out.to(h.dtype), saved


def backward_from_saved(
    grad_out: torch.Tensor,
    saved: torch.Tensor,
    h: torch.Tensor,
    W: torch.Tensor,
    V: torch.Tensor,
    lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dh`` (B, T, H) (zero on padded steps), ``dW`` (d_a, H), ``dV`` (H, d_a), in h.dtype."""
    kernels = require_extension()
    dtype = accumulator_dtype(h.dtype)
    batch, steps, hidden = h.shape
    attention = W.shape[0]
    W_c = W.to(dtype).contiguous()
    V_c = V.to(dtype).contiguous()
    grad_out_c = grad_out.to(dtype).contiguous()
    lengths = lengths.contiguous()
    valid = int(lengths.sum())
    packed_h, u, a = _saved_views(saved, valid, hidden, attention)
    grad_s = torch.empty((valid, hidden), dtype=dtype)
    grad_h_packed = torch.empty((valid, hidden), dtype=dtype)
    kernels.softmax_backward(
        weights=a.data_ptr(), packed_h=packed_h.data_ptr(), grad_out=grad_out_c.data_ptr(),
        lengths=lengths.data_ptr(), grad_scores=grad_s.data_ptr(),
        grad_h=grad_h_packed.data_ptr(), batch=batch, hidden=hidden, dtype=dtype_name(dtype),
        num_threads=_threads(),
    )  # fmt: skip  (ds = a * (g*h - sum(a * g*h)), grad_h_packed = g * a)
    grad_V = torch.mm(grad_s.t(), u)  # dV = ds^T u     (H, d_a)
    grad_z = torch.mm(grad_s, V_c)  # du = ds V         (N, d_a)
    kernels.tanh_backward(
        grad=grad_z.data_ptr(), tanh_out=u.data_ptr(), count=grad_z.numel(),
        dtype=dtype_name(dtype), num_threads=_threads(),
    )  # fmt: skip  (dz = du * (1 - u^2))
    grad_W = torch.mm(grad_z.t(), packed_h)  # dW = dz^T h   (d_a, H)
    grad_h_packed.addmm_(grad_z, W_c)  # dh = g * a + dz W   (N, H)
    grad_h = torch.empty((batch, steps, hidden), dtype=dtype)
    kernels.unpack_steps(
        packed=grad_h_packed.data_ptr(), lengths=lengths.data_ptr(), out=grad_h.data_ptr(),
        batch=batch, steps=steps, hidden=hidden, dtype=dtype_name(dtype), num_threads=_threads(),
    )  # fmt: skip
    return grad_h.to(h.dtype), grad_W.to(h.dtype), grad_V.to(h.dtype)


def forward(
    h: torch.Tensor, W: torch.Tensor, V: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """``out`` (B, H) in h.dtype; ``W`` (d_a, H), ``V`` (H, d_a)."""
    return forward_for_backward(h, W, V, lengths)[0]


def backward(
    grad_out: torch.Tensor,
    h: torch.Tensor,
    W: torch.Tensor,
    V: torch.Tensor,
    lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward without a saved buffer: recomputes it with the forward first."""
    saved = forward_for_backward(h, W, V, lengths)[1]
    return backward_from_saved(grad_out, saved, h, W, V, lengths)
