"""Triton kernels of time attention (paper Eq. 5): ``out[b] = sum_t softmax_t(h[b,t].q[b]) h[b,t]``.

Forward: one pass over ``h``. A program owns one row ``b`` (or one split of its steps, see
below) and all H features at once (``BLOCK_H >= H``: a score needs the whole dot product).
It walks the valid steps in blocks of ``BLOCK_T`` with an online softmax: running max ``m``,
running sum ``l = sum_t exp(s_t - m)`` and running weighted sum ``acc = sum_t exp(s_t - m) h_t``,
rescaled by ``exp(m_old - m_new)`` whenever the max grows. ``out = acc / l`` and
``lse = m + log(l)`` (saved for backward). Padded steps are never loaded.

Split along T (flash-decoding style): when the batch alone cannot fill the GPU (long
utterances, small batches), the steps of a row are cut into ``num_splits`` pieces handled by
separate programs; each writes its partial ``(m, l, acc)`` in fp32 and a deterministic
merge kernel (one program per row, splits in order) combines them:
``M = max_s m_s``, ``l = sum_s exp(m_s - M) l_s``, ``out = sum_s exp(m_s - M) acc_s / l``.
A split beyond a row's length leaves ``m = -inf, l = 0, acc = 0`` and drops out of the merge.

Backward: one pass over ``h`` with the saved ``lse``. With ``p_t = exp(s_t - lse)`` and
``D = grad_out . out``: ``ds_t = p_t (grad_out . h_t - D)``, ``dh_t = p_t grad_out + ds_t q``,
``dq = sum_t ds_t h_t``. Each program writes dh for its steps (zeros on padded steps).
``out`` is kept in fp32 (fp64) between forward and backward, as the backend contract asks:
``D`` cancels against ``grad_out . h_t``, and an ``out`` rounded to bf16 would lose dq's
digits. With several splits, each program writes its partial ``sum ds h``, summed in split
order by a second small kernel (deterministic).

Arithmetic in fp32 (fp64 for fp64 inputs); no ``tl.dot`` (both products are matrix-vector),
so every dtype runs unchanged under the interpreter.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import (
    TimeAttentionConfig,
    accumulator_dtype,
    check_device,
    div,
    exp,
    kernel_output_dtype,
    log,
    on_device,
    precise_math,
    time_attention_config,
    triton_dtype,
)


@triton.jit
def _time_attention_fwd_kernel(
    h_ptr, q_ptr, lengths_ptr,
    out_ptr, lse_ptr,  # final outputs (B, H), (B,)    -- used when not WRITE_PARTIALS
    part_acc_ptr, part_max_ptr, part_sum_ptr,  # (B, S, H), (B, S), (B, S) -- when WRITE_PARTIALS
    T, H, stride_hb, stride_ht, stride_hh, steps_per_split,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, ACC_DTYPE: tl.constexpr,
    WRITE_PARTIALS: tl.constexpr, PRECISE: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    # Clamped to T: lengths on a GPU are not value-checked by the op (no host sync).
    length = tl.minimum(tl.load(lengths_ptr + row).to(tl.int32), T)
    t_begin = split * steps_per_split
    t_end = tl.minimum(t_begin + steps_per_split, length)  # valid steps: [t_begin, t_end)

    offs_h = tl.arange(0, BLOCK_H)
    h_in = offs_h < H
    q = tl.load(q_ptr + row * H + offs_h, mask=h_in, other=0.0).to(ACC_DTYPE)  # (BLOCK_H,)
    h_row_ptr = h_ptr + row * stride_hb

    running_max = tl.full((), float("-inf"), ACC_DTYPE)
    running_sum = tl.zeros((), ACC_DTYPE)
    acc = tl.zeros((BLOCK_H,), ACC_DTYPE)  # sum_t exp(s_t - running_max) h_t
    for t0 in range(t_begin, t_end, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        t_valid = offs_t < t_end
        h_tile = tl.load(
            h_row_ptr + offs_t[:, None] * stride_ht + offs_h[None, :] * stride_hh,
            mask=t_valid[:, None] & h_in[None, :], other=0.0,
        ).to(ACC_DTYPE)  # (BLOCK_T, BLOCK_H)
        scores = tl.sum(h_tile * q[None, :], axis=1)  # (BLOCK_T,)
        scores = tl.where(t_valid, scores, float("-inf"))
        # Every block holds at least one valid step, so new_max is finite and
        # exp(running_max - new_max, PRECISE) is 0 on the first block.
        new_max = tl.maximum(running_max, tl.max(scores, axis=0))
        rescale = exp(running_max - new_max, PRECISE)
        p = exp(scores - new_max, PRECISE)  # (BLOCK_T,), 0 on padded steps
        running_sum = running_sum * rescale + tl.sum(p, axis=0)
        acc = acc * rescale + tl.sum(p[:, None] * h_tile, axis=0)
        running_max = new_max

    if WRITE_PARTIALS:
        part = row * num_splits + split
        tl.store(part_max_ptr + part, running_max)
        tl.store(part_sum_ptr + part, running_sum)
        tl.store(part_acc_ptr + part * H + offs_h, acc, mask=h_in)
    else:
        out = div(acc, running_sum, PRECISE)
        tl.store(out_ptr + row * H + offs_h, out.to(out_ptr.dtype.element_ty), mask=h_in)
        tl.store(lse_ptr + row, running_max + log(running_sum, PRECISE))


@triton.jit
def _time_attention_bwd_kernel(
    grad_out_ptr, h_ptr, q_ptr, lengths_ptr, out_ptr, lse_ptr,
    dh_ptr,  # (B, T, H) contiguous
    dq_ptr,  # (B, H): final output -- used when not WRITE_PARTIALS
    # (B, S, H) -- used when WRITE_PARTIALS
    part_dq_ptr,
    T, H, stride_hb, stride_ht, stride_hh, steps_per_split,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, ACC_DTYPE: tl.constexpr,
    WRITE_PARTIALS: tl.constexpr, PRECISE: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    length = tl.load(lengths_ptr + row).to(tl.int32)
    t_begin = split * steps_per_split
    t_stop = tl.minimum(t_begin + steps_per_split, T)  # this program's steps: [t_begin, t_stop)
    t_end = tl.minimum(t_stop, length)  # of which valid: [t_begin, t_end)

    offs_h = tl.arange(0, BLOCK_H)
    h_in = offs_h < H
    vec_offs = row * H + offs_h
    q = tl.load(q_ptr + vec_offs, mask=h_in, other=0.0).to(ACC_DTYPE)
    grad_out = tl.load(grad_out_ptr + vec_offs, mask=h_in, other=0.0).to(ACC_DTYPE)
    out = tl.load(out_ptr + vec_offs, mask=h_in, other=0.0).to(ACC_DTYPE)
    lse = tl.load(lse_ptr + row).to(ACC_DTYPE)
    delta = tl.sum(grad_out * out, axis=0)  # D = grad_out . out
    h_row_ptr = h_ptr + row * stride_hb
    dh_row_ptr = dh_ptr + row * T * H

    dq = tl.zeros((BLOCK_H,), ACC_DTYPE)  # sum_t ds_t h_t
    for t0 in range(t_begin, t_end, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        t_valid = offs_t < t_end
        h_tile = tl.load(
            h_row_ptr + offs_t[:, None] * stride_ht + offs_h[None, :] * stride_hh,
            mask=t_valid[:, None] & h_in[None, :], other=0.0,
        ).to(ACC_DTYPE)  # (BLOCK_T, BLOCK_H)
        scores = tl.sum(h_tile * q[None, :], axis=1)
        scores = tl.where(t_valid, scores, float("-inf"))
        p = exp(scores - lse, PRECISE)  # attention weights, 0 on padded steps
        ds = p * (tl.sum(h_tile * grad_out[None, :], axis=1) - delta)  # (BLOCK_T,)
        dh = p[:, None] * grad_out[None, :] + ds[:, None] * q[None, :]  # (BLOCK_T, BLOCK_H)
        dq += tl.sum(ds[:, None] * h_tile, axis=0)
        tl.store(
            dh_row_ptr + offs_t[:, None] * H + offs_h[None, :],
            dh.to(dh_ptr.dtype.element_ty),
            mask=(offs_t < t_stop)[:, None] & h_in[None, :],
        )

    # Padded steps after the last valid block get dh = 0.
    first_padded_block = t_begin + tl.cdiv(tl.maximum(t_end - t_begin, 0), BLOCK_T) * BLOCK_T
    zeros = tl.zeros((BLOCK_T, BLOCK_H), dh_ptr.dtype.element_ty)
    for t0 in range(first_padded_block, t_stop, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        tl.store(
            dh_row_ptr + offs_t[:, None] * H + offs_h[None, :],
            zeros,
            mask=(offs_t < t_stop)[:, None] & h_in[None, :],
        )

    if WRITE_PARTIALS:
        part = row * num_splits + split
        tl.store(part_dq_ptr + part * H + offs_h, dq, mask=h_in)
    else:
        tl.store(dq_ptr + row * H + offs_h, dq.to(dq_ptr.dtype.element_ty), mask=h_in)


@triton.jit
def _time_attention_merge_kernel(
    part_acc_ptr, part_max_ptr, part_sum_ptr,  # (B, S, H), (B, S), (B, S) fp32 (fp64)
    out_ptr, lse_ptr,  # (B, H), (B,)
    H, num_splits,
    BLOCK_S: tl.constexpr, BLOCK_H: tl.constexpr, ACC_DTYPE: tl.constexpr,
    PRECISE: tl.constexpr,
):
    """Merge of one row's split partials, splits in order (deterministic): M = max_s m_s,
    l = sum_s exp(m_s - M) l_s, out = sum_s exp(m_s - M) acc_s / l, lse = M + log l.
    Split 0 always holds step 0, so M is finite; an empty split has m = -inf, l = acc = 0."""
    row = tl.program_id(0).to(tl.int64)
    offs_s = tl.arange(0, BLOCK_S)
    s_in = offs_s < num_splits
    maxes = tl.load(part_max_ptr + row * num_splits + offs_s, mask=s_in, other=float("-inf"))
    sums = tl.load(part_sum_ptr + row * num_splits + offs_s, mask=s_in, other=0.0)
    row_max = tl.max(maxes, axis=0)
    row_sum = tl.sum(exp(maxes - row_max, PRECISE) * sums, axis=0)
    offs_h = tl.arange(0, BLOCK_H)
    h_in = offs_h < H
    acc = tl.zeros((BLOCK_H,), ACC_DTYPE)
    for split in range(0, num_splits):
        part = row * num_splits + split
        scale = exp(tl.load(part_max_ptr + part) - row_max, PRECISE)
        acc += scale * tl.load(part_acc_ptr + part * H + offs_h, mask=h_in, other=0.0)
    tl.store(out_ptr + row * H + offs_h, div(acc, row_sum, PRECISE), mask=h_in)
    tl.store(lse_ptr + row, row_max + log(row_sum, PRECISE))


@triton.jit
def _time_attention_dq_merge_kernel(
    part_dq_ptr,  # (B, S, H) fp32 (fp64)
    dq_ptr,  # (B, H) in the output dtype
    H, num_splits, BLOCK_H: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    """dq = sum over the row's splits of sum_t ds_t h_t, splits in order (deterministic)."""
    row = tl.program_id(0).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    h_in = offs_h < H
    acc = tl.zeros((BLOCK_H,), ACC_DTYPE)
    for split in range(0, num_splits):
        acc += tl.load(part_dq_ptr + (row * num_splits + split) * H + offs_h, mask=h_in,
                       other=0.0)
    tl.store(dq_ptr + row * H + offs_h, acc.to(dq_ptr.dtype.element_ty), mask=h_in)


