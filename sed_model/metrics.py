"""Recognition metrics: UAR, WA, per-class recall and the confusion matrix.

UAR (unweighted average recall) is the mean of the per-class recalls — the measure of the
paper's Tables 2 and 3 and Figs. 2 and 3 — and WA (weighted accuracy) is plain accuracy.
Classes absent from the reference labels have no recall; they are reported as ``None`` and
left out of the UAR (scikit-learn's macro recall over the classes present), so a fold with
a missing class is averaged over the classes it has.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score


def classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]
) -> dict:
    """UAR, WA, per-class recall and confusion matrix of integer labels.

    Returns a JSON-ready dict: ``uar``, ``wa``, ``recall`` ({class: recall or None}),
    ``confusion`` (rows = reference class, columns = predicted class, in ``class_names``
    order) and ``n`` (number of utterances).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(
            f"need equally many reference and predicted labels, at least one; "
            f"got {y_true.size} and {y_pred.size}"
        )
    labels = list(range(len(class_names)))
    confusion = confusion_matrix(y_true, y_pred, labels=labels)
    present = sorted(set(y_true.tolist()))
    recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "uar": float(recall_score(y_true, y_pred, labels=present, average="macro")),
        "wa": float(accuracy_score(y_true, y_pred)),
        "recall": {
            name: (float(recalls[i]) if i in present else None)
            for i, name in enumerate(class_names)
        },
        "confusion": confusion.tolist(),
        "n": int(y_true.size),
    }


def report_from_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str]) -> dict:
    """The same report computed from a confusion matrix (e.g. folds' matrices summed).

    Used for the pooled result of a cross-validation: every utterance is predicted once by
    the model of the fold that held it out, and the pooled matrix is the sum over folds.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    k = len(class_names)
    if confusion.shape != (k, k):
        raise ValueError(f"confusion matrix must be {k}x{k}; got shape {confusion.shape}")
    y_true = np.repeat(np.repeat(np.arange(k), k), confusion.ravel())
    y_pred = np.repeat(np.tile(np.arange(k), k), confusion.ravel())
    return classification_report(y_true, y_pred, class_names)


def mean_and_std(values: Sequence[float]) -> dict:
    """``{"mean": ..., "std": ...}`` over folds (population std; 0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std())}
