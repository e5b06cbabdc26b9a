"""Every backend of both ops against the eager reference (the specification).

Backends run on the GPU when there is one; without one, on CPU tensors (the Triton kernels
through Triton's interpreter, see conftest.py). Fresh outputs of the kernels are poisoned
with NaN so unwritten elements show; padded steps of ``h`` are poisoned with NaN so a kernel
that reads them shows.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import (
    BACKENDS,
    DEVICE,
    FUSED,
    assert_close_to_reference,
    make_inputs,
    pad_with,
    run_op,
)

import sed_kernels
from sed_kernels import reference
from sed_kernels.ops import _feature_attention_fwd, _time_attention_fwd

LOW_PRECISION = [torch.float16, torch.bfloat16]

# (B, T, H, d_a): B = 1 and T = 1, odd H and d_a, T not a multiple of any block size.
SHAPES = [(1, 1, 1, 1), (3, 7, 37, 19), (2, 70, 64, 48), (4, 33, 20, 33)]


# ------------------------------------------------------------------------ against the spec


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION], ids=str)
@pytest.mark.parametrize("op", ["time", "feature"])
def test_backend_matches_reference(op, backend, shape, dtype):
    assert_close_to_reference(
        op, backend, make_inputs(shape, torch.float32, seed=sum(shape)), dtype
    )


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("op", ["time", "feature"])
def test_random_shapes_and_lengths(op, backend):
    gen = torch.Generator().manual_seed(1234)
    for trial in range(4):
        shape = tuple(int(torch.randint(1, hi, (1,), generator=gen)) for hi in (6, 90, 70, 70))
        inputs = make_inputs(shape, torch.float32, seed=trial)
        assert_close_to_reference(op, backend, inputs, torch.float32)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("op", ["time", "feature"])
def test_large_logits_do_not_overflow(op, backend):
    """Scores far beyond exp's range (fp32 overflows past ~88) must stay finite."""
    inputs = make_inputs((3, 29, 24, 16), torch.float32, seed=5, scale=30.0)
    if op == "feature":
        inputs["V"] = inputs["V"] * 400
    assert_close_to_reference(op, backend, inputs, torch.float32)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("op", ["time", "feature"])
def test_non_contiguous_h(op, backend):
    inputs = make_inputs((3, 21, 30, 17), torch.float32, seed=3)
    # A (T, B, 2H) buffer seen as (B, T, H): time-major, as from a time-major LSTM, and
    # every second feature, so that no stride of h is the contiguous one.
    time_major = inputs["h"].transpose(0, 1)  # (T, B, H)
    wide = torch.stack([time_major, time_major], dim=-1).flatten(-2).transpose(0, 1)[..., ::2]
    assert not wide.is_contiguous()
    torch.testing.assert_close(wide, inputs["h"])
    ref_out, ref_grads = run_op(op, "reference", inputs)
    fused_out, fused_grads = run_op(op, backend, {**inputs, "h": wide})
    torch.testing.assert_close(fused_out, ref_out, rtol=1e-5, atol=1e-5)
    for name in ref_grads:
        torch.testing.assert_close(fused_grads[name], ref_grads[name], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- padding


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["time", "feature"])
def test_padded_steps_change_nothing(op, backend):
    inputs = make_inputs((4, 19, 24, 12), torch.float32, seed=7)
    # The reference multiplies by zero weights, so it sees finite garbage; fused kernels must
    # never read padded steps, so they see NaN.
    garbage = 1e3 if backend == "reference" else float("nan")
    clean_out, clean_grads = run_op(
        op, backend, {**inputs, "h": pad_with(inputs["h"], inputs["lengths"], 0.0)}
    )
    dirty_out, dirty_grads = run_op(
        op, backend, {**inputs, "h": pad_with(inputs["h"], inputs["lengths"], garbage)}
    )
    torch.testing.assert_close(dirty_out, clean_out, rtol=0, atol=0)
    for name in clean_grads:
        torch.testing.assert_close(dirty_grads[name], clean_grads[name], rtol=0, atol=0)
    padded = ~reference.valid_mask(inputs["lengths"], inputs["h"].shape[1])
    assert (dirty_grads["h"][padded] == 0).all(), "padded steps must get exactly zero gradient"


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_attention_equals_sdpa(backend):
    """One query, scale 1 and a key-padding mask: exactly scaled_dot_product_attention."""
    inputs = make_inputs(
        (5, 23, 16, 1), torch.float64 if backend == "reference" else torch.float32, seed=11
    )
    h, q, lengths = inputs["h"], inputs["q"], inputs["lengths"]
    mask = reference.valid_mask(lengths, h.shape[1])  # (B, T)
    expected = F.scaled_dot_product_attention(
        q[:, None, None, :], h[:, None], h[:, None], attn_mask=mask[:, None, None, :], scale=1.0
    )[:, 0, 0]
    actual = sed_kernels.time_attention(h, q, lengths, backend=backend)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- gradcheck, determinism


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_float64(backend):
    inputs = make_inputs((2, 5, 6, 4), torch.float64, seed=13)
    lengths = inputs["lengths"]
    assert torch.autograd.gradcheck(
        lambda h, q: sed_kernels.time_attention(h, q, lengths, backend=backend),
        (inputs["h"].requires_grad_(), inputs["q"].requires_grad_()),
    )
    assert torch.autograd.gradcheck(
        lambda h, W, V: sed_kernels.feature_attention(h, W, V, lengths, backend=backend),
        (inputs["h"], inputs["W"].requires_grad_(), inputs["V"].requires_grad_()),
    )


