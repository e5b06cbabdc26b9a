"""Figures: UAR curves (paper Figs. 2 and 3), confusion matrices, attention over a waveform,
class probabilities of a recording's windows over time.

All figures are drawn with matplotlib's Agg backend (no display needed) and saved as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

FRAME_SECONDS = 0.01  # ComParE_2016 LLD frames are 10 ms apart


def mean_curve(fold_histories: Sequence[Sequence[dict]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean held-out UAR over folds against step.

    Folds of different training-set sizes are evaluated at different steps, so each fold's
    curve is linearly interpolated onto the steps of the first fold, up to the shortest run.
    """
    curves = [(np.array([p["step"] for p in h]), np.array([p["uar"] for p in h]))
              for h in fold_histories]
    last = min(steps[-1] for steps, _ in curves)
    grid = curves[0][0][curves[0][0] <= last]
    return grid, np.mean([np.interp(grid, steps, uar) for steps, uar in curves], axis=0)


def plot_curves(histories: dict[str, Sequence[Sequence[dict]]], path: Path, title: str) -> None:
    """Held-out UAR against training step, one colour per model.

    ``histories[label]`` is a list of per-fold histories (lists of ``{"step", "uar"}``).
    A single fold is drawn as it is; several folds as thin lines and their mean in bold.
    """
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for color, (label, folds) in zip(plt.cm.tab10.colors, histories.items()):
        if len(folds) > 1 and len(histories) == 1:
            for h in folds:
                ax.plot([p["step"] for p in h], [p["uar"] for p in h], color=color,
                        alpha=0.25, linewidth=0.8)
        steps, uar = mean_curve(folds)
        suffix = f" (mean of {len(folds)} folds)" if len(folds) > 1 else ""
        ax.plot(steps, uar, color=color, linewidth=2, label=label + suffix)
    ax.set_xlabel("step")
    ax.set_ylabel("UAR on held-out speakers")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(confusion, class_names: Sequence[str], path: Path, title: str) -> None:
    """Confusion matrix: colour = row-normalised recall, text = counts."""
    counts = np.asarray(confusion, dtype=np.int64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 0.7 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                    color="white" if rates[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, label="recall")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def feature_attention_focus(weights: np.ndarray) -> np.ndarray:
    """Per-step focus of feature attention: ``1 - entropy(a_t) / log(H)`` for (T, H) weights.

    Each step's feature weights sum to 1 (softmax over features), so their mass over time
    is flat and says nothing; the entropy says how concentrated a step's attention is:
    0 = uniform over all H features, 1 = all weight on one feature.
    """
    a = np.clip(weights, 1e-12, 1.0)
    entropy = -(a * np.log(a)).sum(axis=1)
    return 1.0 - entropy / np.log(weights.shape[1])


def plot_attention(entries: Sequence[dict], path: Path) -> None:
    """Attention weights over each utterance's waveform.

    Each entry: ``name``, ``signal`` (samples), ``sample_rate``, ``variant`` and ``weights``
    (one array per LSTM layer: (T,) time-attention weights, or (T, H) feature-attention
    weights), ``label`` (predicted class). Time attention: the weight of each 10 ms frame
    drawn over the waveform. Feature attention: the per-step focus
    (:func:`feature_attention_focus`) over the waveform, and a heatmap of the weights of
    every feature of the top layer against time.
    """
    rows = []
    for e in entries:
        rows.append(("wave", e))
        if e["variant"] == "feature":
            rows.append(("heatmap", e))
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 2.6 * len(rows)), squeeze=False)
    for ax, (kind, e) in zip(axes[:, 0], rows):
        seconds = len(e["signal"]) / e["sample_rate"]
        if kind == "heatmap":
            top = e["weights"][-1]  # (T, H)
            image = ax.imshow(top.T, aspect="auto", origin="lower", cmap="magma",
                              extent=(0, len(top) * FRAME_SECONDS, 0, top.shape[1]))
            ax.set_ylabel("feature of top layer")
            ax.set_xlabel("time (s)")
            fig.colorbar(image, ax=ax, pad=0.01, label="weight")
            continue
        t = np.arange(len(e["signal"])) / e["sample_rate"]
        ax.plot(t, e["signal"], color="0.7", linewidth=0.5)
        ax.set_xlim(0, seconds)
        ax.set_ylabel("amplitude")
        ax.set_xlabel("time (s)")
        ax.set_title(f"{e['name']}: predicted {e['label']} ({e['variant']} attention)", fontsize=10)
        twin = ax.twinx()
        for layer, w in enumerate(e["weights"], start=1):
            curve = w if w.ndim == 1 else feature_attention_focus(w)
            frames = (np.arange(len(curve)) + 0.5) * FRAME_SECONDS
            twin.plot(frames, curve, linewidth=1.2, label=f"layer {layer}")
        twin.set_ylabel("time weight" if e["variant"] == "time" else "feature focus")
        twin.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def shade_silence(segments: Sequence, axes: Sequence) -> int:
    """Shade, on each of ``axes``, the windows without speech (label None): one hop wide
    around each one's centre (the whole window when there is one). Returns how many."""
    centres = [(s.start + s.end) / 2 for s in segments]
    hop = centres[1] - centres[0] if len(centres) > 1 else segments[0].end - segments[0].start
    silent = [c for c, s in zip(centres, segments) if s.label is None]
    for ax in axes:
        for index, centre in enumerate(silent):
            ax.axvspan(centre - hop / 2, centre + hop / 2, color="0.85", zorder=0, linewidth=0,
                       label="no speech" if index == 0 and ax is axes[-1] else None)
    return len(silent)


