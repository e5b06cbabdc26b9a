"""scripts/inner_scores.py: recipe settings scored on inner folds of the training speakers."""

import json
import subprocess
import sys

import numpy as np
import pytest
from script_loader import SCRIPTS, load_script
from test_trainer import random_dataset, tiny_config

from sed_model import selection
from sed_model.errors import SedError
from sed_model.selection import inner_folds
from sed_model.trainer import dataset_folds


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (the shared fixture of conftest.py)."""


def test_settings_parse_into_training_options():
    script = load_script("inner_scores")
    setting = script.parse_setting(["long", "epochs=40", "cells=128,96", "lr=1e-3",
                                    "augment=speed+shift+mixup", "class_balanced=false"])
    assert setting.name == "long"
    assert setting.overrides == {"epochs": 40, "cells": (128, 96), "lr": 1e-3,
                                 "augment": ("speed", "shift", "mixup"),
                                 "class_balanced": False}
    assert script.parse_setting(["plain", "augment=none"]).overrides == {"augment": ()}
    assert script.parse_setting(["commas", "augment=speed,shift"]).overrides == {
        "augment": ("speed", "shift")}
    assert script.parse_setting(["as-is"]).overrides == {}
    with pytest.raises(SedError, match="unknown recipe key 'epoch'"):
        script.parse_setting(["typo", "epoch=40"])
    with pytest.raises(SedError, match="expected option=value, got 'epochs'"):
        script.parse_setting(["bare", "epochs"])


def test_a_bad_setting_on_the_command_line_is_one_error_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "inner_scores.py"), "--corpus", "demo",
         "--data", str(tmp_path), "--setting", "wide", "augment=speed+wings",
         "--out-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(
        "error: augmentation candidate 'speed+wings': unknown augmentation")
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_scores_are_pooled_inner_uar_of_training_speakers_only_and_read_back(tmp_path,
                                                                            monkeypatch):
    script = load_script("inner_scores")
    dataset = random_dataset(speakers=("s1", "s2", "s3", "s4", "s5", "s6"))
    base = tiny_config(folds="2", steps=4, inner_folds=2, validation_speakers=0)
    configs = {"short": base, "long": tiny_config(folds="2", steps=6, inner_folds=2,
                                                  validation_speakers=0)}
    folds = dataset_folds(dataset, "2", seed=0)
    scores, fold_scores = script.score_settings(configs, dataset, folds, [3, 4], tmp_path,
                                                progress=False)
    assert set(scores) == {"short", "long"}
    assert len(scores["short"]) == len(folds) * 2
    for index, fold in enumerate(folds):
        inner = inner_folds(dataset, fold, 2, seed=index)
        for seed in (3, 4):
            for name, config in configs.items():
                runs = tmp_path / f"seed-{seed}" / f"fold-{index + 1:02d}" / name
                confusion, per_fold = 0, []
                for j, f in enumerate(inner):
                    metrics = json.loads((runs / f"fold-{j + 1}" / "metrics.json").read_text())
                    assert metrics["steps"] == config.recipe.steps
                    # never an outer test utterance: inner train and test are training ones
                    assert metrics["n_train"] == len(f.train) and metrics["n_test"] == len(f.test)
                    assert not (set(f.train) | set(f.test)) & set(fold.test)
                    own = np.array(metrics["final"]["confusion"])
                    confusion = confusion + own
                    per_fold.append(np.nanmean(np.diag(own) / own.sum(axis=1)))
                recall = np.diag(confusion) / confusion.sum(axis=1)
                key = f"seed {seed}, {fold.name}"
                assert scores[name][key] == pytest.approx(np.nanmean(recall))
                assert fold_scores[name][key] == pytest.approx(per_fold)
    assert scores["short"] != scores["long"]

    # a second call trains nothing: every finished inner run is read back
    monkeypatch.setattr(selection, "train_fold", lambda *a, **k: pytest.fail("trained again"))
    assert script.score_settings(configs, dataset, folds, [3, 4], tmp_path,
                                 progress=False) == (scores, fold_scores)


def test_summary_counts_runs_better_and_worse_than_the_reference():
    script = load_script("inner_scores")
    scores = {"base": {"a": 0.5, "b": 0.6, "c": 0.7}, "new": {"a": 0.6, "b": 0.6, "c": 0.5}}
    lines = script.summarize(scores, "base")
    assert lines[0] == "base: mean inner UAR 0.6000 over 3 fold runs"
    assert lines[1] == ("new: mean inner UAR 0.5667 over 3 fold runs; against base -0.0333, "
                        "better on 1, worse on 1")
