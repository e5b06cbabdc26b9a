"""CPU emulation of the CUDA feature-attention backward's blocking (csrc/cuda/feature_attention.cu).

No GPU is needed: the kernels' work split is replayed in float64 PyTorch, with the
constants parsed from the .cu file, and compared against the eager reference. What it checks
is the index arithmetic and the reduction plan, not the rounding of the kernels:

- part 1 (``feature_backward_chunk``): the grid-stride loop of CTAs over blocks of kSteps
  steps, the blocks skipped past a row's length, the per-block recompute of u and a, and the
  u, ds, dz and dh entries each block writes (every valid entry exactly once, nothing else);
- part 2 (``feature_weight_grad``): the split count (``weight_splits``, cross-checked
  against the built module's workspace size), the round-robin rows of a split, the kChunk
  step chunks of a row with their zero padding, the kTile output tiles, the SIMT threads'
  4 x 4 outputs and the wmma warps' 16 x 16 fragments (each output element exactly once),
  each partial element written exactly once, and the in-order sum of the splits.

The intermediate buffers start as NaN, so a read of an entry that part 1 did not write, or
of a padded step, shows in the result.

The tensor-core kernels (fp16/bf16, and fp32 with the TF32 option) are replayed in their own
arithmetic further down: the mma.sync tiling of the forward and part 1 (``mma_matmul``: tile
shapes and K slices parsed from the .cu and checked against its mma instructions, the lanes'
fragment cells, each output once), the operands rounded as the kernels round them, fp32
accumulation slice by slice, the wmma GEMM of part 2 likewise; held against the eager
reference by the package's low-precision rule. Last, the TF32 option's plumbing.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from kernel_checks import make_inputs

from sed_kernels import reference

ROOT = Path(__file__).resolve().parents[1]
SOURCE = (ROOT / "csrc/cuda/feature_attention.cu").read_text()
COMMON = (ROOT / "csrc/cuda/common.cuh").read_text()


def _constant(name: str, text: str = SOURCE) -> int:
    match = re.search(rf"constexpr int(?:64_t)? {name} = ([^;]+);", text)
    assert match, f"{name} not found"
    value = match.group(1).split("//")[0].strip()
    value = re.sub(r"int64_t\((\d+)\)", r"\1", value)  # int64_t(24) << 20
    value = re.sub(r"\bk(\w+)", lambda m: str(_constant("k" + m.group(1))), value)
    assert re.fullmatch(r"[\d\s+\-*/<>()]+", value), value
    return int(eval(value.replace("/", "//")))  # noqa: S307 - digits and operators only


K_WARP_SIZE = _constant("kWarpSize", COMMON)
K_THREADS = _constant("kThreads")
K_STEPS = _constant("kSteps")
K_TILE = _constant("kTile")
K_CHUNK = _constant("kChunk")
K_TARGET_CTAS = _constant("kTargetCtas")
K_MAX_SPLITS = _constant("kMaxSplits")
K_MIN_STEPS_PER_SPLIT = _constant("kMinStepsPerSplit")
K_MAX_PARTIAL_BYTES = _constant("kMaxPartialBytes")
K_MAX_BACKWARD_GRID = _constant("kMaxBackwardGrid")
K_WARPS = K_THREADS // K_WARP_SIZE
ACC_BYTES = {"float32": 4, "bfloat16": 4, "float16": 4, "float64": 8}
ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}


def test_constants_parsed():
    assert (K_WARP_SIZE, K_THREADS, K_STEPS) == (32, 256, 16)
    assert K_TILE % 16 == 0 and K_CHUNK % 16 == 0 and K_CHUNK * K_TILE % K_THREADS == 0
    assert K_MAX_PARTIAL_BYTES == 24 << 20


def weight_splits(batch, steps, hidden, attention, dtype="float32"):
    """The kernel's weight_splits, line by line."""
    tiles = math.ceil(hidden / K_TILE) * math.ceil(attention / K_TILE)
    splits = math.ceil(K_TARGET_CTAS / tiles)
    splits = min(splits, batch)
    splits = min(splits, batch * steps // K_MIN_STEPS_PER_SPLIT)
    splits = min(splits, K_MAX_PARTIAL_BYTES // (2 * hidden * attention * ACC_BYTES[dtype]))
    splits = min(splits, K_MAX_SPLITS)
    return max(splits, 1)


def backward_workspace(batch, steps, hidden, attention, dtype):
    partials = weight_splits(batch, steps, hidden, attention, dtype) * 2 * hidden * attention
    operands = batch * steps * (2 * attention + hidden) * ELEMENT_BYTES[dtype]
    return partials + math.ceil(operands / ACC_BYTES[dtype])


WORKSPACE_CASES = [(64, 500, 256, 256), (128, 300, 512, 512), (1, 1, 1, 1), (3, 7, 37, 19),
                   (9, 300, 24, 20), (6, 100, 70, 130), (2, 4000, 1024, 8)]


@pytest.mark.parametrize("dtype", list(ACC_BYTES))
@pytest.mark.parametrize("shape", WORKSPACE_CASES, ids=lambda s: "x".join(map(str, s)))
def test_split_plan_matches_the_built_module(shape, dtype):
    from sed_kernels import cuda

    if not cuda.EXTENSION_LOADED:
        pytest.skip("sed_kernels._cuda was not built")
    assert cuda.extension.feature_attention_backward_workspace(*shape, dtype) == (
        backward_workspace(*shape, dtype))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_partials_fit_in_l2_at_paper_and_wide_shapes(dtype):
    for shape, splits in (((64, 500, 256, 256), 16), ((128, 300, 512, 512), 4)):
        assert weight_splits(*shape, dtype) == splits
        batch, steps, hidden, attention = shape
        partial_bytes = splits * 2 * hidden * attention * ACC_BYTES[dtype]
        assert partial_bytes == 8 << 20  # the figure in the kernel's header comment
        assert partial_bytes <= K_MAX_PARTIAL_BYTES < 50e6  # H100/H200 L2: 50/60 MB
        # Every split's partial is written once, after at least this many steps of capacity.
        assert math.ceil(batch / splits) * steps >= 64


# ------------------------------------------------------------------------- the emulation


def _part1(h, W, V, lengths, grad):
    """feature_backward_chunk: u, ds, dz (NaN where not written) and dh."""
    batch, steps, hidden = h.shape
    attention = W.shape[0]
    nan = float("nan")
    u_buf = torch.full((batch, steps, attention), nan, dtype=h.dtype)
    dz_buf, ds_buf = torch.full_like(u_buf, nan), torch.full((batch, steps, hidden), nan,
                                                            dtype=h.dtype)
    dh = torch.full_like(h, nan)
    valid = reference.valid_mask(lengths, steps)
    dh[~valid] = 0  # zero_padded_steps
    written = torch.zeros(batch, steps, dtype=torch.int64)
    per_row = math.ceil(steps / K_STEPS)
    total = batch * per_row
    grid = min(total, K_MAX_BACKWARD_GRID)
    i = torch.arange(K_STEPS)
    for cta in range(grid):
        for block in range(cta, total, grid):
            b, t0 = block // per_row, (block % per_row) * K_STEPS
            length = min(max(int(lengths[b]), 0), steps)
            if t0 >= length:
                continue
            n = min(K_STEPS, length - t0)
            tile = torch.zeros(K_STEPS, hidden, dtype=h.dtype)
            tile[:n] = h[b, t0 : t0 + n]  # load_steps: zeros past n
            u = torch.tanh(tile @ W.T)
            a = torch.softmax(u @ V.T, dim=-1)
            g = grad[b]
            da = g * tile
            a_dot_da = (a * da).sum(-1, keepdim=True)
            ds = torch.where((i < n)[:, None], a * (da - a_dot_da), 0.0)
            dz = (ds @ V) * (1 - u * u)
            dh_rows = g * a + dz @ W
            rows = slice(t0, t0 + n)
            assert not (written[b, rows] > 0).any(), "a step written twice"
            written[b, rows] += 1
            u_buf[b, rows], ds_buf[b, rows], dz_buf[b, rows] = u[:n], ds[:n], dz[:n]
            dh[b, rows] = dh_rows[:n]
    assert torch.equal(written, valid.long()), "every valid step exactly once, nothing else"
    return u_buf, ds_buf, dz_buf, dh


def _thread_outputs(tensor_cores: bool):
    """(thread or warp id, output rows, output cols) of one kTile x kTile tile, as the kernel
    assigns them: the SIMT threads' 4 x 4 outputs or the wmma warps' two 16 x 16 fragments."""
    if tensor_cores:
        fragments = K_TILE // 16
        for warp in range(K_WARPS):
            fm, fn = warp // (fragments // 2), (warp % (fragments // 2)) * 2
            for q in range(2):
                yield (torch.arange(fm * 16, fm * 16 + 16),
                       torch.arange((fn + q) * 16, (fn + q) * 16 + 16))
    else:
        stride = K_TILE // 4
        for tid in range(K_THREADS):
            ty, tx = tid // stride, tid % stride
            yield ty + stride * torch.arange(4), tx + stride * torch.arange(4)


def _load_chunk(x, b, t0, length, c0, features):
    """load_chunk: (kChunk, kTile), zero past the row's length and the features."""
    k, c = torch.arange(K_CHUNK)[:, None], torch.arange(K_TILE)[None, :]
    t, f = t0 + k, c0 + c
    inside = (t < length) & (f < features)
    values = x[b, t.clamp(max=x.shape[1] - 1), f.clamp(max=features - 1)]
    return torch.where(inside, values, 0.0)  # where, not a product: NaN outside stays out


def _part2(x, y, lengths, splits, tensor_cores):
    """feature_weight_grad for every CTA, then sum_partials."""
    batch, steps, rows = x.shape
    cols = y.shape[2]
    part = torch.full((splits, rows, cols), float("nan"), dtype=x.dtype)
    stores = torch.zeros(splits, rows, cols, dtype=torch.int64)
    mapping = list(_thread_outputs(tensor_cores))
    coverage = torch.zeros(K_TILE, K_TILE, dtype=torch.int64)
    for r, c in mapping:
        coverage[r[:, None], c[None, :]] += 1
    assert (coverage == 1).all(), "each output of a tile belongs to exactly one thread / warp"
    for split in range(splits):
        for m0 in range(0, rows, K_TILE):
            for n0 in range(0, cols, K_TILE):
                acc = torch.zeros(K_TILE, K_TILE, dtype=x.dtype)
                for b in range(split, batch, splits):
                    length = min(max(int(lengths[b]), 0), steps)
                    for t0 in range(0, length, K_CHUNK):
                        xs = _load_chunk(x, b, t0, length, m0, rows)
                        ys = _load_chunk(y, b, t0, length, n0, cols)
                        for r, c in mapping:
                            acc[r[:, None], c[None, :]] += xs[:, r].T @ ys[:, c]
                m_in, n_in = min(K_TILE, rows - m0), min(K_TILE, cols - n0)
                part[split, m0 : m0 + m_in, n0 : n0 + n_in] = acc[:m_in, :n_in]
                stores[split, m0 : m0 + m_in, n0 : n0 + n_in] += 1
    assert (stores == 1).all(), "every partial element written exactly once"
    total = torch.zeros(rows, cols, dtype=x.dtype)
    for split in range(splits):  # sum_partials: splits in order
        total = total + part[split]
    return total


def emulate_backward(h, W, V, lengths, grad, tensor_cores):
    batch, steps, hidden = h.shape
    attention = W.shape[0]
    u, ds, dz, dh = _part1(h, W, V, lengths, grad)
    splits = weight_splits(batch, steps, hidden, attention)
    dV = _part2(ds, u, lengths, splits, tensor_cores)  # (H, d_a)
    dW = _part2(dz, h, lengths, splits, tensor_cores)  # (d_a, H)
    return dh, dW, dV, splits


# (B, T, H, d_a): B = 1, T = 1, odd H and d_a, several tiles, chunks and splits.
SHAPES = [(1, 1, 1, 1), (3, 7, 37, 19), (2, 70, 64, 48), (4, 33, 20, 33), (1, 45, 65, 17),
          (6, 100, 70, 130), (9, 300, 24, 20)]


@pytest.mark.parametrize("tensor_cores", [False, True], ids=["simt", "wmma"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_emulated_backward_matches_reference(shape, tensor_cores):
    inputs = make_inputs(shape, torch.float64, seed=sum(shape), device="cpu")
    h, W, V, lengths, grad = (inputs[k] for k in ("h", "W", "V", "lengths", "grad"))
    h = h.masked_fill(~reference.valid_mask(lengths, h.shape[1])[..., None], float("nan"))
    dh, dW, dV, splits = emulate_backward(h, W, V, lengths, grad, tensor_cores)
    if shape[0] * shape[1] >= 2 * K_MIN_STEPS_PER_SPLIT:
        assert splits > 1, "the shape is meant to exercise several splits"

    leaves = [t.detach().nan_to_num(0.0).requires_grad_() for t in (h, W, V)]
    out = reference.feature_attention(*leaves, lengths)
    expected = torch.autograd.grad(out, leaves, grad)
    for name, actual, want in zip(("dh", "dW", "dV"), (dh, dW, dV), expected):
        assert torch.isfinite(actual).all(), f"{name}: an unwritten or padded entry was read"
        torch.testing.assert_close(actual, want, rtol=1e-10, atol=1e-10, msg=name)


# ---------------------------------------------------- tensor cores, in the kernels' arithmetic
#
# The fp16/bf16 kernels, and the fp32 ones with the TF32 option, replayed in their own
# arithmetic: fp32 tiles, the operands of every matrix product rounded as the kernels round
# them (fp16/bf16: round to nearest even, only the tile operand, the weights being in the input
# dtype already; TF32: both operands, round to nearest, ties away from zero, as cvt.rna), one
# fp32 accumulator per output, summed one mma K slice at a time in the kernel's order. The
# tensor core adds the products of one slice internally in an unspecified order; that sum is
# emulated exactly (in fp64) and rounded to fp32 once per slice. Compared with the eager
# reference by the package's low-precision rule: the emulated kernel's error against fp64 is at
# most twice eager's same-dtype error (for TF32: eager fp16's) plus one unit in the last place.

K_MMA_N = _constant("kMmaN")
K_MMA_TILES = _constant("kMmaTiles")
K_MMA_COLUMNS = _constant("kMmaColumns")
K_LD = _constant("kLd")


def _struct_body(name: str) -> str:
    match = re.search(rf"struct {re.escape(name)} \{{(.*?)\n\}};", SOURCE, re.S)
    assert match, f"struct {name} not found"
    return match.group(1)


def _mma_shapes() -> dict[str, tuple[int, int, int]]:
    """Operand type -> (M, N, K) of the mma.sync instructions the per-block matmuls issue."""
    shapes = {}
    for m, n, k, operand in re.findall(
        r"mma\.sync\.aligned\.m(\d+)n(\d+)k(\d+)\.row\.col\.f32\.(\w+)\.\w+\.f32", SOURCE
    ):
        shapes[operand] = (int(m), int(n), int(k))
    return shapes


def _struct_k(name: str) -> int:
    match = re.search(r"static constexpr int kK = (\d+);", _struct_body(name))
    assert match, f"{name}::kK not found"
    return int(match.group(1))


MMA_SHAPES = _mma_shapes()
# Per emulated precision: the mma K slice of the per-block matmuls, of the weight-gradient
# GEMM (wmma) and how an operand is rounded.
MMA_K = {"float16": _struct_k("Mma16"), "bfloat16": _struct_k("Mma16"),
         "tf32": _struct_k("Mma<float, true>")}
WMMA_K = {"float16": _struct_k("WmmaOperand"), "bfloat16": _struct_k("WmmaOperand"),
          "tf32": _struct_k("WmmaOperand<float, true>")}


def test_mma_constants_match_the_instructions():
    """The tiling constants against the instructions: kSteps x kMmaN accumulator tiles,
    Mma::kK the K of its instruction, kMmaColumns = kMmaTiles * kMmaN, and the passes of a
    CTA (kWarps * kMmaColumns columns) as wide as the SIMT path's (one column per thread)."""
    assert set(MMA_SHAPES) == {"f16", "bf16", "tf32"}
    for operand, precision in (("f16", "float16"), ("bf16", "bfloat16"), ("tf32", "tf32")):
        m, n, k = MMA_SHAPES[operand]
        assert (m, n) == (K_STEPS, K_MMA_N), operand
        assert MMA_K[precision] == k, operand
    assert K_MMA_COLUMNS == K_MMA_TILES * K_MMA_N
    assert K_WARPS * K_MMA_COLUMNS == K_THREADS
    assert WMMA_K["float16"] == 16 and WMMA_K["tf32"] == 8  # wmma 16x16x16 / 16x16x8
    assert K_CHUNK % WMMA_K["float16"] == 0 and K_CHUNK % WMMA_K["tf32"] == 0


def _fragment_cells(precision: str):
    """(A, B, C) cells of every lane's registers, as the Mma structs' load_a / load_b and
    the accumulator layout index them: A (i, k), B (k, n), C (i, n)."""
    k_slice = MMA_K[precision]
    for lane in range(K_WARP_SIZE):
        group, tig = lane // 4, lane % 4
        if precision == "tf32":
            a = [(group + 8 * (q % 2), tig + 4 * (q // 2)) for q in range(4)]
            b = [(tig + 4 * q, group) for q in range(2)]
        else:  # two 16-bit values per register
            a = [(group + 8 * (q % 2), 2 * tig + 8 * (q // 2) + e) for q in range(4)
                 for e in range(2)]
            b = [(2 * tig + 8 * q + e, group) for q in range(2) for e in range(2)]
        c = [(group + 8 * (r // 2), 2 * tig + r % 2) for r in range(4)]
        yield a, b, c, k_slice


@pytest.mark.parametrize("precision", ["bfloat16", "tf32"])
def test_fragments_cover_each_operand_once(precision):
    counts = None
    for a, b, c, k_slice in _fragment_cells(precision):
        if counts is None:
            counts = (torch.zeros(K_STEPS, k_slice, dtype=torch.int64),
                      torch.zeros(k_slice, K_MMA_N, dtype=torch.int64),
                      torch.zeros(K_STEPS, K_MMA_N, dtype=torch.int64))
        for count, cells in zip(counts, (a, b, c)):
            for cell in cells:
                count[cell] += 1
    assert all((count == 1).all() for count in counts)


def round_to(x: torch.Tensor, precision: str) -> torch.Tensor:
    """x (fp32) rounded to the operand precision, returned as fp32."""
    if precision == "tf32":  # cvt.rna: add half a unit of the 10-bit mantissa, truncate
        bits = x.contiguous().view(torch.int32)
        return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)
    return x.to(getattr(torch, precision)).float()


def _slice_sum(acc, a, b):
    """One mma: acc (fp32) + the exact products of the slice, rounded once to fp32."""
    return (acc.double() + a.double() @ b.double()).float()


def mma_matmul(tile, B, precision, epilogue=None):
    """mma_matmul: tile (kSteps, K) fp32 times B (K, columns), column groups per warp and pass,
    kMmaTiles tiles of kMmaN columns, K in Mma::kK slices; every output exactly once."""
    K, columns = B.shape
    k_slice = MMA_K[precision]
    out = torch.full((K_STEPS, columns), float("nan"))
    written = torch.zeros(K_STEPS, columns, dtype=torch.int64)
    b_operand = round_to(B, "tf32") if precision == "tf32" else B  # T already otherwise
    for warp in range(K_WARPS):
        for n0 in range(warp * K_MMA_COLUMNS, columns, K_WARPS * K_MMA_COLUMNS):
            for t in range(K_MMA_TILES):
                nt = n0 + t * K_MMA_N
                if nt >= columns:
                    break
                acc = torch.zeros(K_STEPS, K_MMA_N)
                cols = torch.arange(nt, nt + K_MMA_N)
                for k0 in range(0, K, k_slice):
                    k = torch.arange(k0, k0 + k_slice)
                    a = torch.where(k[None, :] < K, tile[:, k.clamp(max=K - 1)], 0.0)
                    b = torch.where((k[:, None] < K) & (cols[None, :] < columns),
                                    b_operand[k.clamp(max=K - 1)][:, cols.clamp(max=columns - 1)],
                                    0.0)
                    acc = _slice_sum(acc, round_to(a, precision), b)
                keep = cols < columns
                out[:, cols[keep]] = acc[:, keep]
                written[:, cols[keep]] += 1
    assert (written == 1).all(), "every output of the block exactly once"
    return out


def _store(x, dtype):
    """An fp32 value stored in the input dtype (u, ds, dz, dh, out), held in fp32."""
    return x.to(dtype).float()


def emulate_tc_forward(h, W, V, lengths, precision):
    """feature_forward_block (tensor cores) and feature_forward_sum, in the kernels' arithmetic."""
    dtype = torch.float32 if precision == "tf32" else h.dtype
    batch, _, hidden = h.shape
    out = torch.zeros(batch, hidden)  # rows without valid steps stay 0
    for b, _, n, tile, _, a in _tc_blocks(h, W, V, lengths, precision):
        out[b] += (a[:n] * tile[:n]).sum(0)  # the block's partial, in block order
    return _store(out, dtype).to(dtype)


def _tc_blocks(h, W, V, lengths, precision):
    """Every (row b, first step t0, valid steps n, tile, u, a) of the 16-step blocks with valid
    steps, in block order, u and a recomputed on tensor cores as the kernels do."""
    batch, steps, hidden = h.shape
    W, V = W.float(), V.float()  # as the kernels read them: T (fp16/bf16) or fp32
    for b in range(batch):
        length = min(max(int(lengths[b]), 0), steps)
        for t0 in range(0, length, K_STEPS):
            n = min(K_STEPS, length - t0)
            tile = torch.zeros(K_STEPS, hidden)
            tile[:n] = h[b, t0 : t0 + n].float()
            u = torch.tanh(mma_matmul(tile, W.T, precision))
            a = torch.softmax(mma_matmul(u, V.T, precision), dim=-1)
            yield b, t0, n, tile, u, a


def emulate_tc_part1(h, W, V, lengths, grad, precision):
    """feature_backward_chunk on tensor cores: u, ds, dz (stored in the input dtype; NaN where
    not written) and dh."""
    dtype = torch.float32 if precision == "tf32" else h.dtype
    batch, steps, hidden = h.shape
    attention = W.shape[0]
    W, V = W.float(), V.float()  # as the kernels read them: T (fp16/bf16) or fp32
    nan = float("nan")
    u_buf = torch.full((batch, steps, attention), nan)
    dz_buf, ds_buf = torch.full_like(u_buf, nan), torch.full((batch, steps, hidden), nan)
    dh = torch.full((batch, steps, hidden), nan)
    dh[~reference.valid_mask(lengths, steps)] = 0
    i = torch.arange(K_STEPS)
    for b, t0, n, tile, u, a in _tc_blocks(h, W, V, lengths, precision):
        g = grad[b].float()
        da = g * tile
        ds = torch.where((i < n)[:, None], a * (da - (a * da).sum(-1, keepdim=True)), 0.0)
        dz = mma_matmul(ds, V, precision) * (1 - u * u)
        dh_rows = g * a + mma_matmul(dz, W, precision)
        rows = slice(t0, t0 + n)
        u_buf[b, rows], ds_buf[b, rows], dz_buf[b, rows] = u[:n], ds[:n], dz[:n]
        dh[b, rows] = dh_rows[:n]
    return (_store(u_buf, dtype), _store(ds_buf, dtype), _store(dz_buf, dtype),
            _store(dh, dtype))


def _tc_part2(x, y, lengths, splits, precision):
    """feature_weight_grad on tensor cores (wmma): kChunk chunks of operands in the input
    dtype (rounded to TF32 when loaded for the TF32 option), fp32 fragments summed one wmma K
    slice at a time; the splits' fp32 partials added in order."""
    batch, steps, rows = x.shape
    cols = y.shape[2]
    k_slice = WMMA_K[precision]
    part = torch.full((splits, rows, cols), float("nan"))
    mapping = list(_thread_outputs(True))
    for split in range(splits):
        for m0 in range(0, rows, K_TILE):
            for n0 in range(0, cols, K_TILE):
                acc = torch.zeros(K_TILE, K_TILE)
                for b in range(split, batch, splits):
                    length = min(max(int(lengths[b]), 0), steps)
                    for t0 in range(0, length, K_CHUNK):
                        xs = _load_chunk(x, b, t0, length, m0, rows)
                        ys = _load_chunk(y, b, t0, length, n0, cols)
                        if precision == "tf32":
                            xs, ys = round_to(xs, "tf32"), round_to(ys, "tf32")
                        for r, c in mapping:
                            for k0 in range(0, K_CHUNK, k_slice):
                                ks = slice(k0, k0 + k_slice)
                                acc[r[:, None], c[None, :]] = _slice_sum(
                                    acc[r[:, None], c[None, :]], xs[ks][:, r].T, ys[ks][:, c])
                m_in, n_in = min(K_TILE, rows - m0), min(K_TILE, cols - n0)
                part[split, m0 : m0 + m_in, n0 : n0 + n_in] = acc[:m_in, :n_in]
    total = torch.zeros(rows, cols)
    for split in range(splits):
        total = total + part[split]
    return total


def emulate_tc_backward(h, W, V, lengths, grad, precision):
    dtype = torch.float32 if precision == "tf32" else h.dtype
    batch, steps, hidden = h.shape
    attention = W.shape[0]
    u, ds, dz, dh = emulate_tc_part1(h, W, V, lengths, grad, precision)
    splits = weight_splits(batch, steps, hidden, attention, dtype_name(dtype))
    dV = _tc_part2(ds, u, lengths, splits, precision)
    dW = _tc_part2(dz, h.float(), lengths, splits, precision)
    return dh.to(dtype), dW.to(dtype), dV.to(dtype)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _eager(inputs, dtype, lengths, grad):
    leaves = [inputs[k].detach().to(dtype).nan_to_num(0.0).requires_grad_() for k in "hWV"]
    out = reference.feature_attention(*leaves, lengths)
    return [out.detach(), *torch.autograd.grad(out, leaves, grad.to(dtype))]


# (B, T, H, d_a): odd sizes (no multiple of 8 or 16), one step, rows ending inside a block,
# H past one pass of a CTA's columns (kWarps * kMmaColumns), several weight splits.
TC_SHAPES = [(1, 1, 1, 1), (3, 7, 37, 19), (2, 40, 300, 24), (4, 33, 20, 33), (9, 300, 24, 20)]


@pytest.mark.parametrize("precision", ["bfloat16", "float16", "tf32"])
@pytest.mark.parametrize("shape", TC_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_emulated_tensor_core_kernels_match_reference(shape, precision):
    dtype = torch.float32 if precision == "tf32" else getattr(torch, precision)
    inputs = make_inputs(shape, dtype, seed=sum(shape) + 1, device="cpu")
    lengths, grad = inputs["lengths"], inputs["grad"]
    h = inputs["h"].masked_fill(~reference.valid_mask(lengths, shape[1])[..., None], float("nan"))
    kernel = [emulate_tc_forward(h, inputs["W"], inputs["V"], lengths, precision),
              *emulate_tc_backward(h, inputs["W"], inputs["V"], lengths, grad, precision)]
    exact = _eager(inputs, torch.float64, lengths, grad)
    # TF32 keeps fp16's 10 mantissa bits: held against eager fp16 (as the GPU test does).
    eager = _eager(inputs, torch.float16 if precision == "tf32" else dtype, lengths, grad)
    floor = torch.finfo(torch.float16 if precision == "tf32" else dtype).eps
    for name, actual, want, same in zip(("out", "dh", "dW", "dV"), kernel, exact, eager):
        assert actual.dtype == dtype, name
        assert torch.isfinite(actual).all(), f"{name}: an unwritten or padded entry was read"
        error = (actual.double() - want).abs().max().item()
        eager_error = (same.double() - want).abs().max().item()
        scale = want.abs().max().item() + 1.0
        assert error <= 2 * eager_error + floor * scale, (
            f"{name} ({precision}): emulated kernel error {error:.3g}, eager {eager_error:.3g}")


# ------------------------------------------------------------------ the TF32 option's plumbing


def test_cuda_tf32_option_is_off_by_default_and_fp32_only(monkeypatch):
    """SED_KERNELS_CUDA_TF32=1 selects the TF32 kernels for fp32 only; the launcher passes the
    choice to both kernels (a recording stand-in for the module: no GPU needed).
    tests/test_gpu_kernels.py checks TF32's accuracy on a GPU."""
    from sed_kernels.cuda import feature_attention as launcher

    calls = {}

    class Recorder:
        def __getattr__(self, name):
            if name.endswith("_workspace"):
                return lambda *args: 1
            return lambda **kwargs: calls.__setitem__(name, kwargs["tf32"])

    monkeypatch.setattr(launcher, "require_extension", lambda: Recorder())
    monkeypatch.setattr(launcher, "launch_args", lambda tensor: {"device": 0, "stream": 0})

    def run(dtype):
        inputs = make_inputs((2, 5, 8, 6), dtype, device="cpu")
        h, W, V, lengths, grad = (inputs[k] for k in ("h", "W", "V", "lengths", "grad"))
        launcher.forward(h, W, V, lengths)
        launcher.backward(grad, h, W, V, lengths)
        return calls.pop("feature_attention_forward"), calls.pop("feature_attention_backward")

    monkeypatch.delenv("SED_KERNELS_CUDA_TF32", raising=False)
    assert run(torch.float32) == (False, False)
    monkeypatch.setenv("SED_KERNELS_CUDA_TF32", "0")
    assert run(torch.float32) == (False, False)
    monkeypatch.setenv("SED_KERNELS_CUDA_TF32", "1")
    assert run(torch.float32) == (True, True)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert run(dtype) == (False, False), dtype


def test_cuda_module_takes_the_tf32_argument():
    """The built module's feature-attention entry points accept tf32 (default false)."""
    from sed_kernels import cuda

    if not cuda.EXTENSION_LOADED:
        pytest.skip("sed_kernels._cuda was not built")
    for name in ("feature_attention_forward", "feature_attention_backward"):
        assert "tf32: bool = False" in getattr(cuda.extension, name).__doc__, name
