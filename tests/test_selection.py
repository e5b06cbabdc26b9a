"""The nested selection: inner folds of each fold's training speakers choose its augmentation,
its ``utterance_norm`` or both, and the fold, its checkpoint and ``model.pt`` use the choice."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_trainer import random_dataset, tiny_config

from sed_model import augment, cli, selection, train
from sed_model.checkpoint import load_checkpoint
from sed_model.compare import Comparison, _selection_choices_line, selection_choices, svm_tuned
from sed_model.config import make_config
from sed_model.errors import SedError
from sed_model.fold import FoldResult
from sed_model.runtime import RunOptions
from sed_model.trainer import dataset_folds
from sed_model.trainer import train as train_run

QUIET = RunOptions(progress=False)
RESULTS = Path(__file__).resolve().parents[1] / "results"
SPEAKERS = ("s1", "s2", "s3", "s4", "s5", "s6")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (the shared fixture of conftest.py)."""


def parse(*options):
    return cli.config_from_args(train.build_parser().parse_args(list(options)))


def checked_choices(metrics: dict, candidates: tuple[str, ...], inner_folds: int) -> list[str]:
    """Each fold's chosen candidate, after checking that every candidate was scored, in
    order, and that the choice is the first with the best inner score."""
    chosen = []
    for fold in metrics["folds"]:
        picked = fold["selection"]
        assert list(picked["scores"]) == list(candidates)
        assert picked["inner_folds"] == inner_folds
        best = max(picked["scores"].values())
        assert picked["chosen"] == next(c for c, u in picked["scores"].items() if u == best)
        chosen.append(picked["chosen"])
    return chosen


def test_inner_folds_split_only_the_training_speakers():
    dataset = random_dataset(speakers=SPEAKERS)
    config = tiny_config(folds="3")
    speakers = np.array(dataset.speakers)
    for fold in dataset_folds(dataset, config.folds, 0, validation_speakers=1):
        inner = selection.inner_folds(dataset, fold, 2, seed=0)
        assert len(inner) == 2
        outside = set(fold.test) | set(fold.validation)
        for f in inner:
            assert not (set(f.train) | set(f.test)) & outside
            assert not set(speakers[list(f.train)]) & set(speakers[list(f.test)])
        assert sorted(i for f in inner for i in f.test) == sorted(fold.train)


def test_nested_selection_chooses_the_best_inner_augmentation_and_resumes(tmp_path,
                                                                          monkeypatch):
    dataset = random_dataset(speakers=SPEAKERS)
    candidates = ("none", "mask+crop")
    config = tiny_config(folds="2", steps=4, augment_candidates=candidates, inner_folds=2)
    metrics = train_run(config, tmp_path, dataset=dataset, options=QUIET).to_json()
    chosen = checked_choices(metrics, candidates, inner_folds=2)
    for index, fold in enumerate(metrics["folds"]):
        assert fold["augment"] == list(augment.candidate_augment(chosen[index]))
        for candidate, score in fold["selection"]["scores"].items():
            # the score is the inner runs' UAR pooled over their test utterances, and each
            # inner run's own UAR is kept beside it
            inner_dir = tmp_path / f"fold-{index + 1:02d}" / "inner" / candidate
            own = [np.array(json.loads((inner_dir / f"fold-{j}" / "metrics.json").read_text())
                            ["final"]["confusion"]) for j in (1, 2)]
            confusion = sum(own)
            recall = np.diag(confusion) / confusion.sum(axis=1)
            assert score == pytest.approx(np.nanmean(recall))
            assert fold["selection"]["fold_scores"][candidate] == pytest.approx(
                [np.nanmean(np.diag(c) / c.sum(axis=1)) for c in own])
    majority = max(candidates, key=chosen.count)
    assert metrics["final_model"]["augment"] == list(augment.candidate_augment(majority))

    # resumed after fold 2's outer training was lost: its inner runs are read back
    (tmp_path / "fold-02" / "metrics.json").unlink()
    calls = []
    real_train_fold = selection.train_fold
    monkeypatch.setattr(selection, "train_fold",
                        lambda *a, **k: calls.append(a) or real_train_fold(*a, **k))
    again = train_run(config, tmp_path, dataset=dataset, options=QUIET, resume=True).to_json()
    assert calls == []
    assert again["folds"][1]["selection"] == metrics["folds"][1]["selection"]
    assert again["summary"] == metrics["summary"]


