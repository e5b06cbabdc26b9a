"""Shared helpers of the kernel tests: inputs, running an op, poisoning, error comparison."""

from __future__ import annotations

import contextlib

import torch

import sed_kernels
from sed_kernels import reference

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKENDS = sed_kernels.available_backends(DEVICE)
FUSED = [name for name in BACKENDS if name != "reference"]


def make_lengths(batch: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Random lengths in [1, T] that include both edge cases 1 and T when B allows."""
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator)
    lengths[0] = steps
    if batch > 1:
        lengths[1] = 1
    return lengths.to(DEVICE)


def make_inputs(shape, dtype, seed=0, scale=1.0):
    batch, steps, hidden, attn = shape
    gen = torch.Generator().manual_seed(seed)

    def rand(*size, s=scale):
        return (torch.randn(*size, generator=gen) * s).to(DEVICE, dtype)

    lengths = make_lengths(batch, steps, gen)
    return {
        "h": rand(batch, steps, hidden),
        "q": rand(batch, hidden, s=scale / hidden**0.5),
        "W": rand(attn, hidden, s=1 / hidden**0.5),
        "V": rand(hidden, attn, s=1 / attn**0.5),
        "lengths": lengths,
        "grad": rand(batch, hidden),
    }


def pad_with(h: torch.Tensor, lengths: torch.Tensor, value: float) -> torch.Tensor:
    mask = reference.valid_mask(lengths, h.shape[1])[..., None]
    return h.masked_fill(~mask, value)


def run_op(op: str, backend: str, inputs: dict, dtype=None):
    """Output and gradients (w.r.t. h and the op's parameters) of ``op`` on ``backend``."""
    names = ("h", "q") if op == "time" else ("h", "W", "V")
    leaves = {n: inputs[n].detach().to(dtype or inputs[n].dtype).requires_grad_() for n in names}
    fn = sed_kernels.time_attention if op == "time" else sed_kernels.feature_attention
    out = fn(*leaves.values(), inputs["lengths"], backend=backend)
    out.backward(inputs["grad"].to(out.dtype))
    return out.detach(), {n: leaf.grad for n, leaf in leaves.items()}


@contextlib.contextmanager
def poisoned_allocations():
    """Make torch.empty and friends return NaN-filled floating tensors while kernels run."""
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


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.double() - expected.double()).abs().max().item()


def assert_close_to_reference(op, backend, inputs, dtype, magnitude=1.0):
    """The backend's error vs an fp64 reference is at most twice eager's same-dtype error.

    Every dtype also gets a floor relative to the largest expected value: summation-order
    differences for fp32/fp64, one unit in the last place for fp16/bf16 (a kernel that
    computes in fp32 and rounds once is within one ulp even where eager happens to land
    closer to the exact value). ``magnitude`` widens that floor for inputs far from unit
    scale, where the softmax backward's cancellation (``dp_t - sum_t p_t dp_t``) loses digits in
    proportion to |h|: fused kernels take that sum from the forward's output, eager from the same
    ``dp_t`` it subtracts it from, so their rounding differs by a few ulps of |h|-sized terms.
    """
    expected_out, expected_grads = run_op(op, "reference", inputs, torch.float64)
    eager_out, eager_grads = run_op(op, "reference", inputs, dtype)
    with poisoned_allocations():
        fused_out, fused_grads = run_op(op, backend, inputs, dtype)
    assert fused_out.dtype == dtype
    floor = {torch.float64: 1e-10, torch.float32: 2e-6}.get(dtype, torch.finfo(dtype).eps)
    pairs = [("out", fused_out, eager_out, expected_out)] + [
        (name, fused_grads[name], eager_grads[name], expected_grads[name]) for name in fused_grads
    ]
    for name, fused, eager, expected in pairs:
        assert torch.isfinite(fused).all(), f"{name}: non-finite values (unwritten elements?)"
        fused_error = max_error(fused, expected)
        eager_error = max_error(eager, expected)
        scale = expected.abs().max().item() + 1.0
        assert fused_error <= 2 * eager_error + floor * scale * magnitude, (
            f"{name} ({dtype}): {backend} error {fused_error:.3g} vs eager {dtype} "
            f"error {eager_error:.3g}"
        )
