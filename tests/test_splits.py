"""Speaker-independent splits: disjoint speakers, every utterance tested once, the paper preset."""

import json
from collections import Counter
from pathlib import Path

import pytest
from fixtures_corpora import EMODB_DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from sed_model.corpora import get_corpus, load_corpus
from sed_model.corpora.base import Utterance
from sed_model.errors import DataWarning, SedError
from sed_model.splits import Fold, make_folds, parse_folds_arg

ENTERFACE_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")


def corpus_of(counts: dict[str, int], classes=("a", "b", "c"), session=None) -> list[Utterance]:
    """counts[speaker] utterances per speaker, labels cycling through classes."""
    return [
        Utterance(
            Path(f"/corpus/{speaker}/{i:03d}.wav"),
            classes[i % len(classes)],
            speaker,
            session and session(speaker),
        )
        for speaker, n in counts.items()
        for i in range(n)
    ]


def enterface_like(per_subject: dict[int, int]) -> list[Utterance]:
    return [
        Utterance(
            Path(f"/e/subject {s}/{ENTERFACE_CLASSES[i % 6]}/{i}.avi"),
            ENTERFACE_CLASSES[i % 6],
            f"{s:02d}",
        )
        for s, n in per_subject.items()
        for i in range(n)
    ]


def assert_speaker_disjoint(folds: list[Fold], utterances: list[Utterance]):
    for fold in folds:
        assert not set(fold.train) & set(fold.test)
        train_speakers = {utterances[i].speaker for i in fold.train}
        test_speakers = {utterances[i].speaker for i in fold.test}
        assert not train_speakers & test_speakers, fold.name


def assert_each_tested_once(folds, utterances):
    tested = Counter(i for fold in folds for i in fold.test)
    assert tested == Counter(range(len(utterances)))
    for fold in folds:
        assert sorted(fold.train + fold.test) == list(range(len(utterances)))


def test_loso_one_fold_per_speaker_each_utterance_tested_once():
    utterances = corpus_of({"s1": 5, "s2": 7, "s3": 4, "s4": 6})
    folds = make_folds(utterances, "loso")
    assert [f.name for f in folds] == ["speaker s1", "speaker s2", "speaker s3", "speaker s4"]
    assert_speaker_disjoint(folds, utterances)
    assert_each_tested_once(folds, utterances)
    assert [len(f.test) for f in folds] == [5, 7, 4, 6]


def test_loso_session_keeps_both_speakers_of_a_session_together():
    counts = {f"Ses0{s}{g}": 6 for s in range(1, 6) for g in "FM"}
    utterances = corpus_of(counts, session=lambda speaker: speaker[:5])
    folds = make_folds(utterances, "session")
    assert [f.name for f in folds] == ["Ses01", "Ses02", "Ses03", "Ses04", "Ses05"]
    assert_speaker_disjoint(folds, utterances)
    assert_each_tested_once(folds, utterances)
    assert all(
        {utterances[i].speaker for i in f.test} == {f.name + "F", f.name + "M"} for f in folds
    )
    with pytest.raises(
        SedError, match=r"loso-session needs a session for every utterance; .* has none"
    ):
        make_folds(corpus_of({"s1": 3, "s2": 3}), "loso-session")


def test_speaker_grouped_kfold_is_balanced_and_deterministic():
    utterances = corpus_of({f"s{i:02d}": 3 + i % 5 for i in range(12)})
    folds = make_folds(utterances, "4", seed=7)
    assert [f.name for f in folds] == ["fold 1/4", "fold 2/4", "fold 3/4", "fold 4/4"]
    assert_speaker_disjoint(folds, utterances)
    assert_each_tested_once(folds, utterances)
    sizes = [len(f.test) for f in folds]
    assert max(sizes) - min(sizes) <= 7  # at most one speaker's worth apart
    assert make_folds(utterances, "kfold", k=4, seed=7) == folds
    assert len(make_folds(utterances, "kfold")) == 5  # default k
    with pytest.raises(SedError, match=r"13 speaker-grouped folds are impossible with 12 speakers"):
        make_folds(utterances, "13")
    with pytest.raises(SedError, match=r"1 speaker-grouped folds are impossible"):
        make_folds(utterances, "1")


