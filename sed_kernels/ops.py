"""Public entry points of the two fused ops, and their ``torch.library`` custom ops.

``time_attention`` and ``feature_attention`` validate their inputs, resolve the backend and
either run the eager reference (backend ``reference``) or one of the custom ops below, which
take the backend name as an argument so that every fused backend shares one op, one fake
(meta) implementation and one autograd formula:

    sed_kernels::time_attention_fwd(h, q, lengths, backend) -> (out, lse)
    sed_kernels::time_attention_bwd(grad_out, h, q, lengths, out, lse, backend) -> (dh, dq)
    sed_kernels::feature_attention_fwd(h, W, V, lengths, backend) -> (out, saved)
    sed_kernels::feature_attention_bwd(grad_out, saved, h, W, V, lengths, backend) -> (dh, dW, dV)

``time_attention_fwd`` returns ``out`` in the accumulator dtype (float32; float64 for
float64 inputs) and the public function rounds it to the input dtype: the backward's
``D = grad_out . out`` cancels against ``grad_out . h_t``, and with ``out`` rounded to bf16
that cancellation would lose all digits of ``dq``. ``feature_attention_fwd`` returns what a
backend keeps for its backward (``saved``; empty for the backends that recompute).

Inference on plain tensors (nothing requires a gradient, nothing is being traced or compiled)
calls the backend's forward directly, the same function the custom op runs: the custom op's
dispatch wraps every backend call in ``torch._dynamo.disable``, whose first call imports
``torch._dynamo`` (seconds of start-up in a process that only classifies a file).

Under ``torch.autocast`` the floating inputs are cast to the autocast dtype first (the ops
then run in bf16/fp16 with fp32 accumulation), as PyTorch's own matmul-like ops do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import reference
from ._launch import accumulator_dtype
from ._validation import check_feature_attention, check_time_attention
from .backends import kernels, resolve_backend


def _autocast(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Floating tensors cast to the autocast dtype of their device when autocast is on.

    Runs before validation (the model's bf16 h meets its fp32 parameters there); anything
    that is not a floating tensor passes through for the checks to name.
    """
    def floating(t: object) -> bool:
        return isinstance(t, Tensor) and t.is_floating_point()

    device_type = next((t.device.type for t in tensors if floating(t)), None)
    if device_type is None or not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(t.to(dtype) if floating(t) else t for t in tensors)


