"""Eager PyTorch formulas of the two attention ops: the specification.

Every fast backend (Triton, CUDA, C++/OpenMP) is tested against these functions. They
use plain differentiable PyTorch, so autograd of these formulas *is* the reference
backward. Shapes: ``h`` (B, T, H) padded along T, ``lengths`` (B,) integers in [1, T].
Step ``t`` of row ``b`` is valid when ``t < lengths[b]``; padded steps never influence
the result and receive zero gradient.

Arithmetic runs in the input dtype, as an eager PyTorch model would; the low-precision
tests compare a kernel's error with this same-dtype error against an fp32 reference.
"""

from __future__ import annotations

import torch


def valid_mask(lengths: torch.Tensor, num_steps: int) -> torch.Tensor:
    """(B, T) boolean mask, True where ``t < lengths[b]``."""
    steps = torch.arange(num_steps, device=lengths.device)
    return steps[None, :] < lengths[:, None]


def time_attention_with_weights(
    h: torch.Tensor, q: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Time attention (paper Eq. 5) and its weights.

    ``s[b, t] = h[b, t] . q[b]``; ``a = softmax over valid t``; ``out[b] = sum_t a[b, t] h[b, t]``.

    Returns ``out`` (B, H) and the attention weights ``a`` (B, T), zero on padded steps.
    """
    mask = valid_mask(lengths, h.shape[1])  # (B, T)
    scores = torch.einsum("bth,bh->bt", h, q)  # (B, T)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=1)  # (B, T), exactly 0 where masked
    out = torch.einsum("bt,bth->bh", weights, h)  # (B, H)
    return out, weights


def time_attention(h: torch.Tensor, q: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Time attention output (B, H); see :func:`time_attention_with_weights`."""
    return time_attention_with_weights(h, q, lengths)[0]


def feature_attention_with_weights(
    h: torch.Tensor, W: torch.Tensor, V: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature attention (paper Eq. 6, 7) and its weights.

    For each valid step: ``u_t = tanh(W h_t)`` (d_a), ``s_t = V u_t`` (H),
    ``a_t = softmax over features of s_t`` (H); ``out[b] = sum_{t < len} a_t * h_t``.

    ``W`` is (d_a, H), ``V`` is (H, d_a). Returns ``out`` (B, H) and the per-step feature
    weights ``a`` (B, T, H), zero on padded steps.
    """
    mask = valid_mask(lengths, h.shape[1])  # (B, T)
    u = torch.tanh(h @ W.T)  # (B, T, d_a)
    scores = u @ V.T  # (B, T, H)
    weights = torch.softmax(scores, dim=-1)  # (B, T, H), softmax over features
    weights = weights * mask[..., None].to(weights.dtype)  # padded steps get weight 0
    out = (weights * h).sum(dim=1)  # (B, H)
    return out, weights


def feature_attention(
    h: torch.Tensor, W: torch.Tensor, V: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Feature attention output (B, H); see :func:`feature_attention_with_weights`."""
    return feature_attention_with_weights(h, W, V, lengths)[0]
