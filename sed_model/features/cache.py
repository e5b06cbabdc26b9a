"""Features of many files: the per-utterance cache and the pool of worker processes.

- Cache. One ``.npy`` per utterance under ``cache_dir/<kind>/<key[:2]>/<key>.npy``; the key
  hashes the file's bytes (SHA-256), the feature configuration, the openSMILE version and
  ``CACHE_FORMAT``, so a renamed or moved file still hits and an edited one misses. Files are
  written atomically (temporary file + ``os.replace``). A cache file that does not load or has
  the wrong shape/dtype/values is recomputed with a warning.
- Bad input. A missing, unreadable, empty or too-short file is left out (``None`` in the
  result) with a :class:`~sed_model.errors.DataWarning` naming the file and the reason, and a
  count at the end; ``strict=True`` raises :class:`~sed_model.errors.AudioError` instead.
- Parallelism. Misses are extracted in worker processes (``ProcessPoolExecutor``, "spawn"
  start method: safe after torch or other threaded libraries are loaded; scripts calling this
  need the usual ``if __name__ == "__main__":`` guard). ``workers=1`` runs in-process.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import uuid
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sed_model.audio import load_audio
from sed_model.errors import AudioError, DataWarning, SedError
from sed_model.features.opensmile_frames import (
    FEATURE_DIM,
    FUNCTIONALS_DIM,
    FeatureConfig,
    extract_frames,
    extract_functionals_vector,
    opensmile_version,
)
from sed_model.paths import feature_cache_dir
from sed_model.workers import exit_with_parent

CACHE_FORMAT = 1  # bump when the stored arrays change meaning (alignment, dtype, ...)


@dataclass(frozen=True)
class _Kind:
    """One kind of cached feature: how to compute it from a signal and what it looks like."""

    extract: object  # (signal, sampling_rate, FeatureConfig) -> np.ndarray
    valid_shape: object  # shape -> bool
    description: str  # progress bar label


_KINDS = {
    "frames": _Kind(extract_frames,
                    lambda shape: len(shape) == 2 and shape[0] >= 1 and shape[1] == FEATURE_DIM,
                    "openSMILE frames"),
    "functionals": _Kind(extract_functionals_vector, lambda shape: shape == (FUNCTIONALS_DIM,),
                         "openSMILE functionals"),
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
    parts = [content_digest, kind, config.feature_set, str(config.sampling_rate),
             opensmile_version(), str(CACHE_FORMAT)]
    if config.speed != 1.0:  # unperturbed features keep the keys they always had
        parts.append(f"speed {config.speed!r}")
    key_text = "|".join(parts)
    key = hashlib.sha256(key_text.encode()).hexdigest()
    return cache_dir / kind / key[:2] / f"{key}.npy"


def _read_cached(file: Path, kind: str) -> tuple[np.ndarray | None, str | None]:
    """(array, None) for a valid cache file; (None, reason) for a corrupt one; (None, None)
    if absent."""
    if not file.is_file():
        return None, None
    try:
        array = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        return None, f"does not load ({error})"
    if array.dtype != np.float32 or not _KINDS[kind].valid_shape(array.shape):
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
    """Decode, extract, store. Returns (array, skip reason, cache-write problem); runs in
    workers."""
    try:
        signal, sampling_rate = load_audio(job.path)
        array = _KINDS[job.kind].extract(signal, sampling_rate, job.config)
    except AudioError as error:
        return None, str(error).removeprefix(f"cannot decode {job.path}: "), None
    if job.cache_file is None:
        return array, None, None
    try:
        _write_atomically(job.cache_file, array)
    except OSError as error:
        return array, None, f"cannot write the feature cache {job.cache_file}: {error}"
    return array, None, None


@dataclass
class Skips:
    """The files left out so far: each one warned about, or, when ``strict``, an error."""

    strict: bool
    count: int = 0
    cache_problems: set[str] = field(default_factory=set)
    reasons: dict[Path, str] = field(default_factory=dict)  # why each file was left out

    def skip(self, path: Path, reason: str) -> None:
        if self.strict:
            raise AudioError(f"{path}: {reason}")
        self.count += 1
        self.reasons[path] = reason
        warnings.warn(f"skipping {path}: {reason}", DataWarning, stacklevel=5)

    def summarize(self, total: int) -> None:
        """One warning for the cache files not written, one with the count of skipped files."""
        for problem in sorted(self.cache_problems)[:1]:
            warnings.warn(f"{problem} (and {len(self.cache_problems) - 1} more); features were "
                          "not cached", DataWarning, stacklevel=4)
        if self.count:
            warnings.warn(f"skipped {self.count} of {total} audio files (reasons in the warnings "
                          "above)", DataWarning, stacklevel=4)


def file_digests(paths: list[Path], skips: Skips, hashed: bool = True) -> list[str | None]:
    """Each file's content digest ('' when not ``hashed``); None for a file left out (missing
    or unreadable, reported to ``skips``)."""
    digests: list[str | None] = []
    for path in paths:
        digest = None
        if not path.is_file():
            skips.skip(path, "file not found")
        elif not hashed:
            digest = ""
        else:
            try:
                digest = _file_digest(path)
            except OSError as error:
                skips.skip(path, f"cannot read the file ({error.strerror or error})")
        digests.append(digest)
    return digests


def _look_up(paths: list[Path], digests: list[str | None], kind: str, config: FeatureConfig,
             cache_dir: Path | None, results: list, keep: bool) -> list[tuple[int, _Job]]:
    """Fill ``results`` from the cache (``cache_dir`` None: no cache): the arrays, or with
    ``keep`` False the cache files unread; the jobs still to do."""
    todo = []
    for index, (path, digest) in enumerate(zip(paths, digests)):
        if digest is None:
            continue
        cache_file = None
        if cache_dir is not None:
            cache_file = _cache_file(cache_dir, kind, config, digest)
            if not keep and cache_file.is_file():  # read (and checked) by the caller
                results[index] = cache_file
                continue
            results[index], corrupt = _read_cached(cache_file, kind)
            if corrupt:
                warnings.warn(f"feature cache file {cache_file} {corrupt}; recomputing it from "
                              f"{path}", DataWarning, stacklevel=4)
            if results[index] is not None:
                continue
        todo.append((index, _Job(path, kind, config, cache_file)))
    return todo


def _outcomes(jobs: list[_Job], workers: int) -> Iterator[tuple]:
    """:func:`_compute` of every job, in order: in this process or in ``workers`` processes."""
    if workers <= 1:
        yield from map(_compute, jobs)
        return
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=exit_with_parent)
    try:
        chunksize = max(1, min(16, len(jobs) // (workers * 8)))
        yield from executor.map(_compute, jobs, chunksize=chunksize)
    finally:
        executor.shutdown(cancel_futures=True)


def check_workers(workers: int | None) -> int:
    """The number of extraction processes: ``workers``, or every core when None."""
    if workers is None:
        return os.cpu_count() or 1
    if workers < 1:
        raise SedError(f"workers={workers} is invalid; expected a positive number of processes")
    return workers


def fill(paths: list[Path], digests: list[str | None], kind: str, *, config: FeatureConfig,
         cache_dir: Path | None, workers: int, progress: bool, skips: Skips,
         keep: bool = True) -> list:
    """Per file its features (None where skipped): from the cache or extracted in ``workers``
    processes (and cached). ``keep`` False: the cache file instead of the array wherever it
    is in the cache, so that the features of a large corpus are never all in memory; read
    them with :func:`read_or_compute`."""
    results: list = [None] * len(paths)
    todo = _look_up(paths, digests, kind, config, cache_dir, results, keep)
    outcomes = _outcomes([job for _, job in todo], min(workers, len(todo)))
    with tqdm(total=len(paths), initial=len(paths) - len(todo), desc=_KINDS[kind].description,
              unit="utt", disable=not progress, smoothing=0.05) as bar:
        try:
            for (index, job), (array, reason, cache_problem) in zip(todo, outcomes):
                if reason is not None:
                    skips.skip(job.path, reason)
                cached = (not keep and array is not None and job.cache_file is not None
                          and not cache_problem)
                results[index] = job.cache_file if cached else array
                if cache_problem:
                    skips.cache_problems.add(cache_problem)
                bar.update(1)
        finally:
            outcomes.close()  # stops the worker processes, also on a strict error
    return results


def read_or_compute(source: Path | np.ndarray | None, path: Path,
                    config: FeatureConfig) -> np.ndarray | None:
    """The frames that :func:`fill` (``keep`` False) gave for ``path``: ``source`` itself, or
    read from the cache file ``source``, recomputed (with a warning) if that is corrupt."""
    if not isinstance(source, Path):
        return source
    array, corrupt = _read_cached(source, "frames")
    if array is None:
        warnings.warn(f"feature cache file {source} {corrupt or 'is gone'}; recomputing it "
                      f"from {path}", DataWarning, stacklevel=3)
        array, reason, _ = _compute(_Job(path, "frames", config, source))
        if reason is not None:
            warnings.warn(f"skipping {path}: {reason}", DataWarning, stacklevel=3)
    return array


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
    workers = check_workers(workers)
    paths = [Path(p) for p in paths]
    folder = (Path(cache_dir) if cache_dir is not None else feature_cache_dir()) if cache else None
    skips = Skips(strict)
    digests = file_digests(paths, skips, hashed=folder is not None)
    results = fill(paths, digests, kind, config=config, cache_dir=folder, workers=workers,
                   progress=progress, skips=skips)
    skips.summarize(len(paths))
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
    return _extract(paths, "frames", config=config, cache_dir=cache_dir, cache=cache,
                    workers=workers, progress=progress, strict=strict)


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
    return _extract(paths, "functionals", config=config, cache_dir=cache_dir, cache=cache,
                    workers=workers, progress=progress, strict=strict)
