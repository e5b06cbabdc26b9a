"""The one harness of the kernel tests: backends and their variants, inputs, NaN poisoning,
running an op, and the error measure against an fp64 reference.

Every fused backend is tested in every variant this machine can run: the ``cpu`` backend once
per instruction set that the build has and the CPU supports (AVX-512, AVX2, baseline), so a
CI machine with AVX-512 still checks the AVX2 and SSE2 code. Test parameters are
:class:`Backend` values (plain backend names that also carry the variant); the autouse
fixtures in ``conftest.py`` switch the instruction set and poison fresh allocations with NaN
for the duration of each test in the kernel-test modules.
"""

from __future__ import annotations

import contextlib

import torch

import sed_kernels
from sed_kernels import reference

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Backend(str):
    """A backend name (what the ops take) with the CPU instruction set to run it with."""

    isa: str | None

    def __new__(cls, name: str, isa: str | None = None) -> Backend:
        backend = super().__new__(cls, name)
        backend.isa = isa
        return backend

    @property
    def id(self) -> str:
        return f"{self}-{self.isa}" if self.isa else str(self)


def cpu_isas() -> list[str]:
    """Instruction-set variants of the ``cpu`` backend that this build and CPU can run."""
    from sed_kernels import cpu

    return cpu.extension.available_isas() if cpu.AVAILABLE else []


def _variants(name: str) -> list[Backend]:
    if name == "cpu":
        return [Backend("cpu", isa) for isa in cpu_isas()]
    return [Backend(name)]


BACKENDS = [
    variant for name in sed_kernels.available_backends(DEVICE) for variant in _variants(name)
]
FUSED = [backend for backend in BACKENDS if backend != "reference"]


def instruction_set(isa: str):
    """Run the ``cpu`` backend's kernels compiled for ``isa`` inside the block."""
    from sed_kernels import cpu

    return cpu.instruction_set(isa)


@contextlib.contextmanager
def poisoned_allocations():
    """torch.empty and friends return NaN-filled floating tensors: unwritten outputs show."""
    originals = {name: getattr(torch, name) for name in ("empty", "empty_like", "empty_strided")}
    original_new_empty = torch.Tensor.new_empty

    def poison(tensor):
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    def wrap(fn):
        return lambda *args, **kwargs: poison(fn(*args, **kwargs))

    try:
        for name, fn in originals.items():
            setattr(torch, name, wrap(fn))
        torch.Tensor.new_empty = lambda self, *a, **k: poison(original_new_empty(self, *a, **k))
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)
        torch.Tensor.new_empty = original_new_empty


# ------------------------------------------------------------------------------- inputs


