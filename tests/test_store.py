"""The feature store: what it holds, that a bad store is never read, and that training on it
gives what training on the same features in memory gives."""

import dataclasses
import errno
import json
import shutil
import warnings
import weakref
from collections.abc import Sequence

import numpy as np
import pytest

from sed_model.augment import SPEEDS, SpeakerShift
from sed_model.config import make_config
from sed_model.data import load_dataset
from sed_model.errors import AudioError, DataWarning
from sed_model.features import FeatureConfig, Normalizer, extract_corpus
from sed_model.features import store as feature_store
from sed_model.features.store import (
    Frames,
    StoreInvalid,
    corpus_frames,
    open_store,
    store_folder,
    store_identity,
    write_store,
)
from sed_model.runtime import RunOptions
from sed_model.splits import Fold
from sed_model.trainer import train

IDENTITY = {"key": "k" * 64, "config": {"speed": 1.0}, "format": feature_store.STORE_FORMAT}


def random_rows(n=7, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(1, 40)), 130)).astype(np.float32)
            for _ in range(n)]


@pytest.fixture
def written(tmp_path):
    rows = random_rows()
    folder = tmp_path / "stores" / "s"
    write_store(folder, [rows[0], None, *rows[1:]], IDENTITY, skipped=[(1, "too short")])
    return folder, rows


def test_a_store_gives_back_its_rows_as_views_of_one_array(written):
    folder, rows = written
    frames, manifest = open_store(folder, IDENTITY)
    assert len(frames) == len(rows) + 1 and manifest["skipped"] == [(1, "too short")]
    assert frames.lengths.tolist() == [len(rows[0]), 0, *(len(r) for r in rows[1:])]
    for got, want in zip([frames[0], *(frames[i] for i in range(2, len(frames)))], rows):
        assert np.array_equal(got, want) and got.base is not None and not got.flags.writeable
    subset = frames.subset([3, 0])
    assert np.array_equal(subset[0], rows[2]) and np.array_equal(subset[1], rows[0])
    loaded = np.load(folder / feature_store.DATA_FILE, mmap_mode="r")  # a plain .npy file
    assert np.array_equal(loaded, np.concatenate(rows))
    assert not [p for p in folder.parent.iterdir() if p != folder]  # no temporary left


def test_pages_read_are_handed_back_and_rows_stay_valid(written, monkeypatch):
    folder, rows = written
    monkeypatch.setattr(feature_store, "RELEASE_BYTES", 4096)
    frames, _ = open_store(folder, IDENTITY)
    released = []
    real_release = frames.mapping.release
    monkeypatch.setattr(frames.mapping, "release", lambda: released.append(1) or real_release())
    views = [frames[i] for i in range(len(frames))]
    assert released
    assert np.array_equal(views[0], rows[0])  # read again after the release


def corrupt_truncate(folder):
    path = folder / feature_store.DATA_FILE
    path.write_bytes(path.read_bytes()[:-520])


def corrupt_overwrite_data(folder):
    path = folder / feature_store.DATA_FILE
    data = bytearray(path.read_bytes())
    data[feature_store.HEADER_BYTES: feature_store.HEADER_BYTES + 8] = b"\x7f" * 8
    path.write_bytes(bytes(data))


def corrupt_index(folder):
    index = np.load(folder / feature_store.INDEX_FILE)
    index[2] += 1
    np.save(folder / feature_store.INDEX_FILE, index)


def corrupt_index_and_its_checksum(folder):
    index = np.load(folder / feature_store.INDEX_FILE)
    index[-1] -= 1  # a consistent-looking index that ends before the data do
    np.save(folder / feature_store.INDEX_FILE, index)
    manifest = json.loads((folder / feature_store.MANIFEST_FILE).read_text())
    manifest["index_sha256"] = feature_store._array_digest(index)
    (folder / feature_store.MANIFEST_FILE).write_text(json.dumps(manifest))


def corrupt_manifest_gone(folder):
    (folder / feature_store.MANIFEST_FILE).unlink()


def corrupt_manifest_text(folder):
    (folder / feature_store.MANIFEST_FILE).write_text("{not json")


def corrupt_header(folder):
    path = folder / feature_store.DATA_FILE
    data = path.read_bytes()
    path.write_bytes(data[:10] + data[10:].replace(b"'<f4'", b"'<f8'", 1))


