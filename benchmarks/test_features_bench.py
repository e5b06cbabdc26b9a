"""Utterances per second of the openSMILE ComParE_2016 frame extraction (``extract_corpus``).

The corpus is generated, so the benchmark runs in any clone: ``harness.FEATURE_SIZES`` files
(16 of 2 s at 16 kHz by default on CPU) of a voiced, speech-like signal written as 16-bit wav
with soundfile: a glottal-like harmonic series on a gliding pitch contour (100-250 Hz, a
different contour per file) under a syllable-rate amplitude envelope, plus a little noise.
openSMILE's cost depends on the duration, hardly on the content.

Cases:

- ``1 worker``: ``workers=1`` (in this process), into an empty cache folder each round;
- ``all cores``: ``workers=None`` (one spawned process per core, the default; the pool's
  start-up is part of the time), into an empty cache folder each round;
- ``cached``: a second run over the same files, reading every utterance from the cache.

Each round is one whole ``extract_corpus`` call, and at least 3 rounds are timed after a
warm-up call. ``utterances_per_s`` = files / median time; ``audio_s_per_s`` = seconds of audio
per second (the real-time factor's inverse).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import harness
import numpy as np
import pytest

CASES = ("1 worker", "all cores", "cached")


def voiced_signal(seconds: float, sampling_rate: int, seed: int) -> np.ndarray:
    """A speech-like test signal (module docstring), float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    low, high = sorted(rng.uniform(100.0, 250.0, size=2))
    pitch = low + (high - low) * 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))  # Hz
    phase = 2 * np.pi * np.cumsum(pitch) / sampling_rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 16))  # glottal-like 1/k spectrum
    syllables = 0.5 * (1 - np.cos(2 * np.pi * rng.uniform(3.0, 5.0) * t))  # 3-5 Hz envelope
    signal = 0.3 * syllables * harmonics + 0.01 * rng.standard_normal(t.size)
    return (signal / np.max(np.abs(signal))).astype(np.float32) * 0.9


@pytest.fixture(scope="module")
def wav_files(settings: harness.Settings, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    import soundfile

    size = settings.features
    folder = tmp_path_factory.mktemp("wavs")
    paths = []
    for index in range(size.files):
        path = folder / f"utterance_{index:03d}.wav"
        soundfile.write(
            path,
            voiced_signal(size.seconds, size.sampling_rate, seed=index),
            size.sampling_rate,
            subtype="PCM_16",
        )
        paths.append(path)
    return paths


@pytest.mark.parametrize("case", CASES)
def test_extract_corpus(benchmark, settings, wav_files, tmp_path, case):
    from sed_model.features import FEATURE_DIM, extract_corpus

    workers = 1 if case == "1 worker" else None
    fresh_folders = (tmp_path / f"cache_{round_}" for round_ in itertools.count())
    warm_cache = tmp_path / "warm_cache"

    def extract(cache_dir: Path) -> list[np.ndarray | None]:
        return extract_corpus(wav_files, cache_dir=cache_dir, workers=workers, progress=False)

    # Warm-up (imports, openSMILE's first configuration), and the cache that the cached case reads.
    reference = extract(warm_cache)
    for path, frames in zip(wav_files, reference):
        assert frames is not None and frames.ndim == 2 and frames.shape[1] == FEATURE_DIM, (
            f"{path.name}: expected (T, {FEATURE_DIM}) frames, "
            f"got {None if frames is None else frames.shape}"
        )

    if case == "cached":
        setup = lambda: ((warm_cache,), {})  # noqa: E731
    else:
        setup = lambda: ((next(fresh_folders),), {})  # noqa: E731
    if settings.disabled:
        result = benchmark.pedantic(extract, setup=setup)
    else:
        result = benchmark.pedantic(extract, setup=setup, rounds=harness.MIN_ROUNDS)
    assert all(np.array_equal(got, want) for got, want in zip(result, reference)), (
        f"{case}: the features differ from the first extraction of the same files"
    )

    size = settings.features
    extra = benchmark.extra_info
    extra.update(
        suite="features",
        case=case,
        workers=workers or os.cpu_count(),
        files=size.files,
        seconds_per_file=size.seconds,
        sampling_rate=size.sampling_rate,
        sizes=settings.sizes,
    )
    if not settings.disabled:
        median = benchmark.stats.stats.median
        extra["utterances_per_s"] = size.files / median
        extra["audio_s_per_s"] = size.files * size.seconds / median
