"""Latency per hop of ``EmotionModel.stream``: from a window's last sample arriving to its
segment being yielded.

    python benchmarks/stream_bench.py [--minutes 2] [--window 2] [--hop 1] [--chunk 0.1]
                                      [--segment 2]

A recording of real speech (``timeline_bench.make_recording``: EmoDB clips joined) is fed to
``stream`` in chunks of ``--chunk`` seconds, as a microphone delivers them, with the bundled
``emodb`` model, with extraction segments of ``--segment`` seconds (``stream``'s default 2,
or 1 as ``predict --live`` uses). The chunks are fed as fast as they are processed
(extraction runs far faster than real time), and each segment's latency is computed as it
would be live:

- ``wait``: audio seconds from the window's end to the end of the chunk that completes it
  (the look-ahead of :class:`sed_model.windows.FrameWindows`: the rest of the extraction
  segment holding the window's end, plus ``CONTEXT_AFTER`` frames, rounded up to a chunk);
- ``compute``: seconds from handing that chunk to ``stream`` to the segment being yielded
  (extraction of the segment, the model);
- ``latency`` = wait + compute.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
from timeline_bench import arguments_and_model, make_recording


def measure(model, signal: np.ndarray, rate: int, window: float, hop: float,
            chunk: float, segment: float) -> list[tuple[float, float]]:
    """(wait, compute) seconds of every segment but the end-of-input ones."""
    size = int(round(chunk * rate))
    clock = {"handed": 0.0, "heard": 0}

    def chunks():
        for start in range(0, len(signal), size):
            clock["heard"] = min(len(signal), start + size)
            clock["handed"] = time.perf_counter()
            yield signal[start:start + size]

    latencies = []
    for s in model.stream(chunks(), rate, window=window, hop=hop, segment=segment):
        if clock["heard"] < len(signal):
            latencies.append((clock["heard"] / rate - s.end,
                              time.perf_counter() - clock["handed"]))
    return latencies


def _options(parser) -> None:
    parser.add_argument("--chunk", type=float, default=0.1, help="seconds of audio per chunk")
    parser.add_argument("--segment", type=float, default=2.0,
                        help="extraction segment, seconds (EmotionModel.stream's segment)")


def main() -> None:
    args, model = arguments_and_model(__doc__, 2.0, _options)
    with tempfile.TemporaryDirectory() as folder:
        path = make_recording(Path(folder) / "recording.wav", args.minutes * 60)
        signal, rate = soundfile.read(path, dtype="float32")
    options = (args.window, args.hop, args.chunk, args.segment)
    measure(model, signal[:rate * 5], rate, *options)  # warm-up
    rows = np.array(measure(model, signal, rate, *options))
    print(f"{args.minutes:g} min of EmoDB speech at {rate} Hz, window {args.window:g} s, hop "
          f"{args.hop:g} s, chunks of {args.chunk:g} s, extraction segments of "
          f"{args.segment:g} s, {len(rows)} segments, torch threads 1")
    for name, values in (("wait", rows[:, 0]), ("compute", rows[:, 1]),
                         ("latency", rows.sum(axis=1))):
        print(f"  {name:8s} median {np.median(values):.3f} s, 90th percentile "
              f"{np.percentile(values, 90):.3f} s, max {values.max():.3f} s")


if __name__ == "__main__":
    main()
