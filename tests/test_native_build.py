"""The native extensions built by ``pip install .`` (``csrc/``) and their launchers.

- ``sed_kernels._cpu`` is always built; ``sed_kernels._cuda`` whenever nvcc was found.
- The launchers of ``sed_kernels.cpu`` (every instruction-set variant built into the module)
  against the eager reference in float64 on the same (rounded) inputs, for float32, float16,
  bfloat16 and float64: odd sizes, T = 1, lengths 1 and T, NaN in padded steps,
  non-contiguous ``h`` (a transposed buffer and a stride over features), outputs fully
  written (allocations poisoned with NaN), dW/dV bitwise reproducible.
- The same checks for ``sed_kernels.cuda`` when a GPU is present; without one, the CUDA
  module must still load and fail with a clear RuntimeError.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_checks import FUSED, make_inputs, non_contiguous_views, pad_with

from sed_kernels import reference

cpu_backend = pytest.importorskip("sed_kernels.cpu")
cuda_backend = pytest.importorskip("sed_kernels.cuda")
from sed_kernels.cpu import feature_attention as cpu_feature  # noqa: E402
from sed_kernels.cpu import time_attention as cpu_time  # noqa: E402

HAS_GPU = torch.cuda.is_available()
SETUP_PY = Path(__file__).resolve().parent.parent / "setup.py"
# Absolute tolerance per input dtype for outputs and gradients of size ~1 (the kernels
# compute in float32 / float64; float16 and bfloat16 add the rounding of the results).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
# (B, T, H, d_a): odd sizes, T = 1, several step blocks per row, H not a multiple of any
# vector width.
SHAPES = [(3, 7, 5, 3), (2, 1, 8, 8), (4, 67, 37, 19), (3, 130, 64, 50)]
# Each instruction-set variant of the cpu backend (the conftest fixture switches to it).
CPU_VARIANTS = [backend for backend in FUSED if backend == "cpu"]


def nvcc_found() -> bool:
    """nvcc as setup.py finds it (PATH, $CUDA_HOME/bin, $CUDA_PATH/bin)."""
    spec = importlib.util.spec_from_file_location("sed_kernels_setup", SETUP_PY)
    setup_module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = setup_module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(setup_module)
    finally:
        del sys.modules[spec.name]
    return setup_module.find_nvcc() is not None


def make_case(shape, dtype, device="cpu", seed=0):
    """Inputs in ``dtype`` (NaN on padded steps of h) with lengths covering 1 and T."""
    case = make_inputs(shape, dtype, seed=seed, device=device)
    case["h"] = pad_with(case["h"], case["lengths"], float("nan"))
    return case


def reference_time(case):
    """Output and (dh, dq) of the eager reference in float64 on the same rounded inputs."""
    h = case["h"].double().nan_to_num(0.0).requires_grad_()
    q = case["q"].double().requires_grad_()
    out = reference.time_attention(h, q, case["lengths"])
    out.backward(case["grad"].double())
    return out.detach(), (h.grad, q.grad)


def reference_feature(case):
    h = case["h"].double().nan_to_num(0.0).requires_grad_()
    W = case["W"].double().requires_grad_()
    V = case["V"].double().requires_grad_()
    out = reference.feature_attention(h, W, V, case["lengths"])
    out.backward(case["grad"].double())
    return out.detach(), (h.grad, W.grad, V.grad)


def run_time(kernels, case, h=None):
    h = case["h"] if h is None else h
    out, lse = kernels.forward(h, case["q"], case["lengths"])
    grads = kernels.backward(case["grad"], h, case["q"], case["lengths"], out, lse)
    return out, lse, grads


def run_feature(kernels, case, h=None):
    h = case["h"] if h is None else h
    out = kernels.forward(h, case["W"], case["V"], case["lengths"])
    grads = kernels.backward(case["grad"], h, case["W"], case["V"], case["lengths"])
    return out, grads


def assert_close(actual, expected, dtype, what):
    """Max abs error within TOLERANCE[dtype] per unit of the largest expected value (at least 1).

    The launchers compute in fp32/fp64 and round once to the input dtype, and that rounding
    is relative: half an ulp of the value, 2^-11 |x| in float16 and 2^-8 |x| in bfloat16, which
    TOLERANCE holds about four times over at |x| = 1.
    """
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    error = (actual.double().cpu() - expected.cpu()).abs().max().item()
    allowed = TOLERANCE[dtype] * max(1.0, expected.abs().max().item())
    assert error <= allowed, f"{what}: max abs error {error:.3g} > {allowed:.3g}"


def assert_padded_steps_zero(grad_h, lengths):
    padded = ~reference.valid_mask(lengths, grad_h.shape[1])
    assert (grad_h[padded] == 0).all(), "dh is not exactly zero on padded steps"


# ---- build --------------------------------------------------------------------------------


def test_cpu_module_is_built_and_importable():
    import sed_kernels._cpu as module

    assert cpu_backend.AVAILABLE
    assert module.isa() in module.available_isas()
    assert module.available_isas()[-1] == "baseline"


@pytest.mark.skipif(not nvcc_found(), reason="nvcc not found: the CUDA module is not built")
@pytest.mark.skipif(
    os.environ.get("SED_KERNELS_BUILD_CUDA") == "0", reason="SED_KERNELS_BUILD_CUDA=0"
)
def test_cuda_module_is_built_when_nvcc_is_found():
    import sed_kernels._cuda  # noqa: F401

    assert cuda_backend.EXTENSION_LOADED
    assert cuda_backend.AVAILABLE == HAS_GPU


@pytest.mark.skipif(HAS_GPU or not cuda_backend.EXTENSION_LOADED, reason="needs _cuda, no GPU")
def test_cuda_module_without_gpu_raises_clear_error():
    kernels = cuda_backend.extension
    with pytest.raises(RuntimeError, match=r"sed_kernels\._cuda: .*failed"):
        kernels.time_attention_forward(
            h=0, stride_b=1, stride_t=1, stride_h=1, q=0, lengths=0, out=0, lse=0, workspace=0,
            batch=1, steps=1, hidden=1, dtype="float32", device=0, stream=0,
        )  # fmt: skip
    with pytest.raises(ValueError, match="dtype"):
        kernels.time_attention_workspace(1, 1, 1, "int8")


def test_cpu_module_rejects_unknown_isa_and_dtype():
    with pytest.raises(ValueError, match="available"):
        cpu_backend.extension.set_isa("sse9")
    with pytest.raises(ValueError, match="float32"):
        cpu_backend.extension.time_attention_forward(
            h=0, stride_b=1, stride_t=1, stride_h=1, q=0, lengths=0, out=0, lse=0, batch=1,
            steps=1, hidden=1, dtype="float16", num_threads=1,
        )  # fmt: skip


@pytest.mark.parametrize(
    "isa", cpu_backend.extension.available_isas() if cpu_backend.AVAILABLE else []
)
def test_environment_variable_forces_an_instruction_set(isa):
    code = "import sed_kernels.cpu as c; print(c.extension.isa())"
    env = {**os.environ, cpu_backend.ISA_ENV_VAR: isa}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == isa


def test_environment_variable_with_an_unknown_instruction_set_is_named():
    code = "import sed_kernels.cpu"
    env = {**os.environ, cpu_backend.ISA_ENV_VAR: "sse9"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "SED_KERNELS_CPU_ISA='sse9'" in done.stderr and "available here: " in done.stderr


# ---- CPU launchers against the reference ------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backend", CPU_VARIANTS)
def test_cpu_time_attention_matches_reference(backend, shape, dtype):
    case = make_case(shape, dtype)
    out, lse, (grad_h, grad_q) = run_time(cpu_time, case)
    expected_out, (expected_dh, expected_dq) = reference_time(case)
    accumulator = torch.float64 if dtype == torch.float64 else torch.float32
    assert_close(out, expected_out, accumulator, "out")  # unrounded, for the backward
    assert lse.dtype == accumulator
    assert_close(grad_h, expected_dh, dtype, "dh")
    assert_close(grad_q, expected_dq, dtype, "dq")
    assert_padded_steps_zero(grad_h, case["lengths"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backend", CPU_VARIANTS)
def test_cpu_feature_attention_matches_reference(backend, shape, dtype):
    case = make_case(shape, dtype)
    out, (grad_h, grad_W, grad_V) = run_feature(cpu_feature, case)
    expected_out, (expected_dh, expected_dW, expected_dV) = reference_feature(case)
    assert_close(out, expected_out, dtype, "out")
    assert_close(grad_h, expected_dh, dtype, "dh")
    assert_close(grad_W, expected_dW, dtype, "dW")
    assert_close(grad_V, expected_dV, dtype, "dV")
    assert_padded_steps_zero(grad_h, case["lengths"])


@pytest.mark.parametrize("layout", ["transposed", "feature stride 2"])
@pytest.mark.parametrize("backend", CPU_VARIANTS)
def test_cpu_kernels_read_non_contiguous_h(backend, layout):
    case = make_case((3, 40, 21, 11), torch.float32)
    h = non_contiguous_views(case["h"])[layout]
    assert not h.is_contiguous()
    for got, want in zip(run_time(cpu_time, case, h), run_time(cpu_time, case)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, equal_nan=False)
    for got, want in zip(run_feature(cpu_feature, case, h), run_feature(cpu_feature, case)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_cpu_feature_gradients_are_bitwise_reproducible():
    case = make_case((6, 150, 48, 40), torch.float32, seed=3)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(max(2, previous))  # several chunks of dW/dV partials
        first = run_feature(cpu_feature, case)[1]
        for _ in range(3):
            again = run_feature(cpu_feature, case)[1]
            for a, b in zip(first, again):
                assert torch.equal(a, b), "feature-attention gradients differ between runs"
        torch.set_num_threads(1)  # another chunking: equal up to rounding
        for a, b in zip(first, run_feature(cpu_feature, case)[1]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    finally:
        torch.set_num_threads(previous)


def test_cpu_time_gradients_are_bitwise_reproducible():
    case = make_case((5, 300, 33, 1), torch.float32, seed=4)
    first = run_time(cpu_time, case)
    for a, b in zip(first[2], run_time(cpu_time, case)[2]):
        assert torch.equal(a, b)


# ---- CUDA launchers (need a GPU) ---------------------------------------------------------------

needs_gpu = pytest.mark.skipif(
    not cuda_backend.AVAILABLE, reason="needs a GPU and sed_kernels._cuda"
)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cuda_kernels_match_reference(shape, dtype):
    from sed_kernels.cuda import feature_attention, time_attention

    case = make_case(shape, dtype, device="cuda")
    out, lse, (grad_h, grad_q) = run_time(time_attention, case)
    expected_out, (expected_dh, expected_dq) = reference_time(case)
    accumulator = torch.float64 if dtype == torch.float64 else torch.float32
    assert_close(out, expected_out, accumulator, "time out")  # unrounded, for the backward
    assert_close(grad_h, expected_dh, dtype, "time dh")
    assert_close(grad_q, expected_dq, dtype, "time dq")
    assert_padded_steps_zero(grad_h, case["lengths"])
    out, (grad_h, grad_W, grad_V) = run_feature(feature_attention, case)
    expected_out, (expected_dh, expected_dW, expected_dV) = reference_feature(case)
    assert_close(out, expected_out, dtype, "feature out")
    assert_close(grad_h, expected_dh, dtype, "feature dh")
    assert_close(grad_W, expected_dW, dtype, "feature dW")
    assert_close(grad_V, expected_dV, dtype, "feature dV")
    assert_padded_steps_zero(grad_h, case["lengths"])


@needs_gpu
@pytest.mark.parametrize("layout", ["transposed", "feature stride 2"])
def test_cuda_kernels_read_non_contiguous_h(layout):
    from sed_kernels.cuda import feature_attention, time_attention

    case = make_case((3, 40, 21, 11), torch.float32, device="cuda")
    h = non_contiguous_views(case["h"])[layout]
    for got, want in zip(run_time(time_attention, case, h), run_time(time_attention, case)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(
        run_feature(feature_attention, case, h), run_feature(feature_attention, case)
    ):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@needs_gpu
def test_cuda_feature_gradients_are_bitwise_reproducible():
    from sed_kernels.cuda import feature_attention

    case = make_case((8, 300, 64, 48), torch.float32, device="cuda", seed=5)
    first = run_feature(feature_attention, case)[1]
    for _ in range(3):
        for a, b in zip(first, run_feature(feature_attention, case)[1]):
            assert torch.equal(a, b)
