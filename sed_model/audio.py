"""Decoding audio files to a float32 mono signal, whole or in blocks.

Choices recorded here:

- Decoders. wav, flac, ogg/vorbis/opus and the other formats libsndfile reads natively go
  through soundfile; mp3, m4a/aac and the other compressed formats listed in
  ``PYAV_SUFFIXES``, video containers (.avi, .mp4, .mkv, .mov, .webm, eNTERFACE'05's .avi)
  and anything soundfile cannot read are decoded with PyAV (FFmpeg), from the first audio
  stream. (libsndfile reads mp3 too, but FFmpeg handles the encoder delay and odd files.)
- Multi-channel audio is mixed down to mono as the plain mean of the channels, the same way for
  both decoders (FFmpeg's own downmix would weight channels differently).
- The native sample rate is kept; resampling, if asked for, happens in the feature extractor.
- Long files. :func:`open_audio` returns an :class:`AudioStream` whose :meth:`~AudioStream.blocks`
  yields the signal in blocks of a few seconds, so memory does not grow with the file's length
  (``predict --window`` on an hour-long recording). :func:`load_audio` is the whole signal.
- Bad samples. A file with NaN or infinite samples (float formats can hold them) is refused:
  an AudioError naming the file and how many of its samples are not finite (the rest of the
  file is still decoded, to count them). Peak level and clipping are measured, not refused:
  :class:`SignalReport` gathers them block by block for ``predict``'s per-file warnings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from sed_model.errors import AudioError

VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".m4v", ".mkv", ".mov", ".webm", ".mpg", ".mpeg"})
PYAV_SUFFIXES = VIDEO_SUFFIXES | {".mp3", ".m4a", ".aac", ".wma", ".mp2", ".amr", ".3gp", ".opus"}
BLOCK_SECONDS = 10.0  # default block length of AudioStream.blocks
FULL_SCALE = 32767 / 32768  # a sample at or beyond this magnitude is clipped (16-bit full scale)
CLIPPING_SHARE = 0.001  # a file with more of its samples at full scale is said to be clipped
LOUD_PEAK = 2.0  # float samples beyond this magnitude are far outside [-1, 1]


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode ``path`` to ``(signal, sample_rate)``; signal is float32 mono of shape (n,).

    Raises AudioError naming the file and the reason when it is missing or cannot be decoded.
    An empty signal (n == 0) is returned as such; the feature extractor decides what is too short.
    """
    stream = open_audio(path)
    blocks = list(stream.blocks())
    signal = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    return signal, stream.sample_rate


