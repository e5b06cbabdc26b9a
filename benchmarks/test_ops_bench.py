"""Forward and forward+backward of the two attention ops, for every usable backend.

Cases: op (``time_attention``, ``feature_attention``) x pass (``fwd``, ``fwd+bwd``) x shape x
dtype x backend, where the backend is

- ``reference``: the eager formula (``sed_kernels.time_attention(..., backend="reference")``),
- ``compile``: ``torch.compile`` (default inductor backend) of that same call, compiled in the
  warm-up; ``torch._dynamo.reset()`` first, so that every case compiles for its static shape as
  a process with that one shape would,
- every fused backend that ``sed_kernels.available_backends(device)`` lists, called through the
  same public function; the ``cpu`` backend once per instruction-set variant that this build
  and CPU can run (``cpu-avx512``, ``cpu-avx2``, ``cpu-baseline``). On CPU ``triton`` is
  skipped: there it would be Triton's interpreter, a
  correctness tool.

Every call goes through the public API, so the eager reference and the fused backends pay the
same input validation (shapes and dtypes; the values of ``lengths`` are read only when they
are on the CPU, so no call synchronises the GPU).
``fwd`` runs on inputs that do not require grad (inference);
``fwd+bwd`` computes ``torch.autograd.grad(out, inputs, grad_out)`` for h and q (time) or h, W,
V (feature). Before timing, each case's result is checked against the eager reference.

Inputs: h ~ N(0, 1); q, W, V scaled by 1/sqrt(H) (or 1/sqrt(d_a)) so that the softmaxes are not
saturated; valid lengths drawn uniformly from [T/2, T] with the longest row at exactly T, as in
a padded batch of utterances (seed 0).

Ideal traffic (``ideal_bytes`` in ``extra_info``), the bytes that a perfect implementation must
move between memory and the chip: every distinct input tensor read once and every output
tensor written once, where h is read only at its valid steps (sum(lengths) * H elements; the
contract forbids reading padded steps) and dh is written in full (B * T * H, zeros on padded
steps).

- time, fwd: h (valid), q, lengths; writes out.
- feature, fwd: h (valid), W, V, lengths; writes out.
- fwd+bwd: the forward's reads plus grad_out; writes out, dh, and dq (time) or dW, dV
  (feature). h counts once although two kernels (forward, backward) each read it: this is a
  lower bound on the traffic, so ``GBps`` and ``fraction_of_copy`` are conservative.
  Internal statistics (time attention's (B,) log-sum-exp) are left out.

FLOPs of feature attention (``flops``; multiply-adds count 2, only the matrix products: the
tanh, softmax and weighted sum add O(H + d_a) per step, under 1% at these sizes), with N the
number of valid steps:

- fwd: N * (2 * d_a * H  [W h_t]  +  2 * H * d_a  [V u_t]) = 4 N H d_a.
- fwd+bwd: the forward, plus the backward's four products dV = ds^T u, du = ds V,
  dW = dz^T h, dh = dz W (8 N H d_a): 12 N H d_a, what a forward+backward needs. The cpu
  backend executes exactly these (it keeps u and a from the forward); the GPU backends
  recompute u and s in the backward, so they execute more than they are credited with.

``fraction_of_matmul`` compares GFLOP/s with a large ``torch.mm`` measured in the same run
(fp32 2048^3 on CPU, bf16 8192^3 on CUDA): the rate this machine reaches on matrix products.

Time attention's arithmetic (4 N H flops forward) is negligible; it is bandwidth-bound, so
only bytes are reported for it.
"""

from __future__ import annotations

import harness
import pytest
import torch

import sed_kernels

OPS = ("time_attention", "feature_attention")
PASSES = ("fwd", "fwd+bwd")
CPU_VARIANTS = tuple(f"cpu-{isa}" for isa in harness.cpu_isas())
FUSED = (*CPU_VARIANTS, "cuda", "triton")
BACKENDS = ("reference", "compile", *FUSED)
TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 3e-2}  # relative to the largest value


@pytest.fixture(scope="session")
def usable_backends(settings: harness.Settings) -> list[str]:
    return sed_kernels.available_backends(settings.device)


