"""Training one fold: its state, its result, and the steps of the training loop.

:func:`train_fold` runs a :class:`FoldTraining` through its steps: build (normalisation fitted
on the training speakers, splits, model, optimizer), resume from ``last.pt``, then
:meth:`~FoldTraining.train_step` repeated and :meth:`~FoldTraining.evaluate_and_checkpoint`
every ``eval_every`` steps, and finally :meth:`~FoldTraining.result`.

What a fold remembers between evaluations is a :class:`FoldState` (saved in every
checkpoint); what it reports is a :class:`FoldResult` (its ``metrics.json``). Both are
dataclasses with explicit ``to_dict``/``from_dict``: the files hold plain JSON-ready dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import augment, distributed, optim
from .checkpoint import load_checkpoint, read_json, save_checkpoint, write_json
from .config import TrainConfig, changed_options
from .data import (
    Dataset,
    Split,
    epoch_batches,
    evaluation_batches,
    make_split,
    steps_per_epoch,
    trim_edge_quiet,
)
from .ensemble import save_predictions
from .errors import SedError
from .features import Normalizer
from .features.store import select_rows
from .metrics import classification_report
from .model import DenseLSTMAttention
from .runtime import autocast, bound_kept_memory, resolve_device
from .splits import Fold


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict_split(model: DenseLSTMAttention, split: Split, device: torch.device) -> np.ndarray:
    """Class probabilities (N, n_classes) of every utterance of ``split``.

    In a distributed run each rank predicts every ``world``-th batch and the rows are summed
    across ranks (each row has one nonzero contributor, so the sum is exact).
    """
    was_training = model.training
    model.eval()
    probabilities = torch.zeros((len(split), model.head[-1].out_features), dtype=torch.float32)
    batches = evaluation_batches(split.lengths)
    for indices in batches[distributed.rank()::distributed.world_size()]:
        x, lengths, _ = split.batch(indices, device)
        probabilities[indices] = torch.softmax(model(x, lengths).float(), dim=1).cpu()
    model.train(was_training)
    return distributed.sum_across_ranks(probabilities).numpy()


def evaluate_split(
    model: DenseLSTMAttention, split: Split, class_names, device: torch.device
) -> dict:
    """UAR, WA, per-class recall and confusion matrix of ``model`` on ``split``."""
    predicted = predict_split(model, split, device).argmax(axis=1)
    return classification_report(split.labels.numpy(), predicted, class_names)


# ------------------------------------------------------------------ state and result
@dataclass
class Evaluation:
    """The test metrics (:func:`classification_report`) of the model after ``step`` steps,
    with the validation UAR that selected it (``selected`` only)."""

    step: int
    report: dict
    validation_uar: float | None = None

    @property
    def uar(self) -> float:
        return self.report["uar"]

    def to_dict(self) -> dict:
        head = {"step": self.step}
        if self.validation_uar is not None:
            head["validation_uar"] = self.validation_uar
        return {**head, **self.report}

    @classmethod
    def from_dict(cls, d: dict | None) -> Evaluation | None:
        if d is None:
            return None
        report = {k: v for k, v in d.items() if k not in ("step", "validation_uar")}
        return cls(d["step"], report, d.get("validation_uar"))


def _to_dict(evaluation: Evaluation | None) -> dict | None:
    return None if evaluation is None else evaluation.to_dict()


@dataclass
class FoldState:
    """What a fold carries from one evaluation to the next (saved in every checkpoint).

    ``history`` holds one point per evaluation: ``step``, test ``uar`` and ``wa``, the mean
    ``train_loss`` since the previous point (None at step 0) and, with validation speakers,
    ``validation_uar``. ``best`` is the evaluation with the best test UAR (optimistic);
    ``selected`` the one with the best validation UAR (ties: the earlier step).
    """

    step: int = 0
    history: list[dict] = field(default_factory=list)
    best: Evaluation | None = None
    selected: Evaluation | None = None

    def to_dict(self) -> dict:
        return {"step": self.step, "history": self.history, "best": _to_dict(self.best),
                "selected": _to_dict(self.selected)}

    @classmethod
    def from_dict(cls, d: dict) -> FoldState:
        return cls(d["step"], d["history"], Evaluation.from_dict(d["best"]),
                   Evaluation.from_dict(d.get("selected")))


@dataclass
class FoldResult:
    """A trained fold's result: its ``metrics.json`` and one entry of the run's ``folds``.

    ``final`` is the model after the last step, ``best`` the best test UAR during training
    and ``selected`` (with validation speakers only, as ``n_validation`` and
    ``validation_speakers``) the step with the best validation UAR. ``augment`` is the
    augmentation the fold trained with; ``selection`` (a nested selection only,
    :class:`sed_model.selection.Selection` as a dict) how the inner folds chose its setting,
    ``search`` (:class:`sed_model.search.SearchResult` as a dict) how they chose the recipe.
    """

    index: int
    name: str
    n_train: int
    n_test: int
    test_speakers: list[str]
    steps: int
    final: Evaluation | None  # None without test utterances (the run's final model)
    best: Evaluation | None
    history: list[dict]
    n_validation: int | None = None
    validation_speakers: list[str] | None = None
    selected: Evaluation | None = None
    augment: list[str] = field(default_factory=list)
    selection: dict | None = None
    search: dict | None = None

    def evaluation(self, which: str) -> Evaluation:
        """``final``, ``best`` or ``selected``."""
        return {"final": self.final, "best": self.best, "selected": self.selected}[which]

    def to_dict(self) -> dict:
        d = {"index": self.index, "name": self.name, "n_train": self.n_train,
             "n_test": self.n_test, "test_speakers": self.test_speakers, "steps": self.steps,
             "final": _to_dict(self.final), "best": _to_dict(self.best), "history": self.history}
        if self.selected is not None:
            d.update(n_validation=self.n_validation, validation_speakers=self.validation_speakers,
                     selected=self.selected.to_dict())
        if self.augment or self.selection is not None:
            d["augment"] = self.augment
        if self.selection is not None:
            d["selection"] = self.selection
        if self.search is not None:
            d["search"] = self.search
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FoldResult:
        evaluations = {k: Evaluation.from_dict(d.get(k)) for k in ("final", "best", "selected")}
        plain = {k: v for k, v in d.items() if k not in evaluations}
        if "augment_selection" in plain:  # the name of a selection of the augmentation alone
            plain["selection"] = plain.pop("augment_selection")
        return cls(**plain, **evaluations)

    @classmethod
    def finished(cls, fold_dir: Path) -> FoldResult | None:
        """The result a fold that finished training wrote to ``fold_dir``, else None.

        ``metrics.json`` is written last (after the final checkpoint), so its presence means
        the fold is complete; a resumed run reads it back instead of training again."""
        path = fold_dir / "metrics.json"
        return cls.from_dict(read_json(path)) if path.exists() else None


# ------------------------------------------------------------------------------ one fold
def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fold_normalizer(dataset: Dataset, fold: Fold, mode: str) -> Normalizer:
    """Statistics fitted on the fold's training speakers; in ``speaker`` mode also those of
    its validation and test speakers, from their unlabelled audio (transductive)."""
    speakers = dataset.speakers
    normalizer = Normalizer.fit_fold(dataset.features, fold, speakers, mode)
    others = [*fold.validation, *fold.test]
    return normalizer.with_speakers(select_rows(dataset.features, others),
                                    [speakers[i] for i in others])


def _speakers(dataset: Dataset, indices) -> list[str]:
    return sorted({dataset.utterances[i].speaker for i in indices})


class FoldTraining:
    """One fold's splits, model, optimizer and :class:`FoldState`, and the steps on them.

    Made ready to train from step 0; :meth:`resume` continues from ``last.pt`` instead.
    ``on_checkpoint(path, step)`` is called after every periodic checkpoint; an exception
    raised there stops training as a kill would (the tests use it to interrupt a run).
    """

    def __init__(self, config: TrainConfig, dataset: Dataset, fold: Fold, index: int,
                 count: int, fold_dir: Path,
                 on_checkpoint: Callable[[Path, int], None] | None = None) -> None:
        if config.recipe.edge_quiet_of(config.variant) == "trim":
            dataset = trim_edge_quiet(dataset)
        self.config, self.dataset, self.fold = config, dataset, fold
        self.index, self.count, self.fold_dir = index, count, fold_dir
        self.on_checkpoint = on_checkpoint
        self.device = resolve_device(config.device)
        self.normalizer = fold_normalizer(dataset, fold, config.normalize)
        self.train_split = make_split(dataset, fold.train, self.normalizer,
                                      augment.needed_speeds(config.recipe.augment, None))
        # "shift": the training speakers' statistics, and each training row's speaker among them
        self.shift, self.shift_sources = (
            augment.SpeakerShift.fit(select_rows(dataset.features, fold.train),
                                     [dataset.speakers[i] for i in fold.train],
                                     self.normalizer.mean, self.normalizer.std)
            if "shift" in config.recipe.augment else (None, None))
        # no test utterances: the run's final model, trained on every speaker
        self.test_split = make_split(dataset, fold.test, self.normalizer) if fold.test else None
        self.validation_split = (make_split(dataset, fold.validation, self.normalizer)
                                 if fold.validation else None)
        torch.manual_seed(config.seed)
        recipe = config.recipe
        self.model = DenseLSTMAttention(
            n_classes=len(dataset.classes), variant=config.variant, cells=recipe.cells,
            attention_dim=recipe.attention_dim, dense=recipe.dense, backend=config.backend,
            input_dropout=recipe.input_dropout, layer_dropout=recipe.layer_dropout,
            head_dropout=recipe.head_dropout,
            utterance_norm=recipe.utterance_norm_of(config.variant),
        ).to(self.device)
        self.trained_model: torch.nn.Module = self.model  # DDP-wrapped by wrap_distributed
        self.optimizer = optim.make_optimizer(self.model, recipe)
        self.ema = optim.averaged_model(self.model, recipe)
        # the model that is evaluated, checkpointed as "model" and reported
        self.evaluated_model = self.model if self.ema is None else self.ema.module
        self.loss_weights = optim.class_weights(self.train_split.labels.numpy(),
                                                len(dataset.classes), recipe.class_balanced)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.per_epoch = steps_per_epoch(len(self.train_split), recipe.batch_size)
        self.total_steps = recipe.steps or recipe.epochs * self.per_epoch
        self.eval_every = recipe.eval_every or self.per_epoch
        self.state = FoldState()
        self._batches: list[np.ndarray] = []
        self._batches_epoch = -1

    @property
    def last_path(self) -> Path:
        return self.fold_dir / "last.pt"

    def resume(self) -> None:
        """Continue from ``last.pt`` when it exists: weights, optimizer, RNG and state."""
        if not self.last_path.exists():
            return
        try:
            saved = load_checkpoint(self.last_path)
        except SedError as exc:
            raise SedError(f"{exc}; it is truncated or corrupt: delete it to restart fold "
                           f"{self.index + 1} from step 0 (or restore a good copy) and resume "
                           "again") from None
        if changed := changed_options(saved["config"], self.config):
            raise SedError(f"{self.last_path} was written with another configuration "
                           f"({'; '.join(changed)}); cannot resume")
        if self.ema is None:
            self.model.load_state_dict(saved["model"])
        else:
            self.model.load_state_dict(saved["trained_model"])
            self.ema.module.load_state_dict(saved["model"])
            self.ema.n_averaged.fill_(saved["ema_updates"])
        self.optimizer.load_state_dict(saved["optimizer"])
        _set_rng_state(saved["rng"])
        if saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.state = FoldState.from_dict(saved)

    def wrap_distributed(self) -> None:
        """Train through DistributedDataParallel in a run of several processes (after
        :meth:`resume`: DDP starts every rank from rank 0's weights)."""
        if distributed.world_size() > 1:
            cuda = self.device.type == "cuda"
            device_ids = [self.device.index or torch.cuda.current_device()] if cuda else None
            self.trained_model = DistributedDataParallel(self.model, device_ids=device_ids)

    def _global_batch(self, step: int) -> np.ndarray:
        """The batch of ``step``: the epoch's batch order depends only on the seed, the fold
        and the epoch, which is what makes a resumed run take the same batches."""
        epoch = step // self.per_epoch
        if epoch != self._batches_epoch:
            rng = np.random.default_rng([self.config.seed, self.index, epoch])
            self._batches = epoch_batches(self.train_split.lengths, self.config.recipe.batch_size,
                                          rng)
            self._batches_epoch = epoch
        return self._batches[step % self.per_epoch]

    def _augmented_batch(self, rows: np.ndarray):
        """The training batch of dataset rows ``rows`` on the device, with the recipe's
        augmentations applied: ``(x, lengths, labels, mixup)`` (``mixup`` None without it)."""
        augment_names = self.config.recipe.augment
        rng = (augment.augmentation_rng(self.config.seed, self.index, self.state.step)
               if augment_names else None)  # no augmentation: nothing is drawn
        versions = augment.speed_versions(rng, len(rows)) if "speed" in augment_names else None
        x, lengths, labels = self.train_split.batch(rows, self.device, versions)
        if self.shift is not None:
            x = self.shift(x, lengths, self.shift_sources[rows], rng)
        x, lengths = augment.augment_batch(x, lengths, augment_names, rng)
        mixup = None
        if "mixup" in augment_names:
            x, lengths, mixup = augment.mix_batch(x, lengths, rng)
        return x, lengths, labels, mixup

    def train_step(self) -> float:
        """One optimizer step; returns the global batch's mean loss (this rank's share)."""
        global_batch = self._global_batch(self.state.step)
        mine = distributed.shard(global_batch)  # this rank's part (all of it in one process)
        rows = mine if len(mine) else global_batch[:1]
        config, recipe = self.config, self.config.recipe
        x, lengths, labels, mixup = self._augmented_batch(rows)
        optim.set_learning_rate(self.optimizer,
                                optim.learning_rate(recipe, self.state.step, self.total_steps))
        with autocast(config.precision, self.device):
            logits = self.trained_model(x, lengths)  # (B_rank, n_classes)

        # The shard's summed loss / global batch size * world size: DDP averages gradients
        # over ranks, so each step follows the global batch's mean loss (as one process would).
        def summed(logits, labels):
            return optim.summed_loss(logits, labels, self.loss_weights, recipe.label_smoothing)

        loss_sum = summed(logits, labels) if mixup is None else mixup.loss(summed, logits, labels)
        if len(mine):
            loss = loss_sum / len(global_batch) * distributed.world_size()
        else:
            loss = loss_sum * 0
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if recipe.clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), recipe.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.state.step += 1
        return loss_sum.item() / len(global_batch) if len(mine) else 0.0

    def evaluation_due(self) -> bool:
        step = self.state.step
        return step % self.eval_every == 0 or step == self.total_steps

    def evaluate_and_checkpoint(self, train_loss: float | None) -> dict:
        """Evaluate on the test (and validation) speakers, append to the history, update
        ``best`` and ``selected`` and write their checkpoints and ``last.pt``; returns the
        test report (None without test utterances: only the checkpoint is written)."""
        state, classes = self.state, self.dataset.classes
        with autocast(self.config.precision, self.device):
            report = (evaluate_split(self.evaluated_model, self.test_split, classes, self.device)
                      if self.test_split is not None else None)
            validation_uar = None
            if self.validation_split is not None:
                validation_uar = evaluate_split(self.evaluated_model, self.validation_split,
                                                classes, self.device)["uar"]
        tested = {"uar": report["uar"], "wa": report["wa"]} if report is not None else {}
        state.history.append({"step": state.step, **tested, "train_loss": train_loss})
        if report is not None and (state.best is None or report["uar"] > state.best.uar):
            state.best = Evaluation(state.step, report)
            self.checkpoint(self.fold_dir / "best.pt")
        if validation_uar is not None:
            state.history[-1]["validation_uar"] = validation_uar
            if state.selected is None or validation_uar > state.selected.validation_uar:
                state.selected = Evaluation(state.step, report, validation_uar)  # ties: earlier
                self.checkpoint(self.fold_dir / "selected.pt")
        self.checkpoint(self.last_path)
        if self.on_checkpoint is not None and distributed.is_main():
            self.on_checkpoint(self.last_path, state.step)
        return report

    def checkpoint(self, path: Path) -> None:
        """Save everything needed to evaluate the model and to resume (rank 0 only)."""
        if not distributed.is_main():
            return
        fold = {"index": self.index, "name": self.fold.name, "count": self.count,
                "test_speakers": _speakers(self.dataset, self.fold.test),
                "validation_speakers": _speakers(self.dataset, self.fold.validation)}
        averaged = {} if self.ema is None else {"trained_model": self.model.state_dict(),
                                                 "ema_updates": int(self.ema.n_averaged)}
        save_checkpoint(path, {
            "model": self.evaluated_model.state_dict(),
            **averaged,
            "hyperparameters": self.model.hyperparameters(),
            "class_names": list(self.dataset.classes),
            "normalizer": self.normalizer.state_dict(),
            "config": self.config.to_json(),
            "fold": fold,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            **self.state.to_dict(),
        })

    def result(self) -> FoldResult:
        """The fold's result, with the final model evaluated on the test speakers."""
        final = None
        if self.test_split is not None:
            with autocast(self.config.precision, self.device):
                probabilities = predict_split(self.evaluated_model, self.test_split, self.device)
            labels = self.test_split.labels.numpy()
            final = Evaluation(self.state.step, classification_report(
                labels, probabilities.argmax(axis=1), self.dataset.classes))
            if distributed.is_main():  # for ensembles over seeds (sed_model.ensemble)
                save_predictions(self.fold_dir, probabilities, labels, self.fold.test)
        validated = self.validation_split is not None
        validation_speakers = _speakers(self.dataset, self.fold.validation)
        return FoldResult(
            index=self.index, name=self.fold.name, n_train=len(self.fold.train),
            n_test=len(self.fold.test), test_speakers=_speakers(self.dataset, self.fold.test),
            steps=self.total_steps, final=final,
            best=self.state.best, history=self.state.history,
            n_validation=len(self.fold.validation) if validated else None,
            validation_speakers=validation_speakers if validated else None,
            selected=self.state.selected, augment=list(self.config.recipe.augment),
        )