def test_compare_counts_the_inner_folds_choices():
    config = make_config(augment_candidates=("none", "mask+crop"))

    def run(*chosen):  # what selection_choices reads of a RunResult
        return SimpleNamespace(config=config, folds=[
            SimpleNamespace(selection={"chosen": c}) for c in chosen])

    assert selection_choices([SimpleNamespace(config=make_config(), folds=[
        SimpleNamespace(selection=None)])]) is None
    counts = selection_choices([run("none", "mask+crop"), run("none", "none")])
    assert counts == {"none": 3, "mask+crop": 1}
    assert _selection_choices_line({"feature": counts}).endswith(
        "Feature: none 3, mask+crop 1 of 4 fold runs")


def test_utterance_norm_candidates_replace_the_presets_mode():
    recipe = parse("--corpus", "emodb", "--set", "utterance_norm_candidates=none,mean_std").recipe
    # small's per-variant utterance_norm gives way to the choice, as augment does to
    # augment_candidates; the preset's augmentation stays
    assert recipe.utterance_norm == "none"
    assert recipe.utterance_norm_candidates == ("none", "mean_std")
    assert recipe.augment == ("speed", "shift") and recipe.selects
    assert not parse("--corpus", "emodb").recipe.selects
    speaker = parse("--corpus", "emodb", "--normalize", "speaker",
                    "--set", "utterance_norm_candidates=mean,mean_std").recipe
    assert speaker.utterance_norm_candidates == ("mean", "mean_std")


@pytest.mark.parametrize("options, message", [
    (["--set", "utterance_norm_candidates=none,cmvn"], "unknown mode 'cmvn'"),
    (["--set", "utterance_norm_candidates=mean_std"], "at least two different modes"),
    (["--set", "utterance_norm_candidates=none,none"], "at least two different modes"),
    (["--set", "utterance_norm_candidates=none,mean_std", "--set", "utterance_norm=mean"],
     "give utterance_norm or utterance_norm_candidates, not both"),
    (["--set", "utterance_norm_candidates=none,mean_std", "--set", "search_trials=2"],
     "give search_trials or a nested selection"),
])
def test_bad_utterance_norm_candidates_are_one_line_errors(options, message):
    with pytest.raises(SedError, match=message):
        parse("--corpus", "emodb", *options)


def test_both_candidate_lists_try_every_combination_in_order():
    config = tiny_config(augment_candidates=("none", "mask"),
                         utterance_norm_candidates=("none", "mean_std"))
    settings = selection.candidate_settings(config.recipe)
    assert list(settings) == ["augment=none_utterance_norm=none",
                              "augment=none_utterance_norm=mean_std",
                              "augment=mask_utterance_norm=none",
                              "augment=mask_utterance_norm=mean_std"]
    chosen = selection.candidate_config(config, settings["augment=mask_utterance_norm=mean_std"])
    assert chosen.recipe.augment == ("mask",) and chosen.recipe.utterance_norm == "mean_std"
    assert not chosen.recipe.selects  # the fold trains; it does not select again
    alone = tiny_config(utterance_norm_candidates=("none", "mean_std"))
    assert selection.candidate_settings(alone.recipe) == {
        "none": {"utterance_norm": "none"}, "mean_std": {"utterance_norm": "mean_std"}}
    assert selection.candidate_settings(tiny_config().recipe) == {}


def mode_of(checkpoint: Path) -> str:
    return load_checkpoint(checkpoint)["hyperparameters"]["utterance_norm"]


def test_each_fold_trains_with_the_utterance_norm_its_inner_folds_chose(tmp_path):
    dataset = random_dataset(speakers=SPEAKERS)
    candidates = ("none", "mean_std")
    config = tiny_config(folds="2", steps=4, utterance_norm_candidates=candidates,
                         inner_folds=2)
    metrics = train_run(config, tmp_path, dataset=dataset, options=QUIET).to_json()
    chosen = checked_choices(metrics, candidates, inner_folds=2)
    for index, mode_chosen in enumerate(chosen):
        fold_dir = tmp_path / f"fold-{index + 1:02d}"
        for mode in candidates:  # every inner model is built with its candidate
            inner = sorted((fold_dir / "inner" / mode).glob("fold-*/last.pt"))
            assert len(inner) == 2 and {mode_of(p) for p in inner} == {mode}
        assert mode_of(fold_dir / "last.pt") == mode_chosen
    majority = max(candidates, key=chosen.count)
    assert metrics["final_model"]["utterance_norm"] == majority
    assert mode_of(tmp_path / "model.pt") == majority


