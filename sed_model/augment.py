"""Training-time augmentation of the frame features, and its names.

Five augmentations of the training batches (never at evaluation):

* ``speed``: speed perturbation before openSMILE (Ko et al., 2015): every utterance of a
  batch is, with equal chances, the original or its features extracted from the audio
  played :data:`SPEEDS` times as fast (tempo and pitch change together). The perturbed
  features are extracted once per corpus and cached
  (:class:`sed_model.features.FeatureConfig` ``speed``); they are normalised with the
  statistics of the original features.
* ``shift``: speaker-statistics shift, for ``global`` normalisation only: every utterance
  of a batch keeps, with chance :data:`SHIFT_KEEP`, its speaker's statistics, else it is
  given those of another training speaker drawn uniformly: its frames are mapped by the
  per-feature affine map that turns its speaker's frame mean and std into the other
  speaker's (:class:`SpeakerShift`), as if the speaker's level and range of every feature
  had been another's. It uses the fold's training speakers only, so it is not transductive;
  it targets what ``speaker`` normalisation removes (each speaker's offsets and spreads)
  without reading any test audio. Under ``speaker`` normalisation every speaker is already
  z-scored with its own statistics, the map would be the identity, and a config asking for
  it is refused.
* ``crop``: every utterance is cut to a random contiguous segment of ``r`` times its length,
  ``r`` uniform in [:data:`CROP_MIN`, 1] (at least one frame), moved to the start of the row;
  its length becomes the segment's. The ``lstm`` and ``general`` variants then read the
  state at the segment's last frame.
* ``mask``: SpecAugment-style masking (Park et al., 2019) of the features: :data:`TIME_MASKS`
  spans of up to :data:`TIME_MASK_SHARE` of the utterance's frames and :data:`FEATURE_MASKS`
  spans of up to :data:`FEATURE_MASK_WIDTH` adjacent features are set to 0, the training
  speakers' mean after the z-score.
* ``mixup``: mixup (Zhang et al., 2018): the batch is mixed with a random permutation of
  itself, ``x = lam x_a + (1 - lam) x_b`` frame by frame with one ``lam ~ Beta(a, a)``,
  ``a`` = :data:`MIXUP_ALPHA` (the paper's value for ImageNet), and the loss is
  ``lam CE(y_a) + (1 - lam) CE(y_b)``. A row's length becomes the longer of the two (the
  shorter one's padding is 0, the training speakers' mean after the z-score).

They apply in that order: speed, shift, crop, mask, mixup. The random draws of a step depend only
on the seed, the fold and the step (:func:`augmentation_rng`), so a resumed run augments as
an uninterrupted one; with no augmentation nothing is drawn and training is unchanged.

A *candidate* is one setting a nested selection may choose (``--set augment_candidates=...``):
``none`` or augmentations joined by ``+`` (``mask``, ``speed+mask+crop``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import SedError
from .features.normalization import speaker_statistics

AUGMENTATIONS = ("speed", "shift", "crop", "mask", "mixup")  # also the order in which they apply
SPEEDS = (0.9, 1.1)
SHIFT_KEEP = 0.5
# bound on a shift's per-feature scale sigma_t / sigma_s: a feature (nearly) constant over one
# speaker's frames would otherwise be stretched by orders of magnitude. EmoDB's scales lie in
# [0.26, 3.9] and RAVDESS's in [0.057, 17.5], so the bound changes nothing there.
MAX_SHIFT_SCALE = 32.0
CROP_MIN = 0.8
TIME_MASKS = 2
TIME_MASK_SHARE = 0.1
FEATURE_MASKS = 2
FEATURE_MASK_WIDTH = 10
MIXUP_ALPHA = 0.2


def check_augment(names) -> tuple[str, ...]:
    """``names`` as a tuple in the order they apply (:data:`AUGMENTATIONS`), ``("none",)`` as
    ``()`` (a preset's augmentation turned off); :class:`SedError` for an unknown or repeated
    name, or ``none`` beside another."""
    names = tuple(names)
    if "none" in names:
        if len(names) > 1:
            raise SedError(f"augmentation none cannot be combined with others; got "
                           f"{', '.join(names)}")
        return ()
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise SedError(f"unknown augmentation {unknown[0]!r}; expected any of "
                       f"{', '.join(AUGMENTATIONS)}")
    if len(set(names)) != len(names):
        raise SedError(f"augmentation listed twice: {', '.join(names)}")
    return tuple(n for n in AUGMENTATIONS if n in names)


def candidate_augment(candidate: str) -> tuple[str, ...]:
    """The augmentations of a candidate name: ``none`` -> (), ``mask+crop`` -> (crop, mask)."""
    if candidate == "none":
        return ()
    try:
        return check_augment(candidate.split("+"))
    except SedError as exc:
        raise SedError(f"augmentation candidate {candidate!r}: {exc}; a candidate is none or "
                       f"names of {', '.join(AUGMENTATIONS)} joined by +") from None


def needed_speeds(augment: tuple[str, ...], candidates: tuple[str, ...] | None) -> tuple:
    """The perturbed speeds whose features a run must extract (for ``augment`` or any of
    the ``candidates`` of a nested selection): :data:`SPEEDS` or ()."""
    every = [augment, *(candidate_augment(c) for c in candidates or ())]
    return SPEEDS if any("speed" in names for names in every) else ()


def speed_versions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Which version each of ``n`` utterances takes: 0 the original, k the k-th of SPEEDS."""
    return rng.integers(0, len(SPEEDS) + 1, n)


def augmentation_rng(seed: int, fold_index: int, step: int) -> np.random.Generator:
    """The generator of one step's augmentation draws (separate from the batch order's)."""
    return np.random.default_rng([seed, fold_index, step, 0xA06])


class SpeakerShift:
    """The maps, in normalised units, that give an utterance of training speaker ``s`` the
    frame mean and std of training speaker ``t``.

    With the global statistics ``(mu_g, sigma_g)`` and speaker ``s``'s ``(mu_s, sigma_s)``
    (per feature, raw units), a frame ``x = sigma_g z + mu_g`` becomes
    ``x' = (x - mu_s) sigma_t / sigma_s + mu_t``, so in normalised units
    ``z' = scale[s, t] z + offset[s, t]`` with ``scale = sigma_t / sigma_s`` and
    ``offset = ((mu_g - mu_s) scale + mu_t - mu_g) / sigma_g`` (the identity for ``s = t``).
    ``scale`` is clipped to [1 / :data:`MAX_SHIFT_SCALE`, :data:`MAX_SHIFT_SCALE`] (the mean
    still maps to ``mu_t``), so a feature constant over one speaker cannot blow up.
    """

    def __init__(self, means: np.ndarray, stds: np.ndarray, global_mean: np.ndarray,
                 global_std: np.ndarray) -> None:
        means, stds = np.asarray(means, np.float64), np.asarray(stds, np.float64)  # (K, D)
        global_mean, global_std = (np.asarray(a, np.float64) for a in (global_mean, global_std))
        scale = np.clip(stds[None, :, :] / stds[:, None, :],  # (K_s, K_t, D)
                        1 / MAX_SHIFT_SCALE, MAX_SHIFT_SCALE)
        offset = ((global_mean - means)[:, None, :] * scale + means[None, :, :]
                  - global_mean) / global_std  # (K_s, K_t, D)
        self.scale = torch.as_tensor(scale, dtype=torch.float32)
        self.offset = torch.as_tensor(offset, dtype=torch.float32)

    @classmethod
    def fit(cls, features, speakers, global_mean: np.ndarray, global_std: np.ndarray
            ) -> tuple[SpeakerShift, np.ndarray]:
        """The shift among the speakers of the raw (T_i, D) training ``features`` (one speaker
        id per utterance), and each utterance's speaker index (N,) into it."""
        stats = speaker_statistics(features, speakers)
        index = {speaker: k for k, speaker in enumerate(stats)}
        means = np.stack([m for m, _ in stats.values()])  # (K, D)
        stds = np.stack([s for _, s in stats.values()])  # (K, D)
        sources = np.array([index[s] for s in speakers], dtype=np.int64)
        return cls(means, stds, global_mean, global_std), sources

    @property
    def n_speakers(self) -> int:
        return self.scale.shape[0]

    def targets(self, sources: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Whose statistics each row takes: its own with chance SHIFT_KEEP, else another
        speaker's, uniformly (its own only when there is no other)."""
        k = self.n_speakers
        others = (sources + rng.integers(1, max(k, 2), len(sources))) % k
        return np.where(rng.random(len(sources)) < SHIFT_KEEP, sources, others)

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor, sources: np.ndarray,
                 rng: np.random.Generator) -> torch.Tensor:
        """``x`` (B, T, D) padded with row ``b`` spoken by training speaker ``sources[b]``
        -> every row's valid frames mapped to the statistics of its drawn target."""
        targets = self.targets(np.asarray(sources), rng)
        scale = self.scale[sources, targets].to(x.device, x.dtype)  # (B, D)
        offset = self.offset[sources, targets].to(x.device, x.dtype)  # (B, D)
        steps = torch.arange(x.shape[1], device=x.device)
        valid = (steps[None, :] < lengths[:, None].to(x.device))[..., None]  # (B, T, 1)
        return torch.where(valid, x * scale[:, None] + offset[:, None], x)


def random_crop(x: torch.Tensor, lengths: torch.Tensor,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random segment of every row: ``x`` (B, T, F) padded, ``lengths`` (B,) ->
    the segments moved to the start, zero-padded to the longest, and their lengths."""
    full = lengths.cpu().numpy()
    kept = np.maximum(1, np.round(full * rng.uniform(CROP_MIN, 1.0, len(full)))).astype(np.int64)
    starts = rng.integers(0, full - kept + 1)
    out = x.new_zeros((x.shape[0], int(kept.max()), x.shape[2]))
    for b, (start, n) in enumerate(zip(starts, kept)):
        out[b, :n] = x[b, start : start + n]
    return out, torch.as_tensor(kept, dtype=lengths.dtype, device=lengths.device)


def _span(rng: np.random.Generator, size: int, widest: int) -> slice:
    width = int(rng.integers(0, widest + 1))
    start = int(rng.integers(0, size - width + 1))
    return slice(start, start + width)


def mask_spans(x: torch.Tensor, lengths: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """``x`` (B, T, F) with time and feature spans of every row's valid frames set to 0."""
    x = x.clone()
    features = x.shape[2]
    for b, n in enumerate(lengths.tolist()):
        for _ in range(TIME_MASKS):
            x[b, _span(rng, n, int(TIME_MASK_SHARE * n))] = 0
        for _ in range(FEATURE_MASKS):
            x[b, :n, _span(rng, features, FEATURE_MASK_WIDTH)] = 0
    return x


def augment_batch(x: torch.Tensor, lengths: torch.Tensor, names: tuple[str, ...],
                  rng: np.random.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the augmentations of padded batches (crop, mask) among ``names`` to a training
    batch, drawing from ``rng`` (``speed`` chose the rows' versions before padding)."""
    if "crop" in names:
        x, lengths = random_crop(x, lengths, rng)
    if "mask" in names:
        x = mask_spans(x, lengths, rng)
    return x, lengths


@dataclass(frozen=True)
class Mixup:
    """How a batch was mixed: row ``b`` is ``lam`` of itself and ``1 - lam`` of row
    ``partner[b]``."""

    lam: float
    partner: torch.Tensor  # (B,) int64, a permutation of the rows

    def loss(self, loss_fn, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``lam loss_fn(logits, labels) + (1 - lam) loss_fn(logits, partners' labels)``."""
        return (self.lam * loss_fn(logits, labels)
                + (1.0 - self.lam) * loss_fn(logits, labels[self.partner]))


def mix_batch(x: torch.Tensor, lengths: torch.Tensor, rng: np.random.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, Mixup]:
    """``x`` (B, T, F) padded with zeros, ``lengths`` (B,) -> the mixed batch, every row's
    length the longer of its two, and the :class:`Mixup` the loss needs."""
    lam = float(rng.beta(MIXUP_ALPHA, MIXUP_ALPHA))
    partner = torch.as_tensor(rng.permutation(x.shape[0]), dtype=torch.int64, device=x.device)
    mixed = lam * x + (1.0 - lam) * x[partner]
    return mixed, torch.maximum(lengths, lengths[partner.to(lengths.device)]), Mixup(lam, partner)
