"""``edge_quiet=trim``: a model reads each utterance from just before its first speech frame to
just after its last, in training, evaluation, predict and an exported ONNX file alike."""

from pathlib import Path

import numpy as np
import pytest
from test_trainer import CLASSES, tiny_config

import sed_model
from sed_model import cli, selection, train
from sed_model.checkpoint import edge_quiet_from_checkpoint, load_checkpoint
from sed_model.corpora import Utterance, get_corpus
from sed_model.data import Dataset, trim_edge_quiet, trim_frames
from sed_model.errors import SedError
from sed_model.evaluate import evaluate_folds
from sed_model.features.store import Frames
from sed_model.fold import FoldTraining
from sed_model.runtime import RunOptions
from sed_model.trainer import dataset_folds
from sed_model.trainer import train as train_run
from sed_model.vad import EDGE_MARGIN_FRAMES, LOUDNESS_COLUMN, VOICING_COLUMN, speech_span

QUIET = RunOptions(progress=False)
M = EDGE_MARGIN_FRAMES


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (the shared fixture of conftest.py)."""


def frames_with_speech(total: int, speech: tuple[int, int], rng=None) -> np.ndarray:
    """(total, 130) frames, speech (voiced and loud) on ``speech[0]:speech[1]``, quiet and
    unvoiced elsewhere."""
    rng = rng or np.random.default_rng(0)
    x = rng.standard_normal((total, 130)).astype(np.float32) * 0.1
    x[:, VOICING_COLUMN], x[:, LOUDNESS_COLUMN] = 0.05, 0.001
    x[speech[0]:speech[1], VOICING_COLUMN] = 0.9
    x[speech[0]:speech[1], LOUDNESS_COLUMN] = 0.4
    return x


@pytest.mark.parametrize(("total", "speech", "span"), [
    (100, (40, 60), (40 - M, 60 + M)),  # margins inside the utterance
    (100, (5, 97), (0, 100)),  # margins clipped at both ends
    (100, (0, 1), (0, 1 + M)),  # one speech frame, at the start
    (100, (99, 100), (99 - M, 100)),  # one speech frame, at the end
    (100, (0, 0), (0, 100)),  # no speech found: every frame
    (0, (0, 0), (0, 0)),  # an empty utterance
])
def test_speech_span_keeps_a_margin_around_the_speech(total, speech, span):
    assert speech_span(frames_with_speech(total, speech)) == span


def test_a_pause_inside_the_speech_is_kept():
    x = frames_with_speech(200, (30, 170))
    x[80:120, VOICING_COLUMN] = 0.0  # 0.4 s unvoiced in the middle
    assert speech_span(x) == (30 - M, 170 + M)


def test_trimmed_frames_are_views_of_the_same_rows_in_a_store_and_in_a_list():
    rows = [frames_with_speech(120, (50, 70)), frames_with_speech(90, (0, 0)),
            frames_with_speech(60, (10, 50))]
    store = Frames.in_memory(rows)
    for trimmed in (trim_frames(store), trim_frames(rows)):
        assert [len(r) for r in trimmed] == [20 + 2 * M, 90, 60]
        np.testing.assert_array_equal(trimmed[0], rows[0][50 - M:70 + M])
        np.testing.assert_array_equal(trimmed[2], rows[2])
    assert isinstance(trim_frames(store), Frames)
    assert np.shares_memory(trim_frames(store)[0], store.data)


def quiet_edged_dataset(speakers=("s1", "s2", "s3", "s4"), per_class=3, seed=0) -> Dataset:
    """Utterances of 30..60 speech frames, whose class shifts the speech frames' features,
    between 40..80 quiet frames on each side; speed versions 0.9 (the same frames) and 1.1
    (other edges)."""
    rng = np.random.default_rng(seed)
    utterances, features, faster, labels = [], [], [], []
    for speaker in speakers:
        for label, name in enumerate(CLASSES):
            for n in range(per_class):
                lead, speech, trail = (int(v) for v in rng.integers((40, 30, 40), (80, 60, 80)))
                x = frames_with_speech(lead + speech + trail, (lead, lead + speech), rng)
                x[lead:lead + speech, 10:20] += 1.5 * label
                utterances.append(Utterance(Path(f"/none/{speaker}_{name}_{n}.wav"), name,
                                            speaker))
                features.append(x)
                faster.append(x[lead // 2:])  # a speed version: half the leading quiet
                labels.append(label)
    return Dataset(corpus="random", loader=get_corpus("emodb"), classes=CLASSES,
                   utterances=utterances, features=Frames.in_memory(features),
                   labels=np.array(labels), skipped=0,
                   speed_features={0.9: Frames.in_memory(features),
                                   1.1: Frames.in_memory(faster)})


def test_a_dataset_is_trimmed_once_in_every_speed_version():
    dataset = quiet_edged_dataset()
    trimmed = trim_edge_quiet(dataset)
    assert trim_edge_quiet(dataset) is trimmed  # made once per dataset
    for version, cut in ((dataset.features, trimmed.features),
                         (dataset.speed_features[1.1], trimmed.speed_features[1.1])):
        for raw, row in zip(version, cut):
            start, stop = speech_span(raw)
            np.testing.assert_array_equal(row, raw[start:stop])
            assert len(row) < len(raw)
    assert len(dataset.features[0]) > len(trimmed.features[0])  # the original is untouched


# -------------------------------------------------------------------------------- recipe
def parse(*options):
    return cli.config_from_args(train.build_parser().parse_args(list(options)))


def test_edge_quiet_is_set_for_every_variant_or_per_variant():
    assert parse("--corpus", "emodb").recipe.edge_quiet == "keep"
    assert parse("--set", "edge_quiet=trim").recipe.edge_quiet_of("time") == "trim"
    recipe = parse("--set", "edge_quiet=lstm:trim,general:trim,time:keep,feature:keep").recipe
    assert [recipe.edge_quiet_of(v) for v in ("lstm", "general", "time", "feature")] == [
        "trim", "trim", "keep", "keep"]
    both = "lstm:trim,general:trim,time:trim,feature:trim"
    assert parse("--set", f"edge_quiet={both}").recipe.edge_quiet == "trim"  # written one way


@pytest.mark.parametrize(("value", "message"), [
    ("cut", "edge_quiet must be one of keep, trim"),
    ("lstm:trim,general:trim", "names no mode for time, feature"),
    ("lstm:cut,general:trim,time:keep,feature:keep", "unknown mode 'cut'"),
])
def test_a_bad_edge_quiet_is_a_one_line_error(value, message):
    with pytest.raises(SedError, match=message):
        parse("--set", f"edge_quiet={value}")


def test_edge_quiet_candidates_clear_the_recipes_mode_and_are_checked():
    assert parse("--set", "edge_quiet_candidates=keep,trim").recipe.edge_quiet == "keep"
    for options, message in [
            (["--set", "edge_quiet_candidates=keep,cut"], "unknown mode 'cut'"),
            (["--set", "edge_quiet_candidates=trim"], "at least two different modes"),
            (["--set", "edge_quiet_candidates=keep,trim", "--set", "edge_quiet=trim"],
             "give edge_quiet or edge_quiet_candidates, not both")]:
        with pytest.raises(SedError, match=message):
            parse(*options)


# ------------------------------------------------------------- training and inference
def test_a_trimming_fold_trains_and_tests_on_the_trimmed_frames(tmp_path):
    dataset = quiet_edged_dataset()
    trimmed = trim_edge_quiet(dataset)
    config = tiny_config(edge_quiet="lstm:trim,general:keep,time:keep,feature:keep",
                         variant="lstm", augment=("speed",))
    fold = dataset_folds(dataset, config.folds, 0, validation_speakers=0)[0]
    run = FoldTraining(config, dataset, fold, 0, 2, tmp_path / "lstm")
    train, test = list(fold.train), list(fold.test)
    np.testing.assert_array_equal(run.train_split.lengths, trimmed.features.lengths[train])
    np.testing.assert_array_equal(run.test_split.lengths, trimmed.features.lengths[test])
    assert [len(f) for f in run.train_split.speed_frames[1]] == [
        len(trimmed.speed_features[1.1][i]) for i in fold.train]
    np.testing.assert_allclose(run.normalizer.mean, trimmed.features.data[
        np.concatenate([np.arange(trimmed.features.starts[i], trimmed.features.ends[i])
                        for i in fold.train])].mean(axis=0), rtol=1e-4, atol=1e-5)
    keeping = FoldTraining(config.updated({"variant": "time"}), dataset, fold, 0, 2,
                           tmp_path / "time")
    np.testing.assert_array_equal(keeping.train_split.lengths,
                                  dataset.features.lengths[list(fold.train)])


@pytest.fixture(scope="module")
def trimming_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trim")
    dataset = quiet_edged_dataset()
    config = tiny_config(edge_quiet="trim", variant="time", steps=6, folds="loso")
    train_run(config, out, dataset=dataset, options=QUIET)
    return dataset, out


def test_predict_reads_what_the_model_was_trained_on(trimming_run):
    dataset, out = trimming_run
    checkpoint = load_checkpoint(out / "model.pt")
    assert edge_quiet_from_checkpoint(checkpoint) == "trim"
    model = sed_model.load_model(out / "model.pt", device="cpu")
    member = model.members[0]
    assert member.edge_quiet == "trim"
    raw = dataset.features[3]
    start, stop = speech_span(raw)
    got = model._probabilities([raw], None)[0]
    x = member.normalizer.new_speaker([raw[start:stop]])[0]
    np.testing.assert_allclose(got, member.probabilities(x[None], np.array([len(x)]))[0],
                               atol=1e-6)
    untrimmed = member.normalizer.new_speaker([raw])[0]
    assert not np.allclose(got, member.probabilities(untrimmed[None],
                                                     np.array([len(raw)]))[0], atol=1e-6)


def test_attention_weights_are_placed_over_every_frame_of_the_file(trimming_run):
    dataset, out = trimming_run
    model = sed_model.load_model(out / "model.pt", device="cpu")
    raw = dataset.features[5]
    start, stop = speech_span(raw)
    weights = model._attention({"frames": raw, "signal": np.zeros(10), "rate": 16000})["weights"]
    for w in weights:
        assert w.shape == (len(raw),)
        assert not w[:start].any() and not w[stop:].any()
        assert w[start:stop].sum() == pytest.approx(1.0, abs=1e-5)


def test_evaluate_scores_each_fold_as_training_did(trimming_run):
    dataset, out = trimming_run
    result = evaluate_folds(out, dataset, "loso")
    trained = sed_model.checkpoint.read_json(out / "metrics.json")["folds"]
    assert [r["uar"] for r in result["per_fold"]] == pytest.approx(
        [f["final"]["uar"] for f in trained])


def test_an_onnx_export_keeps_the_trimming(trimming_run, tmp_path):
    pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")
    pytest.importorskip("onnx", reason="the [onnx] extra is not installed")
    from sed_model.export import export_onnx

    dataset, out = trimming_run
    export_onnx(out / "model.pt", tmp_path / "model.onnx")
    onnx_model = sed_model.load_model(tmp_path / "model.onnx")
    assert onnx_model.members[0].edge_quiet == "trim"
    torch_model = sed_model.load_model(out / "model.pt", device="cpu")
    frames = [dataset.features[i] for i in (0, 7, 20)]
    np.testing.assert_allclose(onnx_model._probabilities(frames, None),
                               torch_model._probabilities(frames, None), atol=1e-5)


def test_each_fold_trims_or_keeps_as_its_inner_folds_chose(tmp_path, monkeypatch):
    """Inner scores that prefer trim on one outer fold and keep on the other: each fold, its
    checkpoint and model.pt read what was chosen; the tie of one vote each goes to keep."""
    preferred = {"fold-01": "trim", "fold-02": "keep"}

    def scored(config, dataset, folds, runs_dir, progress=True):
        chosen = config.recipe.edge_quiet_of(config.variant)
        uar = 0.6 if chosen == preferred[runs_dir.parent.parent.name] else 0.4
        return selection.InnerScore(uar, (uar,) * len(folds))

    monkeypatch.setattr(selection, "inner_score", scored)
    config = tiny_config(folds="2", steps=2, edge_quiet_candidates=("keep", "trim"),
                         inner_folds=2, variant="time")
    assert selection.candidate_settings(config.recipe) == {
        "keep": {"edge_quiet": "keep"}, "trim": {"edge_quiet": "trim"}}
    metrics = train_run(config, tmp_path, dataset=quiet_edged_dataset(),
                        options=QUIET).to_json()
    assert [f["selection"]["chosen"] for f in metrics["folds"]] == ["trim", "keep"]
    assert [edge_quiet_from_checkpoint(load_checkpoint(tmp_path / f"fold-0{i}" / "last.pt"))
            for i in (1, 2)] == ["trim", "keep"]
    assert metrics["final_model"]["edge_quiet"] == "keep"
    assert edge_quiet_from_checkpoint(load_checkpoint(tmp_path / "model.pt")) == "keep"