def test_speaker_grouped_folds_are_those_of_earlier_runs():
    """The speakers of each fold, as the runs made so far had them (ties by the seed)."""

    def tested(utterances, k, seed):
        folds = make_folds(utterances, str(k), seed=seed)
        return [sorted({utterances[i].speaker for i in f.test}) for f in folds]

    utterances = corpus_of({f"s{i:02d}": 3 + i % 5 for i in range(12)})
    assert tested(utterances, 4, 0) == [
        ["s01", "s09", "s11"],
        ["s04", "s05", "s06"],
        ["s00", "s02", "s03"],
        ["s07", "s08", "s10"],
    ]
    assert tested(utterances, 4, 7) == [
        ["s04", "s06", "s11"],
        ["s01", "s09", "s10"],
        ["s00", "s03", "s07"],
        ["s02", "s05", "s08"],
    ]
    equal = corpus_of({f"s{i:02d}": 4 for i in range(20)})
    assert tested(equal, 3, 1) == [
        ["s01", "s02", "s05", "s06", "s09", "s12", "s16"],
        ["s03", "s07", "s08", "s10", "s14", "s17", "s19"],
        ["s00", "s04", "s11", "s13", "s15", "s18"],
    ]


def test_holdout_is_speaker_disjoint_seeded_and_about_a_fifth():
    utterances = corpus_of({f"s{i}": 10 for i in range(10)})
    (fold,) = make_folds(utterances, "holdout", seed=3)
    assert fold.name == "holdout"
    assert_speaker_disjoint([fold], utterances)
    assert len(fold.test) == 20 and len(fold.train) == 80
    assert make_folds(utterances, "holdout", seed=3) == [fold]
    other_seeds = {make_folds(utterances, "holdout", seed=s)[0].test for s in range(6)}
    assert len(other_seeds) > 1


def test_enterface_paper_preset_holds_out_260_whole_subjects_when_possible():
    # 43 subjects; some with fewer files, so that whole subjects can sum to exactly 260
    per_subject = {s: 30 for s in range(1, 45) if s != 14}
    per_subject.update({3: 25, 7: 25, 20: 28, 33: 27})
    utterances = enterface_like(per_subject)
    (fold,) = make_folds(utterances, "paper")
    assert fold.name == "enterface-paper" and len(fold.test) == 260
    assert_speaker_disjoint([fold], utterances)
    assert len(fold.train) + len(fold.test) == len(utterances)  # nothing left out
    assert make_folds(utterances, "enterface-paper") == [fold]


def test_enterface_paper_preset_with_no_exact_subset_drops_the_rest_of_one_subject():
    utterances = enterface_like({s: 30 for s in range(1, 44)})  # 260 is no multiple of 30
    (fold,) = make_folds(utterances, "paper", seed=0)
    assert len(fold.test) == 260
    assert_speaker_disjoint([fold], utterances)
    left_out = set(range(len(utterances))) - set(fold.train) - set(fold.test)
    assert len(left_out) == 10
    (partial,) = {utterances[i].speaker for i in left_out}  # all from one subject...
    tested_of_partial = [i for i in fold.test if utterances[i].speaker == partial]
    assert len(tested_of_partial) == 20  # ...whose other 20 are tested, spread over the classes
    assert Counter(utterances[i].label for i in tested_of_partial) == {
        "anger": 4,
        "disgust": 4,
        "fear": 3,
        "happiness": 3,
        "sadness": 3,
        "surprise": 3,
    }


def test_enterface_paper_preset_needs_a_corpus_of_that_size():
    with pytest.raises(
        SedError, match=r"holds out 260 test utterances .* has 120 utterances of 4 speakers"
    ):
        make_folds(enterface_like({s: 30 for s in range(1, 5)}), "paper")


