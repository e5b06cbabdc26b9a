"""z-score normalisation of frame features, fitted on the training utterances only.

The statistics are scikit-learn's :class:`~sklearn.preprocessing.StandardScaler`, fed one
utterance at a time (``partial_fit``: frame-weighted mean and population std over all training
frames, in float64). :class:`Normalizer` adds what StandardScaler does not do:

- per-speaker statistics with a fallback: in ``mode="speaker"`` each training speaker gets
  its own mean/std, and a speaker not seen in the fit (every test speaker of a
  speaker-independent split) uses the pooled training statistics, so nothing is ever fitted
  on test data;
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
from sklearn.preprocessing import StandardScaler

from sed_model.errors import SedError


def _mean_std(features: Sequence[np.ndarray], min_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame-weighted mean and std (D,) of (T_i, D) arrays; std < ``min_std`` becomes 1."""
    scaler = StandardScaler()
    for x in features:
        x = np.asarray(x, dtype=np.float64)
        scaler.partial_fit(x.reshape(-1, x.shape[-1]))  # (T, D)
    std = np.sqrt(scaler.var_)
    return scaler.mean_, np.where(std < min_std, 1.0, std)


class Normalizer:
    """z-score normalisation, ``(x - mean) / std`` per feature, fitted on the training split only.

    mode="global": one mean/std over all training frames. mode="speaker": each training speaker
    also gets its own mean/std; a speaker not seen in the fit falls back to the pooled training
    statistics (see the module docstring).

    Typical use, which never touches the test speakers::

        normalizer = Normalizer.fit_fold(features, fold, speakers)
        x = normalizer(features[i], speakers[i])
    """

    MODES = ("global", "speaker")
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
            raise SedError(f"normalisation mode {mode!r} is unknown; expected one of {cls.MODES}")

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
            raise SedError("per-speaker normalisation needs one speaker id per training utterance")
        per_speaker = {}
        if mode == "speaker":
            by_speaker: dict[str, list[np.ndarray]] = defaultdict(list)
            for speaker, x in zip(speakers, features):
                by_speaker[speaker].append(x)
            per_speaker = {speaker: _mean_std(xs, cls.MIN_STD)
                           for speaker, xs in sorted(by_speaker.items())}
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
        return cls.fit([features[i] for i in train], chosen_speakers, mode)

    def __call__(self, x: np.ndarray, speaker: str | None = None) -> np.ndarray:
        """(T, D) -> (T, D) float32 normalised with the speaker's statistics or the pooled ones."""
        mean, std = self.per_speaker.get(speaker, (self.mean, self.std))
        return ((np.asarray(x, dtype=np.float32) - mean) / std).astype(np.float32, copy=False)

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
