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

Backward, two kernels. (1) Same grid as the forward; per block of steps it recomputes ``z``
and ``u`` and, once, ``s``: with ``g = grad_out[b]`` and ``c_t = sum_n a_tn g_n h_tn`` it walks
the H chunks three times, but only the first computes ``s = u @ V^T`` (into a per-program
scratch, L1/L2-resident, that the later passes read):

* pass 1: ``s`` chunk by chunk, softmax max/sum and ``c`` (online over the chunks);
* pass 2: ``a = softmax(s)`` (back into the scratch), ``ds = a * (g * h - c)``, ``du += ds @ V``;
* pass 3: ``dz = du * (1 - u^2)``; ``dh = g * a + dz @ W`` (written directly).
  ``1 - u^2`` is computed from the fp32 ``z`` (kept in the scratch) as ``4 e / (1 + e)^2``,
  ``e = exp(-2|z|)``: where tanh saturates, ``1 - u^2`` of a rounded ``u`` loses most digits.

It writes ``u``, ``ds`` and ``dz`` of the valid steps in the dot operand dtype (B, T, d_a),
(B, T, H), (B, T, d_a). (2) ``_weight_grad_kernel`` then forms ``dV = sum_t ds_t^T u_t`` and
``dW = sum_t dz_t^T h_t`` as matrix products over the valid steps: each program owns one
(64, 64) output tile and one split of the batch rows, accumulates it in registers over all
of its steps and stores it once; the few splits' fp32 (fp64) partials (at most
``_MAX_WEIGHT_PARTIAL_BYTES``, L2-sized) are summed in order by torch: deterministic, no
atomics, no read-modify-write of partials. Matrix-product FLOPs, forward + backward:
forward 4 N H d_a; backward ``z`` 2, ``s`` 2, ``du`` 2, ``dh`` 2, ``dV`` 2, ``dW`` 2: 16 N H d_a
in all (N valid steps; padded steps are never computed).

Dots take their operands in the input dtype (fp16/bf16 tensor cores, fp32 accumulation;
fp32 uses ``input_precision="ieee"``, TF32 only when asked; fp64 in fp64), so ``u``, ``ds``
and ``dz`` are rounded to the input dtype before a dot, as the eager same-dtype model does.
Under the interpreter bfloat16 operands are cast to fp32 instead (NumPy has no bfloat16
matmul).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import (
    FeatureAttentionConfig,
    WeightGradConfig,
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
    weight_grad_config,
)

# fp32 dots in IEEE precision so that results match the eager fp32 reference; TF32 only when
# the configuration asks for it (FeatureAttentionConfig.tf32, SED_KERNELS_TRITON_TF32=1): its
# operands keep fp16's 10 mantissa bits, so its error is that of an fp16 computation with
# fp32 accumulation (what tests/test_gpu_kernels.py checks on a GPU).
_DOT_PRECISION = "ieee"


