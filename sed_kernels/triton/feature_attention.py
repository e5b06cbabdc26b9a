"""Triton kernels of feature attention (paper Eq. 6, 7).

For every valid step of a row: ``u_t = tanh(W h_t)`` (d_a), ``s_t = V u_t`` (H),
``a_t = softmax over features of s_t`` and ``out[b] = sum_{t < len} a_t * h_t``.

Work split: a program owns ``steps_per_split`` consecutive steps of one row (grid
``(B, num_splits)``; one split per row unless the batch is too small to fill the GPU) and walks
its valid steps in blocks of ``BLOCK_T``. Per block everything stays on chip; neither a
(B, T, d_a) nor a (B, T, H) intermediate is written:

* ``z = h_blk @ W^T`` (BLOCK_T, d_a) by ``tl.dot`` over chunks of ``BLOCK_N`` features of H,
  ``u = tanh(z)`` (from ``exp``; ``tl`` has no tanh that the interpreter runs);
* the feature axis of ``s = u @ V^T`` is walked in chunks of ``BLOCK_N``: a first pass keeps
  the per-step running max and sum of the softmax (online softmax over features), a second
  pass recomputes each chunk of ``s``, forms ``a`` and adds ``sum_t a * h`` for the chunk.
  The row's output accumulator is a (num_chunks, BLOCK_N) register tile, updated chunk by
  chunk with a one-hot select (a Triton register tile cannot be indexed dynamically).

Forward partial outputs (B, num_splits, H) are summed by ``torch.sum`` (deterministic).

Backward (same grid) recomputes ``u``, ``s`` and ``a`` per block, with
``g = grad_out[b]`` and ``c_t = sum_n a_tn g_n h_tn``. Per block it walks the H chunks three
times, recomputing the chunk of ``s`` each time: (1) softmax max/sum and ``c`` (online),
(2) ``ds``, ``du`` and dV, (3) dh and dW:

* ``ds = a * (g * h - c)``; ``du = ds @ V``; ``dV += ds^T @ u``;
* ``dz = du * (1 - u^2)``; ``dh = g * a + dz @ W`` (written directly); ``dW += dz^T @ h``.
  ``1 - u^2`` is computed from the fp32 ``z`` as ``4 e / (1 + e)^2``, ``e = exp(-2|z|)``:
  where tanh saturates, ``1 - u^2`` of a rounded ``u`` (eager autograd) loses most digits.

dW and dV are accumulated per program in fp32 (fp64 for fp64 inputs) partial buffers
(num_programs, d_a, H) and (num_programs, H, d_a), each program reading and writing only its
own slice (read-add-write per block, after a ``tl.debug_barrier`` so the previous block's
writes by other threads are visible), then summed over programs by ``torch.sum``:
deterministic, no atomics. This partial traffic per block is the main cost at large
H*d_a; ``feature_attention_config`` caps the number of programs so the partials stay
bounded (tuning item).

Dots take their operands in the input dtype (fp16/bf16 tensor cores, fp32 accumulation;
fp32 uses ``input_precision="ieee"``, no TF32; fp64 in fp64), so ``u``, ``ds`` and ``dz`` are
rounded to the input dtype before a dot, as the eager same-dtype model does. Under the
interpreter bfloat16 operands are cast to fp32 instead (NumPy has no bfloat16 matmul).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import (
    FeatureAttentionConfig,
    accumulator_dtype,
    check_device,
    div,
    dot_operand_dtype,
    exp,
    explain_resource_errors,
    feature_attention_config,
    kernel_output_dtype,
    on_device,
    precise_math,
    triton_dtype,
)

# fp32 dots in IEEE precision so that results match the eager fp32 reference (no TF32).
_DOT_PRECISION = "ieee"


@triton.jit
def _tanh(x, PRECISE: tl.constexpr):
    """tanh to a few ulps in fp32 and fp64 (``tl`` has no tanh that the interpreter runs).

    |x| >= 1/8: sign(x) (1 - e) / (1 + e) with e = exp(-2|x|) <= 0.78 (no overflow, no
    cancellation worse than 1 - 0.78). |x| < 1/8: the odd Taylor series to x^15, whose next
    term is below 1e-17 relative, avoiding the cancellation of 1 - e near 0.
    """
    e = exp(-2.0 * tl.abs(x), PRECISE)
    magnitude = div(1.0 - e, 1.0 + e, PRECISE)
    large = tl.where(x >= 0, magnitude, -magnitude)
    is_small = tl.abs(x) < 0.125
    x = tl.where(is_small, x, 0.0)  # keeps x * x finite where the series is not used
    y = x * x
    series = -929569.0 / 638512875.0
    series = series * y + 21844.0 / 6081075.0
    series = series * y - 1382.0 / 155925.0
    series = series * y + 62.0 / 2835.0
    series = series * y - 17.0 / 315.0
    series = series * y + 2.0 / 15.0
    series = series * y - 1.0 / 3.0
    small = x + x * y * series
    return tl.where(is_small, small, large)


@triton.jit
def _tanh_derivative(x, PRECISE: tl.constexpr):
    """1 - tanh(x)^2 = 4 e / (1 + e)^2 with e = exp(-2|x|): no cancellation as |tanh| -> 1,
    unlike 1 - u^2 from a rounded u (what eager autograd computes)."""
    e = exp(-2.0 * tl.abs(x), PRECISE)
    return div(4.0 * e, (1.0 + e) * (1.0 + e), PRECISE)


@triton.jit
def _load_h_chunk(h_row_ptr, offs_t, t_valid, offs_f, stride_ht, stride_hh, H):
    """(BLOCK_T, BLOCK_N) tile of h; 0 on padded steps and features >= H (never read there)."""
    return tl.load(
        h_row_ptr + offs_t[:, None] * stride_ht + offs_f[None, :] * stride_hh,
        mask=t_valid[:, None] & (offs_f < H)[None, :], other=0.0,
    )


@triton.jit
def _load_w_chunk(w_ptr, offs_da, offs_f, H, DA):
    """(BLOCK_DA, BLOCK_N) tile of W (d_a, H), 0 outside."""
    return tl.load(w_ptr + offs_da[:, None] * H + offs_f[None, :],
                   mask=(offs_da < DA)[:, None] & (offs_f < H)[None, :], other=0.0)


@triton.jit
def _load_v_chunk(v_ptr, offs_f, offs_da, H, DA):
    """(BLOCK_N, BLOCK_DA) tile of V (H, d_a), 0 outside."""
    return tl.load(v_ptr + offs_f[:, None] * DA + offs_da[None, :],
                   mask=(offs_f < H)[:, None] & (offs_da < DA)[None, :], other=0.0)


@triton.jit
def _projection(h_row_ptr, w_ptr, offs_t, t_valid, stride_ht, stride_hh, H, DA,
                     BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DA: tl.constexpr,
                     NUM_CHUNKS: tl.constexpr, ACC_DTYPE: tl.constexpr,
                     DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """z = h_blk @ W^T: (BLOCK_T, BLOCK_DA), reduction over H in chunks of BLOCK_N."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_da = tl.arange(0, BLOCK_DA)
    z = tl.zeros((BLOCK_T, BLOCK_DA), ACC_DTYPE)
    for chunk in range(NUM_CHUNKS):
        offs_f = chunk * BLOCK_N + offs_n
        h_chunk = _load_h_chunk(h_row_ptr, offs_t, t_valid, offs_f, stride_ht, stride_hh, H)
        w_chunk = _load_w_chunk(w_ptr, offs_da, offs_f, H, DA)  # (BLOCK_DA, BLOCK_N)
        z = tl.dot(h_chunk.to(DOT_DTYPE), tl.trans(w_chunk.to(DOT_DTYPE)), z,
                   input_precision=PRECISION)
    return z


