"""Nested selection: inner folds of each fold's training speakers choose among candidates.

With candidates for the augmentation (``--set augment_candidates=none,mask,crop``), for the
utterance normalisation (``--set utterance_norm_candidates=none,mean_std``), for the quiet at
the utterances' edges (``--set edge_quiet_candidates=keep,trim``), for the training length
(``--set epochs_candidates=20,40``) or several of them (every combination is a candidate),
every outer fold runs, before it trains, an inner cross-validation on its own training
speakers only:

1. the training speakers are split into ``inner_folds`` speaker-grouped folds
   (:func:`inner_folds`; the outer test and validation speakers are never in them);
2. every candidate trains on each inner fold with the run's recipe changed by the candidate
   (normalisation fitted on the inner training speakers, as for an outer fold) and its inner
   score is the UAR of the inner folds' final models, pooled over the inner test utterances;
3. the candidate with the best inner score is chosen (ties: the earlier in the list, so list
   ``none`` first to prefer the plain setting), and the outer fold trains with it. Each inner
   fold's own UAR is kept too, and the fold's line gives the chosen candidate's mean gain
   over the first on the inner folds with its standard error (:meth:`Selection.margin`): a
   gain within it is a weak preference.

Nothing about the outer test speakers enters the choice. Each fold trains one variant, so
each variant chooses for itself. The deployment model (``model.pt``) takes the candidate
chosen by most folds (ties: the earlier in the list).

The inner runs are kept in ``fold-XX/inner/<candidate>/fold-J`` and are resumable as folds
are: a finished inner run (its ``metrics.json``) is read back, not trained again.
The cost is ``candidates x inner_folds`` extra trainings on about ``(K-1)/K`` of the fold's
training utterances per outer fold.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import distributed
from .augment import candidate_augment
from .config import TrainConfig
from .data import Dataset, check_training_split
from .errors import SedError
from .fold import FoldResult, train_fold
from .metrics import report_from_confusion
from .recipes import SELECTED_KEYS, Recipe, parse_value
from .splits import Fold, make_folds


@dataclass(frozen=True)
class InnerScore:
    """A candidate's inner score: the UAR pooled over the inner folds' test utterances (what
    chooses) and each inner fold's own UAR (how much the folds agree)."""

    uar: float
    fold_uars: tuple[float, ...]