def forward(h: torch.Tensor, q: torch.Tensor, lengths: torch.Tensor,
            config: TimeAttentionConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Time attention forward; see the module docstring and the backend contract.

    h (B, T, H) any strides, q (B, H), lengths (B,) int64 in [1, T].
    Returns out (B, H) and lse (B,), both in fp32 (fp64 for fp64 inputs).
    ``config`` overrides the heuristic launch configuration (tests, tuning).
    """
    check_device(h)
    batch, steps, hidden = h.shape
    if config is None:
        config = time_attention_config(batch, steps, hidden, h.dtype, h.device)
    num_splits = config.num_splits(steps)
    acc_dtype = accumulator_dtype(h.dtype)
    out = torch.empty((batch, hidden), dtype=acc_dtype, device=h.device)
    lse = torch.empty((batch,), dtype=acc_dtype, device=h.device)
    write_partials = num_splits > 1
    if write_partials:
        part_acc = torch.empty((batch, num_splits, hidden), dtype=acc_dtype, device=h.device)
        part_max = torch.empty((batch, num_splits), dtype=acc_dtype, device=h.device)
        part_sum = torch.empty((batch, num_splits), dtype=acc_dtype, device=h.device)
    else:  # unused by the kernel
        part_acc = part_max = part_sum = lse
    with on_device(h):
        _time_attention_fwd_kernel[(batch, num_splits)](
            h, q, lengths, out, lse, part_acc, part_max, part_sum,
            steps, hidden, h.stride(0), h.stride(1), h.stride(2), config.steps_per_split,
            BLOCK_T=config.block_t, BLOCK_H=config.block_h, ACC_DTYPE=triton_dtype(acc_dtype),
            WRITE_PARTIALS=write_partials, PRECISE=precise_math(h.dtype),
            num_warps=config.num_warps,
        )
        if write_partials:  # one launch merges the splits (no chain of small torch ops)
            _time_attention_merge_kernel[(batch,)](
                part_acc, part_max, part_sum, out, lse, hidden, num_splits,
                BLOCK_S=triton.next_power_of_2(num_splits), BLOCK_H=config.block_h,
                ACC_DTYPE=triton_dtype(acc_dtype), PRECISE=precise_math(h.dtype),
                num_warps=4,
            )
    return out, lse


def backward(grad_out: torch.Tensor, h: torch.Tensor, q: torch.Tensor, lengths: torch.Tensor,
             out: torch.Tensor, lse: torch.Tensor,
             config: TimeAttentionConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Time attention backward: (dh (B, T, H) contiguous, zero on padded steps; dq (B, H)).

    ``config`` overrides the heuristic launch configuration (tests, tuning).
    """
    check_device(h)
    batch, steps, hidden = h.shape
    if config is None:
        config = time_attention_config(batch, steps, hidden, h.dtype, h.device)
    num_splits = config.num_splits(steps)
    acc_dtype = accumulator_dtype(h.dtype)
    output_dtype = kernel_output_dtype(h.dtype)
    dh = torch.empty((batch, steps, hidden), dtype=output_dtype, device=h.device)
    dq = torch.empty((batch, hidden), dtype=output_dtype, device=h.device)
    write_partials = num_splits > 1
    if write_partials:
        part_dq = torch.empty((batch, num_splits, hidden), dtype=acc_dtype, device=h.device)
    else:  # unused by the kernel
        part_dq = dq
    with on_device(h):
        _time_attention_bwd_kernel[(batch, num_splits)](
            grad_out, h, q, lengths, out, lse, dh, dq, part_dq,
            steps, hidden, h.stride(0), h.stride(1), h.stride(2), config.steps_per_split,
            BLOCK_T=config.block_t, BLOCK_H=config.block_h, ACC_DTYPE=triton_dtype(acc_dtype),
            WRITE_PARTIALS=write_partials, PRECISE=precise_math(h.dtype),
            num_warps=config.num_warps,
        )
        if write_partials:
            _time_attention_dq_merge_kernel[(batch,)](
                part_dq, dq, hidden, num_splits, BLOCK_H=config.block_h,
                ACC_DTYPE=triton_dtype(acc_dtype), num_warps=4,
            )
    return dh.to(h.dtype), dq.to(h.dtype)