def test_the_choice_follows_the_inner_scores_not_the_order(tmp_path, monkeypatch):
    """With inner scores that prefer mean_std on one outer fold and none on the other, each
    fold trains with its own fold's preference; the tie of one vote each goes to the first
    candidate for model.pt."""
    preferred = {"fold-01": "mean_std", "fold-02": "none"}

    def scored(config, dataset, folds, runs_dir, progress=True):
        uar = 0.6 if config.recipe.utterance_norm == preferred[runs_dir.parent.parent.name] \
            else 0.4
        return selection.InnerScore(uar, (uar,) * len(folds))

    monkeypatch.setattr(selection, "inner_score", scored)
    dataset = random_dataset(speakers=SPEAKERS)
    config = tiny_config(folds="2", steps=2, utterance_norm_candidates=("none", "mean_std"),
                         inner_folds=2)
    metrics = train_run(config, tmp_path, dataset=dataset, options=QUIET).to_json()
    assert [f["selection"]["chosen"] for f in metrics["folds"]] == ["mean_std", "none"]
    assert [mode_of(tmp_path / f"fold-0{i}" / "last.pt") for i in (1, 2)] == ["mean_std", "none"]
    assert metrics["final_model"]["utterance_norm"] == "none"


def test_a_fold_that_selected_its_augmentation_before_reads_back():
    old = {"index": 0, "name": "fold 1", "n_train": 10, "n_test": 2, "test_speakers": ["s1"],
           "steps": 4, "final": None, "best": None, "history": [], "augment": ["mask"],
           "augment_selection": {"scores": {"none": 0.4, "mask": 0.5}, "chosen": "mask",
                                 "inner_folds": 2}}
    result = FoldResult.from_dict(old)
    read = selection.Selection.from_dict(result.selection)
    assert read.chosen == "mask"
    assert read.settings == {"none": {"augment": "none"}, "mask": {"augment": "mask"}}
    assert result.to_dict()["selection"] == old["augment_selection"]


def test_the_margin_is_the_chosen_candidates_paired_inner_fold_gain_and_its_error():
    picked = selection.Selection(
        {"keep": 0.50, "trim": 0.60}, "trim", 3, {"keep": {}, "trim": {}},
        {"keep": [0.5, 0.5, 0.5], "trim": [0.6, 0.5, 0.7]})
    mean, error = picked.margin()
    assert mean == pytest.approx(0.1)
    assert error == pytest.approx(np.std([0.1, 0.0, 0.2], ddof=1) / np.sqrt(3))
    assert selection.Selection.from_dict(picked.to_dict()) == picked
    first = selection.Selection(picked.scores, "keep", 3, picked.settings, picked.fold_scores)
    assert first.margin() is None  # the first candidate has no margin over itself
    older = {"scores": picked.scores, "chosen": "trim", "inner_folds": 3,
             "settings": picked.settings}  # written before the per-fold scores were kept
    assert selection.Selection.from_dict(older).fold_scores == {}
    assert selection.Selection.from_dict(older).margin() is None


def test_the_folds_line_shows_the_margin_against_the_inner_folds_spread(tmp_path,
                                                                        monkeypatch, capsys):
    by_mode = {"none": (0.5, 0.5), "mean_std": (0.7, 0.5)}

    def scored(config, dataset, folds, runs_dir, progress=True):
        per_fold = by_mode[config.recipe.utterance_norm]
        return selection.InnerScore(float(np.mean(per_fold)), per_fold)

    monkeypatch.setattr(selection, "inner_score", scored)
    dataset = random_dataset(speakers=SPEAKERS)
    config = tiny_config(folds="2", steps=2, utterance_norm_candidates=("none", "mean_std"),
                         inner_folds=2)
    train_run(config, tmp_path, dataset=dataset, options=QUIET)
    lines = [line for line in capsys.readouterr().out.splitlines() if "inner UAR" in line]
    assert len(lines) == 2
    assert all(line.endswith("-> mean_std (+0.100 +- 0.100 over the 2 inner folds)")
               for line in lines)


