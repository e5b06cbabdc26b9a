"""Several seeds of one configuration: ``--seeds N`` on ``train`` and ``compare``.

The N runs use the training seeds ``seed, seed+1, ..., seed+N-1`` and share ``split_seed``
(the first seed), so they have the same folds and validation speakers and differ only in
initialisation, batch order and dropout: their spread is the training noise, and their
per-fold results can be paired with another system's on the same folds
(:mod:`sed_model.stats`). Each run is a full run folder ``seed-K/`` (see
:mod:`sed_model.trainer`); ``seeds.json`` beside them holds the summary.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .checkpoint import write_json
from .config import TrainConfig

if TYPE_CHECKING:  # for annotations only: results imports the fold module, which imports this
    from .results import RunResult


def seed_configs(config: TrainConfig, n: int) -> list[TrainConfig]:
    """The N configurations: training seeds ``seed + k``, the folds of ``config``'s."""
    return [dataclasses.replace(config, seed=config.seed + k, split_seed=config.folds_seed)
            for k in range(n)]


def seed_dir(out_dir: Path, config: TrainConfig) -> Path:
    return Path(out_dir) / f"seed-{config.seed}"


def seed_runs(out_dir: Path) -> list[Path]:
    """The ``seed-K`` run folders of a ``--seeds N`` folder, by seed."""
    runs = [d for d in Path(out_dir).glob("seed-*") if d.is_dir() and d.name[5:].isdigit()]
    return sorted(runs, key=lambda d: int(d.name[5:]))


@dataclass(frozen=True)
class SeedSummary:
    """The headline results of one configuration over its seeds."""

    seeds: list[int]
    headline: str  # selected or final
    pooled_uar: list[float]  # per seed, pooled over folds
    pooled_wa: list[float]
    recall: dict  # class -> mean recall over seeds (pooled over folds)
    fold_names: list[str]
    fold_test_speakers: list[list[str]]
    fold_uar: list[float]  # per fold, mean over seeds

    @property
    def uar_mean(self) -> float:
        return float(np.mean(self.pooled_uar))

    @property
    def uar_std(self) -> float:
        return float(np.std(self.pooled_uar))

    @property
    def wa_mean(self) -> float:
        return float(np.mean(self.pooled_wa))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "uar_mean": self.uar_mean, "uar_std": self.uar_std,
                "wa_mean": self.wa_mean}

    @classmethod
    def from_dict(cls, d: dict) -> SeedSummary:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def mean_recall(pooled: list[dict], classes) -> dict:
    """Each class's recall averaged over pooled reports, skipping reports without it (None
    when none has it)."""
    recall = {}
    for c in classes:
        values = [p["recall"][c] for p in pooled if p["recall"][c] is not None]
        recall[c] = float(np.mean(values)) if values else None
    return recall


def summarize_seeds(runs: list[RunResult]) -> SeedSummary:
    """Pool the runs (of :func:`sed_model.trainer.train`) of one configuration."""
    headline = runs[0].headline
    pooled = [run.summary[headline].pooled for run in runs]
    recall = mean_recall(pooled, runs[0].classes)
    return SeedSummary(
        seeds=[run.config.seed for run in runs], headline=headline,
        pooled_uar=[p["uar"] for p in pooled], pooled_wa=[p["wa"] for p in pooled],
        recall=recall, fold_names=[f.name for f in runs[0].folds],
        fold_test_speakers=[list(f.test_speakers) for f in runs[0].folds],
        fold_uar=np.mean([run.fold_uars() for run in runs], axis=0).tolist(),
    )


def write_seed_summary(out_dir: Path, runs: list[RunResult]) -> SeedSummary:
    """``seeds.json`` in ``out_dir``: the summary and each seed's run folder."""
    summary = summarize_seeds(runs)
    write_json(Path(out_dir) / "seeds.json", {
        "corpus": runs[0].corpus, "variant": runs[0].variant,
        "config": {**runs[0].config.to_json(), "seed": None}, "summary": summary.to_dict(),
        "runs": [f"seed-{run.config.seed}" for run in runs],
    })
    return summary
