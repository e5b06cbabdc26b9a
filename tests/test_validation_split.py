"""Validation speakers: carved from the training side, used to select the reported checkpoint."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_trainer import random_dataset, tiny_config

from sed_model.checkpoint import load_checkpoint
from sed_model.corpora.base import Utterance
from sed_model.errors import SedError
from sed_model.features import Normalizer
from sed_model.runtime import RunOptions
from sed_model.splits import make_folds, with_validation_speakers
from sed_model.trainer import train

QUIET = RunOptions(progress=False)  # no progress bars in tests

SIX_SPEAKERS = ("s1", "s2", "s3", "s4", "s5", "s6")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (the shared fixture of conftest.py)."""


def corpus(speakers: dict[str, tuple[str, ...]]) -> list[Utterance]:
    """Two utterances of each listed class per speaker."""
    return [Utterance(Path(f"/c/{s}/{label}{n}.wav"), label, s)
            for s, labels in speakers.items() for label in labels for n in range(2)]


def speakers_of(utterances, indices) -> set[str]:
    return {utterances[i].speaker for i in indices}


# -------------------------------------------------------------------------------- splits
@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("k", [1, 2])
def test_validation_speakers_are_disjoint_from_train_and_test(seed, k):
    utterances = corpus({f"{n:02d}": ("a", "b", "c") for n in range(7)})
    folds = make_folds(utterances, "loso", seed=seed)
    validated = Counter()
    for fold in folds:
        carved = with_validation_speakers(fold, utterances, k, seed=seed)
        train, validation, test = (speakers_of(utterances, getattr(carved, side))
                                   for side in ("train", "validation", "test"))
        assert len(validation) == k
        assert not train & validation and not train & test and not validation & test
        assert sorted(carved.train + carved.validation) == sorted(fold.train)
        assert carved.test == fold.test
        assert with_validation_speakers(fold, utterances, k, seed=seed) == carved  # deterministic
        validated.update(validation)
    # rotation: under LOSO every speaker validates exactly k folds
    assert set(validated.values()) == {k} and len(validated) == len(folds)


def test_zero_validation_speakers_is_the_fold_itself():
    utterances = corpus({s: ("a", "b") for s in "pqr"})
    fold = make_folds(utterances, "loso")[0]
    assert with_validation_speakers(fold, utterances, 0) is fold


def test_validation_speakers_must_leave_a_trainable_side():
    utterances = corpus({"p": ("a", "b"), "q": ("a", "b"), "r": ("a", "b")})
    fold = make_folds(utterances, "loso")[0]  # trains on q and r
    with pytest.raises(SedError, match="2 validation speaker.*no training speaker"):
        with_validation_speakers(fold, utterances, 2)
    with pytest.raises(SedError, match="0 or more"):
        with_validation_speakers(fold, utterances, -1)
    # whichever of q/r validates, the one left has a single class
    single = corpus({"p": ("a", "b"), "q": ("a",), "r": ("b",)})
    with pytest.raises(SedError, match="leaves only class"):
        with_validation_speakers(make_folds(single, "loso")[0], single, 1)


# -------------------------------------------------------------------------------- trainer
def test_selected_checkpoint_is_the_first_argmax_of_validation_uar(tmp_path):
    dataset = random_dataset(speakers=SIX_SPEAKERS)
    metrics = train(tiny_config(steps=12, folds="3"), tmp_path, dataset=dataset,
                    options=QUIET).to_json()
    # the default: 3 folds of 4 training speakers
    assert metrics["config"]["recipe"]["validation_speakers"] == 1
    assert metrics["headline"] == "selected"
    for index, fold in enumerate(metrics["folds"]):
        history = fold["history"]
        validation = [p["validation_uar"] for p in history]
        first_best = history[int(np.argmax(validation))]  # argmax: the earliest of ties
        assert fold["selected"]["step"] == first_best["step"]
        assert fold["selected"]["validation_uar"] == max(validation)
        assert fold["selected"]["uar"] == first_best["uar"]  # the TEST UAR of that step
        assert fold["best"]["uar"] == max(p["uar"] for p in history)
        assert fold["final"]["uar"] == history[-1]["uar"]
        assert len(fold["validation_speakers"]) == 1
        assert not set(fold["validation_speakers"]) & set(fold["test_speakers"])
        assert fold["n_train"] + fold["n_validation"] + fold["n_test"] == len(dataset.utterances)
        saved = load_checkpoint(tmp_path / f"fold-{index + 1:02d}" / "selected.pt")
        assert saved["step"] == fold["selected"]["step"]
        # the normaliser saw the training speakers only
        validation_and_test = set(fold["validation_speakers"]) | set(fold["test_speakers"])
        train_features = [x for u, x in zip(dataset.utterances, dataset.features)
                          if u.speaker not in validation_and_test]
        assert np.allclose(saved["normalizer"]["mean"], Normalizer.fit(train_features).mean)
    assert load_checkpoint(tmp_path / "best.pt")["step"] == metrics["folds"][0]["selected"]["step"]
    summary = metrics["summary"]["selected"]
    assert summary["pooled"]["n"] == 6 * 9  # the test sides: every utterance once


def test_zero_validation_speakers_keeps_the_old_behaviour(tmp_path):
    dataset = random_dataset(speakers=SIX_SPEAKERS)
    off = train(tiny_config(validation_speakers=0), tmp_path / "off", dataset=dataset,
                options=QUIET).to_json()
    assert off["headline"] == "final" and set(off["summary"]) == {"final", "best"}
    for fold in off["folds"]:
        assert "selected" not in fold and fold["n_train"] + fold["n_test"] == 54
        assert all("validation_uar" not in p for p in fold["history"])
    assert not (tmp_path / "off" / "fold-01" / "selected.pt").exists()
    # with too few training speakers the default is 0: the same result as asking for 0
    four = random_dataset()
    default = train(tiny_config(), tmp_path / "default", dataset=four, options=QUIET).to_json()
    explicit = train(tiny_config(validation_speakers=0), tmp_path / "explicit", dataset=four,
                     options=QUIET).to_json()
    assert default["config"]["recipe"]["validation_speakers"] == 0
    assert default["folds"] == explicit["folds"]


def test_resume_with_validation_ends_like_an_uninterrupted_run(tmp_path):
    class Killed(Exception):
        pass

    def kill(path, step):
        if (path.parent.name, step) == ("fold-01", 4):
            raise Killed

    dataset = random_dataset(speakers=SIX_SPEAKERS)
    reference = train(tiny_config(), tmp_path / "a", dataset=dataset, options=QUIET).to_json()
    with pytest.raises(Killed):
        train(tiny_config(), tmp_path / "b", dataset=dataset, options=QUIET, on_checkpoint=kill)
    resumed = train(tiny_config(), tmp_path / "b", dataset=dataset, options=QUIET,
                    resume=True).to_json()
    assert resumed["folds"] == reference["folds"]