def make_inputs(op: str, shape: harness.OpShape, dtype: torch.dtype, device: torch.device) -> dict:
    """The op's keyword inputs: h (B,T,H), q (B,H) or W (d_a,H) and V (H,d_a), lengths (B,)."""
    generator = torch.Generator().manual_seed(0)
    B, T, H, D = shape.batch, shape.steps, shape.hidden, shape.attention

    def normal(*size: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(size, generator=generator) * scale).to(device=device, dtype=dtype)

    lengths = torch.randint(max(1, T // 2), T + 1, (B,), generator=generator)
    lengths[0] = T
    inputs = {"h": normal(B, T, H)}
    if op == "time_attention":
        inputs["q"] = normal(B, H, scale=H**-0.5)
    else:
        inputs["W"] = normal(D, H, scale=H**-0.5)
        inputs["V"] = normal(H, D, scale=D**-0.5)
    inputs["lengths"] = lengths.to(device)
    return inputs


def ideal_bytes(op: str, pass_: str, inputs: dict) -> int:
    """Bytes of an ideal kernel (module docstring): each input read once, each output written
    once."""
    h, lengths = inputs["h"], inputs["lengths"]
    element = h.element_size()
    batch, steps, hidden = h.shape
    h_valid = int(lengths.sum()) * hidden * element
    weights = sum(t.numel() * element for name, t in inputs.items() if name in ("q", "W", "V"))
    out = batch * hidden * element
    forward = h_valid + weights + lengths.numel() * lengths.element_size() + out
    if pass_ == "fwd":
        return forward
    grad_out, dh, d_weights = out, batch * steps * hidden * element, weights
    return forward + grad_out + dh + d_weights


def feature_attention_flops(pass_: str, inputs: dict) -> int:
    """Matrix-product FLOPs of feature attention (module docstring)."""
    valid_steps = int(inputs["lengths"].sum())
    attention, hidden = inputs["W"].shape
    per_step = 4 * hidden * attention if pass_ == "fwd" else 12 * hidden * attention
    return valid_steps * per_step


def make_call(op: str, pass_: str, backend: str, inputs: dict):
    """A no-argument function running one case; returns out (fwd) or the gradients (fwd+bwd)."""
    public = getattr(sed_kernels, op)
    weight_names = [name for name in inputs if name not in ("h", "lengths")]

    def run_op(*tensors: torch.Tensor, lengths: torch.Tensor, backend: str) -> torch.Tensor:
        return public(*tensors, lengths, backend=backend)

    if backend == "compile":
        torch._dynamo.reset()
        run_op = torch.compile(run_op)
        backend = "reference"
    op_tensors = [inputs["h"], *(inputs[name] for name in weight_names)]
    if pass_ == "fwd":
        return lambda: run_op(*op_tensors, lengths=inputs["lengths"], backend=backend)

    leaves = [t.detach().requires_grad_() for t in op_tensors]
    generator = torch.Generator().manual_seed(1)
    grad_out = torch.randn(inputs["h"].shape[0], inputs["h"].shape[2], generator=generator)
    grad_out = grad_out.to(device=inputs["h"].device, dtype=inputs["h"].dtype)

    def forward_backward() -> tuple[torch.Tensor, ...]:
        out = run_op(*leaves, lengths=inputs["lengths"], backend=backend)
        return torch.autograd.grad(out, leaves, grad_out)

    return forward_backward


def check_result(result, expected, dtype: torch.dtype, case: str) -> None:
    """The benchmarked case computes what the eager fp32 reference computes.

    Tolerance relative to each tensor's largest value, so that long sums (dW, dV over every
    valid step) and tiny entries (dh) are judged alike.
    """
    results = result if isinstance(result, tuple) else (result,)
    expectations = expected if isinstance(expected, tuple) else (expected,)
    for index, (got, want) in enumerate(zip(results, expectations)):
        error = (got.float() - want.float()).abs().max().item()
        scale = want.abs().max().item()
        assert error <= TOLERANCE[dtype] * max(scale, 1e-6), (
            f"{case}: output {index} differs from the fp32 reference by {error:.3g} "
            f"(largest reference value {scale:.3g}, relative tolerance {TOLERANCE[dtype]:g})"
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("op", OPS)
def test_op(
    benchmark,
    settings,
    usable_backends,
    copy_bandwidth,
    matmul_rate,
    op,
    pass_,
    backend,
    op_shape,
    dtype,
):
    device = settings.device
    if backend == "triton" and device.type == "cpu":
        pytest.skip("triton on CPU is Triton's interpreter, a correctness tool: not benchmarked")
    backend, isa = harness.split_variant(backend)
    if backend in ("cpu", "cuda", "triton") and backend not in usable_backends:
        pytest.skip(
            f"backend {backend!r} is not usable for {device.type} tensors here "
            f"(usable: {', '.join(usable_backends)})"
        )

    if (
        backend == "compile"
        and settings.sizes == "smoke"
        and (op, pass_) != ("feature_attention", "fwd+bwd")
    ):
        pytest.skip(harness.SMOKE_COMPILE_SKIP)

    inputs = make_inputs(op, op_shape, dtype, device)
    extra = benchmark.extra_info
    extra.update(
        suite="ops",
        op=op,
        **{"pass": pass_},
        backend=backend if isa is None else f"{backend}-{isa}",
        shape=[op_shape.batch, op_shape.steps, op_shape.hidden, op_shape.attention],
        shape_label=op_shape.label,
        dtype=harness.as_id(dtype),
        device=device.type,
        sizes=settings.sizes,
        valid_steps=int(inputs["lengths"].sum()),
        ideal_bytes=ideal_bytes(op, pass_, inputs),
    )
    if op == "feature_attention":
        extra["flops"] = feature_attention_flops(pass_, inputs)

    with harness.cpu_instruction_set(isa):
        run_case(
            benchmark, settings, op, pass_, backend, inputs, dtype, copy_bandwidth, matmul_rate
        )


def run_case(benchmark, settings, op, pass_, backend, inputs, dtype, copy_bandwidth, matmul_rate):
    """Check one case against the eager fp32 reference, time it, record the rates."""
    device, extra = settings.device, benchmark.extra_info
    call = make_call(op, pass_, backend, inputs)
    fp32_inputs = {name: t.float() if t.is_floating_point() else t for name, t in inputs.items()}
    expected = make_call(op, pass_, "reference", fp32_inputs)()
    check_result(
        call(), expected, dtype, f"{op} {pass_} {backend}"
    )  # also the first warm-up call (compiles)
    del expected

    median = harness.measure(
        benchmark, call, settings, warmup_calls=2 if backend == "compile" else 1
    )
    if median is not None:
        extra["GBps"] = extra["ideal_bytes"] / median / 1e9
        extra["copy_GBps"] = copy_bandwidth / 1e9
        extra["fraction_of_copy"] = extra["ideal_bytes"] / median / copy_bandwidth
        if "flops" in extra:
            extra["GFLOPps"] = extra["flops"] / median / 1e9
            extra["matmul_GFLOPps"] = matmul_rate / 1e9
            extra["fraction_of_matmul"] = extra["flops"] / median / matmul_rate
        extra.update(harness.peak_memory(call, device))
