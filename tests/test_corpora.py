"""Corpus loaders on tiny fixture trees of every layout, the real EmoDB clips, and bad folders."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
from fixtures_corpora import (
    EMODB_DATA,
    ENTERFACE_EMOTIONS,
    make_cremad_tree,
    make_csv_tree,
    make_emodb_tree,
    make_enterface_tree,
    make_iemocap_tree,
    make_ravdess_tree,
    write_wav,
)

import sed_model.corpora.demo as demo_module
from sed_model.corpora import CORPUS_NAMES, get_corpus, load_corpus
from sed_model.corpora.demo import EMOTIONS, README_MARKER, SPEAKERS, Demo
from sed_model.errors import CorpusError, DataWarning, SedError


def test_corpus_names_and_unknown_name():
    assert set(CORPUS_NAMES) == {
        "emodb",
        "ravdess",
        "cremad",
        "iemocap",
        "iemocap4",
        "enterface",
        "csv",
        "demo",
    }
    for name in CORPUS_NAMES:
        assert get_corpus(name).name == name
    with pytest.raises(SedError, match=r"unknown corpus 'emo'; expected one of emodb, ravdess"):
        get_corpus("emo")


def test_emodb_labels_and_speakers_come_from_the_file_name(tmp_path):
    with pytest.warns(
        DataWarning, match=r"ignored 1 \.wav files whose names do not follow SSTTTEV\.wav"
    ):
        corpus, utterances = load_corpus("emodb", make_emodb_tree(tmp_path))
    assert corpus.classes == (
        "anger",
        "boredom",
        "disgust",
        "fear",
        "happiness",
        "sadness",
        "neutral",
    )
    assert corpus.default_protocol == "loso"
    assert len(utterances) == 21
    assert Counter(u.speaker for u in utterances) == {"03": 7, "08": 7, "10": 7}
    assert Counter(u.label for u in utterances) == {c: 3 for c in corpus.classes}
    by_name = {u.path.name: u for u in utterances}
    assert by_name["08a00Wa.wav"].label == "anger" and by_name["10a06Na.wav"].label == "neutral"
    assert by_name["03a03Aa.wav"].label == "fear" and by_name["03a02Ea.wav"].label == "disgust"
    assert [str(u.path) for u in utterances] == sorted(str(u.path) for u in utterances)
    assert all(u.session is None for u in utterances)


def test_emodb_parent_folder_is_searched_too(tmp_path):
    make_emodb_tree(tmp_path / "wav")
    with pytest.warns(DataWarning):
        _, utterances = load_corpus("emodb", tmp_path)
    assert len(utterances) == 21


@pytest.mark.skipif(not EMODB_DATA.is_dir(), reason=f"EmoDB clips not present at {EMODB_DATA}")
def test_real_emodb_counts():
    corpus, utterances = load_corpus("emodb", EMODB_DATA)
    assert len(utterances) == 535
    assert sorted({u.speaker for u in utterances}) == [
        "03",
        "08",
        "09",
        "10",
        "11",
        "12",
        "13",
        "14",
        "15",
        "16",
    ]
    codes = {
        "anger": "W",
        "boredom": "L",
        "neutral": "N",
        "happiness": "F",
        "fear": "A",
        "sadness": "T",
        "disgust": "E",
    }
    assert {codes[k]: v for k, v in Counter(u.label for u in utterances).items()} == {
        "W": 127,
        "L": 81,
        "N": 79,
        "F": 71,
        "A": 69,
        "T": 62,
        "E": 46,
    }
    assert len(corpus.classes) == 7


def test_ravdess_keeps_audio_only_speech(tmp_path):
    corpus, utterances = load_corpus("ravdess", make_ravdess_tree(tmp_path))
    assert corpus.classes == (
        "neutral",
        "calm",
        "happy",
        "sad",
        "angry",
        "fearful",
        "disgust",
        "surprised",
    )
    assert len(utterances) == 16  # song (03-02) and video-only (02-01) left out
    assert all(u.path.name.startswith("03-01-") for u in utterances)
    assert Counter(u.speaker for u in utterances) == {"01": 8, "02": 8}
    assert {u.path.name: u.label for u in utterances}["03-01-05-01-01-01-02.wav"] == "angry"


def test_cremad(tmp_path):
    corpus, utterances = load_corpus("cremad", make_cremad_tree(tmp_path))
    assert corpus.classes == ("anger", "disgust", "fear", "happy", "neutral", "sad")
    assert len(utterances) == 18
    assert Counter(u.speaker for u in utterances) == {"1001": 6, "1002": 6, "1091": 6}
    assert {u.path.name: u.label for u in utterances}["1002_DFA_FEA_HI.wav"] == "fear"
    _, same = load_corpus("cremad", tmp_path / "AudioWAV")  # the AudioWAV folder itself works too
    assert same == utterances


def test_iemocap_five_classes_speakers_and_sessions(tmp_path):
    corpus, utterances = load_corpus("iemocap", make_iemocap_tree(tmp_path))
    assert (
        corpus.classes == ("ang", "exc", "fru", "neu", "sad")
        and corpus.default_protocol == "loso-session"
    )
    by_name = {u.path.stem: u for u in utterances}
    # hap, xxx and sur are not among the paper's five classes
    assert sorted(by_name) == sorted(
        [
            "Ses01F_impro01_F000",
            "Ses01F_impro01_M000",
            "Ses01F_impro01_F001",
            "Ses01F_impro01_M001",
            "Ses01F_impro01_F002",
            "Ses02M_script01_1_F000",
            "Ses02M_script01_1_M000",
            "Ses02M_script01_1_F001",
            "Ses02M_script01_1_M001",
            "Ses02M_script01_1_F002",
        ]
    )
    assert by_name["Ses01F_impro01_F000"].speaker == "Ses01F"
    assert (
        by_name["Ses01F_impro01_M000"].speaker == "Ses01M"
    )  # the utterance's speaker, not the dialog's
    assert by_name["Ses02M_script01_1_F001"].speaker == "Ses02F"
    assert (
        by_name["Ses01F_impro01_M000"].label == "ang"
        and by_name["Ses02M_script01_1_M001"].label == "exc"
    )
    assert {u.session for u in utterances} == {"Ses01", "Ses02"}
    assert all(u.path.is_file() for u in utterances)
    assert by_name["Ses02M_script01_1_F000"].path == (
        tmp_path
        / "Session2"
        / "sentences"
        / "wav"
        / "Ses02M_script01_1"
        / "Ses02M_script01_1_F000.wav"
    )


def test_iemocap4_merges_excited_into_happy(tmp_path):
    corpus, utterances = load_corpus("iemocap4", make_iemocap_tree(tmp_path))
    assert corpus.classes == ("neu", "hap", "sad", "ang")
    labels = {u.path.stem: u.label for u in utterances}
    assert labels["Ses01F_impro01_F001"] == "hap"  # exc
    assert labels["Ses01F_impro01_M002"] == "hap"  # hap
    assert "Ses01F_impro01_M001" not in labels  # fru is not in the four-class set
    assert Counter(labels.values()) == {"neu": 2, "hap": 3, "sad": 2, "ang": 2}


def test_enterface_labels_from_folders_both_depths_and_misnamed_file(tmp_path):
    corpus, utterances = load_corpus("enterface", make_enterface_tree(tmp_path))
    assert corpus.classes == ENTERFACE_EMOTIONS and corpus.default_protocol == "enterface-paper"
    assert len(utterances) == 3 * 6 + 2
    assert Counter(u.speaker for u in utterances) == {"01": 8, "02": 6, "06": 6}
    misnamed = next(u for u in utterances if u.path.name == "s1_an_9.avi")
    assert misnamed.label == "fear"  # from the folder; the name says anger
    subject6 = [u for u in utterances if u.speaker == "06"]
    assert sorted(u.label for u in subject6) == sorted(
        ENTERFACE_EMOTIONS
    )  # no sentence level there
    assert Counter(u.label for u in utterances)["anger"] == 4


def test_csv_manifest_relative_paths_sessions_and_classes(tmp_path):
    manifest = make_csv_tree(tmp_path)
    corpus, utterances = load_corpus("csv", manifest)
    assert corpus.classes == ("calm", "tense")
    assert corpus.default_protocol == "loso-session"
    assert all(u.path.is_file() and u.path.parent == tmp_path / "audio" for u in utterances)
    assert {(u.speaker, u.session) for u in utterances} == {("alice", "s1"), ("bob", "s2")}
    corpus, _ = load_corpus("csv", tmp_path)  # the folder holding manifest.csv
    assert corpus.classes == ("calm", "tense")
    corpus, _ = load_corpus("csv", manifest, classes=("tense", "calm", "happy"))
    assert corpus.classes == ("tense", "calm", "happy")


def test_csv_without_sessions_defaults_to_loso(tmp_path):
    manifest = make_csv_tree(tmp_path, header="path,label,speaker,session")
    text = manifest.read_text().replace(",s1\n", ",\n")
    manifest.write_text(text)
    corpus, utterances = load_corpus("csv", manifest)
    assert corpus.default_protocol == "loso"
    assert sum(u.session is None for u in utterances) == 2


def test_csv_classes_are_unknown_until_loaded():
    with pytest.raises(SedError, match="known only once it is read"):
        get_corpus("csv").classes


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (None, "path,label", r"lacks column\(s\) speaker \(header seen: path,label\)"),
        (
            ["audio/alice_calm.wav,calm,alice", "audio/bob_calm.wav,,bob"],
            "path,label,speaker",
            r"line 3: empty label",
        ),
        (
            ["audio/alice_calm.wav,calm,alice", ",calm,bob"],
            "path,label,speaker",
            r"line 3: empty path",
        ),
        ([], "path,label,speaker", r"has no rows"),
        (
            ["gone/a.wav,calm,alice", "gone/b.wav,tense,bob"],
            "path,label,speaker",
            r"none of the 2 audio files listed",
        ),
    ],
)
def test_csv_errors_name_the_line(tmp_path, rows, header, message):
    manifest = make_csv_tree(tmp_path, rows=rows, header=header)
    with pytest.raises(CorpusError, match=message):
        load_corpus("csv", manifest)


def test_csv_unknown_label_with_given_classes(tmp_path):
    manifest = make_csv_tree(tmp_path)
    with pytest.raises(
        CorpusError, match=r"line 3: unknown label 'tense'; expected one of calm, happy"
    ):
        load_corpus("csv", manifest, classes=("calm", "happy"))
    with pytest.raises(CorpusError, match="classes can only be given for the csv corpus"):
        load_corpus("emodb", tmp_path, classes=("calm",))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "emodb",
            r"no EmoDB files \(SSTTTEV\.wav\) found in .*; "
            r"expected the EmoDB folder that holds the wav files",
        ),
        (
            "ravdess",
            r"no RAVDESS files \(speech files 03-01-EE-II-SS-RR-AA\.wav\) found in .*Actor_01",
        ),
        ("cremad", r"no CREMA-D files \(AAAA_SSS_EEE_LL\.wav\) found in .*AudioWAV"),
        ("iemocap", r"no IEMOCAP label files \(Session\*/dialog/EmoEvaluation/\*\.txt"),
        ("iemocap4", r"no IEMOCAP label files"),
        (
            "enterface",
            r"no eNTERFACE'05 files \(subject N/<emotion>/\.\.\./\*\.avi\) found in .*'subject 1'",
        ),
    ],
)
def test_a_folder_of_another_layout_is_one_clear_error(tmp_path, name, message):
    write_wav(tmp_path / "some_speaker" / "recording.wav")
    with pytest.raises(CorpusError, match=message) as error:
        load_corpus(name, tmp_path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["emodb", "ravdess", "cremad", "iemocap", "enterface", "csv"])
def test_missing_or_absent_data_folder(tmp_path, name):
    with pytest.raises(CorpusError, match=r"does not exist"):
        load_corpus(name, tmp_path / "nowhere")
    with pytest.raises(CorpusError, match=r"needs a (data folder|manifest) \(--data\)"):
        load_corpus(name, None)


def test_iemocap_labels_without_audio(tmp_path):
    make_iemocap_tree(tmp_path)
    for wav in tmp_path.rglob("*.wav"):
        wav.unlink()
    with pytest.raises(
        CorpusError, match=r"no IEMOCAP wav files .* for its 10 labelled utterances"
    ):
        load_corpus("iemocap", tmp_path)


def test_demo_corpus_is_generated_once_deterministic_and_labelled_synthetic(tmp_path, monkeypatch):
    monkeypatch.setenv("SED_MODEL_CACHE", str(tmp_path / "cache"))
    demo = Demo(utterances_per_cell=1)
    utterances = demo.utterances(None)  # generated under cache_root()/demo/v1
    root = tmp_path / "cache" / "demo" / "v1"
    assert len(utterances) == len(SPEAKERS) * len(EMOTIONS) == 16
    assert all(u.path.parent == root for u in utterances)
    assert (root / "README.txt").read_text().startswith(README_MARKER)
    assert "NOT recordings of people" in (root / "README.txt").read_text()
    assert demo_module.__doc__.startswith("SYNTHETIC demo corpus")
    assert not [p for p in root.parent.iterdir() if p.name != "v1"]  # no temporary folder left
    mtimes = {u.path: u.path.stat().st_mtime_ns for u in utterances}
    assert demo.utterances(None) == utterances  # second use reads, does not regenerate
    assert {u.path: u.path.stat().st_mtime_ns for u in utterances} == mtimes
    signal, rate = soundfile.read(utterances[0].path, dtype="float32")
    assert rate == 16_000 and 1.0 <= len(signal) / rate <= 2.0
    Demo(utterances_per_cell=1).utterances(tmp_path / "again")  # same seed -> same bytes
    for u in utterances:
        assert (tmp_path / "again" / u.path.name).read_bytes() == u.path.read_bytes()


def test_demo_emotions_differ_in_loudness_and_pitch(tmp_path):
    from sed_model.features import extract_frames, frame_feature_names

    f0_column = frame_feature_names().index("F0final_sma")
    utterances = Demo(utterances_per_cell=2).utterances(tmp_path)
    loudness, pitch = {}, {}
    for emotion in EMOTIONS:
        signals = [
            soundfile.read(u.path, dtype="float32")[0] for u in utterances if u.label == emotion
        ]
        loudness[emotion] = np.mean([np.sqrt(np.mean(s**2)) for s in signals])
        f0 = np.concatenate([extract_frames(s, 16_000)[:, f0_column] for s in signals])
        pitch[emotion] = np.median(f0[f0 > 0])  # voiced frames
    assert loudness["angry"] > loudness["neutral"] > loudness["sad"]
    assert loudness["happy"] > loudness["sad"]
    assert pitch["happy"] > pitch["neutral"] > pitch["sad"]
    assert pitch["angry"] > pitch["neutral"]


def test_demo_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "thesis.txt").write_text("mine")
    with pytest.raises(CorpusError, match=r"exists but does not hold the synthetic demo corpus"):
        Demo(utterances_per_cell=1).utterances(tmp_path)
    assert (tmp_path / "thesis.txt").read_text() == "mine"


def test_demo_incomplete_folder_is_regenerated(tmp_path):
    demo = Demo(utterances_per_cell=1)
    utterances = demo.utterances(tmp_path / "d")
    utterances[3].path.unlink()
    assert demo.utterances(tmp_path / "d") == utterances
    assert utterances[3].path.is_file()


def test_reading_a_manifest_changes_no_loader(tmp_path):
    """Each manifest gets its own loader; the shared one keeps knowing nothing."""
    from sed_model.corpora import csv_manifest

    with_sessions = make_csv_tree(tmp_path / "a")
    without = make_csv_tree(
        tmp_path / "b", rows=["x.wav,calm,alice", "y.wav,tense,bob"], header="path,label,speaker"
    )
    (tmp_path / "b" / "x.wav").write_bytes(
        (tmp_path / "a" / "audio" / "alice_calm.wav").read_bytes()
    )
    first, _ = load_corpus("csv", with_sessions)
    second, _ = load_corpus("csv", without)
    assert (first.default_protocol, second.default_protocol) == ("loso-session", "loso")
    assert first.classes == second.classes == ("calm", "tense")
    shared = csv_manifest.CORPUS
    shared.utterances(with_sessions)
    assert shared.default_protocol == "loso" and shared.allowed_classes is None


README_PROTOCOLS = {"loso": "`loso`", "loso-session": "`session`", "kfold": "speaker-grouped",
                    "enterface-paper": "`paper`"}


def test_the_readme_corpus_table_matches_the_loaders():
    """One row per corpus in the README, with the loader's classes and default protocol."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].strip("`") in CORPUS_NAMES:
            rows[cells[0].strip("`")] = cells
    assert sorted(rows) == sorted(CORPUS_NAMES)
    for name in CORPUS_NAMES:
        if name == "csv":  # classes and protocol depend on the manifest
            continue
        corpus = get_corpus(name)
        listed = [c.strip() for c in rows[name][3].split("(")[0].split(",")]
        assert listed == list(corpus.classes), name
        assert README_PROTOCOLS[corpus.default_protocol] in rows[name][4], name
