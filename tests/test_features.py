"""openSMILE frame features: decoding, alignment, cache, parallel extraction, bad input,
normalisation."""

import re
import shutil
import warnings

import numpy as np
import opensmile
import pytest
import soundfile
from fixtures_corpora import EMODB_DATA, tone, write_avi, write_wav

import sed_model.features.cache as feature_cache
from sed_model.errors import AudioError, DataWarning, SedError
from sed_model.features import (
    FEATURE_DIM,
    FUNCTIONALS_DIM,
    FeatureConfig,
    Normalizer,
    extract_corpus,
    extract_frames,
    extract_functionals,
    frame_feature_names,
    load_audio,
)
from sed_model.splits import Fold

RATE = 16_000


def smile(level):
    return opensmile.Smile(feature_set=opensmile.FeatureSet.ComParE_2016, feature_level=level)


def cache_files(cache_dir):
    return sorted(cache_dir.rglob("*.npy"))


# --- decoding --------------------------------------------------------------------------------


def test_stereo_wav_and_stereo_avi_mix_down_to_the_same_mono_signal(tmp_path):
    stereo = tone(0.2, channels=2)  # (n, 2), channels differ
    soundfile.write(tmp_path / "a.wav", stereo, RATE, subtype="PCM_16")
    write_avi(tmp_path / "a.avi", stereo)
    from_wav, rate_wav = load_audio(tmp_path / "a.wav")
    from_avi, rate_avi = load_audio(tmp_path / "a.avi")
    assert rate_wav == rate_avi == RATE
    assert from_wav.dtype == from_avi.dtype == np.float32 and from_wav.shape == (3200,)
    quantised = np.round(np.clip(stereo, -1, 1) * 32767) / 32767  # 16-bit storage
    np.testing.assert_allclose(from_wav, quantised.mean(axis=1), atol=1e-4)
    np.testing.assert_allclose(from_avi, from_wav, atol=1e-4)


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"audio file not found: .*missing\.wav"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"this is not audio" * 20)
    with pytest.raises(AudioError, match=r"cannot decode .*junk\.wav: "):
        load_audio(tmp_path / "junk.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(
        AudioError, match=r"cannot decode .*empty\.wav: the file is empty \(0 bytes\)"
    ):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.avi").write_bytes(b"RIFF" + b"\0" * 100)
    with pytest.raises(AudioError, match=r"cannot decode .*junk\.avi"):
        load_audio(tmp_path / "junk.avi")


# --- frames ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.06, 0.5, 1.237])
def test_one_pass_frames_equal_the_two_opensmile_levels_aligned_by_position(seconds):
    signal = tone(seconds)
    lld = smile(opensmile.FeatureLevel.LowLevelDescriptors).process_signal(signal, RATE)
    delta = smile(opensmile.FeatureLevel.LowLevelDescriptors_Deltas).process_signal(signal, RATE)
    assert len(delta) == len(lld) + 2  # the tail rows that make an index join wrong
    x = extract_frames(signal, RATE)
    assert x.shape == (len(lld), FEATURE_DIM)
    assert x.dtype == np.float32 and np.isfinite(x).all()
    np.testing.assert_array_equal(x[:, :65], lld.to_numpy(np.float32))
    np.testing.assert_array_equal(x[:, 65:], delta.to_numpy(np.float32)[: len(lld)])
    if seconds == 0.5:
        assert len(x) == 46


def test_full_scale_samples_do_not_wrap_around():
    signal = tone(0.2)
    signal[::50] = 1.0  # opensmile's int16 conversion would turn these into -32768
    clipped = np.minimum(signal, 32767 / 32768)
    np.testing.assert_array_equal(extract_frames(signal, RATE), extract_frames(clipped, RATE))
    with pytest.raises(
        AudioError, match=r"expected a mono signal of shape \(n,\), got shape \(2, 3200\)"
    ):
        extract_frames(np.zeros((2, 3200), np.float32), RATE)


def test_feature_names_are_the_65_llds_then_their_deltas():
    names = frame_feature_names()
    assert len(names) == FEATURE_DIM
    assert names[0] == "F0final_sma" and names[65] == "F0final_sma_de"
    assert [re.sub(r"_de(\[\d+\])?$", r"\1", n) for n in names[65:]] == names[:65]  # same order


