"""Training and cross-validation of the dense LSTM variants.

One run = one variant trained on every fold of a speaker-independent protocol: this module
makes the folds, trains each (:func:`sed_model.fold.train_fold`) and writes the run's files;
the configuration is a :class:`sed_model.config.TrainConfig`. Per fold:

* normalisation statistics fitted on the fold's training split only (global z-score);
* length-bucketed mini-batches (:func:`sed_model.data.epoch_batches`), cross-entropy,
  Adam(betas=(0.9, 0.7), weight_decay=1e-4) as in the paper's Table 1;
* every ``eval_every`` optimizer steps (and at step 0 and the last step) the model is
  evaluated on the held-out fold; these points are the UAR curves (paper Figs. 2 and 3).

Which split validates? The paper's Tables 2 and 3 are the "optimal recognition results" —
the best test UAR seen during training, which picks the step on the test speakers. We hold
out ``validation_speakers`` of each fold's training speakers instead
(:func:`sed_model.splits.with_validation_speakers`; default 1 when every fold keeps at least
4 training speakers, else 0), train on the rest, evaluate both sides at every evaluation and
record, per fold:

* ``selected``: test metrics of the checkpoint with the best validation UAR (ties: the
  earlier step) — nothing chosen on test data; the headline when validation is on;
* ``final``: the model after the last training step — also unbiased; the headline when
  ``validation_speakers`` is 0;
* ``best``: the best test UAR during training (the paper's protocol, optimistic).

The normaliser is fitted on the training speakers only (not validation, not test).

Files in the run folder::

    config.json                 the resolved training configuration
    fold-XX/last.pt             periodic checkpoint (every evaluation); the final model at the end
    fold-XX/best.pt             checkpoint at the best test UAR (optimistic)
    fold-XX/selected.pt         checkpoint at the best validation UAR (with validation speakers)
    fold-XX/metrics.json        the fold's result; its presence marks the fold complete
    best.pt                     copy of fold-01/selected.pt, or fold-01/best.pt without validation
    final/last.pt               the final model's periodic checkpoint (for ``resume``)
    model.pt                    the deployment model: trained on every utterance (below)
    metrics.json                per fold and pooled/mean results, ``selected``, ``final``, ``best``
    curves.png, confusion.png   UAR against step; pooled confusion matrix of the headline models

The top-level ``best.pt`` is simply fold 1's headline checkpoint: a model trained without
fold 1's speakers. It is not the best fold (that would be cherry-picking) and not a model
retrained on all data; that is ``model.pt``.

The deployment model (``model.pt``, unless ``final_model=False``): after the cross-validation
one more model is trained on every utterance of the corpus (all speakers; no validation, no
test side) with the same recipe, and saved with the keys of a fold checkpoint minus the
optimizer, scaler and RNG state. Its length (:func:`final_model_steps`): without validation
speakers the run's own ``epochs`` or ``steps`` (the fixed-length recipe: the cross-validation
measured exactly this recipe); with validation speakers the median over folds of the epoch of
the ``selected`` checkpoint (its step divided by that fold's steps per epoch), times the steps
per epoch on all utterances: the selected step scaled by the ratio of training-set sizes, so
that the final model sees each utterance as often as the selected fold models did.
A learning-rate schedule, if the recipe has one, is then stretched over that length.

Crash safety: every checkpoint and JSON file is written atomically. ``resume=True`` skips
the folds whose ``metrics.json`` exists and continues the running fold from its
``last.pt`` — model, optimizer, RNG states, step and evaluation history — so a resumed run
ends with the same weights as an uninterrupted one (the batch order of each epoch depends
only on the seed, the fold and the epoch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import copy_atomic, load_checkpoint, save_checkpoint, write_json
from .config import CONFIG_FILE, TrainConfig, changed_options, saved_config
from .confounds import check_label_spread, label_spread
from .data import Dataset, check_training_split, load_dataset, steps_per_epoch
from .errors import SedError
from .fold import FoldResult, evaluate_split, predict_split, train_fold
from .plots import plot_confusion, plot_curves
from .recipes import SELECTED_KEYS
from .results import RunResult
from .runtime import RunOptions, check_backend, check_precision, resolve_device
from .search import search_recipe
from .selection import Selection, candidate_config, choose_setting, majority_setting
from .splits import Fold, make_folds, with_validation_speakers

__all__ = ["TrainConfig", "evaluate_split", "finish_run", "format_summary", "predict_split",
           "prepare_run", "train", "train_fold", "train_or_read_fold"]


def dataset_folds(dataset: Dataset, folds_arg: str | None, seed: int,
                  validation_speakers: int = 0) -> list[Fold]:
    """The folds of the CLI form ``folds_arg`` (None: the corpus' default protocol), each
    with ``validation_speakers`` training speakers moved to its validation side."""
    folds = make_folds(dataset.utterances, folds_arg or "default", seed=seed, corpus=dataset.loader)
    folds = [with_validation_speakers(fold, dataset.utterances, validation_speakers, seed=seed)
             for fold in folds]
    for fold in folds:
        check_training_split(dataset, fold)
    return folds


def default_validation_speakers(dataset: Dataset, folds_arg: str | None, seed: int) -> int:
    """1 when the protocol has several folds and each keeps at least 4 training speakers
    (so 3 or more remain to train on), else 0: a single hold-out has no folds to rotate the
    validation speaker through, and with fewer speakers the one taken from training costs
    more than the selection gains."""
    folds = dataset_folds(dataset, folds_arg, seed)
    fewest = min(len({dataset.utterances[i].speaker for i in f.train}) for f in folds)
    return 1 if len(folds) > 1 and fewest >= 4 else 0


def with_validation_default(config: TrainConfig, dataset: Dataset) -> TrainConfig:
    """``config`` with ``validation_speakers`` decided from the folds when it was left out."""
    if config.recipe.validation_speakers is not None:
        return config
    chosen = default_validation_speakers(dataset, config.folds, config.folds_seed)
    return config.with_recipe(validation_speakers=chosen)


# ------------------------------------------------------------------------------- a run
def default_out_dir(corpus: str, variant: str) -> Path:
    return Path("runs") / f"{corpus}-{variant}-{time.strftime('%Y%m%d-%H%M%S')}"


def _prepare_out_dir(out_dir: Path, config: TrainConfig, resume: bool) -> None:
    """A new run writes ``config.json``; a resumed one must match the saved configuration."""
    if resume:
        if changed := changed_options(saved_config(out_dir), config):
            raise SedError(
                f"cannot resume {out_dir}: options differ from the saved run ({'; '.join(changed)})"
            )
        return
    if (out_dir / CONFIG_FILE).exists():
        raise SedError(f"{out_dir} already holds a run; pass --resume to continue it or pick "
                       "another --out-dir")
    write_json(out_dir / CONFIG_FILE, config.to_json())


def _fold_line(config: TrainConfig, fold: Fold, count: int, result: FoldResult,
               status: str) -> str:
    """The line printed after each fold."""
    selected = ""
    if result.selected is not None:
        selected = (f"selected UAR {result.selected.uar:.3f} at step {result.selected.step} "
                    f"(validation speakers {', '.join(result.validation_speakers)}), ")
    chosen = ""
    if result.selection is not None:
        chosen = f"chose {result.selection['chosen']}, "
    if result.search is not None:
        chosen = f"searched inner UAR {result.search['inner_uar']:.3f}, "
    return (f"{config.variant} seed {config.seed} fold {result.index + 1}/{count} ({fold.name}, "
            f"{result.n_test} "
            f"test utterances, {status}): {chosen}{selected}final UAR {result.final.uar:.3f}, "
            f"best UAR {result.best.uar:.3f} at step {result.best.step}")


def train_or_read_fold(config: TrainConfig, dataset: Dataset, folds: list[Fold], index: int,
                       out_dir: Path, *, resume: bool, progress: bool,
                       on_checkpoint: Callable[[Path, int], None] | None = None) -> FoldResult:
    """Fold ``index`` of a run in ``out_dir``: read back when a resumed run had finished it,
    else trained (and written to ``out_dir/fold-NN``); prints the fold's line.

    Each fold depends only on the configuration, the seed and the fold, so the folds of a run
    may be trained in any order or in separate processes (``compare --jobs``)."""
    fold = folds[index]
    fold_dir = out_dir / f"fold-{index + 1:02d}"
    finished = FoldResult.finished(fold_dir) if resume else None
    if finished is not None:
        result, status = finished, "done before, skipped"
    else:
        fold_config, selection, search = config, None, None
        if config.recipe.selects:
            selection = choose_setting(config, dataset, fold, index, fold_dir,
                                       progress=progress)
            fold_config = candidate_config(config, selection.settings[selection.chosen])
        if config.recipe.search_trials:
            search = search_recipe(config, dataset, fold, config.folds_seed + index,
                                   fold_dir / "search", progress=progress)
            fold_config = search.config_for(config)
        result = train_fold(fold_config, dataset, fold, index, len(folds), fold_dir,
                            resume=resume, progress=progress, on_checkpoint=on_checkpoint,
                            selection=selection, search=search)
        status = "trained"
    if distributed.is_main():
        tqdm.write(_fold_line(config, fold, len(folds), result, status))
    return result


def prepare_run(config: TrainConfig, dataset: Dataset, out_dir: Path,
                resume: bool) -> tuple[TrainConfig, list[Fold]]:
    """The run's configuration with its defaults resolved and its folds; writes (or, when
    resuming, checks) ``out_dir/config.json``."""
    config = with_validation_default(config, dataset)
    check_label_spread(dataset.utterances, config.normalize, show=distributed.is_main())
    folds = dataset_folds(dataset, config.folds, config.folds_seed,
                          config.recipe.validation_speakers)
    # after the data checks: no folder for a bad run
    distributed.main_first(lambda: _prepare_out_dir(out_dir, config, resume))
    return config, folds


def _write_run_files(out_dir: Path, result: RunResult) -> None:
    """metrics.json, the top-level best.pt (fold 1's headline checkpoint) and the figures."""
    write_json(out_dir / "metrics.json", result.to_json())
    headline_checkpoint = "selected.pt" if result.headline == "selected" else "best.pt"
    copy_atomic(out_dir / "fold-01" / headline_checkpoint, out_dir / "best.pt")
    corpus, variant = result.corpus, result.variant
    plot_curves({variant: [r.history for r in result.folds]}, out_dir / "curves.png",
                title=f"{corpus}: held-out UAR during training")
    plot_confusion(result.headline_summary.pooled["confusion"], result.classes,
                   out_dir / "confusion.png",
                   title=f"{corpus} {variant}: {result.headline} models, pooled over folds")


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    dataset: Dataset | None = None,
    resume: bool = False,
    options: RunOptions = RunOptions(),
    on_checkpoint: Callable[[Path, int], None] | None = None,
    final_model: bool = True,
) -> RunResult:
    """Train ``config`` on every fold; write the run folder; return its :class:`RunResult`.

    Then, with ``final_model``, train the deployment model on all utterances and write it as
    ``model.pt`` (see the module docstring; the result's ``final_model`` says how long it
    trained; ``resume`` continues or skips it like a fold).

    ``dataset`` may be passed to reuse extracted features (``compare`` trains four
    variants on one dataset); otherwise it is loaded with :func:`load_dataset` as
    ``options`` say (:class:`~sed_model.runtime.RunOptions`: progress bars, extraction
    processes, strict, cache folder).

    Started by torchrun (``WORLD_SIZE`` > 1), it joins the process group and trains with
    DistributedDataParallel (see :mod:`sed_model.distributed`): rank 0 extracts the
    features first, writes every file and prints; every rank returns the same metrics.
    """
    device = resolve_device(config.device)
    check_backend(config.backend, device)
    check_precision(config.precision, device)  # fp16 on the CPU: an error before any work
    distributed.init(device)
    out_dir = Path(out_dir) if out_dir else default_out_dir(config.corpus, config.variant)
    if dataset is None:
        dataset = distributed.main_first(
            lambda: load_dataset(config.corpus, config.data, speeds=config.recipe.speeds,
                                 **options.data(options.progress and distributed.is_main())),
            then_others=True)  # the other ranks read rank 0's feature cache
    config, folds = prepare_run(config, dataset, out_dir, resume)
    results = [train_or_read_fold(config, dataset, folds, index, out_dir, resume=resume,
                                  progress=options.progress, on_checkpoint=on_checkpoint)
               for index in range(len(folds))]
    final = None
    if final_model:
        final = _train_final_model(config, dataset, folds, results, out_dir, resume=resume,
                                   progress=options.progress, on_checkpoint=on_checkpoint)
    return finish_run(config, dataset, results, out_dir, final)


