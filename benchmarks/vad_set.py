"""A labelled speech / non-speech set for comparing voice activity detectors (issue 33).

Every file (16 kHz, about ``seconds`` long) alternates silences of random length (0.3-3 s)
with speech clips of EmoDB (``../shared/data/emodb``; without it, the generated voiced signal
of ``test_features_bench.py`` stands in, for smoke runs). Each condition adds one kind of
non-speech:

- ``clean``: digital silence between the clips;
- ``white20/10/0``: white noise over the whole file at 20, 10 and 0 dB SNR;
- ``babble20/10/0``: babble over the whole file at those SNRs: six RAVDESS talkers
  (``../shared/data/ravdess``, another corpus than the speech; generated voiced signals
  without it) summed, each at the same level;
- ``music``: half of the silences hold synthesised music instead: chords of 3-4 harmonic
  notes (8 partials each) of 0.3-1.2 s, plucked (decaying) or held, at the level of the speech
  within 6 dB, clean otherwise.

SNR is the power of the labelled speech frames over the power of the noise. Each file is
then scaled to a random level between full scale (peak 0.99) and 30 dB below it, as
recordings come at any level and a detector with a fixed energy threshold must cope.

Labels, one per 10 ms frame: speech inside a clip, silence and music elsewhere, refined inside
each clip by a generous energy rule on the clean clip: a frame is speech when its RMS is within
35 dB of the clip's loudest frame (and above 1e-4), and pauses shorter than 200 ms between
speech frames count as speech. (EmoDB clips begin and end with some silence, which the rule
marks as such; the rule is generous so that weak consonants stay speech.)

``dev`` files (EmoDB speakers 03, 08, 09 and RAVDESS actors 1-12) tune each detector's one
knob; ``test`` files (the other seven speakers and actors 13-24) are the ones reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
EMODB = ROOT.parent / "shared" / "data" / "emodb"
RAVDESS = ROOT.parent / "shared" / "data" / "ravdess"
RATE = 16000
FRAME = 160  # samples per 10 ms frame
CONDITIONS = ("clean", "white20", "white10", "white0", "babble20", "babble10", "babble0",
              "music")
DEV_SPEAKERS = ("03", "08", "09")
LEVEL_RANGE_DB = 30.0  # each file is played at a random level, 0 to 30 dB below full scale


@dataclass
class LabelledFile:
    """One file of the set: the signal and a speech label per 10 ms frame."""

    name: str
    condition: str
    signal: np.ndarray  # float32, 16 kHz
    labels: np.ndarray  # bool, one per 10 ms frame

    @property
    def seconds(self) -> float:
        return len(self.signal) / RATE


def _read_16k(path: Path) -> np.ndarray:
    from sed_model.vad import to_16k

    signal, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return to_16k(signal.mean(axis=1), rate)


def _speech_sources(split: str) -> list[Path] | None:
    if not EMODB.is_dir():
        return None
    files = sorted(EMODB.glob("*.wav"))
    return [f for f in files if (f.name[:2] in DEV_SPEAKERS) == (split == "dev")]


def _babble_sources(split: str) -> list[list[Path]] | None:
    if not RAVDESS.is_dir():
        return None
    actors = sorted(RAVDESS.glob("Actor_*"))
    chosen = [a for a in actors if (int(a.name[-2:]) <= 12) == (split == "dev")]
    return [sorted(a.glob("*.wav")) for a in chosen]


def _voiced(seconds: float, seed: int) -> np.ndarray:
    from test_features_bench import voiced_signal

    return voiced_signal(seconds, RATE, seed) * 0.3


def clip_labels(clip: np.ndarray) -> np.ndarray:
    """The generous energy rule of the module docstring, one bool per 10 ms frame."""
    from sed_model.vad import fill_gaps

    frames = len(clip) // FRAME
    rms = np.sqrt(np.mean(clip[:frames * FRAME].reshape(frames, FRAME) ** 2, axis=1))
    floor = max(rms.max() * 10 ** (-35 / 20), 1e-4)
    return fill_gaps(rms > floor)


def chords(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Synthesised music (module docstring), float32 of unit RMS."""
    pieces = []
    while sum(len(p) for p in pieces) < seconds * RATE:
        n = int(rng.uniform(0.3, 1.2) * RATE)
        t = np.arange(n) / RATE
        root = rng.integers(45, 72)
        notes = [root, root + rng.choice([3, 4]), root + 7] + ([root + 10] if rng.random() < 0.5
                                                            else [])
        tone = np.zeros(n)
        for note in notes:
            f0 = 440.0 * 2 ** ((note - 69) / 12)
            for k in range(1, 9):
                if k * f0 < RATE / 2:
                    tone += np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k**1.2
        decay = np.exp(-t * rng.uniform(1.5, 5.0)) if rng.random() < 0.5 else np.ones(n)
        attack = np.minimum(1.0, t / 0.02)
        pieces.append(tone * decay * attack)
    music = np.concatenate(pieces)[:int(seconds * RATE)]
    return (music / (np.sqrt(np.mean(music**2)) + 1e-12)).astype(np.float32)


