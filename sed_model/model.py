"""Attention-based dense LSTM (Xie et al., IEICE 2019, section 2) with its four variants.

One class, :class:`DenseLSTMAttention`, builds the rows of the paper's Tables 2 and 3:

========== ======================================================================
variant    input ``D`` of the dense layer (paper Eq. 7)
========== ======================================================================
``lstm``   ``last_N``: the last valid output of the top LSTM layer
``general``  ``[last_1, ..., last_N]``: the last valid output of every layer
``time``     ``[TimeAttn(h_1, q_1), ..., TimeAttn(h_N, q_N)]``, Eq. 5
``feature``  ``[FeatAttn(h_1), ..., FeatAttn(h_N)]``, Eq. 6
========== ======================================================================

Choices where the paper is silent (see DESIGN.md section 1):

* The LSTM layers are stacked plainly (layer ``i`` reads layer ``i-1``); the *dense*
  connections are the skip connections from every layer into the dense layer (Eq. 7).
  Each layer is its own ``nn.LSTM`` so that every layer's whole output ``h_i`` is kept.
  The layers are unidirectional, so the output at a valid step never depends on the padded
  steps after it: on CPU the padded batch runs as is (PyTorch's packed-sequence backward
  on CPU spends most of its time filling slices, 3-6x slower than the padded LSTM), and
  the attention ops and ``last_i`` never read padded steps. On CUDA the batch runs packed
  (cuDNN's packed kernels skip the padded work).
* ``last_i`` is the output at the last *valid* step of each row, not the padded end.
* Time attention (Eq. 5) uses Luong's "general" score with the query
  ``q_i = last_N @ W_i`` (``W_i``: (H_N, H_i)), a softmax over valid steps and the
  attention-weighted sum of ``h_i`` over time.
* Feature attention (Eq. 6) is a per-step softmax over the *feature* axis,
  ``a_t = softmax(V_i tanh(W_i h_t))`` with ``W_i``: (d_a, H_i), ``V_i``: (H_i, d_a),
  and Eq. 7's ``sum W_f,i o h_i`` is the sum over valid steps of ``a_t * h_t``.
  ``d_a = H_i`` unless ``attention_dim`` is given.
* Attention matrices are initialised with Xavier-uniform; ``nn.LSTM`` and ``nn.Linear``
  keep PyTorch's default initialisation.
* Head (Table 1): ``Linear(D, 128) -> ReLU -> Linear(128, n_classes)``; the softmax is in
  the cross-entropy loss, so :meth:`DenseLSTMAttention.forward` returns logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import sed_kernels
from sed_kernels import reference

VARIANTS: tuple[str, ...] = ("lstm", "general", "time", "feature")
VARIANTS_WITH_ATTENTION: tuple[str, ...] = ("time", "feature")


class DenseLSTMAttention(nn.Module):
    """Stack of LSTM layers whose outputs reach the dense layer through attention.

    Args:
        n_classes: number of emotion classes (the logits' width).
        variant: one of :data:`VARIANTS`.
        cells: hidden size ``H_i`` of each LSTM layer, bottom to top (Table 1's "Lstm cells").
        input_dim: feature width per frame (130 = 65 ComParE LLDs + 65 deltas).
        attention_dim: ``d_a`` of feature attention; ``None`` means ``d_a = H_i`` per layer.
        dense: width of the hidden dense layer (Table 1: 128).
        backend: ``sed_kernels`` backend for the attention ops (``"auto"``, ``"reference"``,
            ``"cpu"``, ``"triton"``, ``"cuda"``).
    """

    def __init__(
        self,
        n_classes: int,
        variant: str = "feature",
        cells: Sequence[int] = (256, 256),
        input_dim: int = 130,
        attention_dim: int | None = None,
        dense: int = 128,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
        if not cells or any(int(c) < 1 for c in cells):
            raise ValueError(f"cells must be a non-empty list of positive sizes; got {list(cells)}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2; got {n_classes}")
        self.variant = variant
        self.cells = tuple(int(c) for c in cells)
        self.input_dim = int(input_dim)
        self.attention_dim = attention_dim
        self.backend = backend

        widths_in = (self.input_dim, *self.cells[:-1])
        self.lstms = nn.ModuleList(
            nn.LSTM(w_in, w_out, batch_first=True) for w_in, w_out in zip(widths_in, self.cells)
        )
        top = self.cells[-1]  # H_N
        if variant == "time":
            # Eq. 5: W_i of shape (H_N, H_i), so that q_i = last_N @ W_i has shape (B, H_i).
            self.time_W = nn.ParameterList(nn.Parameter(torch.empty(top, h)) for h in self.cells)
        elif variant == "feature":
            # Eq. 6: W_i (d_a, H_i) and V_i (H_i, d_a).
            d_a = [attention_dim or h for h in self.cells]
            self.feat_W = nn.ParameterList(
                nn.Parameter(torch.empty(d, h)) for d, h in zip(d_a, self.cells)
            )
            self.feat_V = nn.ParameterList(
                nn.Parameter(torch.empty(h, d)) for d, h in zip(d_a, self.cells)
            )
        for name, p in self.named_parameters():
            if name.startswith(("time_W", "feat_W", "feat_V")):
                nn.init.xavier_uniform_(p)

        dense_in = top if variant == "lstm" else sum(self.cells)  # width of D (Eq. 7)
        self.head = nn.Sequential(
            nn.Linear(dense_in, dense), nn.ReLU(), nn.Linear(dense, n_classes)
        )

    # ------------------------------------------------------------------ layers
    def lstm_outputs(self, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output ``h_i`` (B, T, H_i); only steps ``t < lengths[b]`` are meaningful.

        ``x`` (B, T, input_dim) is padded along T; ``lengths`` (B,) holds the valid lengths.
        """
        total = x.shape[1]
        packed = x.device.type == "cuda"
        lengths_cpu = lengths.to("cpu", torch.int64) if packed else None
        outputs = []
        h = x
        for lstm in self.lstms:
            if packed:
                seq = pack_padded_sequence(h, lengths_cpu, batch_first=True, enforce_sorted=False)
                h, _ = pad_packed_sequence(lstm(seq)[0], batch_first=True, total_length=total)
            else:
                h, _ = lstm(h)
            outputs.append(h)  # (B, T, H_i)
        return outputs

    @staticmethod
    def last_valid(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``last[b] = h[b, lengths[b] - 1]``: (B, T, H) -> (B, H)."""
        rows = torch.arange(h.shape[0], device=h.device)
        return h[rows, lengths - 1]

    def dense_input(
        self, x: torch.Tensor, lengths: torch.Tensor, *, with_weights: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The dense layer's input ``D`` (Eq. 7), and the attention weights when asked.

        With ``with_weights`` the eager reference formulas (which return the weights) run
        instead of the model's backend; the weights are (B, T) per layer for ``time`` and
        (B, T, H_i) per layer for ``feature``, empty for ``lstm`` and ``general``.
        """
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"x must have shape (batch, steps, {self.input_dim}); got {tuple(x.shape)}"
            )
        lengths = lengths.to(x.device, torch.int64)
        hs = self.lstm_outputs(x, lengths)  # [h_1 .. h_N], each (B, T, H_i)
        last_N = self.last_valid(hs[-1], lengths)  # (B, H_N)
        weights: list[torch.Tensor] = []
        if self.variant == "lstm":
            return last_N, weights  # (B, H_N)
        if self.variant == "general":
            return torch.cat([self.last_valid(h, lengths) for h in hs], dim=1), weights

        parts = []
        for i, h in enumerate(hs):
            if self.variant == "time":
                q = last_N @ self.time_W[i]  # (B, H_N) @ (H_N, H_i) -> (B, H_i)
                if with_weights:
                    out, a = reference.time_attention_with_weights(h, q, lengths)  # a (B, T)
                    weights.append(a)
                else:
                    out = sed_kernels.time_attention(h, q, lengths, backend=self.backend)
            else:
                W, V = self.feat_W[i], self.feat_V[i]  # (d_a, H_i), (H_i, d_a)
                if with_weights:
                    out, a = reference.feature_attention_with_weights(h, W, V, lengths)
                    weights.append(a)  # (B, T, H_i)
                else:
                    out = sed_kernels.feature_attention(h, W, V, lengths, backend=self.backend)
            parts.append(out)  # (B, H_i)
        return torch.cat(parts, dim=1), weights  # (B, sum_i H_i)

    # ----------------------------------------------------------------- outputs
    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes) for padded features ``x`` (B, T, 130) and ``lengths`` (B,)."""
        d, _ = self.dense_input(x, lengths)
        return self.head(d)

    def forward_with_attention(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the attention weights per layer (see :meth:`dense_input`)."""
        d, weights = self.dense_input(x, lengths, with_weights=True)
        return self.head(d), weights

    def hyperparameters(self) -> dict:
        """The constructor arguments (minus ``n_classes``), as stored in checkpoints."""
        return {
            "variant": self.variant,
            "cells": list(self.cells),
            "input_dim": self.input_dim,
            "attention_dim": self.attention_dim,
            "dense": self.head[0].out_features,
            "backend": self.backend,
        }
