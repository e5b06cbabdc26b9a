"""Checks that only a GPU can run (each test is skipped without CUDA).

- N2: the bf16/fp16 ``tl.dot`` path of the Triton feature-attention kernels. The
  interpreter computes those dots in fp32 (NumPy has no bf16 matmul), so the CPU tests never
  see tensor-core rounding; here the compiled kernels, at sizes where the launchers pick
  their real block sizes (d_a = 256: BLOCK_DA = 256, several H chunks, several blocks of
  steps per program), must stay within twice the eager same-dtype error (+ a small atol).
- N1: the fp32 kernels on a GPU (libdevice exp/log, div.rn) keep the interpreter's fp32
  tolerance at those sizes.
- The explicit TF32 option of the fp32 Triton feature attention: no worse than fp16.
- The CUDA feature-attention backward's two parts (csrc/cuda/feature_attention.cu) at shapes
  with several GEMM tiles, step chunks and batch splits, odd H and d_a: fp32/fp64 SIMT and
  the fp16/bf16 tensor-core matmuls (mma.sync per block, wmma GEMM), within twice eager's
  same-dtype error (the blocking and the tensor-core arithmetic are emulated on the CPU in
  test_cuda_blocking_emulation.py).
- The CUDA tensor-core forward and backward part 1 for fp16/bf16: odd sizes, lengths at and
  around the 16-step blocks, NaN in the padded steps and in every fresh allocation.
- The explicit TF32 option of the fp32 CUDA feature attention: no worse than fp16.
- No host-device sync per call in the public op on CUDA (``torch.cuda.set_sync_debug_mode``).
- B2: a batch above 65535 (the gridDim.y limit) on every fused CUDA backend.
- B1: tensors on a GPU that is not the current one (needs two GPUs).

The kernel tests never import the audio stack (sed_model): this file imports only torch,
sed_kernels and the helpers of the Triton kernel tests.
"""

from __future__ import annotations

import pytest
import torch

import sed_kernels
from sed_kernels import cuda, reference

if not torch.cuda.is_available():
    pytest.skip("GPU-only checks: no CUDA device", allow_module_level=True)

import kernel_checks  # noqa: E402
from test_triton_kernels import (  # noqa: E402
    assert_padded_steps_zero,
    kernel_results,
    make_inputs,
    max_error,
    reference_results,
)

FUSED_CUDA = [name for name in sed_kernels.available_backends(torch.device("cuda"))
              if name != "reference"]
# (B, T, H, d_a) with the launchers' own configurations (config "heuristic").
GPU_SHAPES = [(4, 100, 256, 256), (3, 70, 160, 96)]


@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_triton_low_precision_dot_path(dtype, shape):
    inputs = make_inputs(shape, dtype, seed=3, layout="time_major")
    exact = reference_results("feature", inputs, torch.float64)
    eager = reference_results("feature", inputs, dtype)
    actual = kernel_results("feature", inputs, "heuristic")
    for name, value in exact.items():
        assert actual[name].dtype == dtype, name
        assert torch.isfinite(actual[name]).all(), name
        kernel_error, eager_error = max_error(actual[name], value), max_error(eager[name], value)
        atol = 1e-3 * (value.abs().max().item() + 1.0)
        assert kernel_error <= 2 * eager_error + atol, (
            f"{name}: kernel error {kernel_error:.3g}, eager {eager_error:.3g}"
        )
    assert_padded_steps_zero(actual["dh"], inputs["lengths"])


@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op", ["time", "feature"])
def test_triton_fp32_on_gpu_keeps_the_interpreter_tolerance(op, shape):
    inputs = make_inputs(shape, torch.float32, seed=4)
    expected = reference_results(op, inputs, torch.float64)
    actual = kernel_results(op, inputs, "heuristic")
    for name, value in expected.items():
        scale = value.abs().max().item() + 1.0
        assert max_error(actual[name], value) <= 2e-6 * scale, name


