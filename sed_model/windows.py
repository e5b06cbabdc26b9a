"""Long recordings in bounded memory: overlapping windows from a stream of audio blocks,
running normalisation statistics and a waveform envelope for plots.

Windows. A recording of ``n`` samples is cut into windows of ``w = round(window * rate)``
samples starting every ``h = round(hop * rate)`` samples (0, h, 2h, ... while the window fits);
when the last of them ends before the recording does, one more window ends exactly at the end
(``[n - w, n]``), so every sample is covered and every window has the full length the model
was trained on. A recording shorter than one window is one window, the whole of it. Only the
samples of the window being filled are held (:func:`iter_windows`), never the recording.

Statistics. ``speaker`` normalisation of one long recording needs the mean and std of all its
frames before any window is normalised: :class:`RunningStats` accumulates them chunk by chunk
(:class:`sed_model.features.normalization.RunningMoments`, float64, the arithmetic of
:meth:`sed_model.features.Normalizer.new_speaker`) in a first pass over the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from sed_model.errors import SedError
from sed_model.features import Normalizer
from sed_model.features.normalization import RunningMoments


def check_window(window: float | None, hop: float | None) -> tuple[float | None, float | None]:
    """``(window, hop)`` checked; hop defaults to half the window; no window, no hop."""
    if window is None:
        if hop is not None:
            raise SedError("a hop needs a window: give --window SECONDS too")
        return None, None
    hop = window / 2 if hop is None else hop
    if not window > 0 or not hop > 0:
        raise SedError(f"window and hop must be positive seconds; got window {window}, hop {hop}")
    return float(window), float(hop)


def count_windows(n_samples: int | None, rate: int, window: float, hop: float) -> int | None:
    """How many windows :func:`iter_windows` yields for a recording of ``n_samples``."""
    if n_samples is None:
        return None
    w, h = _sizes(rate, window, hop)
    if n_samples <= w:
        return 1
    fitting = (n_samples - w) // h + 1
    return fitting + int((fitting - 1) * h + w < n_samples)  # + the tail window


def _sizes(rate: int, window: float, hop: float) -> tuple[int, int]:
    return max(1, int(round(window * rate))), max(1, int(round(hop * rate)))


def iter_windows(blocks: Iterable[np.ndarray], rate: int, window: float,
                 hop: float) -> Iterator[tuple[int, np.ndarray]]:
    """``(first_sample, samples)`` of every window (see the module docstring) of the signal
    that arrives in ``blocks``; holds at most one window plus one block."""
    w, h = _sizes(rate, window, hop)
    held = np.zeros(0, dtype=np.float32)
    held_from = 0  # sample index of held[0]
    next_start, last_end = 0, 0
    for block in blocks:
        held = np.concatenate([held, block])
        while next_start + w <= held_from + len(held):
            offset = next_start - held_from
            yield next_start, held[offset:offset + w].copy()  # a view would keep `held` alive
            last_end, next_start = next_start + w, next_start + h
        end = held_from + len(held)
        keep_from = max(held_from, min(next_start, end - w))  # the tail window needs w samples
        held, held_from = held[keep_from - held_from:], keep_from
    end = held_from + len(held)
    if last_end == 0 and end > 0:
        yield 0, held  # shorter than one window: the whole recording
    elif 0 < last_end < end:
        yield end - w, held[len(held) - w:].copy()


class RunningStats:
    """Mean and std of frames given chunk by chunk; :meth:`normalizer` applies them."""

    def __init__(self) -> None:
        self._moments = RunningMoments()
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        """Add (T, D) frames."""
        self._moments.add(frames)
        self.frames += len(frames)

    def normalizer(self) -> Normalizer:
        """A normaliser with these statistics (std below ``Normalizer.MIN_STD`` counts as 1,
        as in ``Normalizer.new_speaker``)."""
        if not self.frames:
            raise SedError("no frames to compute normalisation statistics from")
        std = np.sqrt(self._moments.var)
        std = np.where(std < Normalizer.MIN_STD, 1.0, std)
        return Normalizer("global", self._moments.mean, std)


class Envelope:
    """Minimum and maximum of every ``bin_seconds`` of a signal given block by block: the
    waveform of an hour-long file in a few MB, for plots."""

    def __init__(self, rate: int, bin_seconds: float = 0.01) -> None:
        self.rate = rate
        self.bin = max(1, int(round(bin_seconds * rate)))
        self._low: list[np.ndarray] = []
        self._high: list[np.ndarray] = []
        self._rest = np.zeros(0, dtype=np.float32)

    def add(self, block: np.ndarray) -> None:
        joined = np.concatenate([self._rest, block])
        whole = len(joined) - len(joined) % self.bin
        bins = joined[:whole].reshape(-1, self.bin)
        self._low.append(bins.min(axis=1))
        self._high.append(bins.max(axis=1))
        self._rest = joined[whole:]

    def arrays(self, max_points: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, low, high), at most ``max_points`` bins (merged further for long files)."""
        tail = [self._rest[:1]] if len(self._rest) else []
        low = np.concatenate([np.zeros(0, np.float32), *self._low, *tail])
        high = np.concatenate([np.zeros(0, np.float32), *self._high, *tail])
        if tail:
            low[-1], high[-1] = self._rest.min(), self._rest.max()
        merge = max(1, -(-len(low) // max_points))
        pad = (-len(low)) % merge
        low = np.pad(low, (0, pad), mode="edge").reshape(-1, merge).min(axis=1)
        high = np.pad(high, (0, pad), mode="edge").reshape(-1, merge).max(axis=1)
        return np.arange(len(low)) * merge * self.bin / self.rate, low, high