def _mean_loss(losses: list[float]) -> float:
    """The mean training loss of the steps since the last evaluation, over all ranks."""
    return float(distributed.sum_across_ranks(torch.tensor(losses, dtype=torch.float64)).mean())


def train_fold(
    config: TrainConfig,
    dataset: Dataset,
    fold: Fold,
    fold_index: int,
    fold_count: int,
    fold_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_checkpoint: Callable[[Path, int], None] | None = None,
    selection=None,
    search=None,
) -> FoldResult:
    """Train one fold and return its result (also written to ``fold_dir/metrics.json``);
    ``selection`` (a :class:`sed_model.selection.Selection`) and ``search``
    (a :class:`sed_model.search.SearchResult`) are recorded in it."""
    run = FoldTraining(config, dataset, fold, fold_index, fold_count, fold_dir, on_checkpoint)
    if resume:
        run.resume()
    run.wrap_distributed()
    if not run.state.history:
        run.evaluate_and_checkpoint(None)  # step 0: the curve starts at the untrained model
    run.model.train()
    losses: list[float] = []
    with tqdm(total=run.total_steps, initial=run.state.step, unit="step", leave=False,
              disable=not progress or not distributed.is_main(),
              desc=(f"fold {fold_index + 1}/{fold_count}" if fold.test else "final model")
              + f" {config.variant}") as bar:
        while run.state.step < run.total_steps:
            losses.append(run.train_step())
            bound_kept_memory()
            bar.update(1)
            if run.evaluation_due():
                report = run.evaluate_and_checkpoint(_mean_loss(losses))
                losses.clear()
                tested = {} if report is None else {"uar": f"{report['uar']:.3f}",
                                                    "best": f"{run.state.best.uar:.3f}"}
                bar.set_postfix(loss=f"{run.state.history[-1]['train_loss']:.3f}", **tested)
    result = run.result()
    if selection is not None:
        result.selection = selection.to_dict()
    if search is not None:
        result.search = search.to_dict()
    if distributed.is_main():
        write_json(fold_dir / "metrics.json", result.to_dict())
    return result
