"""Direct tests of the Triton kernels (``sed_kernels/triton``) against the eager reference.

These call the backend's plain ``forward``/``backward`` functions (no custom op, no
autograd), each with the heuristic launch configuration and with a small forced one that
splits rows across programs, walks H in several chunks and leaves partial blocks of steps.
Without a GPU the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (set by
conftest.py before triton is imported). Inputs, NaN poisoning of fresh buffers and the error
measure are the shared ones of ``kernel_checks``; the padded steps of ``h`` hold NaN, so
unwritten outputs and reads of padding show.
"""

from __future__ import annotations

import kernel_checks
import pytest
import torch
from kernel_checks import DEVICE, max_error

from sed_kernels import reference

pytest.importorskip("triton")

from sed_kernels.triton import _utils, feature_attention, time_attention  # noqa: E402
from sed_kernels.triton._utils import FeatureAttentionConfig, TimeAttentionConfig  # noqa: E402

if DEVICE.type == "cpu" and not _utils.interpreter_active():
    pytest.skip("Triton kernels need a GPU or TRITON_INTERPRET=1", allow_module_level=True)

# (B, T, H, d_a): B = 1 and T = 1; odd H and d_a; T = 37 is no multiple of any block size.
SHAPES = [(1, 1, 1, 1), (3, 37, 37, 19), (2, 24, 64, 40)]
# Each shape with a memory layout of h: contiguous, a (T, B, H) buffer, a strided slice.
CASES = [(SHAPES[0], "contiguous"), (SHAPES[1], "time_major"), (SHAPES[1], "sliced"),
         (SHAPES[2], "contiguous")]


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def time_config(name: str, hidden: int) -> TimeAttentionConfig | None:
    """None: the heuristic. "split": blocks of 4 steps, rows split every 8 steps."""
    if name == "heuristic":
        return None
    return TimeAttentionConfig(block_t=4, block_h=_next_pow2(hidden), steps_per_split=8,
                               num_warps=4)


def feature_config(name: str, attention_dim: int, steps_per_split: int = 16
                   ) -> FeatureAttentionConfig | None:
    """None: the heuristic. "split": blocks of 16 steps, ``steps_per_split`` steps per
    program, H in chunks of 16 features, the backward's dW/dV over 2 splits of the batch."""
    if name == "heuristic":
        return None
    return FeatureAttentionConfig(block_t=16, block_n=16,
                                  block_da=max(16, _next_pow2(attention_dim)),
                                  steps_per_split=steps_per_split, num_warps=4,
                                  weight_splits=2)


def make_inputs(shape, dtype, seed=0, layout="contiguous", padding=float("nan")):
    """The shared inputs (kernel_checks), h in ``layout``, its padded steps at ``padding``."""
    return kernel_checks.make_inputs(shape, dtype, seed=seed, layout=layout, padding=padding)


def reference_results(op: str, inputs: dict, dtype: torch.dtype) -> dict:
    """Eager output and autograd gradients in ``dtype``; padded steps of h zeroed first."""
    mask = reference.valid_mask(inputs["lengths"], inputs["h"].shape[1])[..., None]
    h = inputs["h"].masked_fill(~mask, 0).to(dtype).requires_grad_()
    names = ["q"] if op == "time" else ["W", "V"]
    params = [inputs[name].to(dtype).requires_grad_() for name in names]
    fn = reference.time_attention if op == "time" else reference.feature_attention
    out = fn(h, *params, inputs["lengths"])
    out.backward(inputs["grad"].to(dtype))
    results = {"out": out.detach(), "dh": h.grad}
    results.update({f"d{name}": p.grad for name, p in zip(names, params)})
    return results


def kernel_results(op: str, inputs: dict, config_name: str) -> dict:
    """Output and gradients of the Triton kernels (fresh allocations NaN-poisoned by the
    autouse fixture of conftest.py)."""
    h, lengths, grad = inputs["h"], inputs["lengths"], inputs["grad"]
    if op == "time":
        config = time_config(config_name, h.shape[2])
        out, lse = time_attention.forward(h, inputs["q"], lengths, config)
        dh, dq = time_attention.backward(grad, h, inputs["q"], lengths, out, lse, config)
        return {"out": out, "lse": lse, "dh": dh, "dq": dq}
    config = feature_config(config_name, inputs["W"].shape[0])
    out = feature_attention.forward(h, inputs["W"], inputs["V"], lengths, config)
    dh, dW, dV = feature_attention.backward(grad, h, inputs["W"], inputs["V"], lengths, config)
    return {"out": out, "dh": dh, "dW": dW, "dV": dV}


