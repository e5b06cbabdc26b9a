"""The feature store: the frames of a whole corpus in one memory-mapped file.

A corpus' frames (one feature configuration: the original audio, or one speed-perturbed
version) are written once, after extraction, to a folder ``cache_dir/stores/<key>/``::

    frames.npy     (n_frames, 130) float32: every utterance's frames, one after another
    offsets.npy    (n_rows + 1,) int64: row i is frames[offsets[i]:offsets[i + 1]]
    manifest.json  what was stored (key, configuration, versions, sizes, checksums, skips)

and mapped read-only (``mmap``) by every process that trains on it: the data are read from
the page cache, which the kernel shares between the processes of ``compare --jobs`` and the
ranks of a distributed run, and a process holds only the rows it is reading. The key hashes
the content digest of every file (the per-file cache's keys, in corpus order), the feature
configuration, the openSMILE version and the formats: any change gives another store.

The per-file cache (:mod:`sed_model.features.cache`) stays the extraction cache (content-keyed,
resumable, parallel); the store is built from it by streaming, one utterance at a time.

Integrity. The folder is written under a temporary name and renamed into place when complete
(the manifest last, ``fsync`` before the rename), so a crash or a full disk leaves no store. On
opening, the manifest's key, configuration and versions must match, the data file must have
the size and header it records, the index must match its checksum, start at 0, never decrease
and end at the number of frames, and a checksum of sampled blocks of the data must match.
Anything else is reported in one warning line and the store is rebuilt from the cache; a
store is never read in part. A store that cannot be written (full disk, read-only cache)
is held in memory instead, with a warning.

Memory. Mapped pages that a process has read count in its resident set until the kernel
reclaims them; :class:`Frames` hands them back (``madvise(MADV_DONTNEED)``: the pages stay
in the page cache) after every :data:`RELEASE_BYTES` read, so a process' resident memory stays
bounded by what it holds, not by the corpus.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sed_model.errors import DataWarning
from sed_model.features import cache
from sed_model.features.opensmile_frames import FEATURE_DIM, FeatureConfig, opensmile_version
from sed_model.paths import feature_cache_dir

STORE_FORMAT = 1  # bump when the files change layout or meaning
DATA_FILE, INDEX_FILE, MANIFEST_FILE = "frames.npy", "offsets.npy", "manifest.json"
HEADER_BYTES = 128  # the .npy header of the data file, fixed so it can be written last
RELEASE_BYTES = 64 << 20  # read this much, then hand the mapped pages back
SAMPLE_BLOCKS, SAMPLE_BYTES = 64, 4096  # the data checksum: this many blocks of this size


class _Mapping:
    """A read-only shared mapping of a file, whose pages are handed back now and then."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as file:
            self.map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        self.read = 0

    def touch(self, n_bytes: int) -> None:
        self.read += n_bytes
        if self.read >= RELEASE_BYTES:
            self.release()

    def release(self) -> None:
        """Drop the pages from this process' resident set (they stay in the page cache)."""
        self.read = 0
        self.map.madvise(mmap.MADV_DONTNEED)