@pytest.mark.parametrize("backend", FUSED)
def test_feature_attention_backward_is_deterministic(backend):
    inputs = make_inputs((6, 45, 32, 24), torch.float32, seed=17)
    first = run_op("feature", backend, inputs)[1]
    second = run_op("feature", backend, inputs)[1]
    for name in first:
        assert torch.equal(first[name], second[name]), f"d{name} differs between identical runs"


# ------------------------------------------------------------ custom ops and torch.compile


@pytest.mark.parametrize("backend", FUSED)
def test_opcheck(backend):
    inputs = make_inputs((3, 9, 12, 7), torch.float32, seed=19)
    h, lengths = inputs["h"].requires_grad_(), inputs["lengths"]
    torch.library.opcheck(_time_attention_fwd, (h, inputs["q"].requires_grad_(), lengths, backend))
    torch.library.opcheck(
        _feature_attention_fwd,
        (h, inputs["W"].requires_grad_(), inputs["V"].requires_grad_(), lengths, backend),
    )


# inductor once per fused backend (the cpu one has a data-dependent saved size).
COMPILE_CASES = [(backend, "aot_eager") for backend in BACKENDS] + [
    (backend, "inductor") for backend in {str(b): b for b in reversed(FUSED)}.values()
]


@pytest.mark.parametrize("backend, compiler", COMPILE_CASES)
def test_torch_compile_fullgraph(backend, compiler):
    """aot_eager checks the fake implementations and autograd registration on every backend;
    one inductor case checks that the default compiler treats the custom ops as opaque."""
    inputs = make_inputs((3, 11, 16, 8), torch.float32, seed=23)

    def loss(h, q, W, V, lengths):
        time = sed_kernels.time_attention(h, q, lengths, backend=backend)
        feature = sed_kernels.feature_attention(h, W, V, lengths, backend=backend)
        return (time * feature).sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend=compiler)
    leaves = [inputs[n].clone().requires_grad_() for n in ("h", "q", "W", "V")]
    eager_leaves = [leaf.detach().clone().requires_grad_() for leaf in leaves]
    compiled_value = compiled(*leaves, inputs["lengths"])
    eager_value = loss(*eager_leaves, inputs["lengths"])
    compiled_value.backward()
    eager_value.backward()
    torch.testing.assert_close(compiled_value, eager_value)
    for leaf, eager_leaf in zip(leaves, eager_leaves):
        torch.testing.assert_close(leaf.grad, eager_leaf.grad)


# ------------------------------------------------------------------------- API and input


def test_available_backends_always_has_reference():
    assert "reference" in sed_kernels.available_backends()
    assert set(sed_kernels.available_backends()) <= set(sed_kernels.BACKEND_NAMES)


def test_environment_variable_overrides_auto(monkeypatch):
    from sed_kernels.backends import resolve_backend

    monkeypatch.setenv("SED_KERNELS_BACKEND", "reference")
    assert resolve_backend("auto", DEVICE) == "reference"
    monkeypatch.setenv("SED_KERNELS_BACKEND", "bogus")
    with pytest.raises(ValueError, match="SED_KERNELS_BACKEND.*'bogus'"):
        resolve_backend("auto", DEVICE)


def test_auto_prefers_a_fused_backend_when_built():
    from sed_kernels.backends import resolve_backend

    # The package always builds _cpu (test_native_build checks it) and depends on Triton
    # on Linux x86-64, so auto must find a fused backend on either device.
    expected = {"cpu": "cpu", "cuda": "triton"}[DEVICE.type]
    assert resolve_backend("auto", DEVICE) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_returns_empty(backend):
    inputs = make_inputs((1, 4, 6, 3), torch.float32)
    h, lengths = inputs["h"][:0], inputs["lengths"][:0]
    assert sed_kernels.time_attention(h, inputs["q"][:0], lengths, backend=backend).shape == (0, 6)
    out = sed_kernels.feature_attention(h, inputs["W"], inputs["V"], lengths, backend=backend)
    assert out.shape == (0, 6)


