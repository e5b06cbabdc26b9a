"""The pieces a :class:`~sed_model.recipes.Recipe` chooses: optimizer, learning-rate
schedule, loss and the averaged model that is evaluated.

With the paper presets these reduce to Table 1: Adam with coupled L2, a constant rate,
plain cross-entropy, the trained weights themselves.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .recipes import Recipe


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """Adam with coupled L2 (the paper's) or AdamW with decoupled weight decay."""
    kind = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=recipe.lr, betas=recipe.betas,
                weight_decay=recipe.weight_decay)


def learning_rate(recipe: Recipe, step: int, total_steps: int) -> float:
    """The rate of optimizer step ``step`` (0-based) of ``total_steps``.

    ``constant``: ``lr``. ``cosine``: a linear warm-up over the first ``warmup`` share of the
    steps (from lr / warm-up steps), then ``lr * (1 + cos(pi * progress)) / 2`` down to 0
    at the last step. A function of the step alone, so a resumed run needs no state for it.
    """
    if recipe.schedule == "constant":
        return recipe.lr
    warmup_steps = math.ceil(recipe.warmup * total_steps)
    if step < warmup_steps:
        return recipe.lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_learning_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rate


def class_weights(labels: np.ndarray, n_classes: int, balanced: bool) -> torch.Tensor | None:
    """Inverse-frequency weights ``N / (K n_c)`` of the training labels (mean 1 over the
    utterances), or None (unweighted) when not ``balanced``. A class missing from the
    training split gets weight 0 (it never appears as a target)."""
    if not balanced:
        return None
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def summed_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
                label_smoothing: float) -> torch.Tensor:
    """The batch's summed cross-entropy (weighted per target class, label-smoothed); the
    caller divides by the global batch size."""
    if weights is not None:
        weights = weights.to(logits.device)
    return F.cross_entropy(logits.float(), labels, weight=weights, reduction="sum",
                           label_smoothing=label_smoothing)


def averaged_model(model: nn.Module, recipe: Recipe) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights (``ema_decay``), or None."""
    if recipe.ema_decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay))