def make_lengths(batch: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Random lengths in [1, T] that include both edge cases 1 and T when B allows."""
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator)
    lengths[0] = steps
    if batch > 1:
        lengths[1] = 1
    return lengths.to(DEVICE)


def make_inputs(shape, dtype, seed=0, scale=1.0, device=None, layout="contiguous", padding=None):
    """h, q, W, V, lengths and an output gradient for a (B, T, H, d_a) shape, in ``dtype``.

    ``layout`` is h's memory layout (see :func:`with_layout`); ``padding``, if given, is the
    value of every padded step of h (NaN shows a kernel that reads them).
    """
    batch, steps, hidden, attn = shape
    gen = torch.Generator().manual_seed(seed)
    device = DEVICE if device is None else torch.device(device)

    def rand(*size, s=scale):
        return (torch.randn(*size, generator=gen) * s).to(device, dtype)

    lengths = make_lengths(batch, steps, gen).to(device)
    h = rand(batch, steps, hidden)
    if padding is not None:
        h = pad_with(h, lengths, padding)
    return {
        "h": with_layout(h, layout),
        "q": rand(batch, hidden, s=scale / hidden**0.5),
        "W": rand(attn, hidden, s=1 / hidden**0.5),
        "V": rand(hidden, attn, s=1 / attn**0.5),
        "lengths": lengths,
        "grad": rand(batch, hidden),
    }


def pad_with(h: torch.Tensor, lengths: torch.Tensor, value: float) -> torch.Tensor:
    """h with every padded step (t >= lengths[b]) set to ``value``."""
    mask = reference.valid_mask(lengths, h.shape[1])[..., None]
    return h.masked_fill(~mask, value)


def with_layout(h: torch.Tensor, layout: str) -> torch.Tensor:
    """The values of h in another memory layout; unused memory around them holds NaN.

    ``contiguous``; ``time_major``: a (T, B, H) buffer seen as (B, T, H), as from a
    time-major LSTM; ``sliced``: every other step and an offset slice of the features of a
    larger buffer; ``feature_stride_2``: every other feature.
    """
    batch, steps, hidden = h.shape
    like = {"dtype": h.dtype, "device": h.device}
    if layout == "contiguous":
        return h.contiguous()
    if layout == "time_major":
        return h.transpose(0, 1).contiguous().transpose(0, 1)
    if layout == "sliced":
        wide = torch.full((batch, 2 * steps, hidden + 3), float("nan"), **like)
        wide[:, ::2, 1 : hidden + 1] = h
        return wide[:, ::2, 1 : hidden + 1]
    if layout == "feature_stride_2":
        wide = torch.full((batch, steps, 2 * hidden), float("nan"), **like)
        wide[..., ::2] = h
        return wide[..., ::2]
    raise ValueError(f"unknown layout {layout!r}")


def non_contiguous_views(h: torch.Tensor) -> dict[str, torch.Tensor]:
    """h as a slice of a transposed (T, B, H) buffer, and with a feature stride of 2."""
    return {
        "transposed": with_layout(h, "time_major"),
        "feature stride 2": with_layout(h, "feature_stride_2"),
    }


# --------------------------------------------------------------------- running, comparing


def run_op(op: str, backend: str, inputs: dict, dtype=None):
    """Output and gradients (w.r.t. h and the op's parameters) of ``op`` on ``backend``."""
    names = ("h", "q") if op == "time" else ("h", "W", "V")
    leaves = {n: inputs[n].detach().to(dtype or inputs[n].dtype).requires_grad_() for n in names}
    fn = sed_kernels.time_attention if op == "time" else sed_kernels.feature_attention
    out = fn(*leaves.values(), inputs["lengths"], backend=backend)
    out.backward(inputs["grad"].to(out.dtype))
    return out.detach(), {n: leaf.grad for n, leaf in leaves.items()}


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.double() - expected.double()).abs().max().item()


def error_floor(dtype: torch.dtype) -> float:
    """Absolute error allowed on top of twice eager's, per unit of the largest expected value.

    Summation-order differences for fp32/fp64; one unit in the last place for fp16/bf16 (a
    kernel that computes in fp32 and rounds once is within one ulp even where eager happens
    to land closer to the exact value).
    """
    return {torch.float64: 1e-10, torch.float32: 2e-6}.get(dtype, torch.finfo(dtype).eps)


def assert_close_to_reference(op, backend, inputs, dtype, magnitude=1.0):
    """The backend's error vs an fp64 reference is at most twice eager's same-dtype error.

    Plus :func:`error_floor` times the largest expected value. ``magnitude`` widens that floor
    for inputs far from unit scale, where the softmax backward's cancellation
    (``dp_t - sum_t p_t dp_t``) loses digits in proportion to |h|: fused kernels take that sum
    from the forward's output, eager from the same ``dp_t`` it subtracts it from, so their
    rounding differs by a few ulps of |h|-sized terms.
    """
    expected_out, expected_grads = run_op(op, "reference", inputs, torch.float64)
    eager_out, eager_grads = run_op(op, "reference", inputs, dtype)
    fused_out, fused_grads = run_op(op, backend, inputs, dtype)
    assert fused_out.dtype == dtype
    pairs = [("out", fused_out, eager_out, expected_out)] + [
        (name, fused_grads[name], eager_grads[name], expected_grads[name]) for name in fused_grads
    ]
    for name, fused, eager, expected in pairs:
        assert torch.isfinite(fused).all(), f"{name}: non-finite values (unwritten elements?)"
        fused_error = max_error(fused, expected)
        eager_error = max_error(eager, expected)
        scale = expected.abs().max().item() + 1.0
        assert fused_error <= 2 * eager_error + error_floor(dtype) * scale * magnitude, (
            f"{name} ({dtype}): {backend} error {fused_error:.3g} vs eager {dtype} "
            f"error {eager_error:.3g}"
        )
