"""Decoding audio files to a float32 mono signal.

Choices recorded here:

- Audio-only formats (wav, flac, ogg, ...) are read with soundfile; video containers (.avi,
  .mp4, .mkv, .mov, .webm, eNTERFACE'05's .avi) and anything soundfile cannot read are decoded
  with PyAV (FFmpeg), from the first audio stream.
- Multi-channel audio is mixed down to mono as the plain mean of the channels, the same way for
  both decoders (FFmpeg's own downmix would weight channels differently).
- The native sample rate is kept; resampling, if asked for, happens in the feature extractor.
"""

from pathlib import Path

import numpy as np
import soundfile

from sed_model.errors import AudioError

VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".m4v", ".mkv", ".mov", ".webm", ".mpg", ".mpeg"})


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode ``path`` to ``(signal, sample_rate)``; signal is float32 mono of shape (n,).

    Raises AudioError naming the file and the reason when it is missing or cannot be decoded.
    An empty signal (n == 0) is returned as such; the feature extractor decides what is too short.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        try:
            data, sample_rate = soundfile.read(
                path, dtype="float32", always_2d=True
            )  # (n, channels)
            return _mixdown(data.T), int(sample_rate)
        except (soundfile.LibsndfileError, RuntimeError, ValueError) as soundfile_error:
            if path.stat().st_size == 0:
                raise AudioError(f"cannot decode {path}: the file is empty (0 bytes)") from None
            try:  # soundfile cannot read it; FFmpeg may (mp3, m4a, odd wav variants)
                return _decode_with_pyav(path)
            except AudioError:
                raise AudioError(f"cannot decode {path}: {soundfile_error}") from None
    return _decode_with_pyav(path)


def _mixdown(channels: np.ndarray) -> np.ndarray:
    """(channels, n) -> (n,) float32, the mean over channels."""
    return np.ascontiguousarray(channels.mean(axis=0, dtype=np.float32), dtype=np.float32)


def _decode_with_pyav(path: Path) -> tuple[np.ndarray, int]:
    import av  # imported here: only video containers and exotic formats need FFmpeg

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"cannot decode {path}: the file has no audio stream")
            stream = container.streams.audio[0]
            to_float_planar = av.AudioResampler(format="fltp")  # keeps rate and channels
            chunks = []  # each (channels, n_i)
            for frame in container.decode(stream):
                chunks += [f.to_ndarray() for f in to_float_planar.resample(frame)]
            chunks += [f.to_ndarray() for f in to_float_planar.resample(None)]
            sample_rate = stream.rate or stream.codec_context.sample_rate
    except AudioError:
        raise
    except (av.FFmpegError, ValueError, OSError) as error:
        raise AudioError(f"cannot decode {path}: {error}") from None
    if not sample_rate:
        raise AudioError(f"cannot decode {path}: the audio stream has no sample rate")
    if not chunks:
        return np.zeros(0, dtype=np.float32), int(sample_rate)
    return _mixdown(np.concatenate(chunks, axis=1)), int(sample_rate)