def finish_run(config: TrainConfig, dataset: Dataset, results: list[FoldResult], out_dir: Path,
               final: dict | None = None) -> RunResult:
    """The run's result from its fold results, written with the run's figures (rank 0)."""
    spread = label_spread(dataset.utterances, config.normalize).to_dict()
    result = RunResult.of(config, dataset, results, final, spread)
    distributed.barrier()
    if distributed.is_main():  # rank 0 writes the run's files
        _write_run_files(out_dir, result)
    return result


# --------------------------------------------------------------- the deployment model
MODEL_FILE = "model.pt"
FINAL_DIR = "final"
# what a deployment checkpoint leaves out of a fold checkpoint (only resuming needs them)
TRAINING_STATE_KEYS = ("optimizer", "scaler", "rng", "trained_model", "ema_updates")


def final_model_steps(config: TrainConfig, dataset: Dataset, folds: list[Fold],
                      results: list[FoldResult]) -> tuple[TrainConfig, str]:
    """The configuration the deployment model trains with, and the rule that set its
    length (see the module docstring)."""
    if not config.recipe.validation_speakers:
        return config, f"the run's {config.recipe.length} (no validation speakers)"
    epochs = [r.selected.step / steps_per_epoch(len(f.train), config.recipe.batch_size)
              for f, r in zip(folds, results)]
    per_epoch = steps_per_epoch(len(dataset.utterances), config.recipe.batch_size)
    steps = max(1, int(round(float(np.median(epochs)) * per_epoch)))
    rule = (f"median selected epoch over folds {float(np.median(epochs)):.2f} x {per_epoch} "
            "steps per epoch on all utterances")
    return config.with_recipe(steps=steps), rule