def plot_timeline(results: Sequence, path: Path) -> None:
    """Per file (a :class:`sed_model.api.Prediction` with ``segments`` and ``envelope``): the
    waveform on top (its min/max envelope, downsampled for long files) and the class
    probabilities of the windows below (stacked, drawn at each window's centre), on a shared
    time axis. Windows without speech (no label) are shaded grey on both, one hop wide around
    their centre, and have no probabilities."""
    fig, axes = plt.subplots(2 * len(results), 1, figsize=(10, 4.2 * len(results)),
                             squeeze=False, gridspec_kw={"height_ratios": [1, 2] * len(results)})
    for index, r in enumerate(results):
        wave, probs = axes[2 * index, 0], axes[2 * index + 1, 0]
        probs.sharex(wave)
        if r.envelope is not None:
            t, low, high = r.envelope.arrays()
            wave.fill_between(t, low, high, color="0.55", linewidth=0)
        wave.set_ylabel("amplitude")
        spoken = sum(s.label is not None for s in r.segments)
        wave.set_title(f"{Path(r.file).name}: {r.label or 'no speech'} overall (mean of "
                       f"{spoken} windows with speech of {len(r.segments)})", fontsize=10)
        wave.tick_params(labelbottom=False)
        classes = list(r.probabilities) or next(
            (list(s.probabilities) for s in r.segments if s.probabilities), [])
        centres = [(s.start + s.end) / 2 for s in r.segments]
        stacked = np.array([[s.probabilities.get(c, 0.0) for s in r.segments] for c in classes])
        shade_silence(r.segments, (wave, probs))
        if len(centres) == 1:  # one window: a flat band over it
            centres = [r.segments[0].start, r.segments[0].end]
            stacked = np.repeat(stacked, 2, axis=1)
        if classes:  # (none when no window has speech)
            probs.stackplot(centres, stacked, labels=classes,
                            colors=plt.cm.tab10.colors[:len(classes)], alpha=0.85)
        probs.set_ylim(0, 1)
        probs.set_xlim(0, r.duration)
        probs.set_ylabel("class probability")
        probs.set_xlabel("time (s)")
        probs.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