def _bad_inputs():
    x = make_inputs((2, 5, 6, 3), torch.float32)
    h, q, W, V, lengths = x["h"], x["q"], x["W"], x["V"], x["lengths"]
    other_device = torch.device("meta")
    return [
        # (op, args, exception, message fragment)
        (
            "time",
            (h[0], q, lengths),
            ValueError,
            r"h must have 3 dimensions \(B, T, H\), got shape \(5, 6\)",
        ),
        ("time", (h, q[:1], lengths), ValueError, r"q must have shape \(B, H\) = \(2, 6\)"),
        ("time", (h, q[:, :4], lengths), ValueError, r"got \(2, 4\)"),
        (
            "time",
            (h, q.double(), lengths),
            TypeError,
            "q has dtype torch.float64 but h has dtype torch.float32",
        ),
        ("time", (h.long(), q, lengths), TypeError, "h must be a floating tensor"),
        (
            "time",
            (h, q, lengths.float()),
            TypeError,
            "lengths must be an integer tensor, got dtype torch.float32",
        ),
        (
            "time",
            (h, q, lengths[:1]),
            ValueError,
            "lengths has 1 entries but h has batch size B = 2",
        ),
        (
            "time",
            (h, q, torch.tensor([0, 3], device=DEVICE)),
            ValueError,
            r"lengths must lie in \[1, T\] = \[1, 5\], got values from 0 to 3",
        ),
        ("time", (h, q, torch.tensor([6, 3], device=DEVICE)), ValueError, "got values from 3 to 6"),
        ("time", (h, q, lengths.to(other_device)), ValueError, "lengths is on meta but h is on"),
        ("time", (h[:, :0], q, lengths), ValueError, "T = 0 time steps"),
        ("time", ("h", q, lengths), TypeError, "h must be a torch.Tensor, got str"),
        (
            "feature",
            (h, W[:, :4], V, lengths),
            ValueError,
            r"W must have shape \(d_a, H\) with H = 6",
        ),
        (
            "feature",
            (h, W, V[:, :2], lengths),
            ValueError,
            r"V must have shape \(H, d_a\) = \(6, 3\) to chain with W",
        ),
        ("feature", (h, W, V.T, lengths), ValueError, "to chain with W"),
        ("feature", (h, W[None], V, lengths), ValueError, r"W must have 2 dimensions \(d_a, H\)"),
        ("feature", (h, W.half(), V, lengths), TypeError, "W has dtype torch.float16"),
        ("feature", (h, W, V, lengths[None]), ValueError, r"lengths must have 1 dimensions \(B,\)"),
    ]


@pytest.mark.parametrize("op, args, error, message", _bad_inputs())
def test_bad_input_is_named(op, args, error, message, monkeypatch):
    # Values of CUDA lengths are checked only on request (reading them syncs the device).
    monkeypatch.setenv("SED_KERNELS_SYNC_CHECKS", "1")
    fn = sed_kernels.time_attention if op == "time" else sed_kernels.feature_attention
    with pytest.raises(error, match=message):
        fn(*args)


def test_unknown_backend_is_named():
    x = make_inputs((2, 5, 6, 3), torch.float32)
    with pytest.raises(ValueError, match="backend is 'fast'; expected 'auto' or one of"):
        sed_kernels.time_attention(x["h"], x["q"], x["lengths"], backend="fast")


def test_weights_variants_agree_with_outputs():
    x = make_inputs((3, 8, 5, 4), torch.float64)
    out, weights = reference.time_attention_with_weights(x["h"], x["q"], x["lengths"])
    torch.testing.assert_close(
        weights.sum(dim=1), torch.ones(3, dtype=torch.float64, device=DEVICE)
    )
    torch.testing.assert_close(out, reference.time_attention(x["h"], x["q"], x["lengths"]))
    out, weights = reference.feature_attention_with_weights(x["h"], x["W"], x["V"], x["lengths"])
    valid = reference.valid_mask(x["lengths"], 8)
    torch.testing.assert_close(weights.sum(dim=-1), valid.double())
    torch.testing.assert_close(
        out, reference.feature_attention(x["h"], x["W"], x["V"], x["lengths"])
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_runs_in_the_autocast_dtype(backend):
    """Under autocast, fp32 parameters meeting a bf16 h are cast, not rejected as mixed dtypes."""
    x = make_inputs((3, 9, 8, 5), torch.float32, seed=29)
    h = x["h"].to(torch.bfloat16)  # as an LSTM under autocast would give
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        time = sed_kernels.time_attention(h, x["q"], x["lengths"], backend=backend)
        feature = sed_kernels.feature_attention(h, x["W"], x["V"], x["lengths"], backend=backend)
    assert time.dtype == feature.dtype == torch.bfloat16
    expected = reference.feature_attention(h, x["W"].bfloat16(), x["V"].bfloat16(), x["lengths"])
    torch.testing.assert_close(feature, expected, atol=2e-2, rtol=2e-2)