@dataclass
class Selection:
    """How the inner folds chose a fold's setting: every candidate's pooled inner UAR (in the
    order tried), the chosen candidate, each candidate's recipe changes as ``--set`` writes
    them, and each candidate's UAR on every inner fold (empty in records written before
    they were kept)."""

    scores: dict[str, float]
    chosen: str
    inner_folds: int
    settings: dict[str, dict[str, str]]
    fold_scores: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"scores": dict(self.scores), "chosen": self.chosen,
                "inner_folds": self.inner_folds,
                "settings": {name: dict(s) for name, s in self.settings.items()},
                "fold_scores": {name: list(u) for name, u in self.fold_scores.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> Selection:
        """From ``metrics.json``; a record without ``settings`` chose an augmentation."""
        settings = d.get("settings") or {name: {"augment": name} for name in d["scores"]}
        fold_scores = {name: list(u) for name, u in (d.get("fold_scores") or {}).items()}
        return cls(dict(d["scores"]), d["chosen"], d["inner_folds"], settings, fold_scores)

    def margin(self) -> tuple[float, float] | None:
        """The chosen candidate against the first tried, over the inner folds: the mean of
        the paired per-fold UAR differences and its standard error; ``None`` where the first
        was chosen or the per-fold scores are not known."""
        first = next(iter(self.scores))
        if self.chosen == first or not self.fold_scores:
            return None
        diff = np.subtract(self.fold_scores[self.chosen], self.fold_scores[first])
        return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def setting_name(setting: dict[str, str]) -> str:
    """A folder name for a setting: ``lr=4e-3_epochs=40_cells=64-64_...``."""
    return "_".join(f"{k}={v.replace(',', '-')}" for k, v in setting.items())


def candidate_settings(recipe: Recipe) -> dict[str, dict[str, str]]:
    """The candidates of ``recipe``'s nested selection, in the order they are tried: a name
    (the folder of its inner runs) and its recipe changes as ``--set`` writes them. With one
    list of modes the name is the candidate (``mask+crop``, ``mean_std``, ``trim``); a length,
    or every combination of several lists, is named by its changes (``epochs=20``,
    ``augment=none_utterance_norm=none``). Empty without a nested selection."""
    lists = {key: getattr(recipe, f"{key}_candidates") for key in SELECTED_KEYS
             if getattr(recipe, f"{key}_candidates")}
    if not lists:
        return {}
    settings = [{}]
    for key, values in lists.items():
        settings = [{**setting, key: str(value)} for setting in settings for value in values]
    if len(lists) == 1 and "epochs" not in lists:
        return {next(iter(setting.values())): setting for setting in settings}
    return {setting_name(setting): setting for setting in settings}


def inner_folds(dataset: Dataset, fold: Fold, k: int, seed: int) -> list[Fold]:
    """``k`` speaker-grouped folds of ``fold``'s training utterances (dataset indices)."""
    train = np.asarray(fold.train, dtype=np.int64)
    utterances = [dataset.utterances[i] for i in train]
    speakers = len({u.speaker for u in utterances})
    if not 2 <= k <= speakers:
        allowed = (f"which allow 2 to {speakers} speaker-grouped inner folds; set inner_folds "
                   "in that range or use" if speakers >= 2 else "too few for inner folds; use")
        raise SedError(f"inner_folds={k}: {fold.name} trains on {speakers} speakers, {allowed} "
                       "folds with more training speakers")
    folds = make_folds(utterances, "kfold", seed=seed, k=k)
    inner = [Fold(f"{fold.name}, inner {j + 1}/{k}",
                  train=tuple(int(i) for i in train[list(f.train)]),
                  test=tuple(int(i) for i in train[list(f.test)]))
             for j, f in enumerate(folds)]
    for f in inner:
        check_training_split(dataset, f)
    return inner


def candidate_config(config: TrainConfig, setting: dict[str, str]) -> TrainConfig:
    """``config`` training with a candidate's recipe changes (:func:`candidate_settings`) and
    no selection of its own."""
    changes = {key: candidate_augment(text) if key == "augment" else parse_value(key, text)
               for key, text in setting.items()}
    cleared = {f"{key}_candidates": None for key in SELECTED_KEYS}
    return config.with_recipe(**changes, **cleared)


def inner_score(config: TrainConfig, dataset: Dataset, folds: list[Fold], runs_dir: Path, *,
                progress: bool = True) -> InnerScore:
    """``config``'s final models on the inner ``folds``: the UAR pooled over their test
    utterances and each fold's own; inner fold ``j`` runs in ``runs_dir/fold-j`` (a finished
    one is read back)."""
    confusions = []
    for j, inner in enumerate(folds):
        run_dir = runs_dir / f"fold-{j + 1}"
        result = FoldResult.finished(run_dir)
        if result is None:
            result = train_fold(config, dataset, inner, j, len(folds), run_dir, resume=True,
                                progress=progress)
        confusions.append(np.asarray(result.final.report["confusion"], dtype=np.int64))
    pooled = report_from_confusion(sum(confusions), dataset.classes)["uar"]
    return InnerScore(pooled, tuple(report_from_confusion(c, dataset.classes)["uar"]
                                    for c in confusions))


def choose_setting(config: TrainConfig, dataset: Dataset, fold: Fold, fold_index: int,
                   fold_dir: Path, *, progress: bool = True) -> Selection:
    """Score every candidate of ``config.recipe``'s nested selection on inner folds of
    ``fold``'s training speakers and choose one (see the module docstring)."""
    folds = inner_folds(dataset, fold, config.recipe.inner_folds,
                        seed=config.folds_seed + fold_index)
    settings = candidate_settings(config.recipe)
    inner = {name: inner_score(candidate_config(config, setting), dataset, folds,
                               fold_dir / "inner" / name, progress=progress)
             for name, setting in settings.items()}
    scores = {name: score.uar for name, score in inner.items()}
    chosen = max(settings, key=lambda name: scores[name])  # ties: the first
    picked = Selection(scores, chosen, len(folds), settings,
                       {name: list(score.fold_uars) for name, score in inner.items()})
    if distributed.is_main():
        margin = picked.margin()
        spread = "" if margin is None else (f" ({margin[0]:+.3f} +- {margin[1]:.3f} over the "
                                             f"{len(folds)} inner folds)")
        tqdm.write(f"{config.variant} seed {config.seed} fold {fold_index + 1} ({fold.name}): "
                   f"inner UAR " + ", ".join(f"{c} {u:.3f}" for c, u in scores.items())
                   + f" -> {chosen}{spread}")
    return picked


def majority_setting(selections: list[Selection]) -> dict[str, str]:
    """The recipe changes of the candidate chosen by most folds; ties: the earlier tried."""
    votes = Counter(s.chosen for s in selections)
    settings = selections[0].settings
    return settings[max(settings, key=lambda name: votes[name])]
