"""Typed results of a run and of a comparison, and their JSON files.

A run's ``metrics.json`` is :meth:`RunResult.to_json`; a comparison's ``comparison.json``
is :meth:`Comparison.to_json`. Both carry a ``schema`` number and are read back only through
``from_json`` (a file without a number is schema 0, the same layout). A fold's result is
:class:`sed_model.fold.FoldResult`; a classification report (``uar``, ``wa``, ``recall``,
``confusion``, ``n``) stays the plain dict of :func:`sed_model.metrics.classification_report`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import read_json
from .config import TrainConfig
from .errors import SedError
from .fold import FoldResult
from .metrics import mean_and_std, report_from_confusion

RESULTS_SCHEMA = 1
WHICH = ("selected", "final", "best")  # the models a run reports, headline first


def _check_schema(d: dict, what: str) -> None:
    schema = d.get("schema", 0)
    if schema > RESULTS_SCHEMA:
        raise SedError(f"{what} has schema {schema}; this version reads up to "
                       f"{RESULTS_SCHEMA} (update sed-dense-lstm)")


@dataclass
class Summary:
    """One kind of model (selected, final or best) over a run's folds: the report pooled
    over the folds (confusion matrices summed) and the fold UAR and WA, mean and std."""

    pooled: dict
    uar: dict  # {"mean", "std"} over folds
    wa: dict

    @classmethod
    def of(cls, evaluations: list, class_names) -> Summary:
        reports = [e.report for e in evaluations]
        pooled = np.sum([r["confusion"] for r in reports], axis=0)
        return cls(report_from_confusion(pooled, class_names),
                   mean_and_std([r["uar"] for r in reports]),
                   mean_and_std([r["wa"] for r in reports]))


@dataclass
class RunResult:
    """What a run (one variant, one seed, every fold) measured: its ``metrics.json``."""

    corpus: str
    variant: str
    config: TrainConfig
    classes: list[str]
    n_utterances: int
    skipped_files: int
    headline: str  # selected (validation speakers) or final
    folds: list[FoldResult]
    summary: dict[str, Summary]
    final_model: dict | None = None
    label_spread: dict | None = None

    @classmethod
    def of(cls, config: TrainConfig, dataset, folds: list[FoldResult],
           final_model: dict | None = None, label_spread: dict | None = None) -> RunResult:
        """The run's result from its fold results (summaries pooled over the folds)."""
        validated = folds[0].selected is not None
        summary = {which: Summary.of([r.evaluation(which) for r in folds], dataset.classes)
                   for which in (WHICH if validated else WHICH[1:])}
        return cls(dataset.corpus, config.variant, config, list(dataset.classes),
                   len(dataset.utterances), dataset.skipped,
                   "selected" if config.recipe.validation_speakers else "final", folds,
                   summary, final_model, label_spread)

    @property
    def headline_summary(self) -> Summary:
        return self.summary[self.headline]

    def fold_uars(self) -> list[float]:
        """The headline UAR of every fold."""
        return [f.evaluation(self.headline).uar for f in self.folds]

    def to_json(self) -> dict:
        return {"schema": RESULTS_SCHEMA, "corpus": self.corpus, "variant": self.variant,
                "config": self.config.to_json(), "classes": self.classes,
                "n_utterances": self.n_utterances, "skipped_files": self.skipped_files,
                "label_spread": self.label_spread, "headline": self.headline,
                "folds": [f.to_dict() for f in self.folds],
                "summary": {k: dataclasses.asdict(s) for k, s in self.summary.items()},
                "final_model": self.final_model}

    @classmethod
    def from_json(cls, d: dict) -> RunResult:
        _check_schema(d, "metrics.json")
        return cls(d["corpus"], d["variant"], TrainConfig.from_json(d["config"]),
                   list(d["classes"]), d["n_utterances"], d.get("skipped_files", 0),
                   d["headline"], [FoldResult.from_dict(f) for f in d["folds"]],
                   {k: Summary(**s) for k, s in d["summary"].items()}, d.get("final_model"),
                   d.get("label_spread"))

    @classmethod
    def read(cls, run_dir: str | Path) -> RunResult:
        """The result of the finished run in ``run_dir`` (its ``metrics.json``)."""
        path = Path(run_dir) / "metrics.json"
        if not path.is_file():
            raise SedError(f"{run_dir} holds no finished run (no metrics.json)")
        return cls.from_json(read_json(path))
