"""Frame-level openSMILE ComParE_2016 features (the paper's input), their cache and normalisation.

Per 10 ms frame: the 65 ComParE_2016 low-level descriptors (LLDs) followed by their 65 deltas,
``x`` of shape (T, 130). Choices where the paper is silent, recorded here:

- Alignment. openSMILE emits the LLDs and the deltas from two separate sinks: a signal of
  T seconds gives 100T-4 LLD rows but 100T-2 delta rows, the extra rows repeating the last
  timestamp. Row i of both starts at the same time (checked: the deltas recomputed from the LLD
  rows match the delta rows at the same position, and no other shift), so the two are joined by
  position and cut to the shorter, never joined on the time index.
- Input. ``opensmile.Smile.process_signal`` on the decoded mono signal (``load_audio``), so wav
  files and the audio of eNTERFACE's .avi files go through the same path. Native sample rate
  unless ``FeatureConfig.sampling_rate`` asks for resampling.
- Full scale. opensmile converts the signal to int16 as ``(x * 32768).astype(int16)``, which
  wraps a sample of +1.0 round to -32768; signals are clipped to [-1, 32767/32768] first.
- Minimum length. ComParE_2016's pitch and voice-quality LLDs use a 60 ms window: below 60 ms
  openSMILE returns a single row of NaN ("Segment too short"); from 60 ms on it returns >= 2
  finite rows. Shorter signals are therefore skipped as "too short"; any output that is still
  not finite is skipped too.
- Cache. One ``.npy`` per utterance under ``cache_dir/<kind>/<key[:2]>/<key>.npy``; the key
  hashes the file's bytes (SHA-256), the feature configuration, the openSMILE version and
  ``CACHE_FORMAT``, so a renamed or moved file still hits and an edited one misses. Files are
  written atomically (temporary file + ``os.replace``). A cache file that does not load or has
  the wrong shape/dtype/values is recomputed with a warning.
- Bad input. A missing, unreadable, empty or too-short file is left out (``None`` in the result)
  with a :class:`~sed_model.errors.DataWarning` naming the file and the reason, and a count at
  the end; ``strict=True`` raises :class:`~sed_model.errors.AudioError` instead.
- Parallelism. Misses are extracted in worker processes (``ProcessPoolExecutor``, "spawn"
  start method: safe after torch or other threaded libraries are loaded; scripts calling this
  need the usual ``if __name__ == "__main__":`` guard). ``workers=1`` runs in-process.
- Normalisation. z-score statistics fitted on training utterances only (:class:`Normalizer`),
  pooled ("global") or per training speaker ("speaker"); speakers not seen in the fit (the test
  speakers of a speaker-independent split) use the pooled training statistics, so nothing is
  ever fitted on test data.
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import uuid
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sed_model.audio import load_audio
from sed_model.errors import AudioError, DataWarning, SedError
from sed_model.paths import feature_cache_dir

__all__ = [
    "CACHE_FORMAT",
    "FEATURE_DIM",
    "FUNCTIONALS_DIM",
    "MIN_DURATION_S",
    "FeatureConfig",
    "Normalizer",
    "extract_corpus",
    "extract_frames",
    "extract_functionals",
    "extract_functionals_vector",
    "frame_feature_names",
    "load_audio",
]

LLD_DIM = 65
FEATURE_DIM = 2 * LLD_DIM  # 65 ComParE_2016 LLDs + 65 deltas per 10 ms frame
FUNCTIONALS_DIM = 6373  # ComParE_2016 functionals per utterance (SVM baseline)
MIN_DURATION_S = 0.060  # shortest signal for which openSMILE returns finite ComParE frames
CACHE_FORMAT = 1  # bump when the stored arrays change meaning (alignment, dtype, ...)
SUPPORTED_FEATURE_SETS = ("ComParE_2016",)


@dataclass(frozen=True)
class FeatureConfig:
    """What enters the features (and so the cache key).

    feature_set: the openSMILE feature set; only "ComParE_2016" (the paper's) has the LLD deltas
        that make up the 130 columns.
    sampling_rate: resample to this rate before extraction; None keeps each file's native rate.
    """

    feature_set: str = "ComParE_2016"
    sampling_rate: int | None = None

    def __post_init__(self):
        if self.feature_set not in SUPPORTED_FEATURE_SETS:
            raise SedError(
                f"feature set {self.feature_set!r} is not supported; expected one of {SUPPORTED_FEATURE_SETS}"
            )
        if self.sampling_rate is not None and (not isinstance(self.sampling_rate, int) or self.sampling_rate < 8000):
            raise SedError(f"sampling_rate {self.sampling_rate!r} is invalid; expected None or an integer >= 8000 Hz")


@functools.lru_cache(maxsize=None)
def _smile(feature_set: str, level: str, sampling_rate: int | None):
    """One openSMILE extractor per (set, level, rate) and process (construction costs ~0.15 s)."""
    import opensmile

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet[feature_set],
        feature_level=opensmile.FeatureLevel[level],
        sampling_rate=sampling_rate,
        resample=sampling_rate is not None,
    )


def _opensmile_version() -> str:
    import opensmile

    return opensmile.__version__


def _as_opensmile_input(signal: np.ndarray, sampling_rate: int) -> np.ndarray:
    """(n,) float32 clipped to the int16 range opensmile converts to; AudioError if not usable."""
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim != 1:
        raise AudioError(f"expected a mono signal of shape (n,), got shape {signal.shape}")
    _check_length(signal, sampling_rate)
    return np.clip(signal, -1.0, 32767 / 32768)


def _check_length(signal: np.ndarray, sampling_rate: int) -> None:
    if signal.size == 0:
        raise AudioError("empty audio (0 samples)")
    min_samples = -(-sampling_rate * round(MIN_DURATION_S * 1000) // 1000)  # ceil, integer math
    if signal.size < min_samples:
        raise AudioError(
            f"too short ({signal.size / sampling_rate * 1000:.0f} ms; openSMILE ComParE_2016 needs "
            f">= {MIN_DURATION_S * 1000:.0f} ms)"
        )


def extract_frames(signal: np.ndarray, sampling_rate: int, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """ComParE_2016 LLDs and deltas of one mono signal: (T, 130) float32, aligned by position.

    signal: (n,) float mono. Raises AudioError when the signal is empty, too short or gives
    non-finite features.
    """
    signal = _as_opensmile_input(signal, sampling_rate)
    lld = _smile(config.feature_set, "LowLevelDescriptors", config.sampling_rate).process_signal(
        signal, sampling_rate
    ).to_numpy(dtype=np.float32)  # (100T-4, 65)
    delta = _smile(config.feature_set, "LowLevelDescriptors_Deltas", config.sampling_rate).process_signal(
        signal, sampling_rate
    ).to_numpy(dtype=np.float32)  # (100T-2, 65), tail rows repeat the last timestamp
    frames = min(len(lld), len(delta))
    x = np.concatenate([lld[:frames], delta[:frames]], axis=1)  # (T, 130)
    if frames == 0 or not np.isfinite(x).all():
        raise AudioError("openSMILE returned no finite frames")
    return np.ascontiguousarray(x)


def extract_functionals_vector(
    signal: np.ndarray, sampling_rate: int, config: FeatureConfig = FeatureConfig()
) -> np.ndarray:
    """ComParE_2016 functionals of one mono signal: (6373,) float32 (the SVM baseline's input)."""
    signal = _as_opensmile_input(signal, sampling_rate)
    vector = _smile(config.feature_set, "Functionals", config.sampling_rate).process_signal(
        signal, sampling_rate
    ).to_numpy(dtype=np.float32)[0]  # (6373,)
    if not np.isfinite(vector).all():
        raise AudioError("openSMILE returned non-finite functionals")
    return vector


def frame_feature_names(config: FeatureConfig = FeatureConfig()) -> list[str]:
    """The 130 column names of ``extract_frames``: 65 LLD names, then their 65 ``*_de`` deltas."""
    return list(_smile(config.feature_set, "LowLevelDescriptors", None).feature_names) + list(
        _smile(config.feature_set, "LowLevelDescriptors_Deltas", None).feature_names
    )


# --- the per-utterance cache and the parallel driver ---------------------------------------

_KINDS = {  # kind -> (per-signal extractor, check of a stored array's shape)
    "frames": (extract_frames, lambda shape: len(shape) == 2 and shape[0] >= 1 and shape[1] == FEATURE_DIM),
    "functionals": (extract_functionals_vector, lambda shape: shape == (FUNCTIONALS_DIM,)),
}


@dataclass(frozen=True)
class _Job:
    path: Path
    kind: str
    config: FeatureConfig
    cache_file: Path | None


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_file(cache_dir: Path, kind: str, config: FeatureConfig, content_digest: str) -> Path:
    key_text = "|".join(
        [content_digest, kind, config.feature_set, str(config.sampling_rate), _opensmile_version(), str(CACHE_FORMAT)]
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()
    return cache_dir / kind / key[:2] / f"{key}.npy"


def _read_cached(file: Path, kind: str) -> tuple[np.ndarray | None, str | None]:
    """(array, None) for a valid cache file; (None, reason) for a corrupt one; (None, None) if absent."""
    if not file.is_file():
        return None, None
    try:
        array = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        return None, f"does not load ({error})"
    if array.dtype != np.float32 or not _KINDS[kind][1](array.shape):
        return None, f"has shape {array.shape} and dtype {array.dtype}"
    if not np.isfinite(array).all():
        return None, "holds non-finite values"
    return array, None


def _write_atomically(file: Path, array: np.ndarray) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    temporary = file.with_name(f"{file.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(temporary, file)
    finally:
        temporary.unlink(missing_ok=True)


def _compute(job: _Job) -> tuple[np.ndarray | None, str | None, str | None]:
    """Decode, extract, store. Returns (array, skip reason, cache-write problem); runs in workers."""
    try:
        signal, sampling_rate = load_audio(job.path)
        array = _KINDS[job.kind][0](signal, sampling_rate, job.config)
    except AudioError as error:
        return None, str(error).removeprefix(f"cannot decode {job.path}: "), None
    if job.cache_file is None:
        return array, None, None
    try:
        _write_atomically(job.cache_file, array)
    except OSError as error:
        return array, None, f"cannot write the feature cache {job.cache_file}: {error}"
    return array, None, None


def _extract(
    paths: Sequence[str | Path],
    kind: str,
    *,
    config: FeatureConfig,
    cache_dir: str | Path | None,
    cache: bool,
    workers: int | None,
    progress: bool,
    strict: bool,
) -> list[np.ndarray | None]:
    if workers is None:
        workers = os.cpu_count() or 1
    elif workers < 1:
        raise SedError(f"workers={workers} is invalid; expected a positive number of processes")
    paths = [Path(p) for p in paths]
    cache_dir = Path(cache_dir) if cache_dir is not None else feature_cache_dir()
    results: list[np.ndarray | None] = [None] * len(paths)
    skipped: dict[int, str] = {}
    todo: list[tuple[int, _Job]] = []

    def skip(index: int, reason: str) -> None:
        if strict:
            raise AudioError(f"{paths[index]}: {reason}")
        skipped[index] = reason
        warnings.warn(f"skipping {paths[index]}: {reason}", DataWarning, stacklevel=4)

    for index, path in enumerate(paths):
        if not path.is_file():
            skip(index, "file not found")
            continue
        cache_file = None
        if cache:
            try:
                cache_file = _cache_file(cache_dir, kind, config, _file_digest(path))
            except OSError as error:
                skip(index, f"cannot read the file ({error.strerror or error})")
                continue
            results[index], corrupt = _read_cached(cache_file, kind)
            if corrupt:
                warnings.warn(
                    f"feature cache file {cache_file} {corrupt}; recomputing it from {path}", DataWarning, stacklevel=3
                )
            if results[index] is not None:
                continue
        todo.append((index, _Job(path, kind, config, cache_file)))

    workers = min(workers, len(todo))
    description = {"frames": "openSMILE frames", "functionals": "openSMILE functionals"}[kind]
    cache_problems: set[str] = set()
    with tqdm(total=len(paths), initial=len(paths) - len(todo), desc=description, unit="utt", disable=not progress) as bar:
        if workers <= 1:
            outcomes = map(_compute, (job for _, job in todo))
            executor = None
        else:
            executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            chunksize = max(1, min(16, len(todo) // (workers * 8)))
            outcomes = executor.map(_compute, (job for _, job in todo), chunksize=chunksize)
        try:
            for (index, _), (array, reason, cache_problem) in zip(todo, outcomes):
                if reason is not None:
                    skip(index, reason)
                results[index] = array
                if cache_problem:
                    cache_problems.add(cache_problem)
                bar.update(1)
        finally:
            if executor is not None:
                executor.shutdown(cancel_futures=True)
    for problem in sorted(cache_problems)[:1]:
        warnings.warn(f"{problem} (and {len(cache_problems) - 1} more); features were not cached", DataWarning, stacklevel=3)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} of {len(paths)} audio files (reasons in the warnings above)",
            DataWarning,
            stacklevel=3,
        )
    return results


def extract_corpus(
    paths: Sequence[str | Path],
    *,
    config: FeatureConfig = FeatureConfig(),
    cache_dir: str | Path | None = None,
    cache: bool = True,
    workers: int | None = None,
    progress: bool = True,
    strict: bool = False,
) -> list[np.ndarray | None]:
    """(T_i, 130) float32 frames for every file, in order; None where the file was skipped.

    cache_dir: feature cache folder (default ``cache_root()/features``); cache=False neither
    reads nor writes it. workers: processes for the files not in the cache (default
    ``os.cpu_count()``; 1 runs in this process). progress: tqdm bar. strict: raise AudioError on
    the first bad file instead of skipping it with a warning.
    """
    return _extract(
        paths, "frames", config=config, cache_dir=cache_dir, cache=cache, workers=workers, progress=progress, strict=strict
    )


def extract_functionals(
    paths: Sequence[str | Path],
    *,
    config: FeatureConfig = FeatureConfig(),
    cache_dir: str | Path | None = None,
    cache: bool = True,
    workers: int | None = None,
    progress: bool = True,
    strict: bool = False,
) -> list[np.ndarray | None]:
    """(6373,) float32 ComParE_2016 functionals per file (SVM baseline); as ``extract_corpus``."""
    return _extract(
        paths,
        "functionals",
        config=config,
        cache_dir=cache_dir,
        cache=cache,
        workers=workers,
        progress=progress,
        strict=strict,
    )


# --- normalisation -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Moments:
    """Frame count, mean and sum of squared deviations (Chan et al.'s mergeable form)."""

    count: int
    mean: np.ndarray  # (D,) float64
    m2: np.ndarray  # (D,) float64

    @classmethod
    def of(cls, x: np.ndarray) -> _Moments:
        x = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])  # (T, D)
        mean = x.mean(axis=0)
        return cls(len(x), mean, ((x - mean) ** 2).sum(axis=0))

    def merge(self, other: _Moments) -> _Moments:
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / count)
        return _Moments(count, mean, m2)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        std = np.sqrt(self.m2 / self.count)
        return self.mean, np.where(std < Normalizer.MIN_STD, 1.0, std)  # constant features pass unscaled


class Normalizer:
    """z-score normalisation, ``(x - mean) / std`` per feature, fitted on the training split only.

    mode="global": one mean/std over all training frames. mode="speaker": each training speaker
    also gets its own mean/std; a speaker not seen in the fit (every test speaker of a
    speaker-independent split) falls back to the pooled training statistics. Statistics are
    frame-weighted; a feature whose std is below MIN_STD is centred but not scaled.

    Typical use, which never touches the test speakers::

        normalizer = Normalizer.fit_fold(features, fold, speakers)
        x = normalizer(features[i], speakers[i])
    """

    MODES = ("global", "speaker")
    MIN_STD = 1e-6

    def __init__(self, mode: str, mean: np.ndarray, std: np.ndarray, per_speaker: dict | None = None):
        if mode not in self.MODES:
            raise SedError(f"normalisation mode {mode!r} is unknown; expected one of {self.MODES}")
        self.mode = mode
        self.mean = np.asarray(mean, dtype=np.float32)  # (D,)
        self.std = np.asarray(std, dtype=np.float32)  # (D,)
        self.per_speaker = {
            speaker: (np.asarray(m, dtype=np.float32), np.asarray(s, dtype=np.float32))
            for speaker, (m, s) in (per_speaker or {}).items()
        }

    @classmethod
    def fit(
        cls, features: Sequence[np.ndarray], speakers: Sequence[str] | None = None, mode: str = "global"
    ) -> Normalizer:
        """Fit on the given (training) utterances; features: list of (T_i, D) arrays."""
        if mode not in cls.MODES:
            raise SedError(f"normalisation mode {mode!r} is unknown; expected one of {cls.MODES}")
        if not features:
            raise SedError("cannot fit normalisation statistics on an empty training set")
        if mode == "speaker" and (speakers is None or len(speakers) != len(features)):
            raise SedError("per-speaker normalisation needs one speaker id per training utterance")
        moments = [_Moments.of(x) for x in features]
        pooled = functools.reduce(_Moments.merge, moments)
        per_speaker = {}
        if mode == "speaker":
            by_speaker: dict[str, _Moments] = {}
            for speaker, m in zip(speakers, moments):
                by_speaker[speaker] = by_speaker[speaker].merge(m) if speaker in by_speaker else m
            per_speaker = {speaker: m.mean_std() for speaker, m in sorted(by_speaker.items())}
        return cls(mode, *pooled.mean_std(), per_speaker)

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
        return cls.fit(
            [features[i] for i in train], None if speakers is None else [speakers[i] for i in train], mode
        )

    def __call__(self, x: np.ndarray, speaker: str | None = None) -> np.ndarray:
        """(T, D) -> (T, D) float32 normalised with the speaker's statistics or the pooled ones."""
        mean, std = self.per_speaker.get(speaker, (self.mean, self.std))
        return ((np.asarray(x, dtype=np.float32) - mean) / std).astype(np.float32, copy=False)

    def state_dict(self) -> dict:
        """Plain Python lists and strings: safe for JSON and for ``torch.load(weights_only=True)``."""
        return {
            "mode": self.mode,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "per_speaker": {s: {"mean": m.tolist(), "std": d.tolist()} for s, (m, d) in self.per_speaker.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> Normalizer:
        per_speaker = {s: (v["mean"], v["std"]) for s, v in state.get("per_speaker", {}).items()}
        return cls(state["mode"], state["mean"], state["std"], per_speaker)
