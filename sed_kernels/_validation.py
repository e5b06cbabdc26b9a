"""Input checks shared by every backend of both ops.

Each failed check raises ``TypeError`` (wrong kind of tensor) or ``ValueError`` (wrong
shape or value) with a message naming the argument, what was seen and what was expected.
The checks on the *values* of ``lengths`` read the tensor. They run when ``lengths`` is on
the CPU. On a GPU reading it would be a host-device sync on every call, so there they are
skipped unless ``SED_KERNELS_SYNC_CHECKS=1`` is set (for debugging: then the same error,
at the cost of a sync per call); they are also skipped while ``torch.compile`` traces. The
kernels never trust the values: each clamps ``lengths[b]`` to ``[0, T]``, so a bad length
never reads or writes outside the buffers (a length of 0 gives NaN, as the reference does).
"""

from __future__ import annotations

import os

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _require_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _require_float(name: str, tensor: torch.Tensor) -> None:
    if tensor.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), "
            f"got dtype {tensor.dtype}"
        )


def _require_rank(name: str, tensor: torch.Tensor, rank: int, layout: str) -> None:
    if tensor.dim() != rank:
        raise ValueError(
            f"{name} must have {rank} dimensions {layout}, got shape {tuple(tensor.shape)}"
        )


def _check_values(lengths: torch.Tensor) -> bool:
    """Whether to read ``lengths`` on the host: CPU tensors, or any with SED_KERNELS_SYNC_CHECKS=1;
    never while torch.compile traces."""
    if torch.compiler.is_compiling():
        return False
    return lengths.device.type == "cpu" or os.environ.get("SED_KERNELS_SYNC_CHECKS") == "1"


def _check_h_and_lengths(h: object, lengths: object) -> tuple[torch.Tensor, torch.Tensor]:
    h = _require_tensor("h", h)
    lengths = _require_tensor("lengths", lengths)
    _require_float("h", h)
    _require_rank("h", h, 3, "(B, T, H)")
    batch, steps, _ = h.shape
    if steps == 0:
        raise ValueError(f"h has T = 0 time steps (shape {tuple(h.shape)}); expected T >= 1")
    if h.shape[2] == 0:
        raise ValueError(f"h has H = 0 features (shape {tuple(h.shape)}); expected H >= 1")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
    _require_rank("lengths", lengths, 1, "(B,)")
    if lengths.shape[0] != batch:
        raise ValueError(
            f"lengths has {lengths.shape[0]} entries but h has batch size B = {batch}"
        )
    if lengths.device != h.device:
        raise ValueError(
            f"lengths is on {lengths.device} but h is on {h.device}; "
            "put lengths on the same device as h"
        )
    if batch > 0 and _check_values(lengths):
        low, high = int(lengths.min()), int(lengths.max())
        if low < 1 or high > steps:
            raise ValueError(
                f"lengths must lie in [1, T] = [1, {steps}], got values from {low} to {high}"
            )
    return h, lengths


def _check_same_dtype_and_device(h: torch.Tensor, **others: torch.Tensor) -> None:
    for name, tensor in others.items():
        if tensor.dtype != h.dtype:
            raise TypeError(
                f"{name} has dtype {tensor.dtype} but h has dtype {h.dtype}; "
                "all floating inputs must share one dtype"
            )
        if tensor.device != h.device:
            raise ValueError(f"{name} is on {tensor.device} but h is on {h.device}")


def check_time_attention(h: object, q: object, lengths: object) -> None:
    """Validate ``time_attention(h (B, T, H), q (B, H), lengths (B,))``."""
    h, lengths = _check_h_and_lengths(h, lengths)
    q = _require_tensor("q", q)
    _require_float("q", q)
    _require_rank("q", q, 2, "(B, H)")
    if tuple(q.shape) != (h.shape[0], h.shape[2]):
        raise ValueError(
            f"q must have shape (B, H) = ({h.shape[0]}, {h.shape[2]}) to match h "
            f"{tuple(h.shape)}, got {tuple(q.shape)}"
        )
    _check_same_dtype_and_device(h, q=q)


def check_feature_attention(h: object, W: object, V: object, lengths: object) -> None:
    """Validate ``feature_attention(h (B, T, H), W (d_a, H), V (H, d_a), lengths (B,))``."""
    h, lengths = _check_h_and_lengths(h, lengths)
    W = _require_tensor("W", W)
    V = _require_tensor("V", V)
    _require_float("W", W)
    _require_float("V", V)
    _require_rank("W", W, 2, "(d_a, H)")
    _require_rank("V", V, 2, "(H, d_a)")
    hidden = h.shape[2]
    if W.shape[1] != hidden:
        raise ValueError(
            f"W must have shape (d_a, H) with H = {hidden} to match h {tuple(h.shape)}, "
            f"got {tuple(W.shape)}"
        )
    if tuple(V.shape) != (hidden, W.shape[0]):
        raise ValueError(
            f"V must have shape (H, d_a) = ({hidden}, {W.shape[0]}) to chain with W "
            f"{tuple(W.shape)}, got {tuple(V.shape)}"
        )
    if W.shape[0] == 0:
        raise ValueError(f"W has d_a = 0 rows (shape {tuple(W.shape)}); expected d_a >= 1")
    _check_same_dtype_and_device(h, W=W, V=V)