class Frames(Sequence):
    """Rows of one contiguous (n_frames, D) float32 array: row i is ``data[starts[i]:ends[i]]``
    (a read-only view, no copy). An empty row is an utterance that gave no features."""

    def __init__(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 mapping: _Mapping | None = None) -> None:
        self.data, self.starts, self.ends, self.mapping = data, starts, ends, mapping

    @classmethod
    def from_offsets(cls, data: np.ndarray, offsets: np.ndarray,
                     mapping: _Mapping | None = None) -> Frames:
        return cls(data, offsets[:-1], offsets[1:], mapping)

    @classmethod
    def in_memory(cls, rows: Iterable[np.ndarray | None]) -> Frames:
        """The rows held in one array in memory (None: an empty row)."""
        rows = [np.zeros((0, FEATURE_DIM), np.float32) if r is None else r for r in rows]
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        data = (np.concatenate(rows).astype(np.float32, copy=False) if rows
                else np.zeros((0, FEATURE_DIM), np.float32))
        return cls.from_offsets(data, offsets)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> np.ndarray:
        start, end = int(self.starts[index]), int(self.ends[index])
        if self.mapping is not None:
            self.mapping.touch((end - start) * self.data.itemsize * self.data.shape[1])
        return self.data[start:end]

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64 frames per row."""
        return (self.ends - self.starts).astype(np.int64)

    def subset(self, indices) -> Frames:
        """The rows ``indices``, in that order (sharing the data)."""
        indices = np.asarray(indices, dtype=np.int64)
        return Frames(self.data, self.starts[indices], self.ends[indices], self.mapping)


def frame_lengths(frames: Sequence[np.ndarray]) -> np.ndarray:
    """(N,) int64 frames per row of any sequence of (T_i, D) arrays."""
    if isinstance(frames, Frames):
        return frames.lengths
    return np.array([len(f) for f in frames], dtype=np.int64)


class RowView(Sequence):
    """The rows ``indices`` of any sequence, each read when it is asked for."""

    def __init__(self, rows: Sequence[np.ndarray], indices) -> None:
        self.rows, self.indices = rows, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.rows[int(self.indices[index])]


def select_rows(frames: Sequence[np.ndarray], indices) -> Sequence[np.ndarray]:
    """The rows ``indices`` of ``frames``, none read yet: a :class:`Frames` view of the same
    data, or a :class:`RowView`. Passes over a corpus iterate this, so that they hold one row
    at a time (and a store's pages are handed back as they go)."""
    if isinstance(frames, Frames):
        return frames.subset(indices)
    return RowView(frames, indices)


# ---------------------------------------------------------------------------- the files
class StoreInvalid(Exception):
    """Why a store folder cannot be read (the text follows the folder name in a message)."""


def _npy_header(n_frames: int) -> bytes:
    """A version 1.0 .npy header of exactly HEADER_BYTES for (n_frames, FEATURE_DIM) float32."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n_frames}, {FEATURE_DIM}), }}"
    body = text.ljust(HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")


def _sample_digest(path: Path, size: int) -> str:
    """SHA-256 of SAMPLE_BLOCKS evenly spaced blocks of the file (its first and last included)."""
    digest = hashlib.sha256()
    positions = np.linspace(0, max(size - SAMPLE_BYTES, 0), SAMPLE_BLOCKS).astype(np.int64)
    with open(path, "rb") as file:
        for position in np.unique(positions):
            file.seek(int(position))
            digest.update(file.read(SAMPLE_BYTES))
    return digest.hexdigest()


def _array_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def write_store(folder: Path, rows: Iterable[np.ndarray | None], identity: dict,
                skipped: Sequence[tuple[int, str]] = ()) -> None:
    """Write ``rows`` (None: an empty row) as the store ``folder``, atomically: under a
    temporary name, renamed into place once complete. ``identity`` (the key, configuration
    and versions) goes into the manifest and must match when the store is opened;
    ``skipped`` (row, reason) are the files left out, reported again on every opening."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.with_name(f"{folder.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    temporary.mkdir()
    try:
        offsets = [0]
        with open(temporary / DATA_FILE, "wb") as file:
            file.write(b"\0" * HEADER_BYTES)  # the header, once the shape is known
            for row in rows:
                if row is not None:
                    file.write(np.ascontiguousarray(row, dtype=np.float32).data)
                    offsets.append(offsets[-1] + len(row))
                else:
                    offsets.append(offsets[-1])
            file.seek(0)
            file.write(_npy_header(offsets[-1]))
            file.flush()
            os.fsync(file.fileno())
        index = np.asarray(offsets, dtype=np.int64)
        np.save(temporary / INDEX_FILE, index)
        size = (temporary / DATA_FILE).stat().st_size
        manifest = {**identity, "rows": len(index) - 1, "frames": int(index[-1]),
                    "dim": FEATURE_DIM, "data_bytes": size, "index_sha256": _array_digest(index),
                    "data_sample_sha256": _sample_digest(temporary / DATA_FILE, size),
                    "skipped": [[int(r), reason] for r, reason in skipped]}
        with open(temporary / MANIFEST_FILE, "w") as file:
            json.dump(manifest, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        _install(temporary, folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _install(temporary: Path, folder: Path) -> None:
    """Rename the complete ``temporary`` folder to ``folder``, moving an old one aside (a
    process that has it mapped keeps reading its files until it closes them)."""
    if folder.exists():
        stale = folder.with_name(f"{folder.name}.{uuid.uuid4().hex}.stale")
        try:
            folder.rename(stale)
        except FileNotFoundError:
            pass  # another process moved it first
        else:
            shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(temporary, folder)
    except OSError:
        if not (folder / MANIFEST_FILE).is_file():  # not another process' complete store
            raise


def read_manifest(folder: Path) -> dict:
    try:
        with open(folder / MANIFEST_FILE) as file:
            manifest = json.load(file)
    except FileNotFoundError:
        raise StoreInvalid("has no manifest (an incomplete store)") from None
    except (OSError, ValueError) as error:
        raise StoreInvalid(f"has a manifest that does not load ({error})") from None
    if not isinstance(manifest, dict):
        raise StoreInvalid("has a manifest that is not a JSON object")
    return manifest


def _check_identity(manifest: dict, identity: dict) -> None:
    differ = [k for k, v in identity.items() if manifest.get(k) != v]
    if differ:
        shown = ", ".join(f"{k} {manifest.get(k)!r} instead of {identity[k]!r}"
                          for k in differ if k != "key")
        raise StoreInvalid("was written for other inputs, another feature configuration or "
                           f"version ({shown or 'another key'})")


def _check_data(folder: Path, manifest: dict) -> int:
    """The data file's header size; :class:`StoreInvalid` unless its size, header and
    sampled checksum are those of the manifest."""
    path = folder / DATA_FILE
    try:
        size = path.stat().st_size
        if size != manifest["data_bytes"]:
            raise StoreInvalid(f"has a data file of {size} bytes; its manifest says "
                               f"{manifest['data_bytes']} (truncated or overwritten)")
        with open(path, "rb") as file:
            if np.lib.format.read_magic(file) != (1, 0):
                raise ValueError("not a version 1.0 .npy file")
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(file)
            header = file.tell()
    except (OSError, ValueError, KeyError) as error:
        raise StoreInvalid(f"has a data file that does not load ({error})") from None
    expected = (manifest["frames"], FEATURE_DIM)
    if shape != expected or fortran or dtype != np.float32:
        raise StoreInvalid(f"has data of shape {shape} and dtype {dtype}; expected {expected} "
                           "float32")
    if header + manifest["frames"] * FEATURE_DIM * 4 != size:
        raise StoreInvalid(f"has a data file of {size} bytes, not the size of its shape")
    if _sample_digest(path, size) != manifest["data_sample_sha256"]:
        raise StoreInvalid("has data that do not match their checksum (overwritten or corrupt)")
    return header


def _check_index(folder: Path, manifest: dict) -> np.ndarray:
    try:
        index = np.load(folder / INDEX_FILE, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise StoreInvalid(f"has an index that does not load ({error})") from None
    if (index.dtype != np.int64 or index.shape != (manifest["rows"] + 1,)
            or _array_digest(index) != manifest["index_sha256"]):
        raise StoreInvalid("has an index that does not match its checksum")
    if index[0] != 0 or index[-1] != manifest["frames"] or (np.diff(index) < 0).any():
        raise StoreInvalid(f"has an index that disagrees with its data ({manifest['frames']} "
                           f"frames; the index spans {index[0]}..{index[-1]})")
    return index


def open_store(folder: Path, identity: dict) -> tuple[Frames, dict]:
    """The store ``folder`` mapped (its rows, its manifest); :class:`StoreInvalid` when it is
    missing, incomplete, written for other inputs or corrupt (module docstring)."""
    manifest = read_manifest(folder)
    _check_identity(manifest, identity)
    try:
        header = _check_data(folder, manifest)
        index = _check_index(folder, manifest)
        skipped = [(int(r), str(reason)) for r, reason in manifest["skipped"]]
    except (KeyError, TypeError, ValueError) as error:
        raise StoreInvalid(f"has a manifest without {error}") from None
    mapping = _Mapping(folder / DATA_FILE)
    data = np.frombuffer(mapping.map, dtype=np.float32, count=manifest["frames"] * FEATURE_DIM,
                         offset=header).reshape(manifest["frames"], FEATURE_DIM)
    manifest["skipped"] = skipped
    return Frames.from_offsets(data, index, mapping), manifest


# -------------------------------------------------------------------- a corpus' store
def store_identity(digests: Sequence[str | None], config: FeatureConfig,
                   with_fallback: bool) -> dict:
    """What a store of these files (content digests, None: left out) holds, and its key."""
    settings = {**asdict(config), "fallback": with_fallback}
    versions = {"format": STORE_FORMAT, "cache_format": cache.CACHE_FORMAT,
                "opensmile": opensmile_version()}
    text = json.dumps([settings, versions, [d or "-" for d in digests]])
    return {"key": hashlib.sha256(text.encode()).hexdigest(), "config": settings, **versions}


def store_folder(cache_dir: Path, identity: dict) -> Path:
    return cache_dir / "stores" / f"frames-{identity['key'][:32]}"


def _rows(paths: list[Path], sources: list, config: FeatureConfig,
          fallback: Sequence[np.ndarray] | None):
    """The frames of every file, read one at a time (``fallback[i]`` where none)."""
    for i, (path, source) in enumerate(zip(paths, sources)):
        row = cache.read_or_compute(source, path, config)
        if (row is None or len(row) == 0) and fallback is not None and len(fallback[i]):
            row = fallback[i]
        yield row


def corpus_frames(
    paths: Sequence[str | Path],
    *,
    config: FeatureConfig = FeatureConfig(),
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    strict: bool = False,
    fallback: Sequence[np.ndarray] | None = None,
) -> Frames:
    """The (T_i, 130) frames of every file, in order, from the corpus' store (built first when
    missing or invalid); an empty row where the file was left out (with a warning, or an
    :class:`~sed_model.errors.AudioError` when ``strict``, as
    :func:`~sed_model.features.extract_corpus`). ``fallback`` (one row per file): the rows to
    store where a file gives no features (a speed-perturbed version falls back on the
    original's)."""
    workers = cache.check_workers(workers)
    paths = [Path(p) for p in paths]
    folder = Path(cache_dir) if cache_dir is not None else feature_cache_dir()
    skips = cache.Skips(strict)
    digests = cache.file_digests(paths, skips)
    identity = store_identity(digests, config, fallback is not None)
    store = store_folder(folder, identity)
    try:
        frames, manifest = open_store(store, identity)
    except StoreInvalid as problem:
        if store.exists():
            warnings.warn(f"feature store {store} {problem}; rebuilding it", DataWarning,
                          stacklevel=2)
        frames, manifest = _build(store, identity, paths, digests, config, folder, workers,
                                  progress, skips, fallback)
    else:
        for row, reason in manifest["skipped"]:
            skips.skip(paths[row], reason)
    skips.summarize(len(paths))
    return frames


def _build(store: Path, identity: dict, paths: list[Path], digests: list, config: FeatureConfig,
           folder: Path, workers: int, progress: bool, skips: cache.Skips,
           fallback) -> tuple[Frames, dict]:
    """Extract what the per-file cache lacks, then write the store from it and open it."""
    sources = cache.fill(paths, digests, "frames", config=config, cache_dir=folder,
                         workers=workers, progress=progress, skips=skips, keep=False)
    skipped = [(i, skips.reasons[path]) for i, (path, digest, source)
               in enumerate(zip(paths, digests, sources)) if digest is not None and source is None]
    try:
        write_store(store, _rows(paths, sources, config, fallback), identity, skipped)
        return open_store(store, identity)
    except (OSError, StoreInvalid) as error:
        warnings.warn(f"cannot write the feature store {store} ({error}); holding the "
                      "features in memory instead", DataWarning, stacklevel=3)
        return Frames.in_memory(_rows(paths, sources, config, fallback)), {"skipped": skipped}