@dataclass(frozen=True)
class AudioStream:
    """An opened (probed) audio file: its sample rate, its length when the container says it
    (``n_samples``, None when unknown) and the decoder that reads it."""

    path: Path
    sample_rate: int
    n_samples: int | None
    decoder: str  # "soundfile" or "pyav"

    @property
    def duration(self) -> float | None:
        """Seconds, when the length is known."""
        return None if self.n_samples is None else self.n_samples / self.sample_rate

    def blocks(self, seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        """The mono float32 signal in consecutive blocks of about ``seconds`` (the last one
        shorter); AudioError naming the file if decoding fails part way."""
        size = max(1, int(round(seconds * self.sample_rate)))
        if self.decoder == "soundfile":
            return _finite(self._soundfile_blocks(size), self.path)
        return _finite(_rebatch(_pyav_blocks(self.path), size), self.path)

    def _soundfile_blocks(self, size: int) -> Iterator[np.ndarray]:
        try:
            with soundfile.SoundFile(self.path) as f:
                for block in f.blocks(blocksize=size, dtype="float32", always_2d=True):
                    yield _mixdown(block.T)  # block: (n, channels)
        except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
            raise AudioError(f"cannot decode {self.path}: {error}") from None


def _finite(blocks: Iterator[np.ndarray], path: Path) -> Iterator[np.ndarray]:
    """The blocks, until one holds a NaN or infinite sample: then the rest is decoded to count
    them and an AudioError names the file and the count."""
    bad = total = 0
    for block in blocks:
        total += len(block)
        bad += len(block) - int(np.count_nonzero(np.isfinite(block)))
        if not bad:
            yield block
    if bad:
        raise AudioError(f"{path}: {bad} of {total} samples are NaN or infinite; expected "
                         "finite audio samples")


@dataclass
class SignalReport:
    """Peak magnitude and the samples at full scale of a signal given block by block."""

    samples: int = 0
    peak: float = 0.0
    full_scale: int = 0

    def add(self, block: np.ndarray) -> None:
        magnitude = np.abs(block)
        self.samples += len(block)
        if len(block):
            self.peak = max(self.peak, float(magnitude.max()))
        self.full_scale += int(np.count_nonzero(magnitude >= FULL_SCALE))

    @property
    def clipping(self) -> float:
        """Share of the samples at or beyond full scale."""
        return self.full_scale / self.samples if self.samples else 0.0

    def warnings(self, path) -> list[str]:
        """One line per problem found: float samples far beyond full scale, clipping."""
        lines = []
        if self.peak > LOUD_PEAK:
            lines.append(f"{path}: peak amplitude {self.peak:.4g}, far outside [-1, 1] (float "
                         "samples are expected within full scale); the samples beyond it are "
                         "clipped to it before feature extraction")
        elif self.clipping > CLIPPING_SHARE:
            lines.append(f"{path}: clipped: {self.clipping:.1%} of the samples are at full "
                         "scale; the emotion may be misjudged")
        return lines


def open_audio(path: str | Path) -> AudioStream:
    """Probe ``path``: AudioError naming the file when it is missing, empty or not audio."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"cannot decode {path}: the file is empty (0 bytes)")
    if path.suffix.lower() in PYAV_SUFFIXES:
        return _probe_pyav(path)
    try:
        info = soundfile.info(path)
        return AudioStream(path, int(info.samplerate), int(info.frames), "soundfile")
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as soundfile_error:
        try:  # soundfile cannot read it; FFmpeg may (odd wav variants, unknown suffixes)
            return _probe_pyav(path)
        except AudioError:
            raise AudioError(f"cannot decode {path}: {soundfile_error}") from None


def _mixdown(channels: np.ndarray) -> np.ndarray:
    """(channels, n) -> (n,) float32, the mean over channels."""
    return np.ascontiguousarray(channels.mean(axis=0, dtype=np.float32), dtype=np.float32)


def _rebatch(chunks: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Join small decoded frames into blocks of ``size`` samples (the last one shorter)."""
    pending, held = [], 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            joined = np.concatenate(pending)
            for start in range(0, len(joined) - size + 1, size):
                yield joined[start:start + size]
            rest = joined[len(joined) - len(joined) % size:]
            pending, held = [rest], len(rest)
    if held:
        yield np.concatenate(pending)


def _pyav_errors():
    import av  # imported here: only compressed formats and video containers need FFmpeg

    return av, (av.FFmpegError, ValueError, OSError)


def _probe_pyav(path: Path) -> AudioStream:
    av, errors = _pyav_errors()
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"cannot decode {path}: the file has no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate or stream.codec_context.sample_rate
            seconds = None
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
    except AudioError:
        raise
    except errors as error:
        raise AudioError(f"cannot decode {path}: {error}") from None
    if not rate:
        raise AudioError(f"cannot decode {path}: the audio stream has no sample rate")
    n_samples = None if seconds is None else int(round(seconds * rate))
    return AudioStream(path, int(rate), n_samples, "pyav")


def _pyav_blocks(path: Path) -> Iterator[np.ndarray]:
    """Mono float32 frames of the first audio stream, as FFmpeg decodes them."""
    av, errors = _pyav_errors()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            to_float_planar = av.AudioResampler(format="fltp")  # keeps rate and channels
            for frame in container.decode(stream):
                for f in to_float_planar.resample(frame):
                    yield _mixdown(f.to_ndarray())  # (channels, n_i) -> (n_i,)
            for f in to_float_planar.resample(None):
                yield _mixdown(f.to_ndarray())
    except AudioError:
        raise
    except errors as error:
        raise AudioError(f"cannot decode {path}: {error}") from None
