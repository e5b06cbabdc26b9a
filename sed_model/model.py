"""Attention-based dense LSTM (Xie et al., IEICE 2019, section 2) with its four variants.

:class:`DenseLSTMAttention` is the LSTM stack and the head; one subclass per variant builds the
dense layer's input (the rows of the paper's Tables 2 and 3), chosen by the variant's name
(``DenseLSTMAttention(n_classes, "time", ...)`` makes a :class:`TimeAttentionLSTM`):

* ``lstm``, :class:`LastStateLSTM`: ``last_N``, the last valid output of the top layer;
* ``general``, :class:`GeneralLSTM`: ``[last_1, ..., last_N]``, every layer's last output;
* ``time``, :class:`TimeAttentionLSTM`: ``[TimeAttn(h_1, q_1), ..., TimeAttn(h_N, q_N)]``, Eq. 5;
* ``feature``, :class:`FeatureAttentionLSTM`: ``[FeatAttn(h_1), ..., FeatAttn(h_N)]``, Eq. 6.

Choices where the paper is silent (see DESIGN.md section 1):

* The LSTM layers are stacked plainly (layer ``i`` reads layer ``i-1``); the *dense*
  connections are the skip connections from every layer into the dense layer (Eq. 7).
  Each layer is its own ``nn.LSTM`` so that every layer's whole output ``h_i`` is kept.
  The layers are unidirectional, so the output at a valid step never depends on the padded
  steps after it: on CPU the padded batch runs as is (faster there than packed sequences),
  and the attention ops and ``last_i`` never read padded steps. On CUDA the batch runs
  packed (cuDNN's packed kernels skip the padded work).
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
* Dropout (not in the paper; 0 unless asked, as in its presets): ``input_dropout`` on the
  input frames, ``layer_dropout`` on layer ``i``'s output where layer ``i+1`` reads it (the
  attention and ``last_i`` read the undropped ``h_i``), ``head_dropout`` on ``D``.
* Utterance normalisation (not in the paper; ``"none"`` unless asked): ``"mean"`` subtracts
  from every frame its utterance's mean over the valid frames, feature by feature
  (cepstral mean normalisation, SpeechBrain's ``sentence`` normalisation), and
  ``"mean_std"`` also divides by the utterance's standard deviation, floored as
  ``sqrt(var + UTTERANCE_VAR_FLOOR)``. It follows the corpus z-score, inside the model, so
  every window a checkpoint or an ONNX file classifies gets it; padded frames are set to 0.
  It removes a speaker's (or a channel's) offset and spread of every feature, utterance by
  utterance, without any statistics of the test speaker.
* The parameter names (``lstms.i.*``, ``time_W.i``, ``feat_W.i``, ``feat_V.i``, ``head.*``)
  and their order are those of the checkpoints; keep them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import sed_kernels
from sed_kernels import reference

UTTERANCE_NORMS = ("none", "mean", "mean_std")
# added to an utterance's per-feature variance before the square root: the features arrive
# z-scored over the corpus (unit variance), so a feature nearly constant over one utterance
# is scaled by at most 10 rather than blown up
UTTERANCE_VAR_FLOOR = 1e-2


def normalize_utterances(x: torch.Tensor, lengths: torch.Tensor, mode: str) -> torch.Tensor:
    """Padded frames ``x`` (B, T, D) with each row's mean over its ``lengths[b]`` valid frames
    subtracted (``mode`` ``"mean"``), and divided by its floored standard deviation
    (``"mean_std"``); padded frames become 0 (``"none"``: ``x`` unchanged). Computed in at
    least float32, returned in ``x``'s dtype."""
    if mode == "none":
        return x
    steps = torch.arange(x.shape[1], device=x.device)
    valid = (steps[None, :] < lengths[:, None])[..., None]  # (B, T, 1)
    h = torch.where(valid, x.to(torch.promote_types(x.dtype, torch.float32)), 0.0)
    n = lengths.clamp(min=1).to(h.dtype)[:, None, None]
    h = torch.where(valid, h - h.sum(1, keepdim=True) / n, 0.0)
    if mode == "mean_std":
        h = h / ((h * h).sum(1, keepdim=True) / n + UTTERANCE_VAR_FLOOR).sqrt()
    return h.to(x.dtype)