def _precision(dtype: torch.dtype, config: FeatureAttentionConfig,
               backward_kernel: bool = False) -> str:
    """The dots' input_precision. The TF32 backward kernel keeps its operands in the mma
    layout at twice bf16's size and spilled 460/676 B at d_a = 512 (sm_90, offline
    compile): it uses TF32 only up to d_a = 256; the forward and dW/dV kernels always."""
    if not (config.tf32 and dtype == torch.float32):
        return _DOT_PRECISION
    return "tf32" if not backward_kernel or config.block_da <= 256 else _DOT_PRECISION


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
    u_ptr, dz_ptr,  # (B, T, DA) contiguous, dot dtype: u and dz of the valid steps
    ds_ptr,  # (B, T, H) contiguous, dot dtype: ds of the valid steps
    scratch_ptr,  # (P, BLOCK_T, NUM_CHUNKS * BLOCK_N + BLOCK_DA) fp32 (fp64): see below
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
    length = tl.minimum(tl.load(lengths_ptr + row).to(tl.int32), T)
    t_begin = split * steps_per_split
    t_stop = tl.minimum(t_begin + steps_per_split, T)  # this program's steps: [t_begin, t_stop)
    t_end = tl.minimum(t_stop, length)  # of which valid: [t_begin, t_end)

    h_row_ptr = h_ptr + row * stride_hb
    dh_row_ptr = dh_ptr + row * T * H
    grad_row_ptr = grad_out_ptr + row * H
    u_row_ptr = u_ptr + row * T * DA
    dz_row_ptr = dz_ptr + row * T * DA
    ds_row_ptr = ds_ptr + row * T * H
    # This program's scratch (L1/L2-resident, reused by every block): the block's scores, then
    # weights (columns [0, HP)), and 1 - u^2 (columns [HP, HP + BLOCK_DA)), kept there
    # rather than in registers between passes 1 and 3.
    HP: tl.constexpr = NUM_CHUNKS * BLOCK_N
    LD: tl.constexpr = HP + BLOCK_DA
    scratch_ptr += program * BLOCK_T * LD
    offs_n = tl.arange(0, BLOCK_N)
    offs_da = tl.arange(0, BLOCK_DA)
    offs_i = tl.arange(0, BLOCK_T)
    da_in = offs_da < DA

    for t0 in range(t_begin, t_end, BLOCK_T):
        offs_t = t0 + offs_i
        t_valid = offs_t < t_end
        da_mask = t_valid[:, None] & da_in[None, :]
        z = _projection(h_row_ptr, w_ptr, offs_t, t_valid, stride_ht, stride_hh, H, DA,
                        BLOCK_T, BLOCK_N, BLOCK_DA, NUM_CHUNKS, ACC_DTYPE, DOT_DTYPE, PRECISION)
        u_dot = _tanh(z, PRECISE).to(DOT_DTYPE)  # u = tanh(W h): (BLOCK_T, BLOCK_DA)
        tl.store(scratch_ptr + offs_i[:, None] * LD + HP + offs_da[None, :], z)
        tl.store(u_row_ptr + offs_t[:, None] * DA + offs_da[None, :],
                 u_dot.to(u_ptr.dtype.element_ty), mask=da_mask)

        # Pass 1, the only product with V^T: s chunk by chunk into the scratch; online
        # softmax max/sum and c_t = sum_n a g h.
        row_max = tl.full((BLOCK_T,), float("-inf"), ACC_DTYPE)
        row_sum = tl.zeros((BLOCK_T,), ACC_DTYPE)
        row_dot = tl.zeros((BLOCK_T,), ACC_DTYPE)  # sum_n exp(s - row_max) g h
        for chunk in range(NUM_CHUNKS):
            offs_f = chunk * BLOCK_N + offs_n
            scores = _feature_scores(u_dot, _load_v_chunk(v_ptr, offs_f, offs_da, H, DA),
                                     offs_f, H, ACC_DTYPE, PRECISION)
            tl.store(scratch_ptr + offs_i[:, None] * LD + offs_f[None, :], scores)
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
        tl.debug_barrier()  # the scratch written above is visible to every thread

        # Pass 2: a = softmax(s) (kept in the scratch for pass 3); ds = a (g h - c), written
        # for the weight gradients; du = ds @ V.
        du = tl.zeros((BLOCK_T, BLOCK_DA), ACC_DTYPE)
        for chunk in range(NUM_CHUNKS):
            offs_f = chunk * BLOCK_N + offs_n
            scratch = scratch_ptr + offs_i[:, None] * LD + offs_f[None, :]
            weights = exp(tl.load(scratch) - row_max[:, None], PRECISE) * inv_sum[:, None]
            tl.store(scratch, weights)
            h_chunk = _load_h_chunk(h_row_ptr, offs_t, t_valid, offs_f, stride_ht, stride_hh,
                                    H).to(ACC_DTYPE)
            grad = tl.load(grad_row_ptr + offs_f, mask=offs_f < H, other=0.0).to(ACC_DTYPE)
            # 0 on padded steps: there h = 0 and c = 0.
            ds = (weights * (grad[None, :] * h_chunk - weighted_grad[:, None])).to(DOT_DTYPE)
            tl.store(ds_row_ptr + offs_t[:, None] * H + offs_f[None, :],
                     ds.to(ds_ptr.dtype.element_ty),
                     mask=t_valid[:, None] & (offs_f < H)[None, :])
            v_chunk = _load_v_chunk(v_ptr, offs_f, offs_da, H, DA).to(DOT_DTYPE)
            du = tl.dot(ds, v_chunk, du, input_precision=PRECISION)

        # Pass 3: dz = du (1 - u^2), written for dW; dh = g a + dz @ W.
        tanh_derivative = _tanh_derivative(
            tl.load(scratch_ptr + offs_i[:, None] * LD + HP + offs_da[None, :]), PRECISE)
        dz = (du * tanh_derivative).to(DOT_DTYPE)  # (BLOCK_T, BLOCK_DA)
        tl.store(dz_row_ptr + offs_t[:, None] * DA + offs_da[None, :],
                 dz.to(dz_ptr.dtype.element_ty), mask=da_mask)
        tl.debug_barrier()  # pass 2's weights are visible
        for chunk in range(NUM_CHUNKS):
            offs_f = chunk * BLOCK_N + offs_n
            weights = tl.load(scratch_ptr + offs_i[:, None] * LD + offs_f[None, :])
            grad = tl.load(grad_row_ptr + offs_f, mask=offs_f < H, other=0.0).to(ACC_DTYPE)
            w_chunk = _load_w_chunk(w_ptr, offs_da, offs_f, H, DA).to(DOT_DTYPE)  # (DA, N)
            dh = tl.dot(dz, w_chunk, (grad[None, :] * weights).to(ACC_DTYPE),
                        input_precision=PRECISION)
            dh = tl.where(t_valid[:, None], dh, 0.0)
            tl.store(dh_row_ptr + offs_t[:, None] * H + offs_f[None, :],
                     dh.to(dh_ptr.dtype.element_ty),
                     mask=(offs_t < t_stop)[:, None] & (offs_f < H)[None, :])
        tl.debug_barrier()  # every thread is done with the scratch before the next block

    # Padded steps after the last valid block get dh = 0.
    first_padded_block = t_begin + tl.cdiv(tl.maximum(t_end - t_begin, 0), BLOCK_T) * BLOCK_T
    zeros = tl.zeros((BLOCK_T, BLOCK_N), dh_ptr.dtype.element_ty)
    for t0 in range(first_padded_block, t_stop, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        for chunk in range(NUM_CHUNKS):
            offs_f = chunk * BLOCK_N + offs_n
            tl.store(dh_row_ptr + offs_t[:, None] * H + offs_f[None, :], zeros,
                     mask=(offs_t < t_stop)[:, None] & (offs_f < H)[None, :])


@triton.jit
def _weight_grad_kernel(
    a_ptr, b_ptr, lengths_ptr,  # A (B, T, M), B (B, T, N) with strides; lengths (B,)
    part_ptr,  # (S, M, N) accumulator dtype: this split's sum over its rows of A_t^T B_t
    batch, T, M, N, stride_ab, stride_at, stride_am, stride_bb, stride_bt, stride_bn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """part[split] = sum over rows b = split, split + S, ... and their valid steps t of
    A[b, t]^T B[b, t]: one (BLOCK_M, BLOCK_N) tile per program, accumulated in registers
    over all its steps and stored once (no read-modify-write of partials)."""
    tile = tl.program_id(0)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    tiles_n = tl.cdiv(N, BLOCK_N)
    offs_m = (tile // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = (tile % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_in = offs_m < M
    n_in = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), ACC_DTYPE)
    for b in range(split, batch, num_splits):
        length = tl.minimum(tl.load(lengths_ptr + b).to(tl.int32), T)
        b64 = tl.full((), 0, tl.int64) + b  # 64-bit row offsets
        a_row = a_ptr + b64 * stride_ab
        b_row = b_ptr + b64 * stride_bb
        for t0 in range(0, length, BLOCK_K):
            offs_t = t0 + offs_k
            t_valid = offs_t < length
            a = tl.load(a_row + offs_t[:, None] * stride_at + offs_m[None, :] * stride_am,
                        mask=t_valid[:, None] & m_in[None, :], other=0.0)  # (BLOCK_K, BLOCK_M)
            b_tile = tl.load(b_row + offs_t[:, None] * stride_bt + offs_n[None, :] * stride_bn,
                             mask=t_valid[:, None] & n_in[None, :], other=0.0)  # (K, N)
            acc = tl.dot(tl.trans(a.to(DOT_DTYPE)), b_tile.to(DOT_DTYPE), acc,
                         input_precision=PRECISION)
    tl.store(part_ptr + split * M * N + offs_m[:, None] * N + offs_n[None, :], acc,
             mask=m_in[:, None] & n_in[None, :])


def _dtypes(dtype: torch.dtype, config: FeatureAttentionConfig,
            backward_kernel: bool = False) -> dict:
    return dict(
        ACC_DTYPE=triton_dtype(accumulator_dtype(dtype)),
        DOT_DTYPE=dot_operand_dtype(dtype),
        PRECISION=_precision(dtype, config, backward_kernel),
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
            num_warps=config.num_warps, num_stages=config.num_stages,
            **_dtypes(h.dtype, config),
        )
    out = out_partials[:, 0] if num_splits == 1 else out_partials.sum(dim=1)
    return out.to(h.dtype)


def _weight_gradient(a: torch.Tensor, b: torch.Tensor, lengths: torch.Tensor,
                     config: WeightGradConfig, dtype: torch.dtype, precision: str
                     ) -> torch.Tensor:
    """sum over the valid steps of every row of a[b, t]^T b[b, t]: (M, N) in the accumulator
    dtype; ``config.splits`` partials (the rows split round-robin) summed in order."""
    batch, steps, rows_m = a.shape
    cols_n = b.shape[2]
    acc_dtype = accumulator_dtype(dtype)
    partials = torch.empty((config.splits, rows_m, cols_n), dtype=acc_dtype, device=a.device)
    grid = (triton.cdiv(rows_m, config.block_m) * triton.cdiv(cols_n, config.block_n),
            config.splits)
    _weight_grad_kernel[grid](
        a, b, lengths, partials, batch, steps, rows_m, cols_n,
        a.stride(0), a.stride(1), a.stride(2), b.stride(0), b.stride(1), b.stride(2),
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        ACC_DTYPE=triton_dtype(acc_dtype), DOT_DTYPE=dot_operand_dtype(dtype),
        PRECISION=precision, num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return partials[0] if config.splits == 1 else partials.sum(dim=0)


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
    num_chunks = triton.cdiv(hidden, config.block_n)
    acc_dtype = accumulator_dtype(h.dtype)
    operand_dtype = kernel_output_dtype(h.dtype)  # of u, ds, dz: the dots' operand dtype
    dh = torch.empty((batch, steps, hidden), dtype=operand_dtype, device=h.device)
    # u, dz and ds of the valid steps (padded steps are never written nor read).
    u = torch.empty((batch, steps, attention_dim), dtype=operand_dtype, device=h.device)
    dz = torch.empty_like(u)
    ds = torch.empty((batch, steps, hidden), dtype=operand_dtype, device=h.device)
    scratch = torch.empty((batch * num_splits, config.block_t,
                           num_chunks * config.block_n + config.block_da),
                          dtype=acc_dtype, device=h.device)
    errors = explain_resource_errors("feature_attention.backward", H=hidden, d_a=attention_dim,
                                     dtype=h.dtype, config=config)
    with on_device(h), errors:
        _feature_attention_bwd_kernel[(batch, num_splits)](
            grad_out, h, W, V, lengths, dh, u, dz, ds, scratch,
            steps, hidden, attention_dim, h.stride(0), h.stride(1), h.stride(2),
            config.steps_per_split,
            BLOCK_T=config.block_t, BLOCK_N=config.block_n, BLOCK_DA=config.block_da,
            NUM_CHUNKS=num_chunks,
            num_warps=config.num_warps, num_stages=config.num_stages,
            **_dtypes(h.dtype, config, backward_kernel=True),
        )
        dV = _weight_gradient(ds, u, lengths, weight_grad_config(
            batch, hidden, attention_dim, h.dtype, h.device, config.weight_splits), h.dtype,
            _precision(h.dtype, config))
        dW = _weight_gradient(dz, h, lengths, weight_grad_config(
            batch, attention_dim, hidden, h.dtype, h.device, config.weight_splits), h.dtype,
            _precision(h.dtype, config))
    return dh.to(h.dtype), dW.to(W.dtype), dV.to(V.dtype)