def test_a_committed_comparison_reads_back():
    path = RESULTS / "nemo-global" / "comparison.json"
    saved = json.loads(path.read_text())
    assert "augment_choices" in saved  # written before the selection covered utterance_norm
    assert Comparison.from_json(saved).selection_choices is None


def test_epochs_candidates_are_parsed_and_checked():
    recipe = parse("--corpus", "emodb", "--set", "epochs_candidates=20,40").recipe
    assert recipe.epochs_candidates == (20, 40) and recipe.selects
    assert recipe.epochs == 40  # the preset's length stays; each candidate replaces it
    for options, message in [
            (["--set", "epochs_candidates=20"], "at least two different lengths"),
            (["--set", "epochs_candidates=20,20"], "at least two different lengths"),
            (["--set", "epochs_candidates=0,20"], "positive numbers of epochs; got 0, 20"),
            (["--set", "epochs_candidates=20,forty"], "epochs_candidates='20,forty': expected"),
            (["--set", "epochs_candidates=20,40", "--set", "search_trials=2"],
             "epochs_candidates\\), not both")]:
        with pytest.raises(SedError, match=message):
            parse("--corpus", "emodb", *options)


def test_a_length_candidate_is_named_by_its_change_and_replaces_steps():
    config = tiny_config(epochs_candidates=(1, 3))  # tiny_config's length is in steps
    settings = selection.candidate_settings(config.recipe)
    assert settings == {"epochs=1": {"epochs": "1"}, "epochs=3": {"epochs": "3"}}
    chosen = selection.candidate_config(config, settings["epochs=3"])
    assert (chosen.recipe.epochs, chosen.recipe.steps) == (3, None)
    assert not chosen.recipe.selects
    both = tiny_config(epochs_candidates=(1, 3), edge_quiet_candidates=("keep", "trim"))
    assert list(selection.candidate_settings(both.recipe)) == [
        "edge_quiet=keep_epochs=1", "edge_quiet=keep_epochs=3",
        "edge_quiet=trim_epochs=1", "edge_quiet=trim_epochs=3"]


def test_each_fold_trains_for_the_length_its_inner_folds_chose(tmp_path, monkeypatch):
    """Inner scores that prefer 2 epochs on fold 1 and 1 epoch on fold 2: each fold trains for
    its own choice, and model.pt for the first candidate (one vote each)."""
    preferred = {"fold-01": 2, "fold-02": 1}

    def scored(config, dataset, folds, runs_dir, progress=True):
        uar = 0.6 if config.recipe.epochs == preferred[runs_dir.parent.parent.name] else 0.4
        return selection.InnerScore(uar, (uar,) * len(folds))

    monkeypatch.setattr(selection, "inner_score", scored)
    dataset = random_dataset(speakers=SPEAKERS)
    config = tiny_config(folds="2", epochs_candidates=(1, 2), inner_folds=2)
    metrics = train_run(config, tmp_path, dataset=dataset, options=QUIET).to_json()
    folds = metrics["folds"]
    assert [f["selection"]["chosen"] for f in folds] == ["epochs=2", "epochs=1"]
    assert folds[0]["selection"]["settings"]["epochs=2"] == {"epochs": "2"}
    per_epoch = [-(-f["n_train"] // 8) for f in folds]  # batch_size 8
    assert [f["steps"] for f in folds] == [2 * per_epoch[0], 1 * per_epoch[1]]
    final = metrics["final_model"]
    assert final["epochs"] == 1
    assert final["steps"] == -(-len(dataset.utterances) // 8)


def test_the_svm_is_tuned_whenever_the_recipe_chooses_per_fold():
    assert not svm_tuned(make_config(corpus="emodb"), svm_tune=False)
    assert svm_tuned(make_config(corpus="emodb"), svm_tune=True)
    for choosing in (dict(epochs_candidates=(20, 40)), dict(augment_candidates=("none", "mask")),
                     dict(search_trials=2)):
        assert svm_tuned(make_config(corpus="emodb", **choosing), svm_tune=False)


def test_too_many_inner_folds_for_a_folds_training_speakers_is_a_one_line_error():
    dataset = random_dataset(speakers=SPEAKERS)
    fold = dataset_folds(dataset, "3", 0, validation_speakers=0)[0]  # 4 training speakers
    with pytest.raises(SedError, match=r"inner_folds=5: .* trains on 4 speakers, which "
                                       r"allow 2 to 4 speaker-grouped inner folds"):
        selection.inner_folds(dataset, fold, 5, seed=0)