@pytest.mark.skipif(not EMODB_DATA.is_dir(), reason=f"EmoDB clips not present at {EMODB_DATA}")
def test_real_emodb_clip_two_seconds_at_22050_hz():
    signal, rate = load_audio(EMODB_DATA / "03a01Fa.wav")
    assert rate == 22_050 and signal.shape == (44_100,)
    x = extract_frames(signal, rate)
    assert x.shape == (195, 130) and np.isfinite(x).all()
    for speed, frames in ((0.9, 217), (1.1, 177)):  # 2 s / speed, 10 ms frames
        perturbed = extract_frames(signal, rate, FeatureConfig(speed=speed))
        assert perturbed.shape == (frames, 130) and np.isfinite(perturbed).all()


def test_minimum_duration_is_60_ms():
    assert extract_frames(tone(0.060), RATE).shape == (2, 130)
    with pytest.raises(
        AudioError, match=r"too short \(59 ms; openSMILE ComParE_2016 needs >= 60 ms\)"
    ):
        extract_frames(tone(0.059), RATE)
    with pytest.raises(AudioError, match=r"empty audio \(0 samples\)"):
        extract_frames(np.zeros(0, np.float32), RATE)


def test_resampling_config_changes_nothing_but_the_rate():
    x = extract_frames(tone(0.3, sample_rate=22_050), 22_050, FeatureConfig(sampling_rate=16_000))
    assert x.shape == (26, 130) and np.isfinite(x).all()
    with pytest.raises(SedError, match=r"feature set 'eGeMAPSv02' is not supported"):
        FeatureConfig(feature_set="eGeMAPSv02")


# --- cache -----------------------------------------------------------------------------------


def test_second_run_reads_the_cache(tmp_path, monkeypatch):
    paths = [
        write_wav(tmp_path / f"u{i}.wav", seconds=0.2, frequency=150 + 30 * i) for i in range(3)
    ]
    first = extract_corpus(paths, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert len(cache_files(tmp_path / "cache")) == 3
    assert all(x.shape == (16, 130) for x in first)

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted again instead of reading the cache")

    monkeypatch.setattr(feature_cache, "_compute", no_extraction)
    second = extract_corpus(paths, cache_dir=tmp_path / "cache", workers=1, progress=False)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # keyed by content: a renamed copy hits, edited audio misses
    shutil.copy(paths[0], tmp_path / "renamed.wav")
    np.testing.assert_array_equal(
        extract_corpus(
            [tmp_path / "renamed.wav"], cache_dir=tmp_path / "cache", workers=1, progress=False
        )[0],
        first[0],
    )
    write_wav(paths[0], seconds=0.2, frequency=400)
    with pytest.raises(AssertionError, match="extracted again"):
        extract_corpus([paths[0]], cache_dir=tmp_path / "cache", workers=1, progress=False)


def test_cache_key_includes_the_feature_configuration(tmp_path):
    path = write_wav(tmp_path / "u.wav", seconds=0.2, sample_rate=22_050)
    extract_corpus([path], cache_dir=tmp_path / "cache", workers=1, progress=False)
    resampled = extract_corpus(
        [path],
        config=FeatureConfig(sampling_rate=16_000),
        cache_dir=tmp_path / "cache",
        workers=1,
        progress=False,
    )
    assert len(cache_files(tmp_path / "cache")) == 2 and resampled[0].shape == (16, 130)
    extract_corpus([path], cache_dir=tmp_path / "nocache", cache=False, workers=1, progress=False)
    assert not (tmp_path / "nocache").exists()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: f.write_bytes(f.read_bytes()[:100]), "does not load"),  # truncated
        (lambda f: f.write_bytes(b""), "does not load"),
        (lambda f: np.save(f, np.zeros((4, 7), np.float32)), r"has shape \(4, 7\)"),
        (lambda f: np.save(f, np.full((4, 130), np.nan, np.float32)), "non-finite"),
    ],
)
def test_a_corrupt_cache_file_is_recomputed_with_a_warning(tmp_path, damage, reason):
    path = write_wav(tmp_path / "u.wav", seconds=0.2)
    expected = extract_corpus([path], cache_dir=tmp_path / "cache", workers=1, progress=False)[0]
    (cache_file,) = cache_files(tmp_path / "cache")
    damage(cache_file)
    with pytest.warns(
        DataWarning, match=rf"feature cache file .* {reason}.*; recomputing it from .*u\.wav"
    ):
        again = extract_corpus([path], cache_dir=tmp_path / "cache", workers=1, progress=False)[0]
    np.testing.assert_array_equal(again, expected)
    np.testing.assert_array_equal(np.load(cache_file), expected)  # repaired
    assert [p.name for p in cache_file.parent.iterdir()] == [
        cache_file.name
    ]  # no temporary files left


