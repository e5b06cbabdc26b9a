"""Speech activity: which 10 ms frames of a recording hold speech, so that pauses, music and
noise get no emotion.

Detectors (``predict --vad NAME``; measured against each other on a labelled speech /
non-speech set in ``benchmarks/vad_bench.py``, table in ``benchmarks/RESULTS.md``):

- ``silero``: the Silero VAD network (pip ``silero-vad``, the ``vad`` extra; its weights ship
  in the wheel), one speech probability per 32 ms of 16 kHz audio, speech above
  ``SILERO_THRESHOLD``.
- ``webrtc``: the WebRTC VAD (pip ``webrtcvad-wheels``, the ``webrtc`` extra), one decision
  per 10 ms of 16 kHz audio at aggressiveness ``WEBRTC_MODE``.
- ``opensmile``: a rule on the ComParE_2016 frames the model reads anyway (no extra cost, no
  extra package): speech where openSMILE's voicing probability (``voicingFinalUnclipped``)
  exceeds ``VOICING_MIN`` and its loudness (``audspec_lengthL1norm``) ``LOUDNESS_MIN``.

The signal detectors work on 16 kHz audio (other rates are resampled, block by block).
Every detector's frames are then smoothed the same way: non-speech gaps shorter than
``GAP_FILL_SECONDS`` between speech are filled (the pauses inside a sentence).

A span (a window of a timeline, or a whole file) *has speech* when its smoothed speech frames
add up to at least ``MIN_SPEECH_SECONDS``; one that has none gets no label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sed_model.errors import SedError

FRAME_SECONDS = 0.01
RATE = 16000  # the signal detectors' sample rate
FRAME_SAMPLES = 160  # 10 ms at RATE
GAP_FILL_SECONDS = 0.2
MIN_SPEECH_SECONDS = 0.25
SILERO_THRESHOLD = 0.7  # each knob: the best on the benchmark's dev files
SILERO_CHUNK = 512  # samples at 16 kHz per Silero decision
WEBRTC_MODE = 2
VOICING_COLUMN, LOUDNESS_COLUMN = 1, 6  # voicingFinalUnclipped_sma, audspec_lengthL1norm_sma
VOICING_MIN, LOUDNESS_MIN = 0.5, 0.02
NAMES = ("silero", "webrtc", "opensmile")
EXTRAS = {"silero": ("silero_vad", "silero-vad"), "webrtc": ("webrtcvad", "webrtcvad-wheels")}


def to_16k(signal: np.ndarray, rate: int) -> np.ndarray:
    """``signal`` resampled to 16 kHz (polyphase), float32."""
    if rate == RATE:
        return np.asarray(signal, dtype=np.float32)
    from scipy.signal import resample_poly

    common = math.gcd(int(rate), RATE)
    return resample_poly(signal, RATE // common, int(rate) // common).astype(np.float32)


GAP_FRAMES = round(GAP_FILL_SECONDS / FRAME_SECONDS)


def fill_gaps(speech: np.ndarray, frames: int = GAP_FRAMES) -> np.ndarray:
    """``speech`` (bool per frame) with every non-speech run shorter than ``frames`` that lies
    between two speech frames set to speech."""
    out = np.asarray(speech, dtype=bool).copy()
    onsets = np.flatnonzero(np.diff(out.astype(np.int8)) == 1) + 1  # first speech frame of a run
    offsets = np.flatnonzero(np.diff(out.astype(np.int8)) == -1) + 1  # first frame after a run
    for end in offsets:
        following = onsets[onsets > end]
        if len(following) and following[0] - end < frames:
            out[end:following[0]] = True
    return out


class SignalDetector:
    """A detector on the audio, fed block by block: :meth:`feed` returns the decisions of the
    10 ms frames completed so far (a frame takes the decision of the detector's step that
    holds its centre)."""

    step = FRAME_SAMPLES  # samples at 16 kHz per decision

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new recording."""
        self._pending = np.zeros(0, dtype=np.float32)
        self._steps: list[bool] = []
        self._frames = 0

    def feed(self, block: np.ndarray, rate: int) -> np.ndarray:
        x = np.concatenate([self._pending, to_16k(block, rate)])
        whole = len(x) - len(x) % self.step
        self._pending = x[whole:]
        self._steps.extend(self.decide(x[:whole]))
        decided = len(self._steps) * self.step // FRAME_SAMPLES
        centres = (np.arange(self._frames, decided) * FRAME_SAMPLES + FRAME_SAMPLES // 2)
        self._frames = decided
        return np.asarray(self._steps, dtype=bool)[centres // self.step] if len(centres) else \
            np.zeros(0, dtype=bool)

    def decide(self, x: np.ndarray) -> list[bool]:
        """One decision per ``step`` samples of ``x`` (16 kHz, a whole number of steps)."""
        raise NotImplementedError

    def speech(self, signal: np.ndarray, rate: int) -> np.ndarray:
        """Speech decisions of a whole signal, one per 10 ms frame."""
        self.reset()
        return self.feed(signal, rate)


class SileroDetector(SignalDetector):
    step = SILERO_CHUNK

    def __init__(self, threshold: float = SILERO_THRESHOLD) -> None:
        import torch

        threads = torch.get_num_threads()
        from silero_vad import load_silero_vad  # sets torch's threads to 1 on import

        torch.set_num_threads(threads)
        self._torch, self._model, self.threshold = torch, load_silero_vad(), threshold
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self._model.reset_states()

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        chunks = self._torch.from_numpy(np.ascontiguousarray(x)).reshape(-1, self.step)
        with self._torch.no_grad():
            return np.array([float(self._model(c, RATE)) for c in chunks])

    def decide(self, x: np.ndarray) -> list[bool]:
        return list(self.probabilities(x) > self.threshold)


class WebrtcDetector(SignalDetector):
    def __init__(self, mode: int = WEBRTC_MODE) -> None:
        import webrtcvad

        self._webrtcvad, self.mode = webrtcvad, mode
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self._vad = self._webrtcvad.Vad(self.mode)  # its state is per recording

    def decide(self, x: np.ndarray) -> list[bool]:
        pcm = (np.clip(x, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()
        size = 2 * self.step
        return [self._vad.is_speech(pcm[i:i + size], RATE) for i in range(0, len(pcm), size)]


@dataclass(frozen=True)
class FrameRule:
    """The ``opensmile`` detector: a rule on ComParE_2016 frames (T, >= 65), raw (before any
    normalisation)."""

    voicing_min: float = VOICING_MIN
    loudness_min: float = LOUDNESS_MIN

    def speech(self, frames: np.ndarray) -> np.ndarray:
        return ((frames[:, VOICING_COLUMN] > self.voicing_min)
                & (frames[:, LOUDNESS_COLUMN] > self.loudness_min))


EDGE_MARGIN_FRAMES = 20  # 0.2 s kept before the first and after the last speech frame


def speech_span(frames: np.ndarray, margin: int = EDGE_MARGIN_FRAMES) -> tuple[int, int]:
    """``(start, stop)``: the frames of an utterance from ``margin`` frames before its first
    speech frame to ``margin`` after its last, by the ``opensmile`` rule on its raw ComParE
    frames; the whole utterance when the rule finds no speech in it."""
    speech = np.flatnonzero(FrameRule().speech(frames)) if len(frames) else np.zeros(0, int)
    if not len(speech):
        return 0, len(frames)
    return max(0, int(speech[0]) - margin), min(len(frames), int(speech[-1]) + 1 + margin)


def make_detector(name: str) -> SignalDetector | FrameRule | None:
    """The detector called ``name`` (``none``: None); a SedError naming the package to install
    when its optional package is missing."""
    if name == "none":
        return None
    if name == "opensmile":
        return FrameRule()
    if name not in NAMES:
        raise SedError(f"--vad {name!r} is unknown; expected one of {', '.join(NAMES)} or none")
    module, package = EXTRAS[name]
    try:
        __import__(module)
    except ImportError:
        raise SedError(f"--vad {name} needs the package {package} (pip install {package}, or "
                       f"the package's [{'vad' if name == 'silero' else 'webrtc'}] extra)") \
            from None
    return SileroDetector() if name == "silero" else WebrtcDetector()


class SpeechTrack:
    """The speech frames of one recording as they are found: from the audio, block by block
    (:meth:`add_block`, signal detectors), or from the ComParE frames of a span
    (:meth:`add_frames`, the ``opensmile`` rule). Holds one byte per 10 ms (360 kB an hour)."""

    def __init__(self, detector: SignalDetector | FrameRule) -> None:
        self.detector = detector
        self._mask = np.zeros(0, dtype=bool)
        if isinstance(detector, SignalDetector):
            detector.reset()

    @property
    def uses_frames(self) -> bool:
        return isinstance(self.detector, FrameRule)

    def add_block(self, block: np.ndarray, rate: int) -> None:
        if not self.uses_frames:
            self._mask = np.concatenate([self._mask, self.detector.feed(block, rate)])

    def add_frames(self, start_seconds: float, frames: np.ndarray) -> None:
        """The rule's decisions on the frames of a span starting at ``start_seconds``."""
        if self.uses_frames:
            first = round(start_seconds / FRAME_SECONDS)
            decisions = self.detector.speech(frames)
            if len(self._mask) < first + len(decisions):
                self._mask = np.pad(self._mask, (0, first + len(decisions) - len(self._mask)))
            self._mask[first:first + len(decisions)] = decisions

    def seconds(self, start: float = 0.0, end: float | None = None) -> tuple[float, float]:
        """(speech seconds, seconds decided) of ``[start, end)``, after gap filling (with a
        margin so that a gap crossing the span's edges is filled as in the whole file)."""
        margin = GAP_FRAMES
        first = round(start / FRAME_SECONDS)
        last = len(self._mask) if end is None else min(len(self._mask), round(end / FRAME_SECONDS))
        low = max(0, first - margin)
        smoothed = fill_gaps(self._mask[low:last + margin])[first - low:last - low]
        return float(smoothed.sum()) * FRAME_SECONDS, max(0, last - first) * FRAME_SECONDS

    def fraction(self, start: float = 0.0, end: float | None = None) -> float:
        """Share of ``[start, end)`` that is speech (0 when nothing of it was decided)."""
        speech, decided = self.seconds(start, end)
        return speech / decided if decided else 0.0

    def has_speech(self, start: float = 0.0, end: float | None = None) -> bool:
        return self.seconds(start, end)[0] >= MIN_SPEECH_SECONDS - 1e-9
