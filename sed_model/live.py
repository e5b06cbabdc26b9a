"""The microphone as a stream of audio chunks, for ``python -m sed_model.predict --live``.

:func:`microphone_chunks` reads the default input device through ``sounddevice`` (PortAudio;
the optional extra ``pip install 'sed-dense-lstm[live]'``) and yields mono float32 blocks
as they arrive; :meth:`sed_model.api.EmotionModel.stream` turns them into segments.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator

import numpy as np

from .errors import SedError

LIVE_RATE = 16_000  # Hz asked of the microphone (EmoDB's rate class; any rate works)
BLOCK_SECONDS = 0.1  # audio per callback of the input stream
LIVE_SEGMENT_SECONDS = 1.0  # extraction segments of --live: a window out 0.16 s after its end
                            # for hops of 1 s and more (EmotionModel.stream's ``segment``)
INSTALL_HINT = "pip install 'sed-dense-lstm[live]' (sounddevice, with the PortAudio library)"


def _sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library is missing
        raise SedError(f"--live needs sounddevice: {INSTALL_HINT} ({exc})") from None
    return sounddevice


def microphone_chunks(sample_rate: int = LIVE_RATE, seconds: float | None = None,
                      device=None, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Mono float32 blocks from the input ``device`` (default: the system's), ``seconds``
    of them (None: until interrupted)."""
    sounddevice = _sounddevice()
    arrived: queue.Queue[np.ndarray] = queue.Queue()

    def callback(indata, frames, time_info, status) -> None:
        arrived.put(np.asarray(indata, dtype=np.float32).mean(axis=1))

    try:
        stream = sounddevice.InputStream(samplerate=sample_rate, channels=1, dtype="float32",
                                         blocksize=int(block_seconds * sample_rate),
                                         device=device, callback=callback)
    except Exception as exc:  # PortAudioError: no such device, rate not supported
        raise SedError(f"cannot open the microphone at {sample_rate} Hz: {exc}") from None
    wanted = None if seconds is None else int(round(seconds * sample_rate))
    received = 0
    with stream:
        while wanted is None or received < wanted:
            chunk = arrived.get()
            if wanted is not None:
                chunk = chunk[:wanted - received]
            received += len(chunk)
            yield chunk