def test_training_side_with_a_single_class_is_an_error():
    utterances = corpus_of({"s1": 4}, classes=("a",)) + corpus_of({"s2": 4}, classes=("b",))
    with pytest.raises(
        SedError,
        match=r"fold speaker s1: the training side has only class 'b'; "
        r"expected files of at least two classes",
    ):
        make_folds(utterances, "loso")


def test_a_single_speaker_cannot_be_split():
    with pytest.raises(SedError, match=r"at least two speakers; found only 's1'"):
        make_folds(corpus_of({"s1": 6}), "loso")
    with pytest.raises(SedError, match=r"empty utterance list"):
        make_folds([], "loso")


def test_folds_argument_forms():
    assert parse_folds_arg("loso") == ("loso", None)
    assert parse_folds_arg("10") == ("kfold", 10)
    assert parse_folds_arg("session") == ("loso-session", None)
    assert parse_folds_arg("paper") == ("enterface-paper", None)
    assert parse_folds_arg("holdout") == ("holdout", None)
    assert parse_folds_arg("default") == ("default", None)
    with pytest.raises(SedError, match=r"--folds 'leave-one-out' is not understood"):
        parse_folds_arg("leave-one-out")


def test_default_protocol_comes_from_the_corpus():
    utterances = enterface_like({s: 30 for s in range(1, 44)})
    assert (
        make_folds(utterances, "default", corpus=get_corpus("enterface"))[0].name
        == "enterface-paper"
    )
    with pytest.raises(SedError, match=r"protocol 'default' needs the corpus"):
        make_folds(utterances, "default")


@pytest.mark.skipif(not EMODB_DATA.is_dir(), reason=f"EmoDB clips not present at {EMODB_DATA}")
def test_real_emodb_loso_has_ten_folds():
    corpus, utterances = load_corpus("emodb", EMODB_DATA)
    folds = make_folds(utterances, "default", corpus=corpus)
    assert len(folds) == 10
    assert_speaker_disjoint(folds, utterances)
    assert_each_tested_once(folds, utterances)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=2, max_size=9),
    protocol=st.sampled_from(["loso", "2", "3", "holdout"]),
    seed=st.integers(0, 5),
)
def test_no_speaker_is_ever_on_both_sides(counts, protocol, seed):
    utterances = corpus_of({f"s{i}": n for i, n in enumerate(counts)}, classes=("a", "b"))
    try:
        folds = make_folds(utterances, protocol, seed=seed)
    except SedError as error:  # too few speakers for K, or a training side of one class
        assert "impossible" in str(error) or "training side" in str(error)
        return
    assert_speaker_disjoint(folds, utterances)
    for fold in folds:
        assert len({utterances[i].label for i in fold.train}) >= 2
    if protocol != "holdout":
        assert_each_tested_once(folds, utterances)


# ------------------------------------------------------------ official folds: --folds PATH
RAVDESS_DATA = EMODB_DATA.parent / "ravdess"
EMOBOX_FOLDS = RAVDESS_DATA / "emobox_folds"
EMOBOX_TEST_ACTORS = [["01", "11", "20", "21"], ["04", "10", "12", "14"],
                      ["08", "09", "19", "23"], ["03", "05", "07", "24"],
                      ["02", "15", "16", "18"], ["06", "13", "17", "22"]]


def named_corpus(speakers: list[str], per_speaker: int = 4) -> list[Utterance]:
    """Files ``<speaker>_<i>.wav`` (unique names), labels cycling through a and b."""
    return [Utterance(Path(f"/c/{s}/{s}_{i}.wav"), "ab"[i % 2], s)
            for s in speakers for i in range(per_speaker)]


