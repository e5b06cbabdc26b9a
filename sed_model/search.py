"""Per-corpus selection of the recipe: each fold's training speakers choose its settings.

With ``search_trials`` N > 0 (``--set search_trials=12``) every outer fold, before it trains,
searches the recipe's important settings on inner folds of its own training speakers:

1. the training speakers are split into ``inner_folds`` speaker-grouped folds
   (:func:`sed_model.selection.inner_folds`; the outer test and validation speakers are never
   in them);
2. Optuna proposes N settings from the search space ``search_space``
   (:data:`sed_model.recipes.SPACES`): its TPE sampler, seeded by the fold, draws the first
   :data:`TPE_STARTUP` settings at random and only then models the scores so far, so a search
   of up to ``TPE_STARTUP + 1`` trials (the recipe, then random draws) is a seeded random
   search. Each setting trains on the inner folds
   one after the other with the run's recipe and the setting's changes; after each inner
   fold it reports the inner UAR pooled so far, and Optuna's median pruner stops a setting
   whose score is below the median of the earlier settings at the same inner fold (never
   among the first :data:`STARTUP_TRIALS`). The recipe's own values are the first setting
   tried, so the search reports what it gains on inner folds over the recipe as given;
3. the setting with the best inner UAR (pooled over all inner test utterances) trains the
   outer fold. Every setting tried, its inner score and whether it was pruned go into the
   fold's ``metrics.json`` (``search``).

Nothing about the outer test speakers enters the choice. The deployment model (``model.pt``)
runs the same search on inner folds of all speakers and trains with its choice.

The search is resumable: Optuna's journal (``fold-XX/search/journal.log``) keeps the finished
settings, and each setting's inner runs live in ``fold-XX/search/<setting>/fold-J``, read
back when finished; a setting that was running when the search was killed is tried again
first, its unfinished inner run continuing from its last checkpoint. Its cost is at most
``N x inner_folds`` extra trainings on about ``(K-1)/K`` of the fold's training utterances
per outer fold (fewer with pruning), plus one search on all speakers for the deployment
model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import distributed
from .augment import candidate_augment
from .config import TrainConfig
from .data import Dataset
from .errors import SedError
from .fold import FoldResult, train_fold
from .metrics import report_from_confusion
from .recipes import SPACES, parse_value
from .selection import inner_folds, setting_name
from .splits import Fold

STARTUP_TRIALS = 4  # settings never pruned: the median needs a few scores first
TPE_STARTUP = 10  # settings TPE draws at random before it models the scores (Optuna's default)


def space_choices(space: str, normalize: str) -> dict[str, tuple[str, ...]]:
    """The choices of search space ``space`` that apply under ``normalize`` (the speaker
    shift is the identity under ``speaker`` normalisation, so its candidates are left out)."""
    choices = dict(SPACES[space])
    if normalize == "speaker" and "augment" in choices:
        choices["augment"] = tuple(c for c in choices["augment"] if "shift" not in c)
    return choices


def setting_recipe(setting: dict[str, str]) -> dict:
    """A setting (field -> text as --set writes it) as typed recipe values."""
    return {key: candidate_augment(text) if key == "augment" else parse_value(key, text)
            for key, text in setting.items()}


def recipe_setting(recipe, choices: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """The recipe's own values as a setting of ``choices`` (keys whose value is not among
    the choices are left out)."""
    setting = {}
    for key, values in choices.items():
        matching = [v for v in values if setting_recipe({key: v})[key] == getattr(recipe, key)]
        if matching:
            setting[key] = matching[0]
    return setting


@dataclass
class SearchResult:
    """How the inner folds chose a fold's recipe: every setting tried (in order) with its
    pooled inner UAR (None when pruned before its last inner fold), the chosen one, and the
    settings' wall time summed over every session of a resumed search."""

    space: str
    inner_folds: int
    trials: list[dict]
    chosen: dict[str, str]
    inner_uar: float
    seconds: float

    def to_dict(self) -> dict:
        return {"space": self.space, "inner_folds": self.inner_folds, "trials": self.trials,
                "chosen": dict(self.chosen), "inner_uar": self.inner_uar,
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> SearchResult:
        return cls(d["space"], d["inner_folds"], list(d["trials"]), dict(d["chosen"]),
                   d["inner_uar"], d["seconds"])

    def config_for(self, config: TrainConfig) -> TrainConfig:
        """``config`` with the chosen setting and no search of its own."""
        return config.with_recipe(**setting_recipe(self.chosen), search_trials=0)


@dataclass(frozen=True)
class SearchSummary:
    """What the searches of one variant's fold runs (every seed) chose: on how many runs the
    recipe as given (the first setting tried) won, the pooled inner UAR of the recipe as
    given and of the choice (means over the runs), and the searches' time summed."""

    fold_runs: int
    kept_recipe: int
    inner_uar_recipe: float
    inner_uar_chosen: float
    seconds: float

    @classmethod
    def of(cls, searches: list[dict]) -> SearchSummary | None:
        """From the fold runs' ``search`` records (None for a run without a search)."""
        found = [SearchResult.from_dict(d) for d in searches if d]
        if not found:
            return None
        return cls(len(found), sum(r.chosen == r.trials[0]["setting"] for r in found),
                   float(np.mean([r.trials[0]["inner_uar"] for r in found])),
                   float(np.mean([r.inner_uar for r in found])),
                   float(sum(r.seconds for r in found)))

    def line(self) -> str:
        return (f"the recipe as given kept on {self.kept_recipe} of {self.fold_runs} fold runs; "
                f"inner UAR {self.inner_uar_chosen:.3f} chosen against "
                f"{self.inner_uar_recipe:.3f} as given (mean over fold runs); "
                f"{self.seconds / 3600:.1f} h of search")


def _objective(config: TrainConfig, dataset: Dataset, folds: list[Fold], search_dir: Path,
               choices: dict, progress: bool):
    import optuna

    def objective(trial) -> float:
        setting = {key: trial.suggest_categorical(key, values) for key, values in choices.items()}
        trial_config = config.with_recipe(**setting_recipe(setting), search_trials=0)
        confusion = np.zeros((len(dataset.classes),) * 2, dtype=np.int64)
        uar = 0.0
        for j, inner in enumerate(folds):
            run_dir = search_dir / setting_name(setting) / f"fold-{j + 1}"
            result = FoldResult.finished(run_dir) or train_fold(
                trial_config, dataset, inner, j, len(folds), run_dir, resume=True,
                progress=progress)
            confusion += np.asarray(result.final.report["confusion"], dtype=np.int64)
            uar = report_from_confusion(confusion, dataset.classes)["uar"]
            trial.report(uar, j)
            if j + 1 < len(folds) and trial.should_prune():
                raise optuna.TrialPruned()
        return uar

    return objective


def _study(search_dir: Path):
    """The search's study, read back from its journal when one exists; it has no sampler of
    its own, since ``_optimize`` seeds one for every draw."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search_dir.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(search_dir / "journal.log")))
    return optuna.create_study(
        study_name="search", storage=storage, load_if_exists=True, direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=0))


def _sampler(seed: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP)


def _optimize(study, objective, n_trials: int, seed: int) -> None:
    """Run ``n_trials`` more settings, each drawn by a sampler seeded with ``seed`` and the
    trial's number. TPE keeps no state but its random stream (it refits on the journal's
    trials at every draw), so a search resumed between settings draws what an uninterrupted
    one would, and a resumed search never replays the draws of its earlier trials."""
    for _ in range(n_trials):
        number = len(study.trials)
        study.sampler = _sampler(int(np.random.SeedSequence([seed, number]).generate_state(1)[0]))
        study.optimize(objective, n_trials=1)


def _retry_interrupted(study) -> None:
    """Settings that a killed search left running are tried again first, with the same
    values (their finished inner runs are read back), instead of being replaced by new draws;
    the interrupted trial is marked failed, so it is neither counted nor retried twice."""
    import optuna

    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.RUNNING:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params)


def _finished_trials(study) -> list:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.trials if t.state in done]


def _trial_record(trial) -> dict:
    """A finished setting as ``metrics.json`` records it: its pooled inner UAR only when it
    ran on every inner fold (a pruned one has its partial scores in ``inner_uar_by_fold``)."""
    complete = trial.state.name == "COMPLETE"
    return {"number": trial.number, "setting": dict(trial.params),
            "state": trial.state.name.lower(), "inner_uar": trial.value if complete else None,
            "inner_uar_by_fold": list(trial.intermediate_values.values())}


def _seconds(trials: list) -> float:
    """The wall time of ``trials`` as the journal records it, over every session of a resumed
    search (a setting tried again after a kill counts from its restart)."""
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)


def best_trial(trials: list[dict]) -> dict:
    """The setting with the best pooled inner UAR among those scored on every inner fold
    (ties: the earlier); never a pruned one, whose partial score covers fewer speakers."""
    scored = [t for t in trials if t["inner_uar"] is not None]
    return max(scored, key=lambda t: t["inner_uar"])


def search_recipe(config: TrainConfig, dataset: Dataset, fold: Fold, seed: int,
                  search_dir: Path, *, progress: bool = True) -> SearchResult:
    """Search ``config``'s space on inner folds of ``fold``'s training speakers (see the
    module docstring) and return the choice; resumes a search left in ``search_dir``."""
    if distributed.world_size() > 1:
        raise SedError("search_trials runs in one process: the processes of torchrun would "
                       "each write the search's journal; search without torchrun")
    recipe = config.recipe
    folds = inner_folds(dataset, fold, recipe.inner_folds, seed=seed)
    choices = space_choices(recipe.search_space, config.normalize)
    study = _study(search_dir)
    if not study.trials:  # the recipe as given is the first setting tried: the baseline
        study.enqueue_trial(recipe_setting(recipe, choices))
    _retry_interrupted(study)
    remaining = recipe.search_trials - len(_finished_trials(study))
    if remaining > 0:
        _optimize(study, _objective(config, dataset, folds, search_dir, choices, progress),
                  remaining, seed)
    finished = _finished_trials(study)[:recipe.search_trials]
    trials = [_trial_record(t) for t in finished]
    best = best_trial(trials)
    result = SearchResult(recipe.search_space, len(folds), trials, best["setting"],
                          best["inner_uar"], round(_seconds(finished), 1))
    if distributed.is_main():
        tqdm.write(f"{config.variant} seed {config.seed} {fold.name}: {len(trials)} settings "
                   f"searched on {len(folds)} inner folds -> {setting_name(result.chosen)} "
                   f"(inner UAR {result.inner_uar:.3f})")
    return result