def _plain_inference(*tensors: Tensor) -> bool:
    """Whether the custom op's dispatch can be skipped (module docstring): plain tensors or
    parameters (no fake or functional tensors of a tracer), no graph being compiled, and no
    gradient to record."""
    if torch.compiler.is_compiling():
        return False
    if any(type(t) not in (Tensor, torch.nn.Parameter) for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


# --------------------------------------------------------------------------- time attention


def _time_attention_forward(h: Tensor, q: Tensor, lengths: Tensor,
                            backend: str) -> tuple[Tensor, Tensor]:
    return kernels(backend, "time_attention").forward(h, q, lengths)


@torch.library.custom_op("sed_kernels::time_attention_fwd", mutates_args=())
def _time_attention_fwd(
    h: Tensor, q: Tensor, lengths: Tensor, backend: str
) -> tuple[Tensor, Tensor]:
    return _time_attention_forward(h, q, lengths, backend)


@_time_attention_fwd.register_fake
def _(h, q, lengths, backend):
    batch, _, hidden = h.shape
    accumulator = accumulator_dtype(h.dtype)
    return h.new_empty(batch, hidden, dtype=accumulator), h.new_empty(batch, dtype=accumulator)


@torch.library.custom_op("sed_kernels::time_attention_bwd", mutates_args=())
def _time_attention_bwd(
    grad_out: Tensor, h: Tensor, q: Tensor, lengths: Tensor, out: Tensor, lse: Tensor, backend: str
) -> tuple[Tensor, Tensor]:
    return kernels(backend, "time_attention").backward(grad_out, h, q, lengths, out, lse)


@_time_attention_bwd.register_fake
def _(grad_out, h, q, lengths, out, lse, backend):
    return h.new_empty(h.shape), torch.empty_like(q)


def _time_attention_setup_context(ctx, inputs, output):
    h, q, lengths, backend = inputs
    out, lse = output
    ctx.save_for_backward(h, q, lengths, out, lse)
    ctx.backend = backend


def _time_attention_backward(ctx, grad_out, grad_lse):
    # lse is an internal statistic of the op, never returned to users: grad_lse is unused.
    h, q, lengths, out, lse = ctx.saved_tensors
    grad_out = grad_out.to(h.dtype).contiguous()
    dh, dq = _time_attention_bwd(grad_out, h, q, lengths, out, lse, ctx.backend)
    return dh, dq, None, None


_time_attention_fwd.register_autograd(
    _time_attention_backward, setup_context=_time_attention_setup_context
)


def time_attention(h: Tensor, q: Tensor, lengths: Tensor, *, backend: str = "auto") -> Tensor:
    """Time attention (paper Eq. 5): softmax over the valid steps of ``h . q``, weighted sum of
    ``h``.

    Args:
        h: (B, T, H) layer outputs, padded along T; any strides.
        q: (B, H) one query per row (the model uses ``last_N @ W_i``).
        lengths: (B,) integer tensor on h's device, values in [1, T] (checked when on the
            CPU; on a GPU only with SED_KERNELS_SYNC_CHECKS=1, see ``_validation``).
        backend: ``"auto"``, ``"reference"``, ``"triton"``, ``"cuda"`` or ``"cpu"``.

    Returns:
        (B, H) tensor in h's dtype.
    """
    h, q = _autocast(h, q)
    check_time_attention(h, q, lengths)
    name = resolve_backend(backend, h.device)
    if name == "reference":
        return reference.time_attention(h, q, lengths)
    if h.shape[0] == 0:
        return h.sum(dim=1)  # (0, H), still attached to the autograd graph
    forward = _time_attention_forward if _plain_inference(h, q) else _time_attention_fwd
    out, _ = forward(h, q.contiguous(), lengths.to(torch.int64).contiguous(), name)
    return out.to(h.dtype)


# ------------------------------------------------------------------------ feature attention


# A backend's feature-attention module has ``forward`` and a recomputing ``backward``; it may
# also keep intermediates for the backward (``forward_for_backward``, ``backward_from_saved``
# and ``saved_shape``, as the cpu backend does). ``saved`` is empty for the others.
def _saves_intermediates(module) -> bool:
    return hasattr(module, "forward_for_backward")


def _feature_attention_forward(h: Tensor, W: Tensor, V: Tensor, lengths: Tensor,
                               backend: str) -> tuple[Tensor, Tensor]:
    module = kernels(backend, "feature_attention")
    if _saves_intermediates(module):
        return module.forward_for_backward(h, W, V, lengths)
    return module.forward(h, W, V, lengths), h.new_empty(0, dtype=accumulator_dtype(h.dtype))


@torch.library.custom_op("sed_kernels::feature_attention_fwd", mutates_args=())
def _feature_attention_fwd(
    h: Tensor, W: Tensor, V: Tensor, lengths: Tensor, backend: str
) -> tuple[Tensor, Tensor]:
    return _feature_attention_forward(h, W, V, lengths, backend)


@_feature_attention_fwd.register_fake
def _(h, W, V, lengths, backend):
    module = kernels(backend, "feature_attention")
    batch, steps, hidden = h.shape
    shape = (0,)
    if _saves_intermediates(module):  # rows: sum(lengths), a data-dependent size
        shape = module.saved_shape(torch.library.get_ctx().new_dynamic_size(), hidden, W.shape[0])
    return h.new_empty(batch, hidden), h.new_empty(shape, dtype=accumulator_dtype(h.dtype))


@torch.library.custom_op("sed_kernels::feature_attention_bwd", mutates_args=())
def _feature_attention_bwd(
    grad_out: Tensor, saved: Tensor, h: Tensor, W: Tensor, V: Tensor, lengths: Tensor, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    module = kernels(backend, "feature_attention")
    if _saves_intermediates(module):
        return module.backward_from_saved(grad_out, saved, h, W, V, lengths)
    return module.backward(grad_out, h, W, V, lengths)


@_feature_attention_bwd.register_fake
def _(grad_out, saved, h, W, V, lengths, backend):
    return h.new_empty(h.shape), torch.empty_like(W), torch.empty_like(V)


def _feature_attention_setup_context(ctx, inputs, output):
    h, W, V, lengths, backend = inputs
    ctx.save_for_backward(h, W, V, lengths, output[1])
    ctx.backend = backend


def _feature_attention_backward(ctx, grad_out, grad_saved):
    # saved is internal to the op, never returned to users: grad_saved is unused.
    h, W, V, lengths, saved = ctx.saved_tensors
    dh, dW, dV = _feature_attention_bwd(grad_out.contiguous(), saved, h, W, V, lengths, ctx.backend)
    return dh, dW, dV, None, None


_feature_attention_fwd.register_autograd(
    _feature_attention_backward, setup_context=_feature_attention_setup_context
)


def feature_attention(
    h: Tensor, W: Tensor, V: Tensor, lengths: Tensor, *, backend: str = "auto"
) -> Tensor:
    """Feature attention (paper Eq. 6, 7): ``sum_{t < len} softmax_features(V tanh(W h_t)) * h_t``.

    Args:
        h: (B, T, H) layer outputs, padded along T; any strides.
        W: (d_a, H) first projection.
        V: (H, d_a) second projection.
        lengths: (B,) integer tensor on h's device, values in [1, T] (checked when on the
            CPU; on a GPU only with SED_KERNELS_SYNC_CHECKS=1, see ``_validation``).
        backend: ``"auto"``, ``"reference"``, ``"triton"``, ``"cuda"`` or ``"cpu"``.

    Returns:
        (B, H) tensor in h's dtype.
    """
    h, W, V = _autocast(h, W, V)
    check_feature_attention(h, W, V, lengths)
    name = resolve_backend(backend, h.device)
    if name == "reference":
        return reference.feature_attention(h, W, V, lengths)
    if h.shape[0] == 0:
        return h.sum(dim=1)  # (0, H), still attached to the autograd graph
    forward = _feature_attention_forward if _plain_inference(h, W, V) else _feature_attention_fwd
    out, _ = forward(h, W.contiguous(), V.contiguous(), lengths.to(torch.int64).contiguous(), name)
    return out