def _babble(n: int, talkers: list[list[Path]] | None, rng: np.random.Generator) -> np.ndarray:
    total = np.zeros(n)
    for index in range(6):
        parts, held = [], 0
        while held < n:
            if talkers is None:
                part = _voiced(2.0, int(rng.integers(1 << 30)))
            else:
                files = talkers[(index * 2 + int(rng.integers(2))) % len(talkers)]
                part = _read_16k(files[int(rng.integers(len(files)))])
            parts.append(part / (np.sqrt(np.mean(part**2)) + 1e-12))
            held += len(part)
        total += np.concatenate(parts)[:n]
    return total


def _speech_clip(sources: list[Path] | None, rng: np.random.Generator) -> np.ndarray:
    if sources is None:
        return _voiced(float(rng.uniform(1.5, 3.0)), int(rng.integers(1 << 30)))
    return _read_16k(sources[int(rng.integers(len(sources)))])


def make_file(condition: str, seconds: float, split: str, seed: int) -> LabelledFile:
    """One file of the set (module docstring)."""
    rng = np.random.default_rng(seed)
    sources = _speech_sources(split)
    pieces, labels = [], []
    while sum(len(p) for p in pieces) < seconds * RATE:
        gap = int(rng.uniform(0.3, 3.0) * RATE) // FRAME * FRAME
        pieces.append(np.zeros(gap, dtype=np.float32))
        labels.append(np.zeros(gap // FRAME, dtype=bool))
        clip = _speech_clip(sources, rng)
        clip = clip[:len(clip) // FRAME * FRAME]
        pieces.append(clip)
        labels.append(clip_labels(clip))
    pieces.append(np.zeros(int(0.5 * RATE), dtype=np.float32))
    labels.append(np.zeros(int(0.5 * RATE) // FRAME, dtype=bool))
    signal, label = np.concatenate(pieces).astype(np.float64), np.concatenate(labels)
    speech_power = np.mean(signal[:len(label) * FRAME].reshape(-1, FRAME)[label] ** 2)
    if condition == "music":
        signal = _add_music(signal, pieces, speech_power, rng)
    elif condition != "clean":
        kind, snr = condition.rstrip("0123456789"), float(condition.lstrip("abcehilrtw"))
        n = len(signal)
        noise = rng.standard_normal(n) if kind == "white" else _babble(
            n, _babble_sources(split), rng)
        noise *= math.sqrt(speech_power / 10 ** (snr / 10) / np.mean(noise**2))
        signal = signal + noise
    peak = np.max(np.abs(signal))
    scale = 0.99 / peak if peak > 0.99 else 1.0  # keep float samples within full scale
    scale *= 10 ** (rng.uniform(-LEVEL_RANGE_DB, 0) / 20)  # recordings come at any level
    return LabelledFile(f"{split}-{condition}-{seed}", condition,
                        (signal * scale).astype(np.float32), label)


def _add_music(signal: np.ndarray, pieces: list[np.ndarray], speech_power: float,
               rng: np.random.Generator) -> np.ndarray:
    """Music in every other silence (the silences are the even pieces), 50 ms in from each
    edge."""
    start = 0
    for index, piece in enumerate(pieces):
        if index % 2 == 0 and rng.random() < 0.5 and len(piece) > 0.3 * RATE:
            inner = len(piece) - int(0.1 * RATE)
            level = math.sqrt(speech_power) * 10 ** (rng.uniform(-6, 0) / 20)
            first = start + int(0.05 * RATE)
            signal[first:first + inner] += level * chords(inner / RATE, rng)
        start += len(piece)
    return signal


def make_set(split: str, files_per_condition: int, seconds: float,
             conditions: tuple[str, ...] = CONDITIONS) -> list[LabelledFile]:
    """``files_per_condition`` files of every condition; seeds differ between splits."""
    base = 1000 if split == "test" else 0
    return [make_file(c, seconds, split, base + 10 * i + j)
            for i, c in enumerate(conditions) for j in range(files_per_condition)]
