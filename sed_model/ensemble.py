"""Ensembles over seeds: the class probabilities of several runs' models averaged per fold.

Every fold writes its final model's class probabilities on its test utterances
(:data:`PREDICTIONS_FILE`, beside its ``metrics.json``). The runs of ``--seeds N`` share
their folds, so a fold's N models can be averaged: the ensemble's prediction for a test
utterance is the class with the highest mean probability, and its results are pooled over
the folds as a single run's are. Nothing is trained or chosen for it, and no test label is
read before the average is taken. ``compare --seeds N --ensemble-size K`` splits the N runs
into N/K ensembles of K members, so that the K-member ensemble, the model one would deploy,
gets a mean and a spread over independent replicates as a single model does over seeds. At
predict time an ensemble of N members costs N forward passes of the model per input (the
feature extraction is shared).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import classification_report, report_from_confusion
from .seeds import SeedSummary, mean_recall

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


def _group_reports(run_dirs: list[Path], n_folds: int, classes) -> list[dict] | None:
    """One ensemble's classification report per fold; None when a fold's predictions are
    missing."""
    reports = []
    for fold in range(n_folds):
        members = _fold_members(run_dirs, fold)
        if members is None:
            return None
        mean = np.mean([m["probabilities"] for m in members], axis=0)
        reports.append(classification_report(members[0]["labels"], mean.argmax(axis=1), classes))
    return reports


def seed_ensemble(run_dirs: list[Path], seeds: list[int], fold_names: list[str],
                  fold_test_speakers: list[list[str]], classes,
                  size: int | None = None) -> SeedSummary | None:
    """The ensembles of the runs in ``run_dirs`` (one per seed, same folds), shaped like a
    summary over seeds; None when a fold's predictions are missing (a run made without them).

    ``size`` K (default: all the runs) splits the runs, in order, into ``len(run_dirs) / K``
    disjoint ensembles of K members each, so that an ensemble of K models is measured as often
    as a single model is measured over seeds: ``pooled_uar`` and ``pooled_wa`` hold one value
    per ensemble, ``fold_uar`` and ``recall`` their mean.
    """
    size = len(run_dirs) if size is None else size
    if size < 1 or len(run_dirs) % size:
        raise ValueError(f"cannot split {len(run_dirs)} runs into ensembles of {size}")
    groups = []
    for start in range(0, len(run_dirs), size):
        reports = _group_reports(run_dirs[start:start + size], len(fold_names), classes)
        if reports is None:
            return None
        groups.append(reports)
    pooled = [report_from_confusion(np.sum([r["confusion"] for r in reports], axis=0), classes)
              for reports in groups]
    recall = mean_recall(pooled, classes)
    return SeedSummary(seeds=list(seeds), headline="final",
                       pooled_uar=[p["uar"] for p in pooled], pooled_wa=[p["wa"] for p in pooled],
                       recall=recall, fold_names=list(fold_names),
                       fold_test_speakers=fold_test_speakers,
                       fold_uar=np.mean([[r["uar"] for r in reports] for reports in groups],
                                        axis=0).tolist())


def members_per_ensemble(summary: SeedSummary) -> int:
    """The members of each ensemble of a :func:`seed_ensemble` summary."""
    return len(summary.seeds) // len(summary.pooled_uar)
