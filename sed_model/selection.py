"""Nested selection of the augmentation: inner folds of each fold's training speakers choose it.

With ``augment_candidates`` (``--set augment_candidates=none,mask,crop``) every outer fold
runs, before it trains, an inner cross-validation on its own training speakers only:

1. the training speakers are split into ``inner_folds`` speaker-grouped folds
   (:func:`inner_folds`; the outer test and validation speakers are never in them);
2. every candidate trains on each inner fold with the run's recipe (normalisation fitted on
   the inner training speakers, as for an outer fold) and its inner score is the UAR of the
   inner folds' final models, pooled over the inner test utterances;
3. the candidate with the best inner score is chosen (ties: the earlier in the list, so list
   ``none`` first to prefer no augmentation), and the outer fold trains with it.

Nothing about the outer test speakers enters the choice. The deployment model (``model.pt``)
takes the candidate chosen by most folds (ties: the earlier in the list).

The inner runs are kept in ``fold-XX/inner/<candidate>/fold-J`` and are resumable as folds
are: a finished inner run (its ``metrics.json``) is read back, not trained again.
The cost is ``candidates x inner_folds`` extra trainings on about ``(K-1)/K`` of the fold's
training utterances per outer fold.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import distributed
from .augment import candidate_augment
from .config import TrainConfig
from .data import Dataset, check_training_split
from .fold import FoldResult, train_fold
from .metrics import report_from_confusion
from .splits import Fold, make_folds


@dataclass
class AugmentSelection:
    """How the inner folds chose a fold's augmentation: every candidate's pooled inner UAR
    (in the order given) and the chosen candidate."""

    scores: dict[str, float]
    chosen: str
    inner_folds: int

    def to_dict(self) -> dict:
        return {"scores": dict(self.scores), "chosen": self.chosen,
                "inner_folds": self.inner_folds}

    @classmethod
    def from_dict(cls, d: dict) -> AugmentSelection:
        return cls(dict(d["scores"]), d["chosen"], d["inner_folds"])


def inner_folds(dataset: Dataset, fold: Fold, k: int, seed: int) -> list[Fold]:
    """``k`` speaker-grouped folds of ``fold``'s training utterances (dataset indices)."""
    train = np.asarray(fold.train, dtype=np.int64)
    utterances = [dataset.utterances[i] for i in train]
    folds = make_folds(utterances, "kfold", seed=seed, k=k)
    inner = [Fold(f"{fold.name}, inner {j + 1}/{k}",
                  train=tuple(int(i) for i in train[list(f.train)]),
                  test=tuple(int(i) for i in train[list(f.test)]))
             for j, f in enumerate(folds)]
    for f in inner:
        check_training_split(dataset, f)
    return inner


def candidate_config(config: TrainConfig, candidate: str) -> TrainConfig:
    """``config`` training with ``candidate``'s augmentation and no selection of its own."""
    return config.with_recipe(augment=candidate_augment(candidate), augment_candidates=None)


def inner_score(config: TrainConfig, dataset: Dataset, folds: list[Fold], runs_dir: Path, *,
                progress: bool = True) -> float:
    """UAR of ``config``'s final models on the inner ``folds``, pooled over their test
    utterances; inner fold ``j`` runs in ``runs_dir/fold-j`` (a finished one is read back)."""
    confusion = np.zeros((len(dataset.classes),) * 2, dtype=np.int64)
    for j, inner in enumerate(folds):
        run_dir = runs_dir / f"fold-{j + 1}"
        result = FoldResult.finished(run_dir)
        if result is None:
            result = train_fold(config, dataset, inner, j, len(folds), run_dir, resume=True,
                                progress=progress)
        confusion += np.asarray(result.final.report["confusion"], dtype=np.int64)
    return report_from_confusion(confusion, dataset.classes)["uar"]


def choose_augmentation(config: TrainConfig, dataset: Dataset, fold: Fold, fold_index: int,
                        fold_dir: Path, *, progress: bool = True) -> AugmentSelection:
    """Score every candidate of ``config.recipe.augment_candidates`` on inner folds of ``fold``'s
    training speakers and choose one (see the module docstring)."""
    folds = inner_folds(dataset, fold, config.recipe.inner_folds,
                        seed=config.folds_seed + fold_index)
    scores = {candidate: inner_score(candidate_config(config, candidate), dataset, folds,
                                     fold_dir / "inner" / candidate, progress=progress)
              for candidate in config.recipe.augment_candidates}
    chosen = max(config.recipe.augment_candidates, key=lambda c: scores[c])  # ties: the first
    if distributed.is_main():
        tqdm.write(f"{config.variant} seed {config.seed} fold {fold_index + 1} ({fold.name}): "
                   f"inner UAR " + ", ".join(f"{c} {u:.3f}" for c, u in scores.items())
                   + f" -> {chosen}")
    return AugmentSelection(scores, chosen, len(folds))


def majority_candidate(config: TrainConfig, selections: list[AugmentSelection]) -> str:
    """The candidate chosen by most folds; ties: the earlier in ``augment_candidates``."""
    votes = Counter(s.chosen for s in selections)
    return max(config.recipe.augment_candidates, key=lambda c: votes[c])