class DenseLSTMAttention(nn.Module):
    """Stack of LSTM layers whose outputs reach the dense layer (through attention).

    ``DenseLSTMAttention(n_classes, variant, ...)`` makes the subclass of ``variant``
    (:data:`MODEL_CLASSES`); a subclass may also be made directly, without ``variant``.

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

    variant: str = ""  # each subclass' name in VARIANTS

    def __new__(cls, *args, **kwargs):
        if cls is DenseLSTMAttention:
            variant = args[1] if len(args) > 1 else kwargs.get("variant") or "feature"
            if variant not in MODEL_CLASSES:
                raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
            cls = MODEL_CLASSES[variant]
        return super().__new__(cls)

    def __init__(
        self,
        n_classes: int,
        variant: str | None = None,
        cells: Sequence[int] = (256, 256),
        input_dim: int = 130,
        attention_dim: int | None = None,
        dense: int = 128,
        backend: str = "auto",
        input_dropout: float = 0.0,
        layer_dropout: float = 0.0,
        head_dropout: float = 0.0,
        utterance_norm: str = "none",
    ) -> None:
        super().__init__()
        if variant is not None and variant != self.variant:
            raise ValueError(f"{type(self).__name__} is variant {self.variant!r}; "
                             f"got variant {variant!r}")
        if not cells or any(int(c) < 1 for c in cells):
            raise ValueError(f"cells must be a non-empty list of positive sizes; got {list(cells)}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2; got {n_classes}")
        if utterance_norm not in UTTERANCE_NORMS:
            raise ValueError(f"utterance_norm must be one of {', '.join(UTTERANCE_NORMS)}; "
                             f"got {utterance_norm!r}")
        self.utterance_norm = utterance_norm
        self.cells = tuple(int(c) for c in cells)
        self.input_dim = int(input_dim)
        self.attention_dim = attention_dim
        self.backend = backend
        widths_in = (self.input_dim, *self.cells[:-1])
        self.lstms = nn.ModuleList(
            nn.LSTM(w_in, w_out, batch_first=True) for w_in, w_out in zip(widths_in, self.cells)
        )
        self.dropout_rates = (float(input_dropout), float(layer_dropout), float(head_dropout))
        self.input_dropout, self.layer_dropout, self.head_dropout = (
            nn.Dropout(p) for p in self.dropout_rates)
        self.add_attention_parameters()
        self.head = nn.Sequential(
            nn.Linear(self.dense_width(), dense), nn.ReLU(), nn.Linear(dense, n_classes)
        )

    # -------------------------------------------------------- what a variant defines
    def add_attention_parameters(self) -> None:
        """Create (and initialise) the variant's attention parameters; none by default."""

    def dense_width(self) -> int:
        """Width of ``D``: the sum of the layer sizes unless the variant says otherwise."""
        return sum(self.cells)

    def dense_from_layers(self, hs: list[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        """``D`` (B, dense_width) from every layer's output ``hs`` (Eq. 7)."""
        raise NotImplementedError

    def attention_from_layers(
        self, hs: list[torch.Tensor], lengths: torch.Tensor
    ) -> list[torch.Tensor]:
        """The attention weights per layer, by the eager reference formulas; none by default."""
        return []

    # ----------------------------------------------------------------------- layers
    def lstm_outputs(self, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output ``h_i`` (B, T, H_i); only steps ``t < lengths[b]`` are meaningful.

        ``x`` (B, T, input_dim) is padded along T; ``lengths`` (B,) holds the valid lengths.
        """
        total = x.shape[1]
        packed = x.device.type == "cuda"
        lengths_cpu = lengths.to("cpu", torch.int64) if packed else None
        outputs = []
        h = self.input_dropout(x)
        for i, lstm in enumerate(self.lstms):
            if i > 0:
                h = self.layer_dropout(h)  # what layer i reads; outputs keep h_{i-1} undropped
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

    def _layers(self, x: torch.Tensor, lengths: torch.Tensor):
        """(every layer's output, lengths on x's device) after checking ``x``'s shape."""
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"x must have shape (batch, steps, {self.input_dim}); got {tuple(x.shape)}"
            )
        lengths = lengths.to(x.device, torch.int64)
        x = normalize_utterances(x, lengths, self.utterance_norm)
        return self.lstm_outputs(x, lengths), lengths

    # ---------------------------------------------------------------------- outputs
    def dense_input(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The dense layer's input ``D`` (Eq. 7), (B, dense_width), with the model's backend."""
        return self.dense_from_layers(*self._layers(x, lengths))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes) for padded features ``x`` (B, T, 130) and ``lengths`` (B,)."""
        return self.head(self.head_dropout(self.dense_input(x, lengths)))

    def attention_weights(self, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """The attention weights per layer: (B, T) for ``time``, (B, T, H_i) for ``feature``
        (0 at padded steps), an empty list for ``lstm`` and ``general``."""
        return self.attention_from_layers(*self._layers(x, lengths))

    def forward_with_attention(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and :meth:`attention_weights`, from one pass through the LSTM layers."""
        hs, lengths = self._layers(x, lengths)
        logits = self.head(self.head_dropout(self.dense_from_layers(hs, lengths)))
        return logits, self.attention_from_layers(hs, lengths)

    def hyperparameters(self) -> dict:
        """The constructor arguments (minus ``n_classes``), as stored in checkpoints."""
        return {
            "variant": self.variant,
            "cells": list(self.cells),
            "input_dim": self.input_dim,
            "attention_dim": self.attention_dim,
            "dense": self.head[0].out_features,
            "backend": self.backend,
            "input_dropout": self.dropout_rates[0],
            "layer_dropout": self.dropout_rates[1],
            "head_dropout": self.dropout_rates[2],
            "utterance_norm": self.utterance_norm,
        }


class LastStateLSTM(DenseLSTMAttention):
    """``lstm``: ``D = last_N``, the top layer's output at the last valid step."""

    variant = "lstm"

    def dense_width(self) -> int:
        return self.cells[-1]

    def dense_from_layers(self, hs, lengths):
        return self.last_valid(hs[-1], lengths)  # (B, H_N)


class GeneralLSTM(DenseLSTMAttention):
    """``general``: ``D = [last_1, ..., last_N]``, every layer's last valid output."""

    variant = "general"

    def dense_from_layers(self, hs, lengths):
        return torch.cat([self.last_valid(h, lengths) for h in hs], dim=1)


class TimeAttentionLSTM(DenseLSTMAttention):
    """``time`` (Eq. 5): per layer, attention over time with the query
    ``q_i = last_N @ W_i``, ``W_i`` (H_N, H_i): ``D = [TimeAttn(h_i, q_i)]_i``."""

    variant = "time"

    def add_attention_parameters(self) -> None:
        top = self.cells[-1]  # H_N
        self.time_W = nn.ParameterList(nn.Parameter(torch.empty(top, h)) for h in self.cells)
        for W in self.time_W:
            nn.init.xavier_uniform_(W)

    def _queries(self, hs, lengths) -> list[torch.Tensor]:
        last_N = self.last_valid(hs[-1], lengths)  # (B, H_N)
        return [last_N @ W for W in self.time_W]  # (B, H_N) @ (H_N, H_i) -> (B, H_i)

    def dense_from_layers(self, hs, lengths):
        parts = [sed_kernels.time_attention(h, q, lengths, backend=self.backend)
                 for h, q in zip(hs, self._queries(hs, lengths))]
        return torch.cat(parts, dim=1)  # (B, sum_i H_i)

    def attention_from_layers(self, hs, lengths):
        return [reference.time_attention_with_weights(h, q, lengths)[1]  # (B, T)
                for h, q in zip(hs, self._queries(hs, lengths))]


class FeatureAttentionLSTM(DenseLSTMAttention):
    """``feature`` (Eq. 6): per layer and step, a softmax over the features,
    ``a_t = softmax(V_i tanh(W_i h_t))`` with ``W_i`` (d_a, H_i) and ``V_i`` (H_i, d_a);
    ``D = [sum_t a_t * h_t]_i`` over the valid steps."""

    variant = "feature"

    def add_attention_parameters(self) -> None:
        d_a = [self.attention_dim or h for h in self.cells]
        self.feat_W = nn.ParameterList(
            nn.Parameter(torch.empty(d, h)) for d, h in zip(d_a, self.cells)
        )
        self.feat_V = nn.ParameterList(
            nn.Parameter(torch.empty(h, d)) for d, h in zip(d_a, self.cells)
        )
        for p in (*self.feat_W, *self.feat_V):  # the order of the parameters' names
            nn.init.xavier_uniform_(p)

    def dense_from_layers(self, hs, lengths):
        parts = [sed_kernels.feature_attention(h, W, V, lengths, backend=self.backend)
                 for h, W, V in zip(hs, self.feat_W, self.feat_V)]
        return torch.cat(parts, dim=1)  # (B, sum_i H_i)

    def attention_from_layers(self, hs, lengths):
        return [reference.feature_attention_with_weights(h, W, V, lengths)[1]  # (B, T, H_i)
                for h, W, V in zip(hs, self.feat_W, self.feat_V)]


MODEL_CLASSES: dict[str, type[DenseLSTMAttention]] = {
    cls.variant: cls
    for cls in (LastStateLSTM, GeneralLSTM, TimeAttentionLSTM, FeatureAttentionLSTM)
}
VARIANTS: tuple[str, ...] = tuple(MODEL_CLASSES)
VARIANTS_WITH_ATTENTION: tuple[str, ...] = tuple(
    name for name, cls in MODEL_CLASSES.items()
    if cls.attention_from_layers is not DenseLSTMAttention.attention_from_layers
)
