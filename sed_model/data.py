"""From a corpus to padded, normalised, length-bucketed training batches.

:func:`load_dataset` reads a corpus (``sed_model.corpora.load_corpus``), extracts the frame
features of every utterance (``sed_model.features.extract_corpus``: cached, parallel, with a
progress bar) into the corpus' feature store (:mod:`sed_model.features.store`: one
memory-mapped file per feature configuration, shared by every process that trains on it) and
drops the utterances the extractor could not use (it warns about each one and counts them;
``strict=True`` turns them into an error). Folds are made afterwards on the utterances kept,
so fold indices always point at usable features.

Nothing here copies the corpus: a :class:`Split` normalises the rows of a batch when the
batch is made, so a process holds the batch it trains on and the pages of the store it is
reading, whatever the size of the corpus.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .corpora import Corpus, load_corpus
from .errors import SedError
from .features import FeatureConfig, Normalizer
from .features.store import Frames, corpus_frames, frame_lengths, select_rows
from .splits import Fold
from .vad import speech_span


@dataclass
class Dataset:
    """Frame features of a corpus' usable utterances.

    ``features[i]`` is (T_i, 130) float32 (read-only rows of the feature store, or any
    sequence of arrays); ``labels[i]`` indexes ``classes``.
    """

    corpus: str
    loader: Corpus  # gives the default protocol to make_folds
    classes: tuple[str, ...]
    utterances: list  # sed_model.corpora.Utterance, in corpus order
    features: Sequence[np.ndarray]
    labels: np.ndarray  # (N,) int64
    skipped: int  # utterances the feature extractor could not use
    # speed -> (T_i', 130) frames of every utterance played that much faster (augment "speed")
    speed_features: dict[float, Sequence[np.ndarray]] = field(default_factory=dict)
    # this dataset with the quiet at each utterance's edges cut away (trim_edge_quiet)
    trimmed: Dataset | None = field(default=None, repr=False, compare=False)

    @property
    def speakers(self) -> list[str]:
        return [u.speaker for u in self.utterances]


def load_dataset(
    corpus_name: str,
    data_dir: str | Path | None,
    *,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    strict: bool = False,
    progress: bool = True,
    speeds: Sequence[float] = (),
) -> Dataset:
    """Load ``corpus_name`` from ``data_dir`` and extract the features of all utterances;
    with ``speeds`` also those of the speed-perturbed audio (an utterance whose perturbed
    audio gives no features keeps its original ones in that version)."""
    corpus, utterances = load_corpus(corpus_name, Path(data_dir) if data_dir else None)
    if not utterances:
        raise SedError(f"corpus {corpus_name!r} at {data_dir} has no utterances")
    options = dict(cache_dir=cache_dir, workers=workers, progress=progress, strict=strict)
    frames = corpus_frames([u.path for u in utterances], **options)
    kept = np.flatnonzero(frame_lengths(frames) > 0)
    if not len(kept):
        raise SedError(f"none of the {len(utterances)} files of {corpus_name!r} could be used")
    features = frames.subset(kept)
    class_index = {name: i for i, name in enumerate(corpus.classes)}
    speed_features = {
        speed: corpus_frames([utterances[i].path for i in kept], config=FeatureConfig(speed=speed),
                             fallback=features, **options)
        for speed in speeds}
    return Dataset(
        corpus=corpus.name,
        loader=corpus,
        classes=tuple(corpus.classes),
        utterances=[utterances[i] for i in kept],
        features=features,
        labels=np.array([class_index[utterances[i].label] for i in kept], dtype=np.int64),
        skipped=len(utterances) - len(kept),
        speed_features=speed_features,
    )


def trim_frames(frames: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
    """Each utterance's frames from just before its first speech frame to just after its
    last (:func:`sed_model.vad.speech_span`): views of ``frames``, no copy."""
    spans = np.array([speech_span(np.asarray(f)) for f in frames], dtype=np.int64).reshape(-1, 2)
    if isinstance(frames, Frames):
        return Frames(frames.data, frames.starts + spans[:, 0], frames.starts + spans[:, 1],
                      frames.mapping)
    return [f[start:stop] for f, (start, stop) in zip(frames, spans)]


def trim_edge_quiet(dataset: Dataset) -> Dataset:
    """``dataset`` with the quiet before and after each utterance's speech cut away, in the
    original frames and every speed-perturbed version (each by its own speech frames)."""
    if dataset.trimmed is None:  # made once, then shared by every fold that trims
        dataset.trimmed = dataclasses.replace(
            dataset, features=trim_frames(dataset.features),
            speed_features={s: trim_frames(f) for s, f in dataset.speed_features.items()})
    return dataset.trimmed


def check_training_split(dataset: Dataset, fold: Fold) -> None:
    """:class:`SedError` when a fold cannot be trained: no files or a single class."""
    if not fold.train:
        raise SedError(f"fold {fold.name!r}: the training split has no usable files")
    if not fold.test:
        raise SedError(f"fold {fold.name!r}: the test split has no usable files")
    present = sorted({dataset.classes[int(dataset.labels[i])] for i in fold.train})
    if len(present) < 2:
        raise SedError(
            f"fold {fold.name!r}: the training split has a single class ({present[0]}); "
            f"need at least 2 of {', '.join(dataset.classes)}"
        )


@dataclass
class Split:
    """One side of a fold, ready to batch: its utterances' raw frames, normalised batch by
    batch (each with its speaker's statistics under a ``speaker`` normaliser)."""

    frames: Sequence[np.ndarray]  # each (T_i, 130) float32, not normalised
    speakers: list[str]
    normalizer: Normalizer
    lengths: np.ndarray  # (N,) int64
    labels: torch.Tensor  # (N,) int64
    # per speed, the utterances' perturbed frames (normalised like the original), if any
    speed_frames: tuple[Sequence[np.ndarray], ...] = ()

    def __len__(self) -> int:
        return len(self.frames)

    def row(self, index: int, version: int = 0) -> torch.Tensor:
        """Utterance ``index`` normalised (T, 130): the original (``version`` 0) or its
        ``version``-th speed-perturbed version."""
        frames = self.frames if version == 0 else self.speed_frames[version - 1]
        return torch.from_numpy(self.normalizer(frames[index], self.speakers[index]))

    def batch(self, indices, device, versions=None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded features (B, T_max, 130), lengths (B,) and labels (B,) of ``indices``;
        ``versions[j]`` > 0 takes row j's ``speed_frames[versions[j] - 1]`` instead."""
        if versions is None:
            versions = np.zeros(len(indices), dtype=np.int64)
        rows = [self.row(int(i), int(v)) for i, v in zip(indices, versions)]
        x = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, T_max, 130)
        lengths = torch.as_tensor([len(r) for r in rows], dtype=torch.int64)
        return x.to(device), lengths.to(device), self.labels[indices].to(device)


def make_split(dataset: Dataset, indices, normalizer: Normalizer,
               speeds: Sequence[float] = ()) -> Split:
    """The utterances ``indices`` of ``dataset``, to be normalised with ``normalizer``; with
    ``speeds``, their perturbed versions too (:class:`SedError` when the dataset was loaded
    without them)."""
    indices = np.asarray(indices, dtype=np.int64)
    missing = [s for s in speeds if s not in dataset.speed_features]
    if missing:
        raise SedError(f"augmentation speed needs the features of the audio at speed "
                       f"{missing[0]}; load the dataset with speeds={tuple(speeds)}")
    frames = select_rows(dataset.features, indices)
    speakers = dataset.speakers
    return Split(
        frames=frames,
        speakers=[speakers[i] for i in indices],
        normalizer=normalizer,
        lengths=frame_lengths(frames),
        labels=torch.as_tensor(dataset.labels[indices], dtype=torch.int64),
        speed_frames=tuple(select_rows(dataset.speed_features[s], indices) for s in speeds),
    )


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Batches in one pass over the training split (the last batch may be smaller)."""
    return math.ceil(n_train / batch_size)


def epoch_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket_batches: int = 8
) -> list[np.ndarray]:
    """One epoch of length-bucketed batches of indices into ``lengths``.

    The utterances are shuffled, cut into buckets of ``bucket_batches`` batches, sorted by
    length inside each bucket (so a batch holds utterances of similar length and little
    padding) and cut into batches; the order of the batches is shuffled again. Every
    utterance appears exactly once per epoch. The order depends only on ``rng``, which is
    what makes a resumed run take the same batches as an uninterrupted one.
    """
    order = rng.permutation(len(lengths))
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), bucket):
        chunk = order[start : start + bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def evaluation_batches(lengths: np.ndarray, batch_size: int = 64) -> list[np.ndarray]:
    """Batches of indices sorted by length (least padding), for evaluation."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