def assert_padded_steps_zero(dh: torch.Tensor, lengths: torch.Tensor) -> None:
    padded = ~reference.valid_mask(lengths, dh.shape[1])
    assert (dh[padded] == 0).all(), "dh must be exactly 0 on padded steps"


# ------------------------------------------------------------------ fp32 / fp64 accuracy


@pytest.mark.parametrize("config_name", ["heuristic", "split"])
@pytest.mark.parametrize(
    "shape,layout", CASES, ids=["x".join(map(str, shape)) + "-" + layout for shape, layout in CASES]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op", ["time", "feature"])
def test_matches_reference(op, dtype, shape, layout, config_name):
    inputs = make_inputs(shape, dtype, seed=sum(shape), layout=layout)
    expected = reference_results(op, inputs, torch.float64)
    actual = kernel_results(op, inputs, config_name)
    tolerance = {torch.float32: 2e-6, torch.float64: 1e-12}[dtype]
    for name, value in expected.items():
        assert actual[name].dtype == dtype, name
        assert actual[name].is_contiguous(), name
        assert torch.isfinite(actual[name]).all(), f"{name}: non-finite (unwritten?) values"
        scale = value.abs().max().item() + 1.0
        assert max_error(actual[name], value) <= tolerance * scale, (
            f"{name}: error {max_error(actual[name], value):.3g}"
        )
    assert_padded_steps_zero(actual["dh"], inputs["lengths"])
    if op == "time":
        scores = torch.einsum("bth,bh->bt", inputs["h"].double(), inputs["q"].double())
        scores = scores.masked_fill(~reference.valid_mask(inputs["lengths"], shape[1]), -torch.inf)
        assert actual["lse"].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert max_error(actual["lse"], torch.logsumexp(scores, dim=1)) <= tolerance * 10


# ------------------------------------------------------------------- fp16 / bf16 accuracy


@pytest.mark.parametrize("config_name", ["heuristic", "split"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", ["time", "feature"])
def test_low_precision_no_worse_than_eager(op, dtype, config_name):
    """The kernel's error vs fp64 is at most twice the eager same-dtype error (+ small atol)."""
    for shape in SHAPES[1:]:
        inputs = make_inputs(shape, dtype, seed=7 + sum(shape), layout="time_major")
        exact = reference_results(op, inputs, torch.float64)
        eager = reference_results(op, inputs, dtype)
        actual = kernel_results(op, inputs, config_name)
        for name, value in exact.items():
            # time attention's out stays fp32 for the backward; the op layer rounds it
            expected_dtype = torch.float32 if (op, name) == ("time", "out") else dtype
            assert actual[name].dtype == expected_dtype, name
            assert torch.isfinite(actual[name]).all(), f"{name}: non-finite values"
            kernel_error = max_error(actual[name], value)
            eager_error = max_error(eager[name], value)
            atol = 1e-4 * (value.abs().max().item() + 1.0)
            assert kernel_error <= 2 * eager_error + atol, (
                f"{name} {shape}: kernel error {kernel_error:.3g}, eager {eager_error:.3g}"
            )
        assert_padded_steps_zero(actual["dh"], inputs["lengths"])


def test_tf32_option_runs_and_is_off_by_default(monkeypatch):
    """The explicit TF32 option of the fp32 feature attention: off by default, on with the
    environment variable. Under the interpreter the dots stay exact, so this covers the
    plumbing; tests/test_gpu_kernels.py checks TF32's accuracy on a GPU."""
    assert not _utils.feature_attention_config(2, 9, 8, 8, torch.float32, DEVICE, True).tf32
    monkeypatch.setenv("SED_KERNELS_TRITON_TF32", "1")
    assert _utils.feature_attention_config(2, 9, 8, 8, torch.float32, DEVICE, True).tf32
    assert not _utils.feature_attention_config(2, 9, 8, 8, torch.bfloat16, DEVICE, True).tf32
    shape = (3, 37, 37, 19)
    inputs = make_inputs(shape, torch.float32, seed=13)
    expected = reference_results("feature", inputs, torch.float64)
    actual = kernel_results("feature", inputs, "heuristic")
    tolerance = 2e-6 if DEVICE.type == "cpu" else 2e-3  # exact NumPy / TF32 on a GPU
    for name, value in expected.items():
        scale = value.abs().max().item() + 1.0
        assert max_error(actual[name], value) <= tolerance * scale, name


# ---------------------------------------------------------------- padding and determinism


@pytest.mark.parametrize("op", ["time", "feature"])
def test_padding_content_is_never_read(op):
    """NaN or huge values in padded steps give bitwise the same results as zeros."""
    shape = (3, 37, 37, 19)
    results = [
        kernel_results(op, make_inputs(shape, torch.float32, seed=3, padding=padding), "split")
        for padding in (0.0, float("nan"), 1e30)
    ]
    for other in results[1:]:
        for name, value in results[0].items():
            assert torch.equal(value, other[name]), name


@pytest.mark.parametrize("op", ["time", "feature"])
def test_deterministic(op):
    """Two runs (with rows split across programs and partial reductions) are bitwise equal."""
    inputs = make_inputs((3, 37, 37, 19), torch.float32, seed=5)
    first = kernel_results(op, inputs, "split")
    second = kernel_results(op, inputs, "split")
    for name, value in first.items():
        assert torch.equal(value, second[name]), name


# ---------------------------------------------------------------------- float64 gradcheck


class _TimeAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, q, lengths):
        out, lse = time_attention.forward(h, q, lengths, time_config("split", h.shape[2]))
        ctx.save_for_backward(h, q, lengths, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        h, q, lengths, out, lse = ctx.saved_tensors
        dh, dq = time_attention.backward(grad_out.contiguous(), h, q, lengths, out, lse,
                                         time_config("split", h.shape[2]))
        return dh, dq, None


class _FeatureAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, W, V, lengths):
        ctx.save_for_backward(h, W, V, lengths)
        config = feature_config("split", W.shape[0], 4)
        return feature_attention.forward(h, W, V, lengths, config)

    @staticmethod
    def backward(ctx, grad_out):
        h, W, V, lengths = ctx.saved_tensors
        dh, dW, dV = feature_attention.backward(grad_out.contiguous(), h, W, V, lengths,
                                                feature_config("split", W.shape[0], 4))
        return dh, dW, dV, None


def test_gradcheck_float64():
    """Rows split across programs (8 steps each for time, 4 for feature attention)."""
    inputs = make_inputs((2, 9, 4, 3), torch.float64, seed=11, padding=0.0)
    h = inputs["h"].requires_grad_()
    q, W, V = (inputs[name].requires_grad_() for name in ("q", "W", "V"))
    lengths = inputs["lengths"]
    assert torch.autograd.gradcheck(lambda h, q: _TimeAttention.apply(h, q, lengths), (h, q))
    assert torch.autograd.gradcheck(
        lambda h, W, V: _FeatureAttention.apply(h, W, V, lengths), (h, W, V)
    )


# ---------------------------------------------------------------------- launch heuristics


@pytest.mark.parametrize("hidden,attention_dim", [(1, 1), (37, 19), (512, 512), (1024, 1024),
                                                  (3000, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_heuristic_configs_are_valid(hidden, attention_dim, dtype):
    """Block sizes cover H (time) and d_a (feature), are powers of two, and >= 16 for tl.dot."""
    batch, steps = 16, 3000
    for device in (torch.device("cpu"), DEVICE):
        time_cfg = _utils.time_attention_config(batch, steps, hidden, dtype, device)
        assert time_cfg.block_h >= hidden and time_cfg.block_h == _next_pow2(time_cfg.block_h)
        assert time_cfg.steps_per_split % time_cfg.block_t == 0
        for backward in (False, True):
            feat = _utils.feature_attention_config(batch, steps, hidden, attention_dim, dtype,
                                                   device, backward)
            assert feat.block_da >= attention_dim
            for block in (feat.block_t, feat.block_n, feat.block_da):
                assert block >= 16 and block == _next_pow2(block)
            assert feat.steps_per_split % feat.block_t == 0
            if device.type == "cpu":  # the interpreter runs programs one by one: no splits
                assert feat.num_splits(steps) == 1 and time_cfg.num_splits(steps) == 1


def test_clear_error_without_gpu_or_interpreter(monkeypatch):
    monkeypatch.setattr(_utils, "interpreter_active", lambda: False)
    h = torch.zeros(1, 1, 1)  # a CPU tensor
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        time_attention.forward(h, torch.zeros(1, 1), torch.ones(1, dtype=torch.int64))
