"""z-score normalisation of frame features: ``global`` (pooled training statistics) or
``speaker`` (each speaker's own statistics).

The statistics are those of scikit-learn's :class:`~sklearn.preprocessing.StandardScaler` fed
one utterance at a time (``partial_fit``: frame-weighted mean and population std over all
frames, in float64), computed by :class:`RunningMoments` with the same arithmetic, so that
``predict`` runs without importing scikit-learn. :class:`Normalizer` adds what StandardScaler
does not do:

- ``mode="speaker"``: every speaker is z-scored with the mean/std of that speaker's own frames,
  the test speakers too. A test speaker's statistics come from its unlabelled audio
  (:meth:`Normalizer.with_speakers`): no label is read, but the test audio is, so the mode is
  transductive. This is the usual practice of speaker-independent emotion recognition
  (Schuller et al.'s benchmarks); results under it must say so, and every results table names
  the mode. For a recording of an unknown speaker (``predict``),
  :meth:`Normalizer.new_speaker` fits one set of statistics on the frames given (see there);
- a threshold for constant features: a feature whose std is below ``MIN_STD`` (1e-6) is
  centred but not scaled (StandardScaler leaves alone only a spread within float64 round-off
  and would blow up a feature that is constant up to float32 rounding);
- a state of plain lists (:meth:`Normalizer.state_dict`) that checkpoints loaded with
  ``torch.load(weights_only=True)`` can hold; a fitted StandardScaler is a pickle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from sed_model.errors import SedError
from sed_model.features.store import select_rows

MODES = ("global", "speaker")


class RunningMoments:
    """Frame-weighted mean and population variance (D,) of finite (T, D) arrays given one at
    a time, in float64.

    The arithmetic is that of ``StandardScaler.partial_fit`` (scikit-learn's
    ``_incremental_mean_and_var``: each array's sums and its corrected two-pass variance,
    merged with the running ones by Chan, Golub and LeVeque's update), operation for
    operation, so the results are bit for bit the same (tests/test_lean_predict.py checks it).
    """

    def __init__(self) -> None:
        self.count = 0  # frames so far
        self.mean: np.ndarray | float = 0.0
        self.var: np.ndarray | float = 0.0

    def add(self, x: np.ndarray) -> None:
        """Add the rows of ``x`` (T, D)."""
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(-1, x.shape[-1])
        last_count = np.full(x.shape[1], self.count, dtype=np.int64)
        last_sum = self.mean * last_count
        new_sum = np.sum(x, axis=0)
        new_count = np.full(x.shape[1], float(x.shape[0]))  # float64, as sklearn's
        count = last_count + new_count
        temp = x - new_sum / new_count
        correction = np.sum(temp, axis=0)
        temp **= 2
        new_unnormalized = np.sum(temp, axis=0)
        new_unnormalized -= correction**2 / new_count
        with np.errstate(divide="ignore", invalid="ignore"):
            last_over_new = last_count / new_count
            unnormalized = (self.var * last_count + new_unnormalized
                            + last_over_new / count * (last_sum / last_over_new - new_sum) ** 2)
        first = last_count == 0
        unnormalized[first] = new_unnormalized[first]
        self.mean, self.var = (last_sum + new_sum) / count, unnormalized / count
        self.count += x.shape[0]


def _mean_std(features: Sequence[np.ndarray], min_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame-weighted mean and std (D,) of (T_i, D) arrays; std < ``min_std`` becomes 1."""
    moments = RunningMoments()
    for x in features:
        moments.add(x)
    std = np.sqrt(moments.var)
    return moments.mean, np.where(std < min_std, 1.0, std)


def speaker_statistics(features: Sequence[np.ndarray], speakers: Sequence[str]) -> dict:
    """{speaker: (mean, std)} (D,) over each speaker's utterances, sorted by speaker (every
    utterance read when its speaker's turn comes: a store's rows are never all held)."""
    grouped: dict[str, list[int]] = defaultdict(list)
    for index, speaker in enumerate(speakers):
        grouped[speaker].append(index)
    return {s: _mean_std(select_rows(features, rows), Normalizer.MIN_STD)
            for s, rows in sorted(grouped.items())}


class Normalizer:
    """z-score normalisation, ``(x - mean) / std`` per feature.

    mode="global": one mean/std over all training frames, applied to every utterance.
    mode="speaker": one mean/std per speaker; :meth:`fit` computes the training speakers',
    :meth:`with_speakers` adds those of other (test) speakers from their unlabelled audio.
    The pooled training statistics are kept in both modes (``mean``, ``std``).

    Typical use in a fold::

        normalizer = Normalizer.fit_fold(features, fold, speakers, mode)
        normalizer = normalizer.with_speakers(test_features, test_speakers)  # speaker mode
        x = normalizer(features[i], speakers[i])
    """

    MODES = MODES
    MIN_STD = 1e-6

    def __init__(self, mode: str, mean: np.ndarray, std: np.ndarray,
                 per_speaker: dict | None = None):
        self._check_mode(mode)
        self.mode = mode
        self.mean = np.asarray(mean, dtype=np.float32)  # (D,)
        self.std = np.asarray(std, dtype=np.float32)  # (D,)
        self.per_speaker = {
            speaker: (np.asarray(m, dtype=np.float32), np.asarray(s, dtype=np.float32))
            for speaker, (m, s) in (per_speaker or {}).items()
        }

    @classmethod
    def _check_mode(cls, mode: str) -> None:
        if mode not in cls.MODES:
            raise SedError(f"normalisation mode {mode!r} is unknown; expected one of "
                           f"{', '.join(cls.MODES)}")

    @classmethod
    def fit(
        cls, features: Sequence[np.ndarray], speakers: Sequence[str] | None = None,
        mode: str = "global",
    ) -> Normalizer:
        """Fit on the given (training) utterances; features: list of (T_i, D) arrays."""
        cls._check_mode(mode)
        if not features:
            raise SedError("cannot fit normalisation statistics on an empty training set")
        if mode == "speaker" and (speakers is None or len(speakers) != len(features)):
            raise SedError("per-speaker normalisation needs one speaker id per utterance")
        per_speaker = speaker_statistics(features, speakers) if mode == "speaker" else {}
        return cls(mode, *_mean_std(features, cls.MIN_STD), per_speaker)

    @classmethod
    def fit_fold(
        cls,
        features: Sequence[np.ndarray | None],
        fold,
        speakers: Sequence[str] | None = None,
        mode: str = "global",
    ) -> Normalizer:
        """Fit on ``fold.train`` only (features and speakers indexed like the utterance list;
        skipped utterances, None, are left out)."""
        train = [i for i in fold.train if features[i] is not None]
        chosen_speakers = None if speakers is None else [speakers[i] for i in train]
        return cls.fit(select_rows(features, train), chosen_speakers, mode)

    def with_speakers(self, features: Sequence[np.ndarray],
                      speakers: Sequence[str]) -> Normalizer:
        """A copy that also has statistics for the speakers of ``features`` it lacks (from
        their unlabelled audio; the speakers it has keep theirs). ``global`` mode: itself."""
        if self.mode == "global":
            return self
        if len(speakers) != len(features):
            raise SedError("per-speaker normalisation needs one speaker id per utterance")
        new = [i for i, s in enumerate(speakers) if s not in self.per_speaker]
        added = (speaker_statistics(select_rows(features, new), [speakers[i] for i in new])
                 if new else {})
        return Normalizer(self.mode, self.mean, self.std, {**self.per_speaker, **added})

    def new_speaker(self, features: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``features`` (the (T_i, D) frames of one speaker nobody has seen) normalised.

        ``global`` mode: with the training statistics. ``speaker`` mode: with one mean/std
        fitted on all the given frames together, so the arrays should be one speaker's
        recordings; a single array (one file, or one long recording) is normalised with its
        own statistics. Nothing of the training speakers' statistics is used then: that is
        what a ``speaker`` model was trained on.
        """
        if self.mode == "global":
            return [self(x) for x in features]
        mean, std = _mean_std(features, self.MIN_STD)
        return [_apply(x, mean.astype(np.float32), std.astype(np.float32)) for x in features]

    def __call__(self, x: np.ndarray, speaker: str | None = None) -> np.ndarray:
        """(T, D) -> (T, D) float32: ``global``: the pooled statistics; ``speaker``: that
        speaker's (a :class:`SedError` when it has none: fit them with :meth:`with_speakers`)."""
        if self.mode == "global":
            return _apply(x, self.mean, self.std)
        try:
            mean, std = self.per_speaker[speaker]
        except KeyError:
            raise SedError(f"speaker {speaker!r} has no normalisation statistics; known: "
                           f"{', '.join(sorted(self.per_speaker)) or 'none'}") from None
        return _apply(x, mean, std)

    def state_dict(self) -> dict:
        """Plain lists and strings: safe for JSON and for ``torch.load(weights_only=True)``."""
        return {
            "mode": self.mode,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "per_speaker": {s: {"mean": m.tolist(), "std": d.tolist()}
                            for s, (m, d) in self.per_speaker.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> Normalizer:
        per_speaker = {s: (v["mean"], v["std"]) for s, v in state.get("per_speaker", {}).items()}
        return cls(state["mode"], state["mean"], state["std"], per_speaker)


def _apply(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, dtype=np.float32) - mean) / std).astype(np.float32, copy=False)