@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_triton_tf32_option_no_worse_than_fp16(monkeypatch, shape):
    """TF32 operands keep 10 mantissa bits, as fp16 does: the TF32 kernel's error must stay
    within twice that of the eager fp16 computation (+ a small atol)."""
    monkeypatch.setenv("SED_KERNELS_TRITON_TF32", "1")
    inputs = make_inputs(shape, torch.float32, seed=5)
    exact = reference_results("feature", inputs, torch.float64)
    fp16 = reference_results("feature", {k: (v.half() if v.is_floating_point() else v)
                                         for k, v in inputs.items()}, torch.float16)
    actual = kernel_results("feature", inputs, "heuristic")
    for name, value in exact.items():
        kernel_error, fp16_error = max_error(actual[name], value), max_error(fp16[name], value)
        atol = 1e-4 * (value.abs().max().item() + 1.0)
        assert kernel_error <= 2 * fp16_error + atol, (
            f"{name}: TF32 error {kernel_error:.3g}, eager fp16 {fp16_error:.3g}")


# (B, T, H, d_a) -> weight splits 9, 2, 10, 1 (tests/test_cuda_blocking_emulation.py).
CUDA_BACKWARD_SHAPES = [(9, 300, 24, 20), (6, 100, 70, 130), (40, 64, 64, 48), (4, 100, 256, 256)]


@pytest.mark.skipif(not cuda.AVAILABLE, reason="sed_kernels._cuda was not built")
@pytest.mark.parametrize("shape", CUDA_BACKWARD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64],
                         ids=str)
def test_cuda_feature_backward_tiles_chunks_and_splits(dtype, shape):
    inputs = kernel_checks.make_inputs(shape, torch.float32, seed=sum(shape))
    kernel_checks.assert_close_to_reference("feature", "cuda", inputs, dtype)


# Odd H and d_a (no multiple of 8 or 16), H past one pass of a CTA's columns (256), T = 1.
CUDA_TC_SHAPES = [(1, 1, 1, 1), (3, 7, 37, 19), (2, 40, 300, 24), (5, 17, 129, 65)]


def _assert_cuda_feature_close(inputs, dtype):
    """The CUDA kernels on h with NaN padded steps and NaN-filled fresh allocations (outputs,
    workspaces) against the references on zero padding: within twice eager's same-dtype error
    (+ one ulp), dh exactly 0 on the padded steps."""
    lengths = inputs["lengths"]
    clean = {**inputs, "h": kernel_checks.pad_with(inputs["h"], lengths, 0.0)}
    dirty = {**inputs, "h": kernel_checks.pad_with(inputs["h"], lengths, float("nan"))}
    expected = kernel_checks.run_op("feature", "reference", clean, torch.float64)
    eager = kernel_checks.run_op("feature", "reference", clean, dtype)
    with kernel_checks.poisoned_allocations():
        fused = kernel_checks.run_op("feature", "cuda", dirty, dtype)
    for name in ("out", "h", "W", "V"):
        want, same, actual = (r[0] if name == "out" else r[1][name]
                              for r in (expected, eager, fused))
        assert actual.dtype == dtype and torch.isfinite(actual).all(), name
        error, eager_error = max_error(actual, want), max_error(same, want)
        scale = want.abs().max().item() + 1.0
        assert error <= 2 * eager_error + kernel_checks.error_floor(dtype) * scale, (
            f"{name} ({dtype}): cuda error {error:.3g}, eager {eager_error:.3g}")
    assert_padded_steps_zero(fused[1]["h"], lengths)