@pytest.mark.parametrize("corrupt, message", [
    (corrupt_truncate, "truncated"),
    (corrupt_overwrite_data, "checksum"),
    (corrupt_index, "index that does not match its checksum"),
    (corrupt_index_and_its_checksum, "index that disagrees with its data"),
    (corrupt_manifest_gone, "incomplete"),
    (corrupt_manifest_text, "does not load"),
    (corrupt_header, "dtype"),
])
def test_a_damaged_store_is_refused(written, corrupt, message):
    folder, _ = written
    corrupt(folder)
    with pytest.raises(StoreInvalid, match=message):
        open_store(folder, IDENTITY)


def test_a_store_of_another_configuration_or_version_is_refused(written):
    folder, _ = written
    for other in ({**IDENTITY, "config": {"speed": 0.9}}, {**IDENTITY, "format": 0},
                  {**IDENTITY, "key": "x" * 64}):
        with pytest.raises(StoreInvalid, match="another feature configuration or version"):
            open_store(folder, other)


def test_a_full_disk_leaves_no_store_and_no_temporary(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feature_store.os, "fsync", full)
    folder = tmp_path / "stores" / "s"
    with pytest.raises(OSError, match="No space"):
        write_store(folder, random_rows(), IDENTITY)
    assert not list((tmp_path / "stores").iterdir())


# --------------------------------------------------------------------- a corpus' store
@pytest.fixture(scope="module")
def few_files(corpus):
    manifest, _ = corpus
    return sorted((manifest.parent / "audio").glob("*.wav"))[:4]


def test_the_store_holds_what_the_cache_extracts_and_is_reused(few_files, tmp_path):
    expected = extract_corpus(few_files, cache_dir=tmp_path, workers=1, progress=False)
    frames = corpus_frames(few_files, cache_dir=tmp_path, workers=1, progress=False)
    assert all(np.array_equal(f, e) for f, e in zip(frames, expected))
    assert frames.mapping is not None
    (stored,) = (tmp_path / "stores").iterdir()
    modified = stored.stat().st_mtime_ns
    again = corpus_frames(few_files, cache_dir=tmp_path, workers=1, progress=False)
    assert stored.stat().st_mtime_ns == modified and np.array_equal(again[3], expected[3])