def write_emobox(folder: Path, folds: list[list[str]], per_speaker: int = 4) -> Path:
    """EmoBox-style lists: fold K's file holds a line per file of its speakers."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, speakers in enumerate(folds, start=1):
        lines = [json.dumps({"key": f"toy-{s}_{i}-{s}", "wav": f"downloads/toy/{s}/{s}_{i}.wav",
                             "emo": "a"}) for s in speakers for i in range(per_speaker)]
        (folder / f"toy_test_fold_{k}.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "README.md").write_text("not a fold\n")
    return folder


def speakers_tested(folds, utterances) -> list[list[str]]:
    return [sorted({utterances[i].speaker for i in f.test}) for f in folds]


def one_line_error(call, match: str) -> str:
    with pytest.raises(SedError, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.skipif(not EMOBOX_FOLDS.is_dir(), reason=f"EmoBox folds not present at {EMOBOX_FOLDS}")
def test_emobox_ravdess_folds_test_exactly_their_four_actors():
    corpus, utterances = load_corpus("ravdess", RAVDESS_DATA)
    assert parse_folds_arg(str(EMOBOX_FOLDS)) == ("file", None)
    folds = make_folds(utterances, str(EMOBOX_FOLDS), corpus=corpus)
    assert [f.name for f in folds] == [f"fold {k}" for k in range(1, 7)]
    assert speakers_tested(folds, utterances) == EMOBOX_TEST_ACTORS
    assert [len(f.test) for f in folds] == [240] * 6
    assert_speaker_disjoint(folds, utterances)
    assert_each_tested_once(folds, utterances)


def test_a_generated_jsonl_folder_gives_its_folds_in_order_and_unlisted_speakers_train(tmp_path):
    utterances = named_corpus(["s1", "s2", "s3", "s4", "s5"])
    listed = [["s3"], ["s1", "s4"], ["s2"]]
    folder = write_emobox(tmp_path / "folds", listed)
    (folder / "toy_test_fold_10.jsonl").write_text(
        json.dumps({"key": "toy-x-s5", "wav": "s5_0.wav"}) + "\n")  # K = 10 sorts after 3
    folds = make_folds(utterances, str(folder))
    assert speakers_tested(folds, utterances) == [*listed, ["s5"]]
    assert [f.name for f in folds] == ["fold 1", "fold 2", "fold 3", "fold 10"]
    for fold in folds:
        untested = {u.speaker for u in utterances} - {utterances[i].speaker for i in fold.test}
        assert {utterances[i].speaker for i in fold.train} == untested
    assert_speaker_disjoint(folds, utterances)


def test_a_speaker_fold_csv_gives_its_folds(tmp_path):
    utterances = named_corpus(["a", "b", "c", "d"])
    path = tmp_path / "folds.csv"
    path.write_text("fold,speaker,note\n10,c,x\n2,a,\n2,b,\n\n")
    folds = make_folds(utterances, str(path))
    assert [f.name for f in folds] == ["fold 2", "fold 10"]  # numeric order
    assert speakers_tested(folds, utterances) == [["a", "b"], ["c"]]
    assert_speaker_disjoint(folds, utterances)
    named = tmp_path / "named.csv"
    named.write_text("speaker,fold\nd,test\nb,dev\n")
    assert [f.name for f in make_folds(utterances, str(named))] == ["fold test", "fold dev"]


def test_a_listed_speaker_missing_from_the_corpus_is_named(tmp_path):
    utterances = named_corpus(["s1", "s2", "s3"])
    folder = write_emobox(tmp_path / "folds", [["s1"], ["s2", "s9"]])
    message = one_line_error(lambda: make_folds(utterances, str(folder)), r"speaker 's9'")
    assert "toy_test_fold_2.jsonl" in message and "fold 2" in message
    csv_path = tmp_path / "f.csv"
    csv_path.write_text("speaker,fold\ns1,1\nghost,2\n")
    one_line_error(lambda: make_folds(utterances, str(csv_path)), r"f\.csv.*'ghost'")


@pytest.mark.parametrize("line, match", [
    ("{not json", r"toy_test_fold_2\.jsonl:2: not a JSON line"),
    ('["a list"]', r"toy_test_fold_2\.jsonl:2: a JSON list, not an object"),
    ('{"wav": "s2_0.wav"}', r"toy_test_fold_2\.jsonl:2: no 'key'"),
    ('{"key": "toy-s2_0-", "wav": "s2_0.wav"}', r"toy_test_fold_2\.jsonl:2: key .* without"),
])
def test_a_bad_jsonl_line_is_named_with_its_file_and_line(tmp_path, line, match):
    folder = write_emobox(tmp_path / "folds", [["s1"], ["s2"]], per_speaker=1)
    path = folder / "toy_test_fold_2.jsonl"
    path.write_text(path.read_text() + line + "\n")
    one_line_error(lambda: make_folds(named_corpus(["s1", "s2", "s3"]), str(folder)), match)


def test_wrong_fold_files_each_get_a_one_line_error(tmp_path):
    utterances = named_corpus(["s1", "s2", "s3"])
    empty_folder = tmp_path / "none"
    empty_folder.mkdir()
    (empty_folder / "README.md").write_text("x")
    one_line_error(lambda: make_folds(utterances, str(empty_folder)), r"no fold files")
    one_line_error(lambda: make_folds(utterances, str(tmp_path / "absent.csv")),
                   r"absent\.csv: no such file")
    folder = write_emobox(tmp_path / "folds", [["s1"], ["s2"]])
    (folder / "toy_test_fold_2.jsonl").write_text("\n\n")
    one_line_error(lambda: make_folds(utterances, str(folder)),
                   r"toy_test_fold_2\.jsonl: fold 2 is empty")
    (folder / "toy_test_fold_2.jsonl").write_bytes(b"\xff\xfe\x00bad")
    one_line_error(lambda: make_folds(utterances, str(folder)), r"cannot be read")
    bad = {"cols.csv": ("speaker,group\ns1,1\n", r"cols\.csv: no column fold"),
           "header.csv": ("speaker,fold\n", r"header\.csv: no folds"),
           "blank.csv": ("", r"blank\.csv is empty"),
           "cell.csv": ("speaker,fold\ns1,1\n,2\n", r"cell\.csv:3: no speaker"),
           "twice.csv": ("speaker,fold\ns1,1\ns1,2\n", r"speaker s1 is listed in fold 1 and"),
           "all.csv": ("speaker,fold\ns1,1\ns2,1\ns3,1\n", r"fold 1: the training side has no")}
    for name, (text, match) in bad.items():
        (tmp_path / name).write_text(text)
        one_line_error(lambda: make_folds(utterances, str(tmp_path / name)), match)


def test_a_listed_file_of_another_speaker_is_an_error_and_absent_files_a_warning(tmp_path):
    utterances = named_corpus(["s1", "s2", "s3"])
    folder = write_emobox(tmp_path / "folds", [["s1"], ["s2"]])
    path = folder / "toy_test_fold_2.jsonl"
    moved = json.dumps({"key": "toy-s1_0-s2", "wav": "x/s1_0.wav"})
    path.write_text(path.read_text() + moved + "\n")
    one_line_error(lambda: make_folds(utterances, str(folder)),
                   r"toy_test_fold_2\.jsonl:5: s1_0\.wav is listed for speaker s2, but the "
                   r"corpus loader gives it to speaker s1")
    write_emobox(folder, [["s1"], ["s2"]])
    kept = [u for u in utterances if u.path.name != "s2_3.wav"]  # e.g. skipped as unusable
    with pytest.warns(DataWarning, match=r"1 file\(s\) listed .* s2_3\.wav"):
        folds = make_folds(kept, str(folder))
    assert speakers_tested(folds, kept) == [["s1"], ["s2"]]


def test_a_fold_path_is_told_apart_from_the_protocols(tmp_path):
    assert parse_folds_arg("folds.csv") == ("file", None)
    assert parse_folds_arg("some/folder") == ("file", None)
    assert parse_folds_arg("loso") == ("loso", None)
    with pytest.raises(SedError, match=r"or the path of a fold folder or CSV file"):
        parse_folds_arg("foldz")
