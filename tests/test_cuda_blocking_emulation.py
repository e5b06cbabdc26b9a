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