@pytest.mark.parametrize("damage", ["truncate", "other configuration"])
def test_a_bad_corpus_store_is_rebuilt_with_one_warning(few_files, tmp_path, damage):
    expected = corpus_frames(few_files, cache_dir=tmp_path, workers=1, progress=False)
    rows = [np.array(r) for r in expected]
    folder = _folder_of(tmp_path, few_files, 1.0)
    if damage == "truncate":
        corrupt_truncate(folder)
    else:  # another configuration's store found where this one's belongs
        corpus_frames(few_files, config=FeatureConfig(speed=1.1), cache_dir=tmp_path,
                      workers=1, progress=False)
        shutil.rmtree(folder)
        shutil.copytree(_folder_of(tmp_path, few_files, 1.1), folder)
    with pytest.warns(DataWarning, match=r"feature store .* rebuilding it") as caught:
        rebuilt = corpus_frames(few_files, cache_dir=tmp_path, workers=1, progress=False)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert all(np.array_equal(r, e) for r, e in zip(rebuilt, rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        corpus_frames(few_files, cache_dir=tmp_path, workers=1, progress=False)


def _folder_of(cache_dir, files, speed):
    digests = [feature_store.cache._file_digest(p) for p in files]
    return store_folder(cache_dir, store_identity(digests, FeatureConfig(speed=speed), False))


def test_an_unwritable_store_is_held_in_memory_with_a_warning(few_files, tmp_path, monkeypatch):
    expected = extract_corpus(few_files, cache_dir=tmp_path, workers=1, progress=False)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feature_store.os, "fsync", full)
    with pytest.warns(DataWarning, match="cannot write the feature store .*No space left"):
        frames = corpus_frames(few_files, cache_dir=tmp_path, workers=1, progress=False)
    assert frames.mapping is None
    assert all(np.array_equal(f, e) for f, e in zip(frames, expected))
    assert not list((tmp_path / "stores").iterdir())


def test_files_left_out_are_reported_again_from_the_store(few_files, tmp_path):
    tiny = tmp_path / "tiny.wav"
    tiny.write_bytes(b"RIFF0000WAVE")
    files = [few_files[0], tiny, few_files[1]]
    for attempt in range(2):  # extracted, then read from the store
        with pytest.warns(DataWarning) as caught:
            frames = corpus_frames(files, cache_dir=tmp_path / "c", workers=1, progress=False)
        messages = [str(w.message) for w in caught]
        assert any(m.startswith(f"skipping {tiny}") for m in messages), (attempt, messages)
        assert any("skipped 1 of 3" in m for m in messages)
        assert frames.lengths[1] == 0 and frames.lengths[0] > 0
    with pytest.raises(AudioError, match="tiny.wav"):
        corpus_frames(files, cache_dir=tmp_path / "c", workers=1, progress=False, strict=True)


def test_in_memory_frames_match_a_list():
    rows = random_rows(4)
    frames = Frames.in_memory([rows[0], None, *rows[1:]])
    assert frames.lengths.tolist() == [len(rows[0]), 0, *(len(r) for r in rows[1:])]
    assert np.array_equal(frames[4], rows[3])


# ------------------------------------------------------------------ training on the store
@pytest.mark.parametrize("normalize, augment", [("global", ("speed", "shift")),
                                                ("speaker", ("speed",))])
def test_training_on_the_store_equals_training_in_memory(corpus, tmp_path, one_torch_thread,
                                                         normalize, augment):
    manifest, _ = corpus
    config = make_config(corpus="csv", data=str(manifest), preset="demo", variant="feature",
                         folds="2", steps=6, batch_size=8, eval_every=3, cells=(8, 6),
                         device="cpu", backend="reference", seed=1, normalize=normalize,
                         augment=augment)
    dataset = load_dataset("csv", manifest, workers=1, progress=False, speeds=SPEEDS)
    assert isinstance(dataset.features, Frames) and dataset.features.mapping is not None
    assert all(isinstance(f, Frames) for f in dataset.speed_features.values())
    in_memory = dataclasses.replace(
        dataset, features=[np.array(f) for f in dataset.features],
        speed_features={s: [np.array(f) for f in v] for s, v in dataset.speed_features.items()})
    for name, data in (("store", dataset), ("memory", in_memory)):
        train(config, tmp_path / name, dataset=data, options=RunOptions(progress=False))
    for file in ("metrics.json", "fold-01/metrics.json", "fold-02/metrics.json"):
        assert (tmp_path / "store" / file).read_bytes() == (tmp_path / "memory" / file).read_bytes()


def test_prepare_builds_the_stores_training_maps(corpus, capsys):
    from sed_model import prepare

    manifest, _ = corpus
    prepare.main(["--corpus", "csv", "--data", str(manifest), "--workers", "1",
                  "--no-progress"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("csv: 32 utterances,") and "1 store," in line
    dataset = load_dataset("csv", manifest, workers=1, progress=False)
    assert dataset.features.mapping is not None


class LiveRows(Sequence):
    """Rows made on demand, counting how many earlier ones are still alive at each request."""

    def __init__(self, rows):
        self.rows, self.live, self.most_alive, self.calls = rows, [], 0, 0

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        self.calls += 1
        self.live = [r for r in self.live if r() is not None]
        self.most_alive = max(self.most_alive, len(self.live))
        row = self.rows[index].copy()
        self.live.append(weakref.ref(row))
        return row


def test_statistics_read_one_utterance_at_a_time():
    rows = random_rows(12)
    speakers = ["a", "b", "c"] * 4
    counted = LiveRows(rows)
    normalizer = Normalizer.fit_fold(counted, Fold("f", tuple(range(12)), ()), speakers,
                                     "speaker")
    normalizer.with_speakers(counted, ["d"] * 6 + ["e"] * 6)
    SpeakerShift.fit(counted, speakers, normalizer.mean, normalizer.std)
    # at most the row before (held by the iterator until it fetches the next one)
    assert counted.calls >= 4 * len(rows) and counted.most_alive <= 1


def test_a_corrupt_cache_file_is_recomputed_when_the_store_is_built(few_files, tmp_path):
    expected = extract_corpus(few_files[:2], cache_dir=tmp_path, workers=1, progress=False)
    (cached,) = [p for p in (tmp_path / "frames").rglob("*.npy")
                 if np.array_equal(np.load(p), expected[1])]
    cached.write_bytes(b"not an array")
    with pytest.warns(DataWarning, match=f"feature cache file {cached} does not load"):
        frames = corpus_frames(few_files[:2], cache_dir=tmp_path, workers=1, progress=False)
    assert np.array_equal(frames[1], expected[1]) and np.array_equal(np.load(cached), expected[1])
