"""Per-fold selection of the recipe on inner folds of the training speakers (sed_model.search)."""

import json
import time

import numpy as np
import pytest
from test_trainer import random_dataset, tiny_config

from sed_model import search
from sed_model.config import make_config
from sed_model.errors import SedError
from sed_model.recipes import SPACES
from sed_model.runtime import RunOptions
from sed_model.trainer import train

QUIET = RunOptions(progress=False)  # no progress bars in tests

SIX = ("s1", "s2", "s3", "s4", "s5", "s6")
# a space small enough for a test: two rates and two lengths (in steps)
TINY_SPACE = {"lr": ("1e-2", "3e-2"), "steps": ("3", "5")}


@pytest.fixture(autouse=True)
def _tiny_space(monkeypatch, one_torch_thread):
    monkeypatch.setitem(SPACES, "tiny", TINY_SPACE)


def searched_config(**changes):
    return tiny_config(folds="2", inner_folds=2, search_trials=3, search_space="tiny",
                       **changes)


def pooled_uar(run_dirs) -> float:
    confusion = sum(np.array(json.loads((d / "metrics.json").read_text())["final"]["confusion"])
                    for d in run_dirs)
    recall = np.diag(confusion) / confusion.sum(axis=1)
    return float(np.nanmean(recall))


def test_each_fold_trains_with_the_setting_its_inner_folds_scored_best(tmp_path):
    dataset = random_dataset(speakers=SIX)
    metrics = train(searched_config(), tmp_path, dataset=dataset, options=QUIET).to_json()
    for index, fold in enumerate(metrics["folds"]):
        found = fold["search"]
        assert found["space"] == "tiny" and found["inner_folds"] == 2
        assert len(found["trials"]) == 3
        assert found["trials"][0]["setting"]["lr"] == "1e-2"  # the recipe's own value first
        scored = [t for t in found["trials"] if t["inner_uar"] is not None]
        assert all(t["state"] == "complete" for t in scored)
        assert all(t["inner_uar"] is None for t in found["trials"] if t["state"] == "pruned")
        assert found["inner_uar"] == max(t["inner_uar"] for t in scored)
        assert found["chosen"] in [t["setting"] for t in scored]
        assert fold["steps"] == int(found["chosen"]["steps"])  # trained with the choice
        search_dir = tmp_path / f"fold-{index + 1:02d}" / "search"
        for trial in scored:  # a setting's score is its inner runs' pooled UAR
            runs = sorted((search_dir / search.setting_name(trial["setting"])).iterdir())
            assert len(runs) == 2
            assert trial["inner_uar"] == pytest.approx(pooled_uar(runs))
        # the inner folds hold the outer fold's training speakers only
        inner_speakers = {json.loads((d / "metrics.json").read_text())["test_speakers"][0]
                          for d in search_dir.glob("*/fold-*")}
        assert not inner_speakers & set(fold["test_speakers"])
    final = metrics["final_model"]["search"]
    assert len(final["trials"]) == 3 and metrics["final_model"]["steps"] == int(
        final["chosen"]["steps"])