def _train_final_model(config: TrainConfig, dataset: Dataset, folds: list[Fold],
                       results: list[FoldResult], out_dir: Path, *, resume: bool,
                       progress: bool, on_checkpoint) -> dict:
    """Train (or, resumed, continue or skip) the deployment model; write ``model.pt``."""
    everyone = Fold("all speakers", train=tuple(range(len(dataset.utterances))), test=())
    search, chosen = None, {}
    if config.recipe.selects:
        selections = [Selection.from_dict(r.selection) for r in results]
        chosen = majority_setting(selections)
        config = candidate_config(config, chosen)
    if config.recipe.search_trials:
        search = search_recipe(config, dataset, everyone, config.folds_seed + len(folds),
                               out_dir / FINAL_DIR / "search", progress=progress)
        config = search.config_for(config)
    final_config, rule = final_model_steps(config, dataset, folds, results)
    info = {"file": MODEL_FILE, "n_train": len(everyone.train), "rule": rule,
            "augment": list(final_config.recipe.augment)}
    for key in SELECTED_KEYS:  # the chosen setting (augment is recorded above in any case)
        if key in chosen and key != "augment":
            info[key] = getattr(config.recipe, key)
    if search is not None:
        info["search"] = search.to_dict()
    if not (resume and (out_dir / MODEL_FILE).exists()):
        result = train_fold(final_config, dataset, everyone, len(folds), len(folds),
                            out_dir / FINAL_DIR, resume=resume, progress=progress,
                            on_checkpoint=on_checkpoint)
        if distributed.is_main():
            payload = load_checkpoint(out_dir / FINAL_DIR / "last.pt")
            save_checkpoint(out_dir / MODEL_FILE, {k: v for k, v in payload.items()
                                                   if k not in TRAINING_STATE_KEYS})
        info["steps"] = result.steps
    else:
        info["steps"] = load_checkpoint(out_dir / MODEL_FILE)["step"]
    if distributed.is_main():
        tqdm.write(f"{config.variant} final model on all {info['n_train']} utterances: "
                   f"{info['steps']} steps ({rule}); wrote {out_dir / MODEL_FILE}")
    return info


def format_summary(result: RunResult) -> str:
    """A few lines for the terminal: headline UAR and WA (selected on validation speakers, or
    final), the final-model UAR and the best-during-training UAR."""
    s, headline, n = result.summary, result.headline, len(result.folds)
    over = f"pooled over {n} folds" if n > 1 else "held-out fold"
    what = ("checkpoints selected on validation speakers" if headline == "selected"
            else "final models")
    pooled = s[headline].pooled
    lines = [f"{result.corpus} / {result.variant}: UAR {pooled['uar']:.3f}, WA {pooled['wa']:.3f} "
             f"({what}, {over})"]
    if n > 1:
        lines.append(f"  mean over folds: UAR {s[headline].uar['mean']:.3f} "
                     f"+- {s[headline].uar['std']:.3f}")
    if headline == "selected":
        lines.append(f"  final models: UAR {s['final'].pooled['uar']:.3f}")
    lines.append(f"  best held-out UAR during training (paper's protocol, optimistic): "
                 f"{s['best'].pooled['uar']:.3f}")
    lines.append("  per-class recall: " + ", ".join(
        f"{c} {r:.2f}" if r is not None else f"{c} -" for c, r in pooled["recall"].items()))
    return "\n".join(lines)