@triton.jit
def _feature_scores(u_dot, v_chunk, offs_f, H, ACC_DTYPE: tl.constexpr,
                    PRECISION: tl.constexpr):
    """Chunk of s = u @ V^T: (BLOCK_T, BLOCK_N), -inf on features >= H (outside the softmax)."""
    scores = tl.dot(u_dot, tl.trans(v_chunk.to(u_dot.dtype)), input_precision=PRECISION,
                    out_dtype=ACC_DTYPE)
    return tl.where((offs_f < H)[None, :], scores, float("-inf"))


@triton.jit
def _feature_attention_fwd_kernel(
    h_ptr, w_ptr, v_ptr, lengths_ptr,
    out_ptr,  # (B, S, H): the output itself when S == 1, else accumulator-dtype partials
    T, H, DA, stride_hb, stride_ht, stride_hh, steps_per_split,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DA: tl.constexpr,
    NUM_CHUNKS: tl.constexpr, CHUNKS_POW2: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    PRECISE: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    # Clamped to T: lengths on a GPU are not value-checked by the op (no host sync).
    length = tl.minimum(tl.load(lengths_ptr + row).to(tl.int32), T)
    t_begin = split * steps_per_split
    t_end = tl.minimum(t_begin + steps_per_split, length)  # this program's valid steps

    h_row_ptr = h_ptr + row * stride_hb
    offs_n = tl.arange(0, BLOCK_N)
    offs_da = tl.arange(0, BLOCK_DA)
    chunk_ids = tl.arange(0, CHUNKS_POW2)
    out_acc = tl.zeros((CHUNKS_POW2, BLOCK_N), ACC_DTYPE)  # out[chunk * BLOCK_N + n]

    for t0 in range(t_begin, t_end, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        t_valid = offs_t < t_end
        z = _projection(h_row_ptr, w_ptr, offs_t, t_valid, stride_ht, stride_hh, H, DA,
                        BLOCK_T, BLOCK_N, BLOCK_DA, NUM_CHUNKS, ACC_DTYPE, DOT_DTYPE, PRECISION)
        u_dot = _tanh(z, PRECISE).to(DOT_DTYPE)  # u = tanh(W h): (BLOCK_T, BLOCK_DA)

        # Pass 1: per-step max and sum of exp over the features (online softmax).
        row_max = tl.full((BLOCK_T,), float("-inf"), ACC_DTYPE)
        row_sum = tl.zeros((BLOCK_T,), ACC_DTYPE)
        for chunk in range(NUM_CHUNKS):
            offs_f = chunk * BLOCK_N + offs_n
            scores = _feature_scores(u_dot, _load_v_chunk(v_ptr, offs_f, offs_da, H, DA),
                                     offs_f, H, ACC_DTYPE, PRECISION)
            new_max = tl.maximum(row_max, tl.max(scores, axis=1))  # finite from chunk 0 on
            row_sum = row_sum * exp(row_max - new_max, PRECISE) + tl.sum(
                exp(scores - new_max[:, None], PRECISE), axis=1)
            row_max = new_max
        inv_sum = div(tl.full(row_sum.shape, 1.0, row_sum.dtype), row_sum, PRECISE)

        # Pass 2: a = softmax(s) chunk by chunk; out += sum over the block's steps of a * h.
        for chunk in range(NUM_CHUNKS):
            offs_f = chunk * BLOCK_N + offs_n
            scores = _feature_scores(u_dot, _load_v_chunk(v_ptr, offs_f, offs_da, H, DA),
                                     offs_f, H, ACC_DTYPE, PRECISION)
            # (BLOCK_T, BLOCK_N)
            weights = exp(scores - row_max[:, None], PRECISE) * inv_sum[:, None]
            h_chunk = _load_h_chunk(h_row_ptr, offs_t, t_valid, offs_f, stride_ht, stride_hh,
                                    H).to(ACC_DTYPE)  # 0 on padded steps
            contribution = tl.sum(weights * h_chunk, axis=0)  # (BLOCK_N,)
            out_acc += tl.where(chunk_ids[:, None] == chunk, contribution[None, :], 0.0)

    offs_out = chunk_ids[:, None] * BLOCK_N + offs_n[None, :]
    tl.store(out_ptr + (row * num_splits + split) * H + offs_out,
             out_acc.to(out_ptr.dtype.element_ty), mask=offs_out < H)


@triton.jit
def _feature_attention_bwd_kernel(
    grad_out_ptr, h_ptr, w_ptr, v_ptr, lengths_ptr,
    dh_ptr,  # (B, T, H) contiguous
    dw_part_ptr,  # (P, DA, H) zero-initialised, P = B * S programs
    dv_part_ptr,  # (P, H, DA) zero-initialised
    T, H, DA, stride_hb, stride_ht, stride_hh, steps_per_split,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DA: tl.constexpr,
    NUM_CHUNKS: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    PRECISE: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    program = row * num_splits + split
    length = tl.load(lengths_ptr + row).to(tl.int32)
    t_begin = split * steps_per_split
    t_stop = tl.minimum(t_begin + steps_per_split, T)  # this program's steps: [t_begin, t_stop)
    t_end = tl.minimum(t_stop, length)  # of which valid: [t_begin, t_end)

    h_row_ptr = h_ptr + row * stride_hb
    dh_row_ptr = dh_ptr + row * T * H
    grad_row_ptr = grad_out_ptr + row * H
    dw_part_ptr += program * DA * H
    dv_part_ptr += program * H * DA
    offs_n = tl.arange(0, BLOCK_N)
    offs_da = tl.arange(0, BLOCK_DA)
    da_in = offs_da < DA

    for t0 in range(t_begin, t_end, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        t_valid = offs_t < t_end
        z = _projection(h_row_ptr, w_ptr, offs_t, t_valid, stride_ht, stride_hh, H, DA,
                        BLOCK_T, BLOCK_N, BLOCK_DA, NUM_CHUNKS, ACC_DTYPE, DOT_DTYPE, PRECISION)
        u_dot = _tanh(z, PRECISE).to(DOT_DTYPE)  # u = tanh(W h): (BLOCK_T, BLOCK_DA)

        # Pass 1 (online over feature chunks): softmax max/sum and c_t = sum_n a g h.
        row_max = tl.full((BLOCK_T,), float("-inf"), ACC_DTYPE)
        row_sum = tl.zeros((BLOCK_T,), ACC_DTYPE)
        row_dot = tl.zeros((BLOCK_T,), ACC_DTYPE)  # sum_n exp(s - row_max) g h
        for chunk in range(NUM_CHUNKS):
            offs_f = chunk * BLOCK_N + offs_n
            scores = _feature_scores(u_dot, _load_v_chunk(v_ptr, offs_f, offs_da, H, DA),
                                     offs_f, H, ACC_DTYPE, PRECISION)
            h_chunk = _load_h_chunk(h_row_ptr, offs_t, t_valid, offs_f, stride_ht, stride_hh,
                                    H).to(ACC_DTYPE)
            grad = tl.load(grad_row_ptr + offs_f, mask=offs_f < H, other=0.0).to(ACC_DTYPE)
            new_max = tl.maximum(row_max, tl.max(scores, axis=1))
            rescale = exp(row_max - new_max, PRECISE)
            e = exp(scores - new_max[:, None], PRECISE)
            row_sum = row_sum * rescale + tl.sum(e, axis=1)
            row_dot = row_dot * rescale + tl.sum(e * grad[None, :] * h_chunk, axis=1)
            row_max = new_max
        inv_sum = div(tl.full(row_sum.shape, 1.0, row_sum.dtype), row_sum, PRECISE)
        weighted_grad = row_dot * inv_sum  # c_t, 0 on padded steps (h = 0 there)

        # Pass 2: ds = a (g h - c); du = ds @ V; dV += ds^T @ u.
        du = tl.zeros((BLOCK_T, BLOCK_DA), ACC_DTYPE)
        for chunk in range(NUM_CHUNKS):
            offs_f = chunk * BLOCK_N + offs_n
            v_chunk = _load_v_chunk(v_ptr, offs_f, offs_da, H, DA)  # (BLOCK_N, BLOCK_DA)
            scores = _feature_scores(u_dot, v_chunk, offs_f, H, ACC_DTYPE, PRECISION)
            weights = exp(scores - row_max[:, None], PRECISE) * inv_sum[:, None]
            h_chunk = _load_h_chunk(h_row_ptr, offs_t, t_valid, offs_f, stride_ht, stride_hh,
                                    H).to(ACC_DTYPE)
            grad = tl.load(grad_row_ptr + offs_f, mask=offs_f < H, other=0.0).to(ACC_DTYPE)
            # 0 on padded steps: there h = 0 and c = 0.
            ds = (weights * (grad[None, :] * h_chunk - weighted_grad[:, None])).to(DOT_DTYPE)
            du = tl.dot(ds, v_chunk.to(DOT_DTYPE), du, input_precision=PRECISION)
            dv_ptrs = dv_part_ptr + offs_f[:, None] * DA + offs_da[None, :]
            dv_mask = (offs_f < H)[:, None] & da_in[None, :]
            tl.debug_barrier()  # the previous block's store of this tile is visible
            dv = tl.load(dv_ptrs, mask=dv_mask, other=0.0)
            dv = tl.dot(tl.trans(ds), u_dot, dv, input_precision=PRECISION)  # (BLOCK_N, BLOCK_DA)
            tl.store(dv_ptrs, dv, mask=dv_mask)

        # Pass 3: dz = du (1 - u^2); dh = g a + dz @ W; dW += dz^T @ h.
        dz = (du * _tanh_derivative(z, PRECISE)).to(DOT_DTYPE)  # (BLOCK_T, BLOCK_DA)
        for chunk in range(NUM_CHUNKS):
            offs_f = chunk * BLOCK_N + offs_n
            scores = _feature_scores(u_dot, _load_v_chunk(v_ptr, offs_f, offs_da, H, DA),
                                     offs_f, H, ACC_DTYPE, PRECISION)
            weights = exp(scores - row_max[:, None], PRECISE) * inv_sum[:, None]
            grad = tl.load(grad_row_ptr + offs_f, mask=offs_f < H, other=0.0).to(ACC_DTYPE)
            w_chunk = _load_w_chunk(w_ptr, offs_da, offs_f, H, DA).to(DOT_DTYPE)  # (DA, N)
            dh = grad[None, :] * weights
            dh = tl.dot(dz, w_chunk, dh.to(ACC_DTYPE), input_precision=PRECISION)
            dh = tl.where(t_valid[:, None], dh, 0.0)
            tl.store(dh_row_ptr + offs_t[:, None] * H + offs_f[None, :],
                     dh.to(dh_ptr.dtype.element_ty),
                     mask=(offs_t < t_stop)[:, None] & (offs_f < H)[None, :])
            h_chunk = _load_h_chunk(h_row_ptr, offs_t, t_valid, offs_f, stride_ht, stride_hh, H)
            dw_ptrs = dw_part_ptr + offs_da[:, None] * H + offs_f[None, :]
            dw_mask = da_in[:, None] & (offs_f < H)[None, :]
            tl.debug_barrier()
            dw = tl.load(dw_ptrs, mask=dw_mask, other=0.0)
            dw = tl.dot(tl.trans(dz), h_chunk.to(DOT_DTYPE), dw, input_precision=PRECISION)
            tl.store(dw_ptrs, dw, mask=dw_mask)

    # Padded steps after the last valid block get dh = 0.
    first_padded_block = t_begin + tl.cdiv(tl.maximum(t_end - t_begin, 0), BLOCK_T) * BLOCK_T
    zeros = tl.zeros((BLOCK_T, BLOCK_N), dh_ptr.dtype.element_ty)
    for t0 in range(first_padded_block, t_stop, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        for chunk in range(NUM_CHUNKS):
            offs_f = chunk * BLOCK_N + offs_n
            tl.store(dh_row_ptr + offs_t[:, None] * H + offs_f[None, :], zeros,
                     mask=(offs_t < t_stop)[:, None] & (offs_f < H)[None, :])


def _dtypes(dtype: torch.dtype) -> dict:
    return dict(
        ACC_DTYPE=triton_dtype(accumulator_dtype(dtype)),
        DOT_DTYPE=dot_operand_dtype(dtype),
        PRECISION=_DOT_PRECISION,
        PRECISE=precise_math(dtype),
    )


def forward(h: torch.Tensor, W: torch.Tensor, V: torch.Tensor, lengths: torch.Tensor,
            config: FeatureAttentionConfig | None = None) -> torch.Tensor:
    """Feature attention forward; see the module docstring and the backend contract.

    h (B, T, H) any strides, W (d_a, H), V (H, d_a), lengths (B,) int64 in [1, T].
    Returns out (B, H) in h.dtype. ``config`` overrides the heuristic launch configuration.
    """
    check_device(h)
    batch, steps, hidden = h.shape
    attention_dim = W.shape[0]
    if config is None:
        config = feature_attention_config(batch, steps, hidden, attention_dim, h.dtype,
                                          h.device, backward=False)
    num_splits = config.num_splits(steps)
    num_chunks = triton.cdiv(hidden, config.block_n)
    if num_splits == 1:
        out_partials = torch.empty((batch, 1, hidden), dtype=kernel_output_dtype(h.dtype),
                                   device=h.device)
    else:
        out_partials = torch.empty((batch, num_splits, hidden),
                                   dtype=accumulator_dtype(h.dtype), device=h.device)
    errors = explain_resource_errors("feature_attention.forward", H=hidden, d_a=attention_dim,
                                     dtype=h.dtype, config=config)
    with on_device(h), errors:
        _feature_attention_fwd_kernel[(batch, num_splits)](
            h, W, V, lengths, out_partials,
            steps, hidden, attention_dim, h.stride(0), h.stride(1), h.stride(2),
            config.steps_per_split,
            BLOCK_T=config.block_t, BLOCK_N=config.block_n, BLOCK_DA=config.block_da,
            NUM_CHUNKS=num_chunks, CHUNKS_POW2=triton.next_power_of_2(num_chunks),
            num_warps=config.num_warps, num_stages=config.num_stages, **_dtypes(h.dtype),
        )
    out = out_partials[:, 0] if num_splits == 1 else out_partials.sum(dim=1)
    return out.to(h.dtype)


def backward(grad_out: torch.Tensor, h: torch.Tensor, W: torch.Tensor, V: torch.Tensor,
             lengths: torch.Tensor, config: FeatureAttentionConfig | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feature attention backward: dh (B, T, H) contiguous (0 on padded steps), dW (d_a, H),
    dV (H, d_a), all in the input dtype. ``config`` overrides the launch configuration."""
    check_device(h)
    batch, steps, hidden = h.shape
    attention_dim = W.shape[0]
    if config is None:
        config = feature_attention_config(batch, steps, hidden, attention_dim, h.dtype,
                                          h.device, backward=True)
    num_splits = config.num_splits(steps)
    num_programs = batch * num_splits
    acc_dtype = accumulator_dtype(h.dtype)
    dh = torch.empty((batch, steps, hidden), dtype=kernel_output_dtype(h.dtype), device=h.device)
    dw_partials = torch.zeros((num_programs, attention_dim, hidden), dtype=acc_dtype,
                              device=h.device)
    dv_partials = torch.zeros((num_programs, hidden, attention_dim), dtype=acc_dtype,
                              device=h.device)
    errors = explain_resource_errors("feature_attention.backward", H=hidden, d_a=attention_dim,
                                     dtype=h.dtype, config=config)
    with on_device(h), errors:
        _feature_attention_bwd_kernel[(batch, num_splits)](
            grad_out, h, W, V, lengths, dh, dw_partials, dv_partials,
            steps, hidden, attention_dim, h.stride(0), h.stride(1), h.stride(2),
            config.steps_per_split,
            BLOCK_T=config.block_t, BLOCK_N=config.block_n, BLOCK_DA=config.block_da,
            NUM_CHUNKS=triton.cdiv(hidden, config.block_n),
            num_warps=config.num_warps, num_stages=config.num_stages, **_dtypes(h.dtype),
        )
    dW = dw_partials.sum(dim=0).to(W.dtype)
    dV = dv_partials.sum(dim=0).to(V.dtype)
    return dh.to(h.dtype), dW, dV
