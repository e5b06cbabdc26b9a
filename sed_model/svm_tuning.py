"""The SVM baseline's C, chosen on speaker-grouped inner folds of each outer fold's training
speakers (nested cross-validation), as :mod:`sed_model.selection` chooses the model's settings.

For outer fold ``i`` (0-based) of a run with split seed ``seed``:

1. the fold's training utterances are split into ``k`` speaker-grouped inner folds by
   :func:`sed_model.splits.make_folds` (``"kfold"``, seed ``seed + i``): the construction of
   :func:`sed_model.selection.inner_folds` (``k`` is capped at the number of training
   speakers). The outer test speakers are never in them. (The model's inner folds also leave
   out its validation speakers; the SVM has none, so its inner folds hold every training
   speaker.)
2. every C of :data:`TUNING_GRID` is fitted on each inner training side (scaler included)
   and scored by the UAR of its predictions pooled over the inner test utterances;
3. the C with the best inner score is chosen (ties: the smaller C, the stronger
   regularisation) and refitted on the whole outer training split.

Cost: ``len(TUNING_GRID) x k`` extra fits per outer fold, each on about ``(k-1)/k`` of its
training utterances.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .corpora.base import Utterance
from .errors import SedError
from .metrics import report_from_confusion
from .splits import make_folds

TUNING_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
INNER_FOLDS = 3  # as the recipe's inner_folds default
CRITERION = "UAR pooled over the inner test utterances; ties: the smaller C"


@dataclass(frozen=True)
class CSelection:
    """How one outer fold's inner folds chose C: the grid, each C's pooled inner UAR (in grid
    order), the chosen C and the inner folds' test speakers."""

    grid: tuple[float, ...]
    scores: tuple[float, ...]
    chosen: float
    inner_test_speakers: tuple[tuple[str, ...], ...]

    def to_dict(self) -> dict:
        return {"grid": list(self.grid), "inner_uar": list(self.scores), "chosen": self.chosen,
                "inner_folds": len(self.inner_test_speakers),
                "inner_test_speakers": [list(s) for s in self.inner_test_speakers],
                "criterion": CRITERION}


def inner_splits(utterances: Sequence[Utterance], k: int, seed: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` speaker-grouped (train, test) index arrays into ``utterances`` (the training
    split of one outer fold); ``k`` is capped at its number of speakers."""
    speakers = len({u.speaker for u in utterances})
    if speakers < 2:
        raise SedError(f"tuning C needs at least two training speakers per fold for inner "
                       f"folds; a fold trains on {speakers}; leave out --tune")
    folds = make_folds(utterances, "kfold", seed=seed, k=min(k, speakers))
    return [(np.asarray(f.train), np.asarray(f.test)) for f in folds]


def choose_C(make: Callable[[float], object], X: np.ndarray, y: np.ndarray,
             utterances: Sequence[Utterance], classes: Sequence[str], *, k: int = INNER_FOLDS,
             seed: int = 0, grid: Sequence[float] = TUNING_GRID) -> CSelection:
    """Score every C of ``grid`` on inner folds of the training split ``X, y`` (whose rows
    are ``utterances``; ``y`` indexes ``classes``) and choose one (see the module docstring).
    ``make(C)`` returns an unfitted classifier."""
    splits = inner_splits(utterances, k, seed)
    scores = []
    for C in grid:
        confusion = np.zeros((len(classes),) * 2, dtype=np.int64)
        for train, test in splits:
            predicted = make(C).fit(X[train], y[train]).predict(X[test])
            np.add.at(confusion, (y[test], predicted), 1)
        scores.append(report_from_confusion(confusion, classes)["uar"])
    chosen = min(C for C, score in zip(grid, scores) if score == max(scores))  # ties: smaller
    tested = tuple(tuple(sorted({utterances[i].speaker for i in test})) for _, test in splits)
    return CSelection(tuple(grid), tuple(scores), float(chosen), tested)