def test_two_worker_processes_give_the_same_features_as_one(tmp_path):
    paths = [
        write_wav(tmp_path / f"u{i}.wav", seconds=0.15, frequency=120 + 40 * i) for i in range(4)
    ]
    paths.append(write_avi(tmp_path / "v.avi", tone(0.15, channels=2)))
    in_process = extract_corpus(paths, cache=False, workers=1, progress=False)
    parallel = extract_corpus(paths, cache_dir=tmp_path / "cache", workers=2, progress=False)
    assert len(cache_files(tmp_path / "cache")) == 5  # the workers wrote the cache
    for a, b in zip(in_process, parallel):
        np.testing.assert_array_equal(a, b)


def test_functionals_are_extracted_and_cached(tmp_path):
    path = write_wav(tmp_path / "u.wav", seconds=0.3)
    (vector,) = extract_functionals([path], cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert (
        vector.shape == (FUNCTIONALS_DIM,)
        and vector.dtype == np.float32
        and np.isfinite(vector).all()
    )
    assert len(cache_files(tmp_path / "cache" / "functionals")) == 1


# --- bad input -------------------------------------------------------------------------------


def make_bad_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    good = write_wav(folder / "good.wav", seconds=0.2)
    (folder / "empty_bytes.wav").write_bytes(b"")
    soundfile.write(folder / "no_samples.wav", np.zeros(0, np.float32), RATE)
    short = write_wav(folder / "short.wav", seconds=0.03)
    (folder / "garbage.wav").write_bytes(b"garbage" * 50)
    return [
        good,
        folder / "missing.wav",
        folder / "empty_bytes.wav",
        folder / "no_samples.wav",
        short,
        folder / "garbage.wav",
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_files_are_skipped_with_a_warning_each_and_a_count(tmp_path, workers):
    paths = make_bad_files(tmp_path / "audio")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = extract_corpus(
            paths, cache_dir=tmp_path / "cache", workers=workers, progress=False
        )
    assert results[0].shape == (16, 130)
    assert results[1:] == [None] * 5
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    expected = [
        r"skipping .*missing\.wav: file not found",
        r"skipping .*empty_bytes\.wav: .*the file is empty \(0 bytes\)",
        r"skipping .*no_samples\.wav: empty audio \(0 samples\)",
        r"skipping .*short\.wav: too short \(30 ms; openSMILE ComParE_2016 needs >= 60 ms\)",
        r"skipping .*garbage\.wav: .*",
        r"skipped 5 of 6 audio files",
    ]
    assert len(messages) == len(expected)
    for pattern in expected:
        assert sum(bool(re.search(pattern, m)) for m in messages) == 1, (pattern, messages)


def test_strict_turns_a_bad_file_into_an_error(tmp_path):
    paths = make_bad_files(tmp_path / "audio")
    with pytest.raises(AudioError, match=r"missing\.wav: file not found"):
        extract_corpus(paths, cache_dir=tmp_path / "cache", workers=1, progress=False, strict=True)
    with pytest.raises(AudioError, match=r"short\.wav: too short"):
        extract_corpus(
            [paths[0], paths[4]],
            cache_dir=tmp_path / "cache",
            workers=1,
            progress=False,
            strict=True,
        )


def test_invalid_worker_count(tmp_path):
    with pytest.raises(SedError, match=r"workers=0 is invalid"):
        extract_corpus([tmp_path / "a.wav"], workers=0, progress=False)


# --- normalisation ---------------------------------------------------------------------------


def random_features(seed, n=6, dim=5):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(3.0 * i, 1.0 + i, size=(rng.integers(3, 9), dim)).astype(np.float32)
        for i in range(n)
    ]


def test_global_normalizer_matches_the_pooled_frame_statistics():
    train = random_features(0)
    frames = np.concatenate(train).astype(np.float64)
    normalizer = Normalizer.fit(train)
    np.testing.assert_allclose(normalizer.mean, frames.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(normalizer.std, frames.std(axis=0), rtol=1e-5)
    pooled = np.concatenate([normalizer(x) for x in train])
    np.testing.assert_allclose(pooled.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(pooled.std(axis=0), 1.0, atol=1e-5)


def test_speaker_normalizer_uses_each_speakers_own_statistics_test_speakers_too():
    train = random_features(1, n=4)
    speakers = ["a", "a", "b", "b"]
    normalizer = Normalizer.fit(train, speakers, mode="speaker")
    a_frames = np.concatenate([normalizer(x, "a") for x in train[:2]])
    np.testing.assert_allclose(a_frames.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(a_frames.std(axis=0), 1.0, atol=1e-5)
    test = [train[0] * 3.0 + 1.0, train[1] * 3.0 + 1.0]
    with pytest.raises(SedError, match="speaker 'c' has no normalisation statistics"):
        normalizer(test[0], "c")
    extended = normalizer.with_speakers(test + [train[2] + 50.0], ["c", "c", "b"])
    c_frames = np.concatenate([extended(x, "c") for x in test])
    np.testing.assert_allclose(c_frames.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(c_frames.std(axis=0), 1.0, atol=1e-5)
    # a speaker it already has keeps the training statistics; the original is unchanged
    np.testing.assert_array_equal(extended(train[2], "b"), normalizer(train[2], "b"))
    assert sorted(normalizer.per_speaker) == ["a", "b"]
    with pytest.raises(SedError, match="one speaker id per utterance"):
        Normalizer.fit(train, None, mode="speaker")
    with pytest.raises(SedError, match="normalisation mode 'per-file' is unknown"):
        Normalizer.fit(train, mode="per-file")


def test_new_speaker_uses_the_given_frames_in_speaker_mode_and_training_stats_in_global():
    train = random_features(3, n=4)
    single = train[0] * 2.0 + 7.0
    speaker_mode = Normalizer.fit(train, ["a", "a", "b", "b"], mode="speaker")
    (own,) = speaker_mode.new_speaker([single])
    np.testing.assert_allclose(own.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(own.std(axis=0), 1.0, atol=1e-4)
    pair = speaker_mode.new_speaker([single, train[1]])  # one speaker's two files: joint stats
    joint = np.concatenate(pair)
    np.testing.assert_allclose(joint.mean(axis=0), 0.0, atol=1e-5)
    global_mode = Normalizer.fit(train)
    np.testing.assert_array_equal(global_mode.new_speaker([single])[0], global_mode(single))
    assert global_mode.with_speakers([single], ["z"]) is global_mode


def test_fit_fold_never_reads_test_utterances():
    features_list = random_features(2, n=5)
    features_list[3] = np.full(
        (4, 5), np.nan, np.float32
    )  # a test utterance: reading it would give NaN
    features_list[4] = None  # a skipped file
    fold = Fold("speaker x", train=(0, 1, 2, 4), test=(3,))
    normalizer = Normalizer.fit_fold(features_list, fold, ["a", "a", "b", "x", "b"], mode="speaker")
    assert np.isfinite(normalizer.mean).all() and sorted(normalizer.per_speaker) == ["a", "b"]
    expected = Normalizer.fit(features_list[:3], ["a", "a", "b"], mode="speaker")
    np.testing.assert_allclose(normalizer.mean, expected.mean)


def test_constant_feature_is_centred_not_scaled_and_state_dict_round_trips():
    train = [np.column_stack([np.full(4, 2.0), np.arange(4.0)]).astype(np.float32)]
    normalizer = Normalizer.fit(train, ["s"], mode="speaker")
    assert normalizer.std[0] == 1.0
    state = normalizer.state_dict()
    assert all(
        isinstance(v, list) for v in (state["mean"], state["std"])
    )  # plain lists: torch weights_only-safe
    restored = Normalizer.from_state_dict(state)
    np.testing.assert_array_equal(restored(train[0], "s"), normalizer(train[0], "s"))
    assert restored.mode == "speaker"