def test_a_resumed_search_keeps_its_finished_settings(tmp_path, monkeypatch):
    dataset = random_dataset(speakers=SIX)
    config = searched_config()
    first = train(config, tmp_path, dataset=dataset, options=QUIET, final_model=False).to_json()
    (tmp_path / "fold-01" / "metrics.json").unlink()  # the outer training was lost
    calls = []
    real = search.train_fold
    monkeypatch.setattr(search, "train_fold", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = train(config, tmp_path, dataset=dataset, options=QUIET, resume=True,
                  final_model=False).to_json()
    assert calls == []  # every inner run was read back
    assert again["folds"][0]["search"]["chosen"] == first["folds"][0]["search"]["chosen"]
    # its time is the journal's, not that of the session that read it back
    assert again["folds"][0]["search"]["seconds"] == first["folds"][0]["search"]["seconds"] > 0
    assert again["folds"][0]["final"] == first["folds"][0]["final"]


def test_a_setting_left_running_by_a_killed_search_is_tried_again_first(tmp_path, monkeypatch):
    """A kill leaves the journal's trial RUNNING; the resumed search marks it failed and runs
    the same values again (not a new draw), and counts only finished settings."""
    import optuna

    interrupted = {"lr": "3e-2", "steps": "5"}  # not the recipe's values
    study = search._study(tmp_path / "fold-01" / "search")
    study.enqueue_trial(interrupted)
    trial = study.ask()
    for key, values in TINY_SPACE.items():
        trial.suggest_categorical(key, values)
    assert trial.params == interrupted  # as the killed search left it: running
    started = []
    real = search.train_fold
    monkeypatch.setattr(search, "train_fold",
                        lambda *a, **k: started.append(a[5].parent.name) or real(*a, **k))
    clock = time.time()
    metrics = train(searched_config(), tmp_path, dataset=random_dataset(speakers=SIX),
                    options=QUIET, final_model=False).to_json()
    trials = metrics["folds"][0]["search"]["trials"]
    assert len(trials) == 3 and trials[0]["setting"] == interrupted
    assert trials[0]["number"] == 1 and started[0] == search.setting_name(interrupted)
    journal = search._study(tmp_path / "fold-01" / "search").trials
    assert journal[0].state == optuna.trial.TrialState.FAIL and len(journal) == 4
    # the search's time: its finished settings' runs, not the killed trial's hanging time
    assert 0 < metrics["folds"][0]["search"]["seconds"] < time.time() - clock


def test_a_pruned_setting_is_never_chosen():
    trials = [{"setting": {"lr": "1e-2"}, "state": "complete", "inner_uar": 0.60,
               "inner_uar_by_fold": [0.62, 0.60]},
              {"setting": {"lr": "3e-2"}, "state": "pruned", "inner_uar": None,
               "inner_uar_by_fold": [0.90]},
              {"setting": {"lr": "1e-3"}, "state": "complete", "inner_uar": 0.60,
               "inner_uar_by_fold": [0.55, 0.60]}]
    assert search.best_trial(trials) is trials[0]  # ties: the earlier


def test_search_settings_are_checked():
    with pytest.raises(SedError, match="search_space must be one of"):
        make_config(search_trials=2, search_space="huge")
    with pytest.raises(SedError, match="search_trials or a nested selection"):
        make_config(search_trials=2, augment_candidates=("none", "mask"))
    with pytest.raises(SedError, match="search_trials must be 0"):
        make_config(search_trials=-1)
    # the small space's shift candidates apply under global normalisation only
    assert "speed+shift" not in search.space_choices("small", "speaker")["augment"]
    assert make_config(corpus="emodb", search_trials=4).recipe.speeds == (0.9, 1.1)


def test_the_recipe_as_given_is_the_first_setting():
    recipe = make_config(corpus="emodb").recipe  # small, global
    assert search.recipe_setting(recipe, search.space_choices("small", "global")) == {
        "lr": "4e-3", "epochs": "40", "cells": "64,64", "layer_dropout": "0.2",
        "head_dropout": "0.3", "augment": "speed+shift"}
    speaker = make_config(corpus="emodb", normalize="speaker").recipe
    assert search.recipe_setting(speaker, search.space_choices("small", "speaker"))[
        "augment"] == "speed"


def test_setting_values_are_typed_as_the_recipe_reads_them():
    assert search.setting_recipe({"cells": "128,128", "augment": "speed+shift", "lr": "4e-3"}) == {
        "cells": (128, 128), "augment": ("speed", "shift"), "lr": 4e-3}
    for space in SPACES.values():  # every choice of every space is a valid recipe value
        for key, values in space.items():
            for value in values:
                make_config(corpus="emodb", **search.setting_recipe({key: value}))


def test_a_resumed_search_draws_what_an_uninterrupted_one_would(tmp_path):
    """Each draw's seed is the search's seed and the trial's number: a search resumed in a new
    process continues the draws instead of replaying those of its first session."""
    choices = SPACES["small"]

    def objective(trial):
        setting = {key: trial.suggest_categorical(key, values) for key, values in choices.items()}
        return float(setting["lr"]) * int(setting["epochs"])

    def settings(study):
        return [t.params for t in study.trials]

    whole = search._study(tmp_path / "whole")
    search._optimize(whole, objective, 6, seed=5)
    search._optimize(search._study(tmp_path / "parts"), objective, 3, seed=5)
    resumed = search._study(tmp_path / "parts")  # a new process reads the journal
    search._optimize(resumed, objective, 3, seed=5)
    assert settings(resumed) == settings(whole)
    # a stream restarted in the new process would draw the first session's three again
    assert settings(resumed)[3:] != settings(resumed)[:3]
