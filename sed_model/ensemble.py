"""Ensembles over seeds: the class probabilities of several runs' models averaged per fold.

Every fold writes its final model's class probabilities on its test utterances
(:data:`PREDICTIONS_FILE`, beside its ``metrics.json``). The runs of ``--seeds N`` share
their folds, so a fold's N models can be averaged: the ensemble's prediction for a test
utterance is the class with the highest mean probability, and its results are pooled over
the folds as a single run's are. Nothing is trained or chosen for it, and no test label is
read before the average is taken. At predict time an ensemble of N members costs N forward
passes of the model per input (the feature extraction is shared).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import classification_report, report_from_confusion
from .seeds import SeedSummary

PREDICTIONS_FILE = "test_predictions.npz"


def save_predictions(fold_dir: Path, probabilities: np.ndarray, labels: np.ndarray,
                     utterances) -> None:
    """A fold's test probabilities (N, classes), reference labels and dataset indices."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    np.savez(fold_dir / PREDICTIONS_FILE, probabilities=probabilities.astype(np.float32),
             labels=np.asarray(labels, dtype=np.int64),
             utterances=np.asarray(utterances, dtype=np.int64))


def _fold_members(run_dirs: list[Path], fold: int) -> list | None:
    files = [d / f"fold-{fold + 1:02d}" / PREDICTIONS_FILE for d in run_dirs]
    if not all(f.is_file() for f in files):
        return None
    members = [np.load(f) for f in files]
    first = members[0]
    for member in members[1:]:
        if not np.array_equal(member["utterances"], first["utterances"]):
            raise ValueError(f"fold {fold + 1}: the runs tested other utterances; an ensemble "
                             "needs the same folds")
    return members


def seed_ensemble(run_dirs: list[Path], seeds: list[int], fold_names: list[str],
                  fold_test_speakers: list[list[str]], classes) -> SeedSummary | None:
    """The ensemble of the runs in ``run_dirs`` (one per seed, same folds), shaped like one
    run's summary; None when a fold's predictions are missing (a run made without them)."""
    reports = []
    for fold in range(len(fold_names)):
        members = _fold_members(run_dirs, fold)
        if members is None:
            return None
        mean = np.mean([m["probabilities"] for m in members], axis=0)
        reports.append(classification_report(members[0]["labels"], mean.argmax(axis=1), classes))
    pooled = report_from_confusion(np.sum([r["confusion"] for r in reports], axis=0), classes)
    return SeedSummary(seeds=list(seeds), headline="final", pooled_uar=[pooled["uar"]],
                       pooled_wa=[pooled["wa"]], recall=pooled["recall"],
                       fold_names=list(fold_names), fold_test_speakers=fold_test_speakers,
                       fold_uar=[r["uar"] for r in reports])