@pytest.mark.skipif(not cuda.AVAILABLE, reason="sed_kernels._cuda was not built")
@pytest.mark.parametrize("shape", CUDA_TC_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_tensor_core_feature_kernels(dtype, shape):
    _assert_cuda_feature_close(kernel_checks.make_inputs(shape, torch.float32, seed=sum(shape)),
                               dtype)


@pytest.mark.skipif(not cuda.AVAILABLE, reason="sed_kernels._cuda was not built")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_tensor_core_feature_kernels_at_block_edges(dtype):
    """Rows ending one step before, at and after the 16-step blocks, one step, the whole T."""
    inputs = kernel_checks.make_inputs((7, 33, 70, 45), torch.float32, seed=9)
    inputs["lengths"] = torch.tensor([33, 1, 15, 16, 17, 32, 2], device="cuda")
    _assert_cuda_feature_close(inputs, dtype)


@pytest.mark.skipif(not cuda.AVAILABLE, reason="sed_kernels._cuda was not built")
@pytest.mark.parametrize("shape", [*GPU_SHAPES, (3, 7, 37, 19)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cuda_tf32_option_no_worse_than_fp16(monkeypatch, shape):
    """SED_KERNELS_CUDA_TF32=1: the fp32 CUDA kernels on TF32 tensor cores stay within twice
    the eager fp16 error (+ a small atol), and without the variable fp32 keeps its IEEE
    tolerance."""
    inputs = kernel_checks.make_inputs(shape, torch.float32, seed=6)
    exact_out, exact_grads = kernel_checks.run_op("feature", "reference", inputs, torch.float64)
    fp16_out, fp16_grads = kernel_checks.run_op("feature", "reference", inputs, torch.float16)
    monkeypatch.setenv("SED_KERNELS_CUDA_TF32", "1")
    out, grads = kernel_checks.run_op("feature", "cuda", inputs)
    pairs = [("out", out, fp16_out, exact_out)] + [
        (name, grads[name], fp16_grads[name], exact_grads[name]) for name in grads]
    for name, actual, fp16, exact in pairs:
        assert actual.dtype == torch.float32 and torch.isfinite(actual).all(), name
        kernel_error, fp16_error = max_error(actual, exact), max_error(fp16, exact)
        atol = 1e-4 * (exact.abs().max().item() + 1.0)
        assert kernel_error <= 2 * fp16_error + atol, (
            f"{name}: CUDA TF32 error {kernel_error:.3g}, eager fp16 {fp16_error:.3g}")
    monkeypatch.delenv("SED_KERNELS_CUDA_TF32")
    kernel_checks.assert_close_to_reference("feature", "cuda", inputs, torch.float32)


def _inputs(batch, steps, hidden, attention, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
    lengths[0] = steps
    h = torch.randn(batch, steps, hidden, generator=gen)
    q = torch.randn(batch, hidden, generator=gen) / hidden**0.5
    W = torch.randn(attention, hidden, generator=gen) / hidden**0.5
    V = torch.randn(hidden, attention, generator=gen) / attention**0.5
    return [t.to("cuda", dtype) for t in (h, q, W, V)] + [lengths.cuda()]


@pytest.mark.parametrize("backend", FUSED_CUDA)
def test_public_op_does_not_synchronize(backend):
    h, q, W, V, lengths = _inputs(4, 33, 64, 48)
    leaves = [t.requires_grad_() for t in (h, q, W, V)]
    for _ in range(2):  # the second call runs with everything compiled and cached
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = sed_kernels.time_attention(h, q, lengths, backend=backend)
            out = out + sed_kernels.feature_attention(h, W, V, lengths, backend=backend)
            torch.autograd.grad(out.sum(), leaves)
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("backend", FUSED_CUDA)
def test_batch_above_grid_y_limit(backend):
    h, q, W, V, lengths = _inputs(70_000, 3, 4, 3)
    torch.testing.assert_close(sed_kernels.time_attention(h, q, lengths, backend=backend),
                               reference.time_attention(h, q, lengths), rtol=1e-5, atol=1e-5)
    if backend == "triton":  # the CUDA feature-attention forward checks B <= 65535 itself
        torch.testing.assert_close(
            sed_kernels.feature_attention(h, W, V, lengths, backend=backend),
            reference.feature_attention(h, W, V, lengths), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("backend", FUSED_CUDA)
def test_tensors_on_a_non_current_gpu(backend):
    tensors = _inputs(3, 37, 37, 19)
    expected_time = reference.time_attention(*tensors[:2], tensors[4])
    expected_feature = reference.feature_attention(tensors[0], *tensors[2:])
    other = [t.to("cuda:1") for t in tensors]
    with torch.cuda.device(0):
        time_out = sed_kernels.time_attention(*other[:2], other[4], backend=backend)
        feature_out = sed_kernels.feature_attention(other[0], *other[2:], backend=backend)
    torch.testing.assert_close(time_out.cpu(), expected_time.cpu(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feature_out.cpu(), expected_feature.cpu(), rtol=1e-5, atol=1e-5)
