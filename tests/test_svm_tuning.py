"""The SVM's C chosen on speaker-grouped inner folds of the training speakers only."""

from pathlib import Path

import numpy as np
import pytest

from sed_model.baseline import svm_pipeline
from sed_model.corpora.base import Utterance
from sed_model.errors import SedError
from sed_model.svm_tuning import TUNING_GRID, choose_C, inner_splits


def toy(speakers: int, per_speaker: int = 12, seed: int = 0):
    """Two classes whose means differ by 1.5 in every dimension, speaker offsets added."""
    rng = np.random.default_rng(seed)
    utterances, rows, labels = [], [], []
    for s in range(speakers):
        offset = rng.normal(0, 0.5, 5)
        for i in range(per_speaker):
            label = i % 2
            utterances.append(Utterance(Path(f"/t/{s}_{i}.wav"), "ab"[label], f"s{s}"))
            rows.append(offset + 1.5 * label + rng.normal(0, 1, 5))
            labels.append(label)
    return utterances, np.array(rows), np.array(labels)


def test_inner_folds_hold_each_training_speaker_out_once():
    utterances, _, _ = toy(7)
    splits = inner_splits(utterances, 3, seed=2)
    assert len(splits) == 3
    tested = [u.speaker for _, test in splits for u in (utterances[i] for i in test)]
    assert sorted(set(tested)) == sorted({u.speaker for u in utterances})
    for train, test in splits:
        assert not {utterances[i].speaker for i in train} & {utterances[i].speaker for i in test}
    assert len(inner_splits(utterances[:24], 3, seed=2)) == 2  # capped at 2 speakers
    with pytest.raises(SedError, match="at least two training speakers"):
        inner_splits(utterances[:12], 3, seed=0)


def test_the_best_pooled_inner_uar_chooses_and_every_score_is_kept():
    utterances, X, y = toy(6)
    selection = choose_C(svm_pipeline, X, y, utterances, ("a", "b"), k=3, seed=1)
    assert selection.grid == TUNING_GRID and len(selection.scores) == len(TUNING_GRID)
    best = max(selection.scores)
    assert selection.chosen == min(C for C, s in zip(TUNING_GRID, selection.scores) if s == best)
    assert all(0.0 <= s <= 1.0 for s in selection.scores)
    assert max(selection.scores) > 0.7  # separable classes: the best C learns them
    saved = selection.to_dict()
    assert saved["chosen"] == selection.chosen and saved["inner_folds"] == 3
    assert sorted(s for fold in saved["inner_test_speakers"] for s in fold) == [
        f"s{i}" for i in range(6)]


class Constant:
    """A classifier that predicts class 0 whatever C is: every C scores the same."""

    def __init__(self, C):
        self.C = C

    def fit(self, X, y):
        return self

    def predict(self, X):
        return np.zeros(len(X), dtype=np.int64)


def test_equal_inner_scores_choose_the_smaller_C():
    utterances, X, y = toy(4)
    selection = choose_C(Constant, X, y, utterances, ("a", "b"), k=2, grid=(0.1, 0.01, 1.0))
    assert selection.scores == (0.5, 0.5, 0.5)
    assert selection.chosen == 0.01  # the smallest, wherever it is in the grid
